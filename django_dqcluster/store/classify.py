"""What a statement does, found by compiling it (``EXPLAIN``) under an authorizer.

The node must know, before running an autocommit statement, whether it only
reads (answer from a local connection) or writes (append a log entry), and
whether it calls a function that would make replicas diverge. SQLite's
authorizer reports every table write, DDL action, pragma and function call
while a statement is compiled; ``EXPLAIN`` compiles without executing.
The answer depends on the SQL text and the schema (triggers), so it is
cached per database and schema version.
"""

import functools
import re
import sqlite3
import threading

from .bound_values import emptied
from .databases import INTERNAL_TABLE_PREFIX
from .determinism import REFUSED_FUNCTIONS
from .regexp_time import TIMED_FUNCTIONS
from .statements import MAX_CACHED_SQL, cached_per_text, strip_leading_comments

_WRITE_ACTIONS = {
    sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_TRIGGER,
    sqlite3.SQLITE_CREATE_VIEW, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_DROP_INDEX,
    sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_DROP_VIEW,
    sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_ALTER_TABLE,
    sqlite3.SQLITE_REINDEX, sqlite3.SQLITE_ANALYZE, sqlite3.SQLITE_CREATE_VTABLE,
    sqlite3.SQLITE_DROP_VTABLE,
}
_TEMP_ACTIONS = {
    sqlite3.SQLITE_CREATE_TEMP_INDEX, sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
    sqlite3.SQLITE_CREATE_TEMP_VIEW, sqlite3.SQLITE_DROP_TEMP_INDEX, sqlite3.SQLITE_DROP_TEMP_TABLE,
    sqlite3.SQLITE_DROP_TEMP_TRIGGER, sqlite3.SQLITE_DROP_TEMP_VIEW,
}

#: Write actions whose second argument names the table they change (the first
#: names the table itself for the others, or the database for ALTER TABLE).
_ON_TABLE_ACTIONS = {
    sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_DROP_INDEX,
    sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_ALTER_TABLE,
}
#: Write actions that leave the store's bookkeeping as it was (statistics, an index rebuilt).
_HARMLESS_TO_BOOKKEEPING = {sqlite3.SQLITE_ANALYZE, sqlite3.SQLITE_REINDEX}

#: The temp schema's catalog, which ALTER TABLE updates alongside sqlite_master.
_TEMP_SCHEMA_TABLES = {"sqlite_temp_master", "sqlite_temp_schema"}

#: Connection-level pragmas a client session may set; they travel with its entries.
SESSION_PRAGMAS = ("foreign_keys", "legacy_alter_table", "recursive_triggers")
#: Pragmas whose argument names an object to inspect: reads.
_INSPECTING_PRAGMAS = {
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "foreign_key_check", "integrity_check", "quick_check", "table_list", "collation_list",
    "function_list", "pragma_list", "module_list", "database_list", "compile_options",
}
#: Pragmas whose table-valued form (``SELECT ... FROM pragma_table_info('t')``) reads
#: what follows from the schema and the rows alone, the same on every replica.
_REPLICA_INDEPENDENT_PRAGMAS = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "user_version", "application_id",
}
#: Virtual table modules that read what a node's connection holds for itself.
#: Measured: a transaction on the leader read 11 prepared statements and 14,070
#: unused bytes, and every node stored 1 and 14,071 (each applies on a
#: connection of its own); a node whose file has another page size (a snapshot
#: from a leader that had one) would store other numbers again.
_NODE_LOCAL_MODULES = {
    "dbstat": "the node's own file page by page (free space, offsets)",
    "sqlite_stmt": "the statements the node's own connection has prepared",
}
_PRAGMA_TABLE_READS = "the node's own file or connection (its path, page counts, caches, settings)"
# The module a virtual table's CREATE statement names.
_VIRTUAL_TABLE_MODULE = re.compile(r"\bUSING\s+[\"'`\[]?(\w+)", re.I)
#: Pragmas that change the database file and are replicated like writes.
_REPLICATED_PRAGMAS = {"user_version", "application_id"}
#: Pragmas that would make one replica's file differ from the others.
_REFUSED_PRAGMAS = {"incremental_vacuum", "optimize", "writable_schema"}


def _known_pragmas():
    conn = sqlite3.connect(":memory:")
    try:
        return frozenset(row[0] for row in conn.execute("PRAGMA pragma_list"))
    finally:
        conn.close()


#: Every pragma this SQLite knows (a table named pragma_<one of them> is its table-valued form).
_KNOWN_PRAGMAS = _known_pragmas()

# The pragma's name, then the rest, taken apart by hand: a pattern with a "\\s*"
# on each side of every optional piece backtracked polynomially on a long run
# of spaces (a node held for minutes by one statement).
_SESSION_PRAGMA_TEXT = re.compile(r"PRAGMA\s+(?:main\.)?(%s)\b(.*)" % "|".join(SESSION_PRAGMAS), re.I | re.S)
_PRAGMA_VALUE_TEXT = re.compile(r"[A-Za-z0-9_'\"]*")
# Matched after strip_leading_comments(): a pattern that skips comments itself
# and then fails to match backtracks exponentially in the length of the
# leading whitespace (22 spaces held a node's GIL for a second, its Raft
# thread's heartbeats with it).
_EXPLAIN = re.compile(r"EXPLAIN\b", re.I)
# Statements that write whatever the schema: replicated even when they turn out to change nothing.
_WRITING_STATEMENT = re.compile(r"(CREATE|DROP|ALTER|INSERT|REPLACE|UPDATE|DELETE|REINDEX|ANALYZE)\b", re.I)
# SQLite compiles VACUUM without consulting the authorizer, so it is found by its text.
_VACUUM = re.compile(r"VACUUM\b", re.I)
_VACUUM_PROBLEM = (
    "VACUUM is not supported: it would rewrite one node's file outside the replicated log, and VACUUM INTO "
    "would write a file on the node's host; for a copy of a database use `manage.py dqcluster_backup`"
)
#: Functions no client may call, in a read or a write: they reach into the node process itself.
_PROCESS_FUNCTIONS = {
    # One argument returns the address of a tokenizer module, two register one
    # at an address the caller gives: a read of the node's memory layout and
    # a way to make it call any address (SQLite builds with
    # ENABLE_FTS3_TOKENIZER, as Debian's, offer it).
    "fts3_tokenizer": "fts3_tokenizer() reads and sets code addresses inside the node process",
    "load_extension": "load_extension() loads code into the node process",
}
_PRAGMA_VALUES = {"on": 1, "true": 1, "yes": 1, "1": 1, "off": 0, "false": 0, "no": 0, "0": 0}


class Info:
    __slots__ = ("writes", "refused", "node_local", "problem", "timed")

    def __init__(self):
        self.writes = False
        # It may call a function whose time only the node that runs it first
        # can hold to a limit (regexp_time.py): the leader must run such a
        # write before it goes to the log.
        self.timed = False
        self.refused = None  # name of a node-dependent function
        # (table, what it reads) for a table whose rows are the node's own: a
        # pragma's table form, dbstat, sqlite_stmt
        self.node_local = None
        self.problem = None  # why the statement cannot run through the cluster at all

    def refusal(self):
        """The error message for a statement that may not run, or None."""
        if self.problem:
            return self.problem
        if self.writes and self.refused:
            from .determinism import refusal_message

            return refusal_message(self.refused)
        if self.writes and self.node_local:
            table, what = self.node_local
            return (f"{table} cannot be used in a statement that writes: it reads {what}, which differ from "
                    "one node's connection to another's, so what the leader ran and what each node stores would "
                    "differ")
        return None


@cached_per_text  # a pure function of the text, asked for every statement
def session_pragma(sql):
    """``PRAGMA foreign_keys = OFF`` -> ('foreign_keys', 0); a read -> ('foreign_keys', None); else None."""
    match = _SESSION_PRAGMA_TEXT.match(sql.strip())
    if not match:
        return None
    name, rest = match.group(1).lower(), match.group(2).strip()
    if rest.endswith(";"):
        rest = rest[:-1].rstrip()
    if rest.startswith("="):
        rest = rest[1:]
    elif rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1]
    elif rest.startswith("("):  # "(ON" without its parenthesis, as the pattern once took it
        rest = rest[1:]
    rest = rest.strip()
    if not _PRAGMA_VALUE_TEXT.fullmatch(rest):
        return None
    value = rest.strip("'\"").lower()
    if not value:
        return name, None
    if value not in _PRAGMA_VALUES:
        return None
    return name, _PRAGMA_VALUES[value]


class Classifier:
    def __init__(self, cache_size=4096):
        self._local = threading.local()
        self.classify = functools.lru_cache(maxsize=cache_size)(self._classify_uncached)
        self._cache_size = cache_size
        # (sql, params shape, scope) -> Info of statements found to only read.
        self._known_reads = {}

    def _classify_uncached(self, sql, params_shape, scope, schema_version):
        conn = self._local.conn
        info = Info()
        # EXPLAIN compiles against the schema the connection parsed last, and
        # never runs the check that would notice another connection changed
        # it (PRAGMA schema_version reads the cookie and reloads nothing): a
        # trigger created since was left out of the program, and what its
        # body does (a node-dependent function, the store's bookkeeping) went
        # unseen. A read of the catalog reloads it (this one also finds the
        # tables whose rows are the node's own); it runs once per statement
        # text and schema version (the cache above).
        node_local_tables = _node_local_tables(conn)
        timed_tables = _tables_calling_timed_functions(conn)

        def observe(action, arg1, arg2, dbname, source):
            if action in _WRITE_ACTIONS:
                if ((arg2 if action in _ON_TABLE_ACTIONS else arg1) or "").lower() in timed_tables:
                    # Its CHECK constraints, generated columns and indexes
                    # call the function with no word to the authorizer.
                    info.timed = True
                if dbname == "temp" and arg1 in _TEMP_SCHEMA_TABLES:
                    # ALTER TABLE ... RENAME rewrites references in the temp
                    # schema too (temp triggers/views); with no temp objects it
                    # changes nothing, and clients cannot create any.
                    pass
                elif dbname == "temp":
                    info.problem = "temporary tables exist per connection and cannot be replicated"
                else:
                    info.writes = True
                    internal = _internal_table(action, arg1, arg2)
                    if internal:
                        info.problem = (f"{internal} is the store's own bookkeeping (the tables named "
                                        f"{INTERNAL_TABLE_PREFIX}*): clients may read it, not change it")
            elif action in _TEMP_ACTIONS:
                info.problem = "temporary tables exist per connection and cannot be replicated"
            elif action == sqlite3.SQLITE_FUNCTION and arg2 and arg2.lower() in _PROCESS_FUNCTIONS:
                info.problem = f"{_PROCESS_FUNCTIONS[arg2.lower()]}; it is not allowed"
            elif action == sqlite3.SQLITE_FUNCTION and arg2 and arg2.lower() in REFUSED_FUNCTIONS:
                info.refused = arg2.lower()
            elif action == sqlite3.SQLITE_FUNCTION and arg2 and arg2.lower() in TIMED_FUNCTIONS:
                info.timed = True
            elif action == sqlite3.SQLITE_READ and arg1 and arg1[:7].lower() == "pragma_":
                name = arg1[7:].lower()
                if name in _KNOWN_PRAGMAS and name not in _REPLICA_INDEPENDENT_PRAGMAS:
                    info.node_local = (arg1, _PRAGMA_TABLE_READS)
            elif action == sqlite3.SQLITE_READ and arg1 and arg1.lower() in node_local_tables:
                info.node_local = (arg1, node_local_tables[arg1.lower()])
            elif action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
                info.problem = "ATTACH and DETACH are not supported: each database is replicated on its own"
            elif action == sqlite3.SQLITE_PRAGMA:
                _classify_pragma(info, (arg1 or "").lower(), arg2)
            return sqlite3.SQLITE_OK

        text = strip_leading_comments(sql)
        if _VACUUM.match(text):
            info.problem = _VACUUM_PROBLEM
            return info
        # EXPLAIN compiles a statement without running it; an EXPLAIN (QUERY
        # PLAN) statement is already one, and "EXPLAIN EXPLAIN" is a syntax error.
        explained = bool(_EXPLAIN.match(text))
        explain = sql if explained else "EXPLAIN " + sql
        # Compiled once before it is watched: the first time a connection
        # compiles a virtual table, SQLite sets it up, and what that does
        # reaches the authorizer as if the statement did it (the catalog
        # updated for json_each, a pragma's table form or dbstat; rtree
        # preparing its INSERTs and DELETEs). A read was taken for a write:
        # it went through the log, or was refused as one (a read-only
        # session, dbstat), and the verdict was cached.
        params = emptied(self._local.params)  # (what EXPLAIN keeps bound: see .bound_values)
        conn.execute(explain, params).close()
        conn.set_authorizer(observe)
        try:
            conn.execute(explain, params).close()
        finally:
            conn.set_authorizer(None)
        if explained:
            info.writes = False  # it only describes the statement; nothing runs
        elif _WRITING_STATEMENT.match(text):
            # Compiled against a connection's parsed schema, which may be older
            # than the file's, DROP ... IF EXISTS of an object made since compiles
            # to nothing: no write action. Run, it re-reads the schema and writes.
            info.writes = True
        return info

    def __call__(self, conn, sql, params, scope=""):
        """Classify ``sql`` using ``conn`` (a connection to database ``scope``) to compile it.

        Triggers change what a statement does, so the verdict is cached per
        database and schema version. Reading the schema version also makes
        the connection notice a schema changed by another connection (EXPLAIN
        alone never reads the database, so it would compile against a stale
        schema).
        """
        shape = len(params) if isinstance(params, (list, tuple)) else tuple(sorted(params)) if params else 0
        # A statement that compiled without a single write action reads under
        # any schema it still compiles against (a SELECT cannot fire a
        # trigger), so its verdict needs no schema version: this skips a
        # PRAGMA, i.e. a read transaction and its file locks, on every read.
        kept = len(sql) <= MAX_CACHED_SQL
        key = (sql, shape, scope)
        info = self._known_reads.get(key) if kept else None
        if info is not None:
            return info
        self._local.conn = conn
        self._local.params = params if params is not None else ()
        schema_version = conn.execute("PRAGMA schema_version").fetchone()[0]
        try:
            classify = self.classify if kept else self._classify_uncached
            info = classify(sql, shape, scope, schema_version)
        finally:
            self._local.conn = None
            self._local.params = None
        if kept and not info.writes and info.problem is None:
            if len(self._known_reads) >= self._cache_size:
                self._known_reads.clear()
            self._known_reads[key] = info
        return info


def _node_local_tables(conn):
    """The tables (by lower-case name) whose rows are the node's own, and what each reads.

    The eponymous dbstat and sqlite_stmt, unless a table of the schema takes
    the name, and the virtual tables created with their modules.
    """
    tables = dict(_NODE_LOCAL_MODULES)
    for name, sql in conn.execute(
        "SELECT lower(name), sql FROM sqlite_master WHERE type = 'table' "
        "AND (lower(name) IN ('dbstat', 'sqlite_stmt') OR sql LIKE 'CREATE VIRTUAL TABLE%')"
    ):
        tables.pop(name, None)
        module = _VIRTUAL_TABLE_MODULE.search(sql or "")
        if module and module.group(1).lower() in _NODE_LOCAL_MODULES:
            tables[name] = _NODE_LOCAL_MODULES[module.group(1).lower()]
    return tables


def _tables_calling_timed_functions(conn):
    """The tables (by lower-case name) whose definition or indexes may call a TIMED_FUNCTIONS function.

    Found by the name in the schema's text, so a column or table named after
    one counts too: its writes are only run first on the leader.
    """
    mentions = " OR ".join("sql LIKE ?" for _ in TIMED_FUNCTIONS)
    return {
        name for (name,) in conn.execute(
            f"SELECT DISTINCT lower(tbl_name) FROM sqlite_master WHERE type IN ('table', 'index') AND ({mentions})",
            [f"%{function}%" for function in sorted(TIMED_FUNCTIONS)],
        )
    }


def _internal_table(action, arg1, arg2):
    """The store's own table (or a name in its namespace) that a write action would change, or None.

    Each database keeps the index and ids of the entries applied to it in
    its own file; a client that rewrote them made every node skip the writes
    that followed (acknowledged, then lost at the next start), or apply an
    entry twice.
    """
    if action in _HARMLESS_TO_BOOKKEEPING:
        return None
    name = arg2 if action in _ON_TABLE_ACTIONS else arg1
    if name and name.lower().startswith(INTERNAL_TABLE_PREFIX):
        return name
    return None


def _classify_pragma(info, name, value):
    if name in SESSION_PRAGMAS or name in _INSPECTING_PRAGMAS:
        return
    if name in _REFUSED_PRAGMAS:
        info.problem = f"PRAGMA {name} would make this node's file differ from the other replicas"
    elif value is None:
        return
    elif name in _REPLICATED_PRAGMAS:
        info.writes = True
    else:
        info.problem = f"PRAGMA {name} is node-local configuration managed by the store; it cannot be set by a client"
