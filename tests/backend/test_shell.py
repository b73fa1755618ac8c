"""dbshell's program reads SQL the way the sqlite3 shell does, and runs it one statement at a time."""

import io

import pytest

from django_dqcluster import dbapi
from django_dqcluster.backend.shell import Shell, take_statements

from ..store.conftest import start_embedded_node


@pytest.fixture
def shell(tmp_path):
    node = start_embedded_node(tmp_path / "node")
    conn = dbapi.connect(node=node, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    yield Shell(conn, out=io.StringIO(), err=io.StringIO())
    conn.close()
    node.stop()


def values(shell):
    return [row[0] for row in shell.conn.execute("SELECT v FROM t ORDER BY id").fetchall()]


@pytest.mark.parametrize("text, statements, rest", [
    ("SELECT 1; SELECT 2;", ["SELECT 1;", "SELECT 2;"], ""),
    ("SELECT 'a;b'; SELECT 2", ["SELECT 'a;b';"], " SELECT 2"),
    ("-- not; the end\nSELECT 1;\n", ["-- not; the end\nSELECT 1;"], "\n"),
    ("CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t; END; ;",
     ["CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t; END;"], ""),
])
def test_a_semicolon_ends_a_statement_only_outside_strings_comments_and_trigger_bodies(text, statements, rest):
    assert take_statements(text) == (statements, rest)


def test_several_statements_on_one_line_run_in_order(shell):
    assert shell.interact(io.StringIO("INSERT INTO t (v) VALUES ('a;1'); INSERT INTO t (v) VALUES ('b');\n"))
    assert values(shell) == ["a;1", "b"]


def test_a_piped_script_reports_a_failed_statement_runs_the_rest_and_fails(shell):
    script = ("INSERT INTO t (v) VALUES ('a');\n"
              "INSERT INTO nosuch VALUES (1); INSERT INTO t (v)\n"
              "  VALUES ('b');\n"
              "-- a comment at the end is not a statement\n")
    assert shell.interact(io.StringIO(script)) is False
    assert "no such table: nosuch" in shell.err.getvalue()
    assert values(shell) == ["a", "b"]


def test_a_command_argument_may_hold_several_statements(shell):
    assert shell.run_script("INSERT INTO t (v) VALUES ('a'); SELECT count(*) AS n FROM t")
    assert values(shell) == ["a"]
    assert "(1 row)" in shell.out.getvalue()
