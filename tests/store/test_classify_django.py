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
