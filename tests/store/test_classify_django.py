"""Statements Django's sqlite3 backend issues, as the node's classifier must see them."""

import sqlite3

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.classify import Classifier
from django_dqcluster.store.databases import APPLIED_TABLE


@pytest.fixture
def conn():
    conn = sqlite3.connect(":memory:")
    conn.execute('CREATE TABLE "app_a" ("id" integer PRIMARY KEY, "x" integer)')
    yield conn
    conn.close()


@pytest.mark.parametrize("sql", [
    # The schema editor's table rebuild ends with a rename; SQLite's rename
    # rewrites sqlite_temp_master as well, which is not a temp-table write.
    'ALTER TABLE "app_a" RENAME TO "app_b"',
    'ALTER TABLE "app_a" RENAME COLUMN "x" TO "y"',
    'ALTER TABLE "app_a" ADD COLUMN "z" integer NULL',
])
def test_alter_table_is_a_replicated_write(conn, sql):
    info = Classifier()(conn, sql, None)
    assert info.writes
    assert info.refusal() is None


def test_temporary_tables_are_still_refused(conn):
    info = Classifier()(conn, "CREATE TEMP TABLE t (x)", None)
    assert "temporary tables" in info.refusal()


@pytest.mark.parametrize("sql", [
    'EXPLAIN QUERY PLAN SELECT * FROM "app_a"',
    'EXPLAIN SELECT * FROM "app_a"',
    'EXPLAIN QUERY PLAN DELETE FROM "app_a"',  # describes a write, runs nothing
])
def test_explain_is_a_read(conn, sql):
    info = Classifier()(conn, sql, None)
    assert not info.writes
    assert info.refusal() is None


VIRTUAL_TABLE_SCHEMA = """
    CREATE TABLE "app_a" ("id" integer PRIMARY KEY, "x" integer);
    CREATE VIRTUAL TABLE shapes USING rtree(id, lo, hi);
    CREATE VIRTUAL TABLE docs USING fts5(body);
"""
VIRTUAL_TABLE_READS = [
    "SELECT value FROM json_each('[1, 2]')",  # Django's JSONField lookups use it
    "SELECT name FROM pragma_table_info('app_a')",
    "SELECT count(*) FROM pragma_database_list",
    "SELECT count(*) FROM dbstat",
    "SELECT count(*) FROM shapes WHERE lo < 5",
    "SELECT count(*) FROM docs WHERE docs MATCH 'word'",
]


@pytest.fixture
def unused_conn(tmp_path):
    """A connection to a database another connection made: it has compiled nothing yet, as a node's."""
    path = str(tmp_path / "db.sqlite3")
    maker = sqlite3.connect(path)
    maker.executescript(VIRTUAL_TABLE_SCHEMA)
    maker.close()
    conn = sqlite3.connect(path)
    yield conn
    conn.close()


@pytest.mark.parametrize("sql", VIRTUAL_TABLE_READS)
def test_a_read_of_a_virtual_table_is_a_read_the_first_time_a_connection_compiles_one(unused_conn, sql):
    """SQLite sets a virtual table up as a connection first compiles it, and what that does reached the
    authorizer as the statement's own actions (the catalog updated; rtree preparing INSERTs and
    DELETEs): the read was taken for a write (a log entry; refused for dbstat and in read-only
    sessions), and the verdict cached."""
    info = Classifier()(unused_conn, sql, None)
    assert not info.writes
    assert info.refusal() is None


def test_such_reads_add_nothing_to_the_log(embedded_node):
    conn = dbapi.connect(node=embedded_node, isolation_level=None)
    for statement in VIRTUAL_TABLE_SCHEMA.split(";")[:-1]:
        conn.execute(statement)
    database = embedded_node.state_machine.databases.get("default")
    before = database.applied_index
    for sql in VIRTUAL_TABLE_READS:
        assert conn.execute(sql).fetchall()
    assert database.applied_index == before
    conn.close()


def test_a_table_of_the_schema_named_like_a_node_local_one_is_an_ordinary_table(conn):
    """dbstat's name is free to take: a table of the schema by that name hides SQLite's own."""
    conn.execute("CREATE TABLE dbstat (v)")
    info = Classifier()(conn, 'INSERT INTO "app_a" (x) SELECT count(*) FROM dbstat', None)
    assert info.writes and info.refusal() is None
    refused = Classifier()(conn, 'INSERT INTO "app_a" (x) SELECT count(*) FROM sqlite_stmt', None)
    assert "sqlite_stmt cannot be used in a statement that writes" in refused.refusal()


def test_executemany_without_parameter_sets_does_nothing(embedded_conn):
    embedded_conn.execute("CREATE TABLE sq (x integer, y integer)")
    cursor = embedded_conn.cursor()
    cursor.executemany("INSERT INTO sq (x, y) VALUES (?, ?)", [])
    assert cursor.rowcount == 0
    assert embedded_conn.execute("SELECT count(*) FROM sq").fetchone() == (0,)
    embedded_conn.execute("BEGIN")
    cursor.executemany("INSERT INTO sq (x, y) VALUES (?, ?)", iter([]))
    embedded_conn.execute("COMMIT")
    assert embedded_conn.execute("SELECT count(*) FROM sq").fetchone() == (0,)
    rows = embedded_conn.execute('EXPLAIN QUERY PLAN SELECT * FROM sq').fetchall()
    assert rows


def test_compiles_against_the_schema_other_connections_changed(embedded_conn):
    """The table rebuild of Django's schema editor, in autocommit and then in a transaction.

    DDL is applied by the node's apply connection; the read and scratch
    connections that classify the next statement must not compile it against
    their stale cached schema ("there is already another table ...").
    """
    conn = embedded_conn
    conn.execute('CREATE TABLE "a" ("id" integer PRIMARY KEY, "x" integer)')
    conn.execute('CREATE TABLE "new__a" ("id" integer PRIMARY KEY, "x" integer, "y" integer)')
    conn.execute('INSERT INTO "new__a" ("id", "x") SELECT "id", "x" FROM "a"')
    conn.execute('DROP TABLE "a"')
    conn.execute('ALTER TABLE "new__a" RENAME TO "a"')
    conn.execute("BEGIN")
    conn.execute('CREATE TABLE "new__a" ("id" integer PRIMARY KEY)')
    conn.execute("COMMIT")
    conn.execute('ALTER TABLE "new__a" RENAME TO "b"')
    conn.execute("BEGIN")
    conn.execute('CREATE TABLE "new__a" ("id" integer PRIMARY KEY)')  # the scratch connection saw new__a before
    conn.execute("ROLLBACK")
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
    assert {"a", "b"} <= names and "new__a" not in names


def test_a_read_keeps_its_verdict_without_recompiling_and_writes_still_see_new_triggers(conn):
    """Reads skip the schema check (a SELECT cannot write under any schema); writes do not."""
    classify = Classifier()
    select = 'SELECT "x" FROM "app_a" WHERE "id" = ?'
    insert = 'INSERT INTO "app_a" ("x") VALUES (?)'
    assert classify(conn, select, [1]).writes is False
    assert classify(conn, insert, [1]).refusal() is None
    conn.execute('CREATE TABLE "audit" ("token" text)')
    conn.execute('CREATE TRIGGER "t" AFTER INSERT ON "app_a" BEGIN INSERT INTO "audit" VALUES (sqlite_version()); END')
    compiled = []
    conn.set_trace_callback(compiled.append)
    assert classify(conn, select, [2]).writes is False
    assert compiled == []  # served from the verdicts of reads: not a statement run on the connection
    # The same INSERT, compiled again under the new schema, now fires a trigger whose
    # result would differ from node to node: refused.
    assert "sqlite_version" in classify(conn, insert, [1]).refusal()
    conn.set_trace_callback(None)


@pytest.mark.parametrize("made_meanwhile, statement, name", [
    ('CREATE TABLE "meanwhile" ("x" integer)', 'DROP TABLE IF EXISTS "meanwhile"', "meanwhile"),
    ('CREATE INDEX "meanwhile_x" ON "anchor" ("x")', 'DROP INDEX IF EXISTS "meanwhile_x"', "meanwhile_x"),
    ('CREATE VIEW "meanwhile_v" AS SELECT 1', 'DROP VIEW IF EXISTS "meanwhile_v"', "meanwhile_v"),
])
def test_a_drop_if_exists_that_a_stale_schema_compiles_to_nothing_is_still_replicated(
        embedded_node, made_meanwhile, statement, name):
    """A session's read connection parses the schema when it first reads, and classifies
    the session's next statements against it. ``DROP ... IF EXISTS`` of an object made
    since compiles to nothing there: no write action. It must still go through the log;
    it used to run on the read connection itself, changing one node's file (found once
    read connections could not write)."""
    from django_dqcluster import dbapi

    from .conftest import EMBEDDED_SECRET

    def connect():
        return dbapi.connect(embedded_node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=5)

    stale, other = connect(), connect()
    try:
        other.execute('CREATE TABLE IF NOT EXISTS "anchor" ("x" integer)')
        assert stale.execute("SELECT count(*) FROM sqlite_master").fetchone()  # its reader parses the schema now
        other.execute(made_meanwhile)
        before = other.execute(f"SELECT count(*) FROM {APPLIED_TABLE}").fetchone()[0]
        stale.execute(statement)
        assert other.execute(f"SELECT count(*) FROM {APPLIED_TABLE}").fetchone()[0] == before + 1  # an entry
        assert name not in {row[0] for row in other.execute("SELECT name FROM sqlite_master")}
    finally:
        stale.close()
        other.close()
