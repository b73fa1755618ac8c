"""The named SQLite databases a node holds, and the connections it keeps on them.

A store holds several databases, each its own SQLite file in the data dir
(``NAME`` in DATABASES picks one; Django's test runner creates and drops
``test_*`` ones). For each database a node keeps:

* the *apply* connection: the only one that writes committed log entries,
  used by the Raft thread, with the deterministic functions installed;
* the *scratch* connection: on the leader, where the one open transaction on
  that database runs so its reads see its own writes; rolled back before the
  transaction's entry is appended, then the entry is applied for real;
* per-thread *read* connections for autocommit reads (WAL readers never block
  the writer).

The applied Raft index lives in the same file, written in the same SQLite
transaction as the entry's effects, so replaying the journal after a restart
never applies an entry twice.
"""

import os
import re
import secrets
import sqlite3
import threading
import time

from .declared_types import DeclaredTypes
from .determinism import DeterministicFunctions
from .regexp_time import limit_regexp_time
from .statement_steps import LimitedConnection
from .value_size import limit_values

# One row per applied entry: the highest raft_index is the applied index, and
# entry_id answers "was my commit applied?" (a group entry's row lists the ids
# of its transactions applied to this file, separated by spaces). Keyed by
# raft_index, each apply appends to the end of one b-tree: a random-keyed
# index on entry_id, or a separate row for the applied index, made every apply
# write two more pages (measured: 170 us -> 77 us per single-INSERT entry).
# Looking an id up scans at most ENTRY_ID_MEMORY rows, and only after a
# commit's outcome was lost.
#: Every table of the store's own inside a database starts so: clients'
#: introspection and backups leave them out.
INTERNAL_TABLE_PREFIX = "_dqcluster_"
APPLIED_TABLE = INTERNAL_TABLE_PREFIX + "applied_entries"
# How many entry ids each database remembers.
ENTRY_ID_MEMORY = 10000
# The layout before APPLIED_TABLE: upgraded the first time a file is opened.
_LEGACY_INDEX_TABLE, _LEGACY_IDS_TABLE = "_dqcluster_applied", "_dqcluster_entries"

# Beside the databases: the random id of the node process serving them, which
# a client on this host compares with the id the node sent it before reading
# the files itself (dbapi.replica). Absent while no node serves them.
INSTANCE_FILE = ".instance"
#: Read connections a database keeps open for the next client sessions.
MAX_IDLE_READERS = 8

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
SUFFIX = ".sqlite3"


class InvalidDatabaseName(ValueError):
    pass


def check_name(name):
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidDatabaseName(
            f"invalid database name {name!r}: use letters, digits, '_', '.', '-' (at most 128), no path"
        )
    return name


class WriteLock:
    """A database's one-writer lock, and who holds it: a writer that waits too long is told."""

    def __init__(self, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._holder = None  # (description, since)

    def acquire(self, holder, timeout):
        """Take the lock for ``holder`` (who and what, e.g. "a transaction of client ..."); False on timeout."""
        if not self._lock.acquire(timeout=timeout):
            return False
        self._holder = (holder, self._clock())
        return True

    def release(self):
        self._holder = None
        self._lock.release()

    def holder(self):
        """(description, seconds held) of whoever holds the lock now, or None."""
        held = self._holder
        if held is None:
            return None
        return held[0], self._clock() - held[1]


class Database:
    """One named SQLite file and the node's connections to it."""

    def __init__(self, name, path, configure_connection, busy_timeout, max_value_bytes=None,
                 max_regexp_seconds=None):
        self.name = name
        self.path = path
        self._configure = configure_connection
        self._busy_timeout = busy_timeout
        # The size limit of the values clients' statements make here (value_size.py);
        # the apply connection takes each entry's own.
        self._max_value_bytes = max_value_bytes
        # The time a client's statement may spend matching REGEXP here
        # (regexp_time.py); the apply connection has no limit.
        self._max_regexp_seconds = max_regexp_seconds
        self._apply = None
        self._apply_functions = None
        self._scratch = None
        self._scratch_functions = None
        self._open_readers = set()  # lent to sessions, or idle
        self._idle_readers = []
        self._readers_lock = threading.Lock()
        # One write transaction at a time on the leader (SQLite's own rule,
        # and what makes transactions serializable by construction).
        self.write_lock = WriteLock()
        # Held while a statement runs on the scratch connection, so the Raft
        # thread can abort a deposed leader's transaction safely.
        self.scratch_mutex = threading.RLock()
        # Entries for this database handed to Raft and not yet resolved. A
        # transaction starts its scratch work only when this is zero, so it
        # sees every earlier commit.
        self._in_flight = 0
        self._in_flight_cond = threading.Condition()
        self.applied_index = None
        self._open_lock = threading.Lock()
        self.declared_types = DeclaredTypes(path)

    def _connect(self, cached_statements=128):
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout,
            factory=LimitedConnection, cached_statements=cached_statements,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # The Raft journal is the durable record: a power loss that drops the
        # last SQLite commits is repaired by replaying entries above the
        # applied index stored in this file.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._configure(conn)
        return conn

    def entry_started(self):
        with self._in_flight_cond:
            self._in_flight += 1

    def entry_finished(self):
        with self._in_flight_cond:
            self._in_flight = max(0, self._in_flight - 1)
            if not self._in_flight:
                self._in_flight_cond.notify_all()

    def wait_entries_applied(self, timeout):
        with self._in_flight_cond:
            return self._in_flight_cond.wait_for(lambda: not self._in_flight, timeout)

    def forget_entries_in_flight(self):
        """After a barrier: every entry enqueued before it is resolved, whatever its callback did."""
        with self._in_flight_cond:
            self._in_flight = 0
            self._in_flight_cond.notify_all()

    # -- apply connection (Raft thread) -------------------------------------------------

    def apply_connection(self):
        if self._apply is None:
            with self._open_lock:
                if self._apply is None:
                    self._open_apply()
        return self._apply

    def _open_apply(self):
        # Every statement prepared afresh (~10 us each): SQLite counts a cached
        # statement's steps on from its earlier runs, which differ from node to
        # node, so the step limit could stop it one check apart (statement_steps.py).
        conn = self._connect(cached_statements=0)
        self._apply_functions = DeterministicFunctions(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} "
                "(raft_index INTEGER PRIMARY KEY, entry_id TEXT NOT NULL)"
            )
            _upgrade_legacy_bookkeeping(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.applied_index = applied_index_of(conn)
        self._apply = conn

    @property
    def apply_functions(self):
        self.apply_connection()
        return self._apply_functions

    def read_applied_index(self):
        if not os.path.exists(self.path):
            return 0
        self.apply_connection()
        return self.applied_index

    def pinned_reader(self):
        """A connection of its own inside a read transaction: this database as of now, until closed.

        A snapshot is copied through it on another thread while the Raft
        thread goes on applying entries: WAL keeps the pages it reads.
        """
        self.apply_connection()  # the file and its bookkeeping tables exist
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self._busy_timeout)
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the read snapshot now
        except BaseException:
            conn.close()
            raise
        return conn

    def replace_contents(self, source_path):
        """Make this database a copy of the SQLite file ``source_path`` (a snapshot's), in one transaction.

        Through SQLite's backup API into the file in place, not by renaming
        another file over it: session threads (and clients on this host) keep
        reading this file meanwhile and may open it at any moment, creating it
        and its WAL if it is not there. A file renamed over it would meet a WAL
        written for the file it replaced, whose pages SQLite would read as the
        new file's (the snapshot's tables gone, or "malformed"). Here readers
        see the old contents or the new, and a read transaction already open
        keeps what it began with.
        """
        target = self.apply_connection()
        source = sqlite3.connect(source_path, isolation_level=None)
        try:
            page_size = target.execute("PRAGMA page_size").fetchone()[0]
            if source.execute("PRAGMA page_size").fetchone()[0] != page_size:
                # SQLite cannot back up into a WAL file of another page size
                # (the leader's, after a VACUUM that changed it). The copy is
                # ours alone, so it is rewritten with this file's page size.
                source.execute("PRAGMA journal_mode=DELETE")
                source.execute(f"PRAGMA page_size={int(page_size)}")
                source.execute("VACUUM")
            source.backup(target)
        finally:
            source.close()
        # The WAL now holds the whole database: fold it into the file (and
        # flush it) now rather than at some later commit. PASSIVE: a reader's
        # open transaction holds part of it back rather than holding up the
        # Raft thread; the snapshot file stays the durable record until then.
        target.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.applied_index = applied_index_of(target)

    # -- scratch connection (leader transactions) --------------------------------------

    def scratch_connection(self):
        if self._scratch is None:
            self.apply_connection()  # make sure the bookkeeping tables exist
            with self._open_lock:
                if self._scratch is None:
                    conn = self._connect()
                    limit_values(conn, self._max_value_bytes)
                    limit_regexp_time(conn, self._max_regexp_seconds)
                    self._scratch_functions = DeterministicFunctions(conn)
                    self._scratch = conn
        return self._scratch

    def replace_scratch_connection(self):
        """Close the scratch connection; the next use opens a new one.

        The last resort for a connection that could not be rolled back, and
        the way to free the values a large transaction bound (Transaction.end). (It
        frees the database only once every statement of it has ended: SQLite
        keeps a connection with open statements, and its locks, until then;
        an abort ends its transaction's results first.) Called with the
        write lock and the scratch mutex held.
        """
        with self._open_lock:
            conn, self._scratch, self._scratch_functions = self._scratch, None, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    @property
    def scratch_functions(self):
        self.scratch_connection()
        return self._scratch_functions

    # -- read connections ---------------------------------------------------------------

    def borrow_reader(self):
        """A read connection for one client session, until it gives it back (return_reader).

        Sessions come and go with client connections (Django opens one per
        request by default): read connections are kept for the next session
        rather than opened (and their SQL functions registered) for each one.
        """
        with self._readers_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        self.apply_connection()
        conn = self._connect()
        limit_values(conn, self._max_value_bytes)
        limit_regexp_time(conn, self._max_regexp_seconds)
        # Only the apply connection writes this file, in log order. A statement
        # the classifier took for a read runs here: if it ever wrote, this
        # node's file would silently differ from the others; with query_only
        # it fails instead (clients may not set this pragma).
        conn.execute("PRAGMA query_only=ON")
        with self._readers_lock:
            self._open_readers.add(conn)
        return conn

    def lends(self, conn):
        """Is ``conn`` still a reader of this database (not closed with it)?"""
        return conn in self._open_readers

    def return_reader(self, conn):
        with self._readers_lock:
            if conn in self._open_readers and len(self._idle_readers) < MAX_IDLE_READERS:
                self._idle_readers.append(conn)
                return
        self.close_reader(conn)

    def close_reader(self, conn):
        """Close a borrowed read connection instead of keeping it for the next session."""
        with self._readers_lock:
            self._open_readers.discard(conn)
        try:
            conn.close()
        except sqlite3.Error:
            pass

    def close(self):
        with self._readers_lock:
            readers, self._open_readers, self._idle_readers = self._open_readers, set(), []
        for conn in [self._apply, self._scratch, *readers]:
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
        self._apply = self._scratch = None
        self.applied_index = None
        self.declared_types.close()


class DatabaseSet:
    """All databases in ``<data_dir>/db``, created on first use."""

    def __init__(self, directory, configure_connection=None, busy_timeout=5.0, max_value_bytes=None,
                 max_regexp_seconds=None):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._configure = configure_connection or (lambda conn: None)
        self._busy_timeout = busy_timeout
        self._max_value_bytes = max_value_bytes
        self._max_regexp_seconds = max_regexp_seconds
        self._databases = {}
        self._lock = threading.Lock()
        self.instance = None  # see publish_instance

    def path_for(self, name):
        return os.path.join(self.directory, check_name(name) + SUFFIX)

    # -- local readers (clients on this host reading the files themselves) -------------

    def publish_instance(self):
        """Let clients on this host read these files: write a new random instance id."""
        instance = secrets.token_hex(16)
        path = os.path.join(self.directory, INSTANCE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="ascii") as out:
            out.write(instance)
        os.replace(tmp, path)
        self.instance = instance
        return instance

    def withdraw_instance(self):
        """Stop clients from reading these files (the node stops, or stops serving)."""
        self.instance = None
        try:
            os.remove(os.path.join(self.directory, INSTANCE_FILE))
        except FileNotFoundError:
            pass

    def replica_offer(self, name):
        """What a client on this host needs to read database ``name`` itself, or None."""
        if self.instance is None:
            return None
        return {
            "path": os.path.abspath(self.path_for(name)),
            "instance_file": os.path.abspath(os.path.join(self.directory, INSTANCE_FILE)),
            "instance": self.instance,
        }

    def get(self, name):
        with self._lock:
            database = self._databases.get(name)
            if database is None:
                database = Database(name, self.path_for(name), self._configure, self._busy_timeout,
                                    self._max_value_bytes, self._max_regexp_seconds)
                self._databases[name] = database
            return database

    def exists(self, name):
        return os.path.exists(self.path_for(name))

    def names(self):
        return sorted(
            entry[: -len(SUFFIX)] for entry in os.listdir(self.directory) if entry.endswith(SUFFIX)
        )

    def write_lock_holders(self):
        """{database name: (who holds its write lock, seconds held)} for the locks held now."""
        with self._lock:
            databases = list(self._databases.items())
        held = {}
        for name, database in databases:
            holder = database.write_lock.holder()
            if holder is not None:
                held[name] = holder
        return held

    def remove_files(self, name):
        """Close and delete a database's files (drop, or replaced by a snapshot)."""
        with self._lock:
            database = self._databases.pop(name, None)
        if database is not None:
            database.close()
        path = self.path_for(name)
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass

    def close(self):
        with self._lock:
            databases = list(self._databases.values())
            self._databases.clear()
        for database in databases:
            database.close()


def applied_index_of(conn):
    """The highest Raft index applied to the database ``conn`` is connected to (0: none)."""
    return conn.execute(f"SELECT coalesce(max(raft_index), 0) FROM {APPLIED_TABLE}").fetchone()[0]


def record_applied(conn, entry_id, index):
    """Record entry ``index`` as applied, inside the transaction that applies it."""
    conn.execute(f"INSERT OR REPLACE INTO {APPLIED_TABLE} (raft_index, entry_id) VALUES (?, ?)", (index, entry_id))
    if index % 1000 == 0:
        conn.execute(f"DELETE FROM {APPLIED_TABLE} WHERE raft_index < ?", (index - ENTRY_ID_MEMORY,))


def applied_ids_at(conn, index):
    """The entry ids recorded with ``index``: one, or the transactions of a group applied so far."""
    row = conn.execute(f"SELECT entry_id FROM {APPLIED_TABLE} WHERE raft_index = ?", (index,)).fetchone()
    return row[0].split() if row is not None else []


def entry_was_applied(conn, entry_id):
    # A group's transactions share their index's row, their ids separated by
    # spaces; ids are all 32 hex digits, so a match inside the list is a whole id.
    return conn.execute(
        f"SELECT 1 FROM {APPLIED_TABLE} WHERE instr(entry_id, ?) > 0", (entry_id,)
    ).fetchone() is not None


def _upgrade_legacy_bookkeeping(conn):
    """Move a file written before APPLIED_TABLE to it: its applied index and the ids it remembers."""
    tables = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)", (_LEGACY_INDEX_TABLE, _LEGACY_IDS_TABLE)
    )}
    if _LEGACY_IDS_TABLE in tables:
        conn.execute(
            f"INSERT OR IGNORE INTO {APPLIED_TABLE} (raft_index, entry_id) "
            f"SELECT raft_index, entry_id FROM {_LEGACY_IDS_TABLE}"
        )
        conn.execute(f"DROP TABLE {_LEGACY_IDS_TABLE}")
    if _LEGACY_INDEX_TABLE in tables:
        conn.execute(
            f"INSERT OR IGNORE INTO {APPLIED_TABLE} (raft_index, entry_id) "
            f"SELECT raft_index, '' FROM {_LEGACY_INDEX_TABLE} WHERE raft_index > 0"
        )
        conn.execute(f"DROP TABLE {_LEGACY_INDEX_TABLE}")
