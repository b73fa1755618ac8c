"""A PEP 249 (DB-API 2.0) driver for the replicated store; no Django here.

    conn = dbapi.connect("127.0.0.1:7001,127.0.0.1:7011", secret=..., database="app")
    conn.execute("INSERT INTO t VALUES (?)", (1,))

Parameters use the qmark style, like :mod:`sqlite3`.
"""

import datetime
import time

from .connection import Connection, Cursor
from .declared import PARSE_DECLTYPES  # noqa: F401 - part of the module API, as in sqlite3
from .exceptions import (
    DatabaseError, DataError, Error, IntegrityError, InterfaceError, InternalError,
    NotSupportedError, OperationalError, ProgrammingError, Warning,
)

apilevel = "2.0"
threadsafety = 2  # threads may share connections: their requests take turns (not their transactions)
paramstyle = "qmark"


def connect(addresses=None, **kwargs):
    """Open a session with the store.

    ``addresses``: "HOST:PORT", "unix:/path", a comma-separated string or a list.
    Keyword arguments: ``database`` (default "default"), one of ``secret``,
    ``secret_file``, ``token`` and ``token_file`` (a file is read again at each
    reconnection, so a connection follows a rotation of the cluster secret),
    ``consistency`` ("strong", "weak", "none"), ``timeout`` (seconds to connect
    and to keep retrying retryable errors), ``isolation_level`` (None for
    autocommit), ``node`` (an embedded :class:`django_dqcluster.store.Node`),
    ``local_reads`` (default True: with "none", SELECTs read the node's file
    when it runs on this host, see :mod:`.replica`), ``configure_replica``
    (called with that local SQLite connection, to register SQL functions),
    ``detect_types`` (PARSE_DECLTYPES: convert values by their column's
    declared type with sqlite3's registered converters, see :mod:`.declared`)
    and ``seal`` (encrypt frames over loopback too; to another host they
    always are).
    """
    return Connection(addresses, **kwargs)


Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks):
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks):
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks):
    return Timestamp(*time.localtime(ticks)[:6])


class _TypeSet(frozenset):
    def __eq__(self, other):
        return other in self if not isinstance(other, frozenset) else frozenset.__eq__(self, other)

    __hash__ = frozenset.__hash__


STRING = _TypeSet({"TEXT", "VARCHAR", "CHAR"})
BINARY = _TypeSet({"BLOB"})
NUMBER = _TypeSet({"INTEGER", "REAL", "NUMERIC"})
DATETIME = _TypeSet({"DATETIME", "DATE", "TIME", "TIMESTAMP"})
ROWID = _TypeSet({"INTEGER"})

__all__ = [
    "connect", "Connection", "Cursor", "apilevel", "threadsafety", "paramstyle",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Binary",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID",
]
