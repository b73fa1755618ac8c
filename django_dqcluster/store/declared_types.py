"""The declared type of each column of a query's result, for clients that convert by it.

sqlite3 converts values by their column's declared type (``detect_types=
PARSE_DECLTYPES``, with converters registered by type name: Django's sqlite3
backend registers ``bool``, ``date``, ``datetime``, ``time`` and
``timestamp``), in the process that runs the query. Here that is the node, and
converters are the client's, so the node tells a client that asks for them
(``declared_types`` in its ``open`` request) the declared type of each result
column, and the driver converts (see ``dbapi/connection.py``).

Python's sqlite3 has no API for a column's declared type, so it is read from
the SQLite library itself (``sqlite3_column_decltype`` through ctypes, on a
statement prepared and never run) on a read-only connection of the node's own,
and cached per statement text and schema version. Where the library cannot be
loaded, or the statement cannot be prepared there (it reads a table created by
the open transaction and not yet committed), the answer is "no types" and the
client gets the stored values, as before.

This module imports neither Django nor pysyncobj.
"""

import ctypes
import ctypes.util
import logging
import os
import threading
from collections import OrderedDict

from .statements import MAX_CACHED_SQL

logger = logging.getLogger("django_dqcluster.store")

#: Statements whose column types a database remembers.
CACHE_SIZE = 1024

_SQLITE_OK = 0
_SQLITE_ROW = 100
_SQLITE_OPEN_READONLY = 0x00000001
_SQLITE_OPEN_URI = 0x00000040
_SQLITE_OPEN_NOMUTEX = 0x00008000


def _load_library():
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.sqlite3_open_v2.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_char_p]
    lib.sqlite3_close_v2.argtypes = [ctypes.c_void_p]
    lib.sqlite3_prepare_v2.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_char_p),
    ]
    lib.sqlite3_column_count.argtypes = [ctypes.c_void_p]
    lib.sqlite3_column_decltype.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.sqlite3_column_decltype.restype = ctypes.c_char_p
    lib.sqlite3_finalize.argtypes = [ctypes.c_void_p]
    lib.sqlite3_step.argtypes = [ctypes.c_void_p]
    lib.sqlite3_column_int64.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.sqlite3_column_int64.restype = ctypes.c_int64
    lib.sqlite3_busy_timeout.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


_library = None
_library_loaded = False
_library_lock = threading.Lock()


def _sqlite_library():
    global _library, _library_loaded
    with _library_lock:
        if not _library_loaded:
            _library = _load_library()
            _library_loaded = True
            if _library is None:
                logger.warning("the SQLite library could not be loaded through ctypes: raw cursors of "
                               "clients that convert by declared type get stored values")
    return _library


class DeclaredTypes:
    """Declared column types of statements on one database file."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._db = None
        self._opened = None  # (st_dev, st_ino) of the file self._db reads
        self._cache = OrderedDict()  # (schema version, sql) -> tuple of types (str or None)

    def of(self, sql, schema_version):
        """The declared type of each result column of ``sql`` (None where it has none), or None.

        ``schema_version``: the schema the statement runs against (``PRAGMA
        schema_version`` on its connection). None when no column has a type,
        or when the committed schema is another one (the statement runs in a
        transaction that changed it), which is not remembered.
        """
        key = (schema_version, sql)
        with self._lock:
            types = self._cache.get(key)
            if types is not None:
                self._cache.move_to_end(key)
                return types or None
            types = self._prepare(sql, schema_version)
            if types is not None and len(sql) <= MAX_CACHED_SQL:
                self._cache[key] = types
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            return types or None

    def _prepare(self, sql, schema_version):
        lib = _sqlite_library()
        if lib is None or (self._db is None and not self._open(lib)):
            return None
        # Running a statement makes the connection reread a changed schema;
        # the statement's own must be that one, or its types could be stale.
        if self._schema_version(lib) != schema_version:
            # Another schema than the statement's: its transaction changed
            # it, or the file was replaced since it was opened here (a clone,
            # a snapshot), and then the one at the path now may have it.
            if self._opened == _identity(self.path):
                return None
            self._close_db(lib)
            if not self._open(lib) or self._schema_version(lib) != schema_version:
                return None
        stmt = ctypes.c_void_p()
        encoded = sql.encode("utf-8")
        if lib.sqlite3_prepare_v2(self._db, encoded, len(encoded), ctypes.byref(stmt), None) != _SQLITE_OK:
            lib.sqlite3_finalize(stmt)
            return None
        try:
            count = lib.sqlite3_column_count(stmt)
            types = tuple(lib.sqlite3_column_decltype(stmt, i) for i in range(count))
        finally:
            lib.sqlite3_finalize(stmt)
        return tuple(None if t is None else t.decode("utf-8", "replace") for t in types) if any(types) else ()

    def _schema_version(self, lib):
        """The connection's schema version, with its schema reread if it changed."""
        # Reading the version alone does not reload the schema; a statement
        # on sqlite_master finds its version stale and does.
        self._step(lib, b"SELECT 1 FROM sqlite_master LIMIT 1")
        return self._step(lib, b"PRAGMA schema_version")

    def _step(self, lib, sql):
        """The first column of the first row of ``sql``, an integer (None if there is none)."""
        stmt = ctypes.c_void_p()
        if lib.sqlite3_prepare_v2(self._db, sql, len(sql), ctypes.byref(stmt), None) != _SQLITE_OK:
            lib.sqlite3_finalize(stmt)
            return None
        try:
            if lib.sqlite3_step(stmt) != _SQLITE_ROW:
                return None
            return lib.sqlite3_column_int64(stmt, 0)
        finally:
            lib.sqlite3_finalize(stmt)

    def _open(self, lib):
        identity = _identity(self.path)
        db = ctypes.c_void_p()
        uri = "file:" + self.path.replace("%", "%25").replace("?", "%3f").replace("#", "%23") + "?mode=ro"
        flags = _SQLITE_OPEN_READONLY | _SQLITE_OPEN_URI | _SQLITE_OPEN_NOMUTEX
        if lib.sqlite3_open_v2(uri.encode("utf-8"), ctypes.byref(db), flags, None) != _SQLITE_OK:
            lib.sqlite3_close_v2(db)
            return False
        lib.sqlite3_busy_timeout(db, 1000)
        self._db, self._opened = db, identity
        return True

    def _close_db(self, lib):
        if self._db is not None:
            lib.sqlite3_close_v2(self._db)
        self._db = self._opened = None

    def close(self):
        with self._lock:
            if self._db is not None:
                self._close_db(_sqlite_library())
            self._cache.clear()


def _identity(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
