"""The replicated state machine: what applying one committed log entry means.

An entry is a msgpack map (never pickle) with a unique ``id`` and a ``kind``:

``tx``          one transaction (or one autocommit statement, or one
                executemany) on one named database;
``group``       several clients' transactions taken together by the leader
                (group commit): ``parts`` holds their ``tx`` entries, each
                applied whole, in order, with its own outcome;
``barrier``     nothing: a leader appends it to prove it still leads and to
                wait until everything before it is applied (strong reads);
``checkpoint``  the leader's rolling hash at some index; every replica
                compares its own and stops serving on a mismatch;
``drop_db`` / ``clone_db``   remove or copy a named database on every node;
``member``      record (or forget) a member's client address.

Every node applies entries in log order. The Raft index is written in the
same SQLite transaction as a ``tx`` entry's effects, so replay after a
restart skips what the file already holds (invariant 2).
"""

import collections
import hashlib
import itertools
import logging
import os
import re
import shutil
import sqlite3
import struct
import tempfile

import msgpack

from .apply_stall import EntryNotApplied
from .databases import DatabaseSet, applied_ids_at, record_applied
from .determinism import FixedValues
from .value_size import values_limited

logger = logging.getLogger("django_dqcluster.store")

TX = "tx"
GROUP = "group"
BARRIER = "barrier"
CHECKPOINT = "checkpoint"
DROP_DB = "drop_db"
CLONE_DB = "clone_db"
MEMBER = "member"

# Every kind this code applies. An entry of another kind, or of a newer
# ``format`` (absent: 1), was written by a newer django-dqcluster: this node
# stops applying there (and says so) rather than skip it and diverge.
KNOWN_KINDS = frozenset({TX, GROUP, BARRIER, CHECKPOINT, DROP_DB, CLONE_DB, MEMBER})
#: Entries that change no database. A replica that has not applied the latest of
#: them holds the same data (see StateMachine.last_data_index); any other kind,
#: one added later included, counts as a change.
LEAVE_DATA_ALONE = frozenset({BARRIER, CHECKPOINT, MEMBER})
# Format 2: a transaction entry may carry ``steps``, the most steps each of its
# statements may take (statement_steps.py); a node that ignored it could
# finish a statement that the others stopped. Format 3: it may carry
# ``length``, the largest value or row its statements may make (value_size.py).
ENTRY_FORMAT = 3
STEPS_FORMAT = 2
LENGTH_FORMAT = 3
FIRST_FORMAT = 1  # of entries without ``format``
# A member that has not said which formats it applies (member entries'
# ``applies``) has not said it yet, or runs code from before members said so,
# which applies formats up to 3.
UNANNOUNCED_FORMAT = 3

HASH_HISTORY = 20000
SNAPSHOT_FORMAT = 1
# Directories in the data dir holding the copies a snapshot is written from
# (write_snapshot) or installed from (read_snapshot), while it is.
SNAPSHOT_SCRATCH, INSTALL_SCRATCH = ".snapshot-", ".installing-"

# SQLite result codes that say something about this node's environment (disk,
# memory, locks), not about the SQL. They must never be recorded as the
# outcome of an entry: another node would record a different one.
_ENVIRONMENTAL_ERRORS = {
    "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_NOMEM", "SQLITE_BUSY", "SQLITE_LOCKED",
    "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_INTERRUPT",
    "SQLITE_PROTOCOL", "SQLITE_PERM",
}


class ApplyFailed(EntryNotApplied):
    """This node could not apply an entry for a reason of its own (disk, memory, its code's age).

    Everything of the entry is rolled back; the engine offers it again (see .apply_stall).
    """


class Diverged(Exception):
    """This replica's history differs from the leader's: it must not answer queries."""


def _check_known(entry, index):
    """ApplyFailed for an entry a newer django-dqcluster wrote: applying it as nothing would diverge.

    In a rolling upgrade of the store itself, a member still on the old code
    stops here, names the upgrade (its status' ``fatal``, the health check,
    the metrics) and applies the entry, and what follows it, once it runs
    code that knows it; its log keeps the entries meanwhile.
    """
    kind, entry_format = entry.get("kind"), entry.get("format", FIRST_FORMAT)
    if kind in KNOWN_KINDS and isinstance(entry_format, int) and entry_format <= ENTRY_FORMAT:
        return
    what = f"kind {kind!r}" if kind not in KNOWN_KINDS else f"format {entry_format!r}"
    raise ApplyFailed(
        f"entry {index} was written by a newer django-dqcluster ({what}; this node applies entries of "
        f"format {ENTRY_FORMAT}, kinds {', '.join(sorted(KNOWN_KINDS))}): upgrade this node; it goes on "
        "from this entry once upgraded"
    )


def writable_entry_format(entry_formats, other_members):
    """The newest entry format every member applies: the one a leader writes.

    In a rolling upgrade members of two releases run side by side, and any of
    them may lead. An entry of a format a member does not know stops it there
    (_check_known) until it is upgraded; so a leader writes the newest format
    all the others announced (``entry_formats``, by Raft address; unknown:
    UNANNOUNCED_FORMAT), leaving out what they would not apply (a limit they
    do not know), and the newer one once the last of them announced it. A new
    kind of entry comes with a new format, and is written only from it on.
    """
    return min([ENTRY_FORMAT, *(entry_formats.get(address, UNANNOUNCED_FORMAT) for address in other_members)])


# An entry id only has to be unique in the cluster's history. A random prefix
# drawn once per process (and again in a forked child) plus a counter is, and
# unlike uuid4 it costs no getrandom() system call on every commit. Ids keep
# uuid4's shape, 32 hex digits: entry_was_applied finds an id inside a
# space-separated list, which is only a whole-id match if no id is a prefix
# of another.
_id_prefix = None
_id_counter = None


def _new_id_prefix():
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(8).hex(), itertools.count(1)


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_entry_id():
    return f"{_id_prefix}{next(_id_counter):016x}"


def encode_entry(entry):
    return msgpack.packb(entry, use_bin_type=True)


def decode_entry(payload):
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def is_environmental(error):
    name = getattr(error, "sqlite_errorname", None) or ""
    return any(name == code or name.startswith(code + "_") for code in _ENVIRONMENTAL_ERRORS)


def error_kind(error):
    """The PEP 249 class name a client should see for a SQLite exception."""
    for cls in (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.OperationalError,
                sqlite3.DataError, sqlite3.NotSupportedError, sqlite3.InternalError,
                sqlite3.InterfaceError):
        if isinstance(error, cls):
            return cls.__name__
    return "DatabaseError"


def error_to_wire(error):
    return {
        "kind": error_kind(error),
        "message": str(error),
        "code": getattr(error, "sqlite_errorname", None),
        "retryable": False,
        "unknown_outcome": False,
    }


_DEFERS_FOREIGN_KEYS = re.compile(r"defer_foreign_keys", re.I)
_INSERTS = re.compile(r"^\s*(?:WITH\b.*?\)\s*)?(?:INSERT|REPLACE)\b", re.I | re.S)


def run_statement(conn, sql, params, many):
    """Execute one statement and describe its result the way the driver needs it.

    ``lastrowid`` follows sqlite3's rule (set by INSERT and REPLACE only):
    SQLite's own last-insert rowid is per connection, and on a node's
    connection it may belong to the store's bookkeeping rows.
    """
    try:
        if many:
            cursor = conn.executemany(sql, params or [])
        else:
            cursor = conn.execute(sql, params if params is not None else ())
    except (OverflowError, TypeError) as exc:
        # An integer over 64 bits, parameter sets that are not a list
        # (parameters.py), raised as the sqlite3 module binds them: the same
        # on every node, so an outcome like an SQL error's, not an exception
        # that stops the apply.
        raise sqlite3.ProgrammingError(str(exc)) from None
    rows = cursor.fetchall() if cursor.description is not None else []
    return {
        "columns": [d[0] for d in cursor.description] if cursor.description is not None else None,
        "rows": [list(row) for row in rows],
        "rowcount": cursor.rowcount,
        "lastrowid": cursor.lastrowid if not many and _INSERTS.match(sql) else None,
    }


def _run_statements(conn, entry, values, index):
    """Run a transaction's statements; the results the client asked for."""
    results = []
    # The leader's limits (statement_steps.py, value_size.py); older entries carry none.
    with values_limited(conn, entry.get("length")):
        for ordinal, sql, params, many, expect_error in entry["stmts"]:
            values.start_statement(ordinal)
            try:
                with conn.steps_limited(entry.get("steps")):
                    result = run_statement(conn, sql, params, many)
            except sqlite3.Error as exc:
                if expect_error and not is_environmental(exc):
                    continue
                raise
            if expect_error:
                # The leader saw this statement fail; succeeding here
                # means this replica's data differs from the leader's.
                raise Diverged(
                    f"replica diverged: a statement failed on the leader but succeeded here "
                    f"at index {index}: {sql[:200]}"
                )
            if entry.get("want_result"):
                results.append(result)
    return results


def _statement_error(exc, values):
    """The error an entry reports for a deterministic SQL failure (a refused function names itself)."""
    if values.error:
        exc = sqlite3.OperationalError(values.error)
    return error_to_wire(exc)


def _runs(parts):
    """Split a group's transactions into runs: consecutive ones on one database with the same pragmas."""
    runs = []
    for part in parts:
        key = (part["db"], tuple(sorted(_changed_pragmas(part.get("pragmas") or {}).items())))
        if runs and runs[-1][0] == key:
            runs[-1][1].append(part)
        else:
            runs.append((key, [part]))
    return [run for _, run in runs]


class StateMachine:
    def __init__(self, data_dir, *, configure_connection=None, busy_timeout=5.0, fsync=True, max_value_bytes=None,
                 max_regexp_seconds=None):
        """``max_value_bytes``: the size limit of values made by clients' statements (value_size.py);
        ``max_regexp_seconds``: the time their REGEXP matching may take (regexp_time.py)."""
        self.data_dir = data_dir
        _remove_scratch_left_behind(data_dir)
        self.databases = DatabaseSet(os.path.join(data_dir, "db"), configure_connection, busy_timeout,
                                     max_value_bytes, max_regexp_seconds)
        self.fsync = fsync
        self.hash = b"\0" * 32
        self.hash_history = collections.OrderedDict()
        self.last_index = 0
        # The last entry applied that may have changed a database: a follower
        # that applied this far holds the data this replica holds, whatever
        # barriers came since (Session._strong_read_on_follower).
        self.last_data_index = 0
        self.members = {}
        # Raft address -> the newest entry format that member's code applies,
        # as it announced (member entries' ``applies``); see writable_entry_format.
        self.entry_formats = {}
        self.diverged = None
        self.last_checkpoint = None  # highest index verified against the leader's hash
        self.fatal = None
        self.listeners = []  # called with (kind, entry) after an entry is applied
        self._deferred_constraints = {}  # database name -> (schema_version, has deferred constraints)
        self._failed_unexpectedly_at = None  # the entry whose unforeseen error was logged

    # -- applying ------------------------------------------------------------------------

    def apply(self, payload, index):
        entry = decode_entry(payload)
        kind = entry.get("kind")
        try:
            _check_known(entry, index)
            if kind == TX:
                result = self._apply_tx(entry, index)
            elif kind == GROUP:
                result = self._apply_group(entry, index)
            elif kind == CHECKPOINT:
                result = self._apply_checkpoint(entry)
            elif kind == DROP_DB:
                result = self._apply_drop(entry, index)
            elif kind == CLONE_DB:
                result = self._apply_clone(entry, index)
            elif kind == MEMBER:
                result = self._apply_member(entry)
            else:
                result = {}
        except ApplyFailed as exc:
            # The engine offers this same entry again (what a full disk or a
            # lock left by a deposed leader needs) and logs why, rate-limited.
            self.fatal = str(exc)
            raise
        except Exception as exc:
            # What nobody foresaw (a bug; an error Python raised where SQLite's
            # was expected): as for a full disk, the entry is offered again and
            # the node says why (its status, the health check), where
            # pysyncobj logged a traceback at every tick. The traceback once.
            if self._failed_unexpectedly_at != index:
                self._failed_unexpectedly_at = index
                logger.exception("applying entry %d failed", index)
            self.fatal = f"applying entry {index} failed: {type(exc).__name__}: {exc}"
            raise ApplyFailed(self.fatal) from exc
        self.fatal = None
        self._chain(index, entry.get("id", ""))
        if kind not in LEAVE_DATA_ALONE:
            self.last_data_index = index
        for listener in self.listeners:
            listener(kind, entry)
        return result

    def _chain(self, index, entry_id):
        digest = hashlib.blake2b(self.hash + struct.pack(">Q", index) + entry_id.encode(), digest_size=32)
        self.hash = digest.digest()
        self.last_index = index
        self.hash_history[index] = self.hash
        while len(self.hash_history) > HASH_HISTORY:
            self.hash_history.popitem(last=False)

    def _apply_tx(self, entry, index):
        database = self.databases.get(entry["db"])
        conn = database.apply_connection()
        if database.applied_index >= index:
            return {"replayed": True}
        return self._apply_alone(database, conn, entry, index, [entry["id"]])

    def _apply_alone(self, database, conn, entry, index, record_ids):
        """Apply one transaction in a SQLite transaction of its own.

        ``record_ids``: the entry ids stored with ``index`` when it commits
        (more than one when earlier transactions of a group share the index).
        """
        functions = database.apply_functions
        values = FixedValues(entry["now"], entry["seed"])
        pragmas = entry.get("pragmas") or {}
        error = None
        try:
            _set_pragmas(conn, pragmas)
            functions.values = values
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = _run_statements(conn, entry, values, index)
                record_applied(conn, " ".join(record_ids), index)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if is_environmental(exc):
                    raise
                # A deterministic SQL error (a constraint, a deferred foreign
                # key at COMMIT...): every replica gets the same one. Record
                # the entry as applied with no effects and report the error.
                rollback_quietly(conn)
                error = _statement_error(exc, values)
                conn.execute("BEGIN IMMEDIATE")
                record_applied(conn, " ".join(record_ids), index)
                conn.execute("COMMIT")
        except Diverged as exc:
            rollback_quietly(conn)
            self._mark_diverged(str(exc))
            raise ApplyFailed(str(exc)) from None
        except sqlite3.Error as exc:
            rollback_quietly(conn)
            raise ApplyFailed(f"{exc} (database {entry['db']!r})") from exc
        except MemoryError:
            # This node's own trouble, as SQLITE_NOMEM is (a Python function
            # in the statement ran out of memory): retried like a full disk.
            # It used to escape the state machine, with the transaction left
            # open, and pysyncobj logged a traceback ten times a second.
            rollback_quietly(conn)
            raise ApplyFailed(f"out of memory applying a transaction (database {entry['db']!r})") from None
        except Exception:
            rollback_quietly(conn)  # nothing of the entry stays, whatever apply() makes of the error
            raise
        finally:
            functions.values = None
            _reset_pragmas(conn, pragmas)
        database.applied_index = index
        if error is not None:
            return {"error": error}
        return {"results": results}

    # -- group commit ---------------------------------------------------------------------

    def _apply_group(self, entry, index):
        """Apply the transactions of a group entry in order; each keeps its own outcome.

        Consecutive transactions on one database with the same session
        pragmas form a run; a run shares one SQLite transaction (a savepoint
        each) when that cannot change any transaction's outcome, and
        otherwise each commits alone, exactly as a single entry would.
        """
        parts = [decode_entry(part) for part in entry["parts"]]
        for part in parts:  # all of them before any: a group applies whole or waits whole
            _check_known(part, index)
            if part.get("kind") != TX:
                raise ApplyFailed(f"entry {index} groups an entry of kind {part.get('kind')!r}, where this node "
                                  "knows groups of transactions only: upgrade this node")
        results = []
        for run in _runs(parts):
            results.extend(self._apply_run(run, index))
        return {"parts": results}

    def _apply_run(self, run, index):
        database = self.databases.get(run[0]["db"])
        conn = database.apply_connection()
        if database.applied_index > index:
            return [{"replayed": True}] * len(run)
        # Ids stored with this index: transactions of this group already in
        # this file (an earlier run, or an apply cut short by a crash).
        recorded = applied_ids_at(conn, index) if database.applied_index == index else []
        results = [{"replayed": True} if sub["id"] in recorded else None for sub in run]
        todo = [sub for sub, result in zip(run, results) if result is None]
        shared = None
        if len(todo) > 1 and self._may_share_transaction(database, conn, todo):
            shared = self._apply_shared(database, conn, todo, index, recorded)
        if shared is None:
            shared = []
            for sub in todo:
                recorded = recorded + [sub["id"]]
                shared.append(self._apply_alone(database, conn, sub, index, recorded))
        outcomes = iter(shared)
        return [result if result is not None else next(outcomes) for result in results]

    def _may_share_transaction(self, database, conn, subs):
        """Would one SQLite transaction give every transaction of ``subs`` its own outcome?

        Only a deferred foreign key could tell them apart: its violation is
        reported at COMMIT, which a transaction sharing a SQLite transaction
        never reaches alone. So: no deferred constraints in the schema (or
        foreign keys off for these transactions), and none deferred by pragma.
        """
        if any(_DEFERS_FOREIGN_KEYS.search(stmt[1]) for sub in subs for stmt in sub["stmts"]):
            return False
        if not _changed_pragmas(subs[0].get("pragmas") or {}).get("foreign_keys", 1):
            return True
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        cached = self._deferred_constraints.get(database.name)
        if cached is None or cached[0] != version:
            deferred = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE sql LIKE '%DEFERRED%'"
            ).fetchone()[0] > 0
            cached = self._deferred_constraints[database.name] = (version, deferred)
        return not cached[1]

    def _apply_shared(self, database, conn, subs, index, recorded):
        """Apply ``subs`` in one SQLite transaction, each inside a savepoint of its own.

        Returns their outcomes, or None when the run has to be applied one
        transaction at a time instead (the schema changed inside it, SQLite
        ended the transaction on an error, an environmental error): nothing
        of it is kept then, and the caller does that.
        """
        functions = database.apply_functions
        pragmas = subs[0].get("pragmas") or {}
        outcomes = []
        try:
            _set_pragmas(conn, pragmas)
            version = conn.execute("PRAGMA schema_version").fetchone()[0]
            conn.execute("BEGIN IMMEDIATE")
            for sub in subs:
                values = FixedValues(sub["now"], sub["seed"])
                functions.values = values
                conn.execute("SAVEPOINT dqcluster_entry")
                try:
                    outcomes.append({"results": _run_statements(conn, sub, values, index)})
                except sqlite3.Error as exc:
                    if is_environmental(exc) or not conn.in_transaction:
                        return None
                    conn.execute("ROLLBACK TO dqcluster_entry")
                    outcomes.append({"error": _statement_error(exc, values)})
                conn.execute("RELEASE dqcluster_entry")
                if conn.execute("PRAGMA schema_version").fetchone()[0] != version:
                    return None
            record_applied(conn, " ".join(recorded + [sub["id"] for sub in subs]), index)
            conn.execute("COMMIT")
        except Diverged as exc:
            rollback_quietly(conn)
            self._mark_diverged(str(exc))
            raise ApplyFailed(str(exc)) from None
        except (sqlite3.Error, MemoryError):
            return None
        finally:
            rollback_quietly(conn)  # a no-op after COMMIT
            functions.values = None
            _reset_pragmas(conn, pragmas)
        database.applied_index = index
        return outcomes

    def _apply_checkpoint(self, entry):
        upto = entry["upto"]
        ours = self.hash_history.get(upto)
        if ours is not None and ours == entry["hash"]:
            self.last_checkpoint = upto
        if ours is not None and ours != entry["hash"]:
            self._mark_diverged(
                f"replica diverged: at index {upto} the leader's history hash is {bytes(entry['hash']).hex()[:16]} "
                f"and this node's is {ours.hex()[:16]}"
            )
        return {}

    def _mark_diverged(self, message):
        if self.diverged is None:
            logger.critical("%s; this node stops serving queries. Restore it from a snapshot: "
                            "stop it, empty its data dir and start it again.", message)
            self.diverged = message
            self.databases.withdraw_instance()

    def _apply_drop(self, entry, index):
        name = entry["db"]
        if self.databases.exists(name):
            database = self.databases.get(name)
            if database.read_applied_index() >= index:
                return {"replayed": True}
            self.databases.remove_files(name)
        return {}

    def _apply_clone(self, entry, index):
        source, target = entry["src"], entry["dst"]
        if source == target:
            # Refused by leaders since this check; one in an older log must not
            # remove the database's files before copying them onto themselves.
            return {"error": error_to_wire(sqlite3.ProgrammingError(f"cannot clone database {source!r} onto itself"))}
        if self.databases.exists(target):
            existing = self.databases.get(target)
            if existing.read_applied_index() >= index:
                return {"replayed": True}
            self.databases.remove_files(target)
        source_conn = self.databases.get(source).apply_connection()
        target_path = self.databases.path_for(target)
        dest = sqlite3.connect(target_path)
        try:
            source_conn.backup(dest)
            record_applied(dest, entry.get("id", ""), index)
            dest.commit()
        finally:
            dest.close()
        return {}

    def _apply_member(self, entry):
        address = entry["raft"]
        if entry.get("remove"):
            self.members.pop(address, None)
            self.entry_formats.pop(address, None)
            return {}
        self.members[address] = entry["client"]
        applies = entry.get("applies")
        if isinstance(applies, int) and applies >= FIRST_FORMAT:
            self.entry_formats[address] = applies
        else:
            # Announced by code that does not say (an older release, or the
            # leader adding a member whose code it cannot know): unknown
            # again, even if an earlier announcement said more.
            self.entry_formats.pop(address, None)
        return {}

    # -- snapshots (pysyncobj serializer hooks) ----------------------------------------

    def write_snapshot(self, filename, raft_data):
        """Write a consistent copy of every database plus the Raft data pysyncobj hands us."""
        self.begin_snapshot(raft_data).write(filename)

    def begin_snapshot(self, raft_data):
        """Take the state as it is now (on the Raft thread); see :class:`PendingSnapshot`.

        Copying gigabytes takes seconds: done here, on the Raft thread, it
        stopped the leader's heartbeats and the followers elected another
        leader at every log compaction (measured with 300 MB of data).
        """
        entry1, entry0, cluster = raft_data
        header = {
            "format": SNAPSHOT_FORMAT,
            "index": self.last_index,
            "hash": self.hash,
            "members": dict(self.members),  # a copy: entries applied while it is written change ours
            "entry_formats": dict(self.entry_formats),  # (a node of an older release ignores the key)
            "raft": {
                "entry1": [bytes(entry1[0]), entry1[1], entry1[2]],
                "entry0": [bytes(entry0[0]), entry0[1], entry0[2]],
                "cluster": sorted(node.address for node in cluster),
            },
            "dbs": {},
            # Checked before anything is installed (see _verify_snapshot); a
            # node of an older release ignores the key.
            "sha256": {},
        }
        readers = []
        try:
            for name in self.databases.names():
                database = self.databases.get(name)
                readers.append((name, database.pinned_reader()))
                header["dbs"][name] = database.applied_index
        except BaseException:
            for _, reader in readers:
                reader.close()
            raise
        return PendingSnapshot(header, readers, self.data_dir, self.fsync)

    def check_snapshot(self, filename):
        """ValueError naming what is wrong if the snapshot file is damaged (a transfer lost bytes of it)."""
        _verify_snapshot(filename)
        self._checked_snapshot = _file_identity(filename)

    _checked_snapshot = None

    def read_snapshot(self, filename, make_node):
        """Install a snapshot's databases where they are newer than ours; return pysyncobj's data.

        A damaged file installs nothing: it is read through once and checked
        before the first database is replaced, unless ``check_snapshot``
        just checked this very file (renamed since, but not rewritten).
        """
        if self._checked_snapshot is None or self._checked_snapshot != _file_identity(filename):
            _verify_snapshot(filename)
        self._checked_snapshot = None
        with open(filename, "rb") as src:
            header = msgpack.unpackb(_read_block(src), raw=False, strict_map_key=False)
            if header.get("format") != SNAPSHOT_FORMAT:
                raise ValueError(f"unknown snapshot format {header.get('format')!r}")
            snapshot_dbs = header["dbs"]
            for _ in snapshot_dbs:
                name = _read_block(src).decode()
                (size,) = struct.unpack(">Q", src.read(8))
                ours = self.databases.get(name).read_applied_index() if self.databases.exists(name) else -1
                if ours >= snapshot_dbs[name]:
                    src.seek(size, os.SEEK_CUR)
                    continue
                with tempfile.TemporaryDirectory(dir=self.data_dir, prefix=INSTALL_SCRATCH) as scratch:
                    copy_path = os.path.join(scratch, name)
                    with open(copy_path, "wb") as out:
                        _copy_exactly(src, out, size)
                    self.databases.get(name).replace_contents(copy_path)
        for name in self.databases.names():
            if name not in snapshot_dbs and self.databases.get(name).read_applied_index() <= header["index"]:
                # Dropped before the snapshot was taken.
                self.databases.remove_files(name)
        self.hash = bytes(header["hash"])
        self.last_index = self.last_data_index = header["index"]
        self.hash_history.clear()
        self.hash_history[self.last_index] = self.hash
        self.members = dict(header["members"])
        self.entry_formats = dict(header.get("entry_formats", {}))  # (absent: written by an older release)
        raft = header["raft"]
        entry1 = (bytes(raft["entry1"][0]), raft["entry1"][1], raft["entry1"][2])
        entry0 = (bytes(raft["entry0"][0]), raft["entry0"][1], raft["entry0"][2])
        cluster = {make_node(address) for address in raft["cluster"]}
        for listener in self.listeners:
            listener("snapshot", header)
        return entry1, entry0, cluster

    def close(self):
        self.databases.close()


class PendingSnapshot:
    """A snapshot taken, not yet written: every database held at one Raft index.

    Each database is read through a connection of its own that stays inside
    one read transaction, so the Raft thread goes on applying entries while
    another thread writes the copy. ``write`` (or ``abandon``) releases them.
    """

    BACKUP_PAGES = 4096  # pages copied between two looks at ``cancelled``

    def __init__(self, header, readers, data_dir, fsync):
        self.header = header
        self._readers = readers
        self._data_dir = data_dir
        self._fsync = fsync
        self._released = False

    def write(self, filename, cancelled=lambda: False):
        """Write the snapshot file; :class:`SnapshotCancelled` once ``cancelled()`` is true."""
        if self._released:
            raise SnapshotCancelled()
        header = dict(self.header, sha256={})
        try:
            with tempfile.TemporaryDirectory(dir=self._data_dir, prefix=SNAPSHOT_SCRATCH) as scratch:
                copies = []
                for name, reader in self._readers:
                    copy_path = os.path.join(scratch, name)
                    dest = sqlite3.connect(copy_path)
                    try:
                        reader.backup(dest, pages=self.BACKUP_PAGES, progress=lambda *_: _stop_if(cancelled))
                    finally:
                        dest.close()
                    with open(copy_path, "rb") as copy:
                        header["sha256"][name] = hashlib.file_digest(copy, "sha256").digest()
                    copies.append((name, copy_path))
                _stop_if(cancelled)
                with open(filename, "wb") as out:
                    _write_block(out, msgpack.packb(header, use_bin_type=True))
                    for name, copy_path in copies:
                        _write_block(out, name.encode())
                        size = os.path.getsize(copy_path)
                        out.write(struct.pack(">Q", size))
                        with open(copy_path, "rb") as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    if self._fsync:
                        os.fsync(out.fileno())
        finally:
            self.abandon()

    def abandon(self):
        """Release the databases without writing anything (idempotent)."""
        self._released = True
        readers, self._readers = self._readers, []
        for _, reader in readers:
            reader.close()


class SnapshotCancelled(Exception):
    """A snapshot being written was no longer wanted (the node installed a newer one)."""


def _stop_if(cancelled):
    if cancelled():
        raise SnapshotCancelled()


def _remove_scratch_left_behind(data_dir):
    # A node killed while it wrote or installed a snapshot leaves its copies
    # of the databases behind (as large as they are); nothing reads them.
    try:
        entries = os.listdir(data_dir)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith((SNAPSHOT_SCRATCH, INSTALL_SCRATCH)):
            shutil.rmtree(os.path.join(data_dir, entry), ignore_errors=True)


def _verify_snapshot(filename):
    """ValueError naming what is wrong if the snapshot file is not whole: its sizes and checksums."""
    with open(filename, "rb") as src:
        try:
            header = msgpack.unpackb(_read_block(src), raw=False, strict_map_key=False)
            checksums = header.get("sha256") or {}
            for _ in header["dbs"]:
                name = _read_block(src).decode()
                (size,) = struct.unpack(">Q", src.read(8))
                digest = _digest_of_next(src, size)
                expected = checksums.get(name)
                if expected is not None and digest.digest() != bytes(expected):
                    raise ValueError(f"database {name!r} in it does not match its checksum")
        except (struct.error, UnicodeDecodeError, msgpack.UnpackException, ValueError, KeyError,
                TypeError, AttributeError) as exc:
            raise ValueError(f"snapshot file {filename} is damaged ({exc}); nothing of it was installed") from None
        if src.read(1):
            raise ValueError(f"snapshot file {filename} is damaged (bytes after its last database); "
                             "nothing of it was installed")


def _file_identity(filename):
    # A rename keeps it; writing to the file changes its size or time.
    status = os.stat(filename)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _digest_of_next(src, size):
    """The SHA-256 of the next ``size`` bytes of ``src``; ValueError if it has fewer."""
    digest = hashlib.sha256()
    for chunk in _next_chunks(src, size):
        digest.update(chunk)
    return digest


def _write_block(out, data):
    out.write(struct.pack(">I", len(data)))
    out.write(data)


def _read_block(src):
    (size,) = struct.unpack(">I", src.read(4))
    return src.read(size)


def _copy_exactly(src, out, size):
    for chunk in _next_chunks(src, size):
        out.write(chunk)


def _next_chunks(src, size):
    """The next ``size`` bytes of ``src``, a MiB at a time; ValueError if it has fewer."""
    remaining = size
    while remaining:
        chunk = src.read(min(remaining, 1 << 20))
        if not chunk:
            raise ValueError("the snapshot file ends inside a database's copy")
        yield chunk
        remaining -= len(chunk)


SESSION_PRAGMA_DEFAULTS = {"foreign_keys": 1, "legacy_alter_table": 0, "recursive_triggers": 0}


def _changed_pragmas(pragmas):
    # Only what differs from the apply connection's defaults costs a statement.
    return {
        name: int(value) for name, value in pragmas.items()
        if name in SESSION_PRAGMA_DEFAULTS and int(value) != SESSION_PRAGMA_DEFAULTS[name]
    }


def _set_pragmas(conn, pragmas):
    for name, value in _changed_pragmas(pragmas).items():
        conn.execute(f"PRAGMA {name} = {value}")


def _reset_pragmas(conn, pragmas):
    for name in _changed_pragmas(pragmas):
        conn.execute(f"PRAGMA {name} = {SESSION_PRAGMA_DEFAULTS[name]}")


def rollback_quietly(conn):
    """Roll back if a transaction is open; a connection already rolled back by SQLite is fine."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
