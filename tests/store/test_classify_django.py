"""Statements Django's sqlite3 backend issues, as the node's classifier must see them."""

import sqlite3

import pytest

from django_dqcluster.store.classify import Classifier


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
