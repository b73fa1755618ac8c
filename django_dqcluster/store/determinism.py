"""Making replicated SQL deterministic.

Every node executes every replicated statement, so a statement must produce
the same effects everywhere (ARCHITECTURE invariant 3). Two classes of SQL
functions break that:

* values that change from call to call or node to node but can be *fixed*:
  ``random()``, ``randomblob()``, ``'now'`` in the date/time functions,
  ``CURRENT_TIMESTAMP``/``CURRENT_DATE``/``CURRENT_TIME`` (also as column
  DEFAULTs). The leader fixes a timestamp and a seed in the log entry, and
  every connection that executes replicated SQL overrides those functions
  with versions that read them (SQLite lets application functions override
  built-ins, including the ones column defaults call).
* values that depend on the node and cannot be fixed (``sqlite_version()``,
  ``'localtime'``...). A statement that writes and uses them is refused with
  an error that names the function, before it reaches the log.
"""

import datetime
import hashlib
import random
import sqlite3
import threading

from .value_size import length_limit_of

# Functions a replicated statement may not call, with the reason we give.
REFUSED_FUNCTIONS = {
    "sqlite_version": "returns the SQLite version of whichever node runs it",
    "sqlite_source_id": "returns the SQLite build of whichever node runs it",
    "sqlite_compileoption_get": "depends on how each node's SQLite was built",
    "sqlite_compileoption_used": "depends on how each node's SQLite was built",
    "load_extension": "loads node-local code",
    "total_changes": "counts changes on a node's own connection since it opened",
    "last_insert_rowid": "reads per-connection state that differs between nodes; use RETURNING or cursor.lastrowid",
    "changes": "reads per-connection state that differs between nodes; use cursor.rowcount",
}

# Refused functions whose answer depends only on the SQLite library, so a
# private connection can still answer them for reads.
_LIBRARY_FUNCTIONS = ("sqlite_version", "sqlite_source_id", "sqlite_compileoption_get", "sqlite_compileoption_used")

# Time modifiers that depend on the node's local time zone.
_NODE_LOCAL_MODIFIERS = {"localtime", "utc"}

_DATE_FUNCTIONS = ("date", "time", "datetime", "julianday", "unixepoch", "strftime")


class NonDeterministicSQL(sqlite3.OperationalError):
    """A replicated statement used something whose value differs between nodes."""


def refusal_message(function):
    return (
        f"function {function}() cannot be used in a statement that writes: "
        f"it {REFUSED_FUNCTIONS[function]}, so replicas would diverge"
    )


class FixedValues:
    """The values the leader fixed for one log entry: wall-clock time and a random seed."""

    __slots__ = ("now", "seed", "_ordinal", "_rng", "error", "writing")

    def __init__(self, now, seed):
        self.now = float(now)
        self.seed = int(seed)
        self._ordinal = 0
        self._rng = None
        self.error = None
        # Whether the running statement writes (replayed on every node). The
        # apply connection only ever runs such statements.
        self.writing = True

    @classmethod
    def fresh(cls):
        return cls(datetime.datetime.now(datetime.timezone.utc).timestamp(), random.getrandbits(63))

    def start_statement(self, ordinal):
        """Reset the generator for the ``ordinal``-th statement of the entry.

        Seeding per statement (not per entry) means reads that the leader runs
        inside a transaction, and which are not replayed, cannot shift the
        random values of the writes that are. The generator is made on first
        use: most statements never call random().
        """
        self._ordinal = ordinal
        self._rng = None
        self.error = None

    @property
    def rng(self):
        if self._rng is None:
            digest = hashlib.blake2b(f"{self.seed}:{self._ordinal}".encode(), digest_size=8).digest()
            self._rng = random.Random(int.from_bytes(digest, "big"))
        return self._rng

    def now_text(self):
        moment = datetime.datetime.fromtimestamp(self.now, datetime.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


class DeterministicFunctions:
    """Installs the overriding functions on a connection; ``values`` is swapped per entry.

    A connection with ``values = None`` behaves like plain SQLite (the
    overrides pass through to the real functions with the real clock).
    """

    def __init__(self, connection):
        self.values = None
        self._local = threading.local()
        self._length_limit = length_limit_of(connection)
        self._install(connection)

    # A private in-memory connection evaluates the real built-ins with our
    # fixed inputs, so formatting and modifiers behave exactly as in SQLite.
    def _builtins(self):
        helper = getattr(self._local, "helper", None)
        if helper is None:
            helper = self._local.helper = sqlite3.connect(":memory:", check_same_thread=False)
        return helper

    def _install(self, connection):
        connection.create_function("random", 0, self._random)
        connection.create_function("randomblob", 1, self._randomblob)
        # Django's SQLite backend registers RAND() with random.random; a
        # replicated RAND() must come from the entry's seed as well.
        connection.create_function("rand", 0, self._rand)
        connection.create_function("current_timestamp", 0, lambda: self._call("datetime", ()))
        connection.create_function("current_date", 0, lambda: self._call("date", ()))
        connection.create_function("current_time", 0, lambda: self._call("time", ()))
        for name in _DATE_FUNCTIONS:
            connection.create_function(name, -1, self._date_function(name))
        # Node-dependent functions can hide where the authorizer does not look
        # (column DEFAULT expressions): refuse them when a write evaluates them.
        for name in _LIBRARY_FUNCTIONS:
            connection.create_function(name, -1, self._library_function(name))

    def _library_function(self, name):
        def evaluate(*args):
            values = self.values
            if values is not None and values.writing:
                values.error = refusal_message(name)
                raise NonDeterministicSQL(values.error)
            placeholders = ", ".join("?" * len(args))
            return self._builtins().execute(f"SELECT {name}({placeholders})", args).fetchone()[0]
        return evaluate

    def _date_function(self, name):
        def evaluate(*args):
            return self._call(name, args)
        return evaluate

    def _call(self, name, args):
        values = self.values
        args = list(args)
        if values is not None:
            time_index = 1 if name == "strftime" else 0
            if len(args) <= time_index:
                args.append("now")
            for modifier in args[time_index + 1:]:
                if isinstance(modifier, str) and modifier.strip().lower() in _NODE_LOCAL_MODIFIERS:
                    values.error = (
                        f"{name}(..., '{modifier}') depends on the time zone of whichever node runs it; "
                        "convert in the application instead"
                    )
                    raise NonDeterministicSQL(values.error)
            value = args[time_index]
            if isinstance(value, str) and value.strip().lower() == "now":
                args[time_index] = values.now_text()
        elif name != "strftime" and not args:
            args.append("now")
        placeholders = ", ".join("?" * len(args))
        return self._builtins().execute(f"SELECT {name}({placeholders})", args).fetchone()[0]

    def _random(self):
        if self.values is None:
            return random.getrandbits(64) - (1 << 63)
        return self.values.rng.getrandbits(64) - (1 << 63)

    def _rand(self):
        if self.values is None:
            return random.random()
        return self.values.rng.random()

    def _randomblob(self, size):
        size = max(int(size or 0), 1)
        if size > self._length_limit():
            # SQLite's "string or blob too big", as its own randomblob() says,
            # before the bytes are made: randomblob(200000000) took 400 MB and
            # 0.6 s on every node before SQLite refused its result.
            raise OverflowError(f"randomblob({size})")
        if self.values is None:
            return random.randbytes(size)
        return self.values.rng.randbytes(size)
