"""dbshell's program reads SQL the way the sqlite3 shell does, and runs it one statement at a time."""

import io
import signal

import pytest

from django_dqcluster import dbapi
from django_dqcluster.backend.shell import Shell, take_statements

from ..store.conftest import EMBEDDED_SECRET, start_embedded_node


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


def test_ctrl_c_stops_the_running_statement_and_the_shell_goes_on(tmp_path, monkeypatch):
    node = start_embedded_node(tmp_path / "node")
    conn = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None)
    shell = Shell(conn, out=io.StringIO(), err=io.StringIO())
    typed = iter([
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c; SELECT 'not run';",
        "SELECT 'after' || ' Ctrl-C';",
    ])

    def type_a_line(prompt):
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("builtins.input", type_a_line)
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)  # raises KeyboardInterrupt, as Ctrl-C
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        assert shell.interact(Terminal()) is False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        conn.close()
        node.stop()
    assert "Interrupted: the node cancels a read it was running" in shell.err.getvalue()
    assert "not run" not in shell.out.getvalue()
    assert "after Ctrl-C" in shell.out.getvalue()
