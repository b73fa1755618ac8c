"""REGEXP on the store: Django's results, and no pattern that backtracks holds up a node or the cluster.

``(a|aa)+$`` against 40 characters matches for minutes. With Python's ``re``
(Django's REGEXP) the match held the node's GIL all that time, its Raft
thread's heartbeats with it; in a write, every node applied the entry at
once, and again after each restart. Now the matching releases the GIL and a
client's statement may spend at most ``max_regexp_seconds`` on it, on the node
that runs it first: the leader, for writes, before anything reaches the log.
"""

import threading

import pytest
from django.db.backends.sqlite3._functions import _sqlite_regexp

from django_dqcluster import dbapi
from django_dqcluster.backend.sql_functions import django_functions_hook, regexp
from django_dqcluster.store import NodeConfig
from django_dqcluster.store.config import ConfigError
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.regexp_time import MAX_PATTERN_CHARS, RegexpClock

from ..store.conftest import EMBEDDED_SECRET, STEADY_ELECTION_TIMEOUT, rows_on_every_node, start_embedded_node

LIMIT = 0.5
#: Minutes of matching with Python's re or the regex package, whatever the machine.
BACKTRACKING = "(a|aa)+$"
HARD_INPUT = "a" * 40 + "b"
OVER_THE_LIMIT = r"REGEXP matching took 0\.5 s in this statement, the store's limit \(max_regexp_seconds\)"


@pytest.mark.parametrize("pattern, string", [
    ("b", "abc"), ("^b", "abc"), ("a$", "a\n"), (r"\Aa\Z", "a\n"), (r"b(.).*b\1", "bxyzbx"),
    (r"b(.).*b\1", "bxyzby"), ("(?i)ABC", "xabcx"), (r"\d+", 123), (r"^\w+$", "ünïcode"), ("", "x"),
    ("x", None), (None, "x"), (r"(?<=a)b", "ab"), ("(?>a+)b", "aab"), ("a++b", "aab"), ("[a-c]{2}", "xbcx"),
])
def test_regexp_gives_what_djangos_regexp_gives(pattern, string):
    assert regexp(pattern, string, RegexpClock(LIMIT)) == _sqlite_regexp(pattern, string)


def test_posix_classes_and_unicode_properties_are_understood_where_re_had_no_such_syntax():
    # re took "[[:alpha:]]" for the set "[:alph" and a "]" (with a FutureWarning), and refused \p.
    clock = RegexpClock(LIMIT)
    assert regexp("^[[:alpha:]]+$", "abc", clock) is True
    assert regexp(r"^\p{Lu}", "Ünïcode", clock) is True


def test_a_match_over_the_clocks_limit_stops_and_marks_the_statement():
    clock = RegexpClock(LIMIT)
    with pytest.raises(TimeoutError):
        regexp(BACKTRACKING, HARD_INPUT, clock)
    assert clock.exceeded
    clock.start_statement()
    assert not clock.exceeded and regexp("a+$", HARD_INPUT[:-1], clock) is True


@pytest.mark.parametrize("pattern", [5, b"a"])
def test_a_pattern_django_could_not_use_fails_as_there(pattern):
    with pytest.raises(TypeError):
        _sqlite_regexp(pattern, "abc")
    with pytest.raises(TypeError):
        regexp(pattern, "abc", RegexpClock(LIMIT))


def test_a_statements_matches_share_its_limit():
    clock = RegexpClock(10.0)
    clock.spent = 9.9
    assert clock.remaining() == pytest.approx(0.1)
    assert RegexpClock(None).remaining() is None


@pytest.fixture
def node(tmp_path):
    node = start_embedded_node(tmp_path / "node", connection_hooks=[django_functions_hook],
                               max_regexp_seconds=LIMIT)
    conn = client(node)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO t (name) VALUES (?), ('abc')", (HARD_INPUT,))
    conn.close()
    yield node
    node.stop()


def applied_statements(node):
    """The SQL of every statement the node applies from the log from now on."""
    applied = []
    node.state_machine.listeners.append(
        lambda kind, entry: applied.extend(statement[1] for statement in entry.get("stmts") or ()))
    return applied


def client(node):
    return dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=5)


@pytest.fixture
def conn(node):
    """A client of ``node``, autocommit."""
    connection = client(node)
    yield connection
    connection.close()


def test_the_limit_holds_where_clients_statements_first_run_and_never_where_entries_are_applied(node):
    database = node.state_machine.databases.get("default")
    assert database.apply_connection().regexp_clock.limit is None
    assert database.scratch_connection().regexp_clock.limit == LIMIT
    reader = database.borrow_reader()
    try:
        assert reader.regexp_clock.limit == LIMIT
    finally:
        database.return_reader(reader)


def test_a_read_over_the_limit_fails_naming_it(conn):
    with pytest.raises(dbapi.OperationalError, match=OVER_THE_LIMIT):
        conn.execute("SELECT id FROM t WHERE name REGEXP ?", (BACKTRACKING,)).fetchall()
    assert conn.execute("SELECT name FROM t WHERE name REGEXP '^a.c$'").fetchall() == [("abc",)]


@pytest.mark.parametrize("sql", [
    f"UPDATE t SET name = 'matched' WHERE name REGEXP '{BACKTRACKING}'",
    f"DELETE FROM t WHERE name REGEXP '{BACKTRACKING}'",
    f"INSERT INTO t (name) SELECT 'copy' FROM t WHERE name REGEXP '{BACKTRACKING}'",
])
def test_an_autocommit_write_over_the_limit_fails_on_the_leader_and_never_reaches_the_log(node, sql, conn):
    applied = applied_statements(node)
    with pytest.raises(dbapi.OperationalError, match=OVER_THE_LIMIT):
        conn.execute(sql)
    assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == [(HARD_INPUT,), ("abc",)]
    conn.execute("INSERT INTO t (name) VALUES ('next')")  # the database's write lock is free
    assert applied == ["INSERT INTO t (name) VALUES ('next')"]


def test_a_pattern_too_long_to_compile_quickly_is_refused_naming_the_limit(conn):
    with pytest.raises(dbapi.OperationalError, match=r"a REGEXP pattern of 32,769 characters, over the store's "
                                                     r"limit of 32,768"):
        conn.execute("SELECT count(*) FROM t WHERE name REGEXP ?", ("a" * (MAX_PATTERN_CHARS + 1),)).fetchall()
    assert conn.execute("SELECT count(*) FROM t WHERE name REGEXP ?",
                        ("a" * MAX_PATTERN_CHARS,)).fetchone() == (0,)


def test_an_autocommit_write_within_it_is_answered_as_one_from_the_log(node, conn):
    cursor = conn.execute("UPDATE t SET name = upper(name) WHERE name REGEXP '^a.c$' RETURNING id, name")
    assert cursor.fetchall() == [(2, "ABC")]
    cursor = conn.execute("INSERT INTO t (name) SELECT name || '!' FROM t WHERE name REGEXP 'B'")
    assert (cursor.rowcount, cursor.lastrowid) == (1, 3)
    assert not conn.in_transaction
    assert node.state_machine.fatal is None


def test_a_write_a_check_constraint_times_is_run_first_too(node, conn):
    conn.execute(f"CREATE TABLE checked (name TEXT CHECK (NOT name REGEXP '{BACKTRACKING}'))")
    conn.execute("INSERT INTO checked VALUES ('fine')")
    applied = applied_statements(node)
    with pytest.raises(dbapi.OperationalError, match=OVER_THE_LIMIT):
        conn.execute("INSERT INTO checked VALUES (?)", (HARD_INPUT,))
    assert applied == []
    assert conn.execute("SELECT name FROM checked").fetchall() == [("fine",)]


def test_in_a_transaction_the_statement_fails_alone_and_the_rest_commits(node, conn):
    applied = applied_statements(node)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t (name) VALUES ('before')")
    with pytest.raises(dbapi.OperationalError, match=OVER_THE_LIMIT):
        conn.execute(f"UPDATE t SET name = 'matched' WHERE name REGEXP '{BACKTRACKING}'")
    assert conn.in_transaction  # as any statement's error in SQLite: the transaction goes on
    conn.execute("INSERT INTO t (name) VALUES ('after')")
    conn.execute("COMMIT")
    assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == \
        [(HARD_INPUT,), ("abc",), ("before",), ("after",)]
    assert applied == ["INSERT INTO t (name) VALUES ('before')", "INSERT INTO t (name) VALUES ('after')"]
    assert node.state_machine.fatal is None and node.state_machine.diverged is None


def test_in_a_transaction_a_refused_pattern_is_not_replayed_where_patterns_are_not_refused(node, conn):
    applied = applied_statements(node)
    conn.execute("BEGIN")
    with pytest.raises(dbapi.OperationalError, match="over the store's limit of 32,768"):
        conn.execute("UPDATE t SET name = 'long' WHERE name REGEXP ?", ("a" * (MAX_PATTERN_CHARS + 1),))
    conn.execute("INSERT INTO t (name) VALUES ('after')")
    conn.execute("COMMIT")
    assert applied == ["INSERT INTO t (name) VALUES ('after')"]
    assert node.state_machine.fatal is None and node.state_machine.diverged is None


def test_with_no_limit_a_write_goes_to_the_log_as_before(tmp_path):
    node = start_embedded_node(tmp_path / "node", connection_hooks=[django_functions_hook], max_regexp_seconds=0)
    try:
        conn = client(node)
        conn.execute("CREATE TABLE t (name TEXT)")
        conn.execute("INSERT INTO t VALUES ('abc')")
        assert conn.execute("UPDATE t SET name = 'x' WHERE name REGEXP 'b'").rowcount == 1
        conn.close()
    finally:
        node.stop()


@pytest.mark.parametrize("value", [-1, True, "10"])
def test_a_limit_that_is_not_a_number_of_seconds_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^max_regexp_seconds: need a number of seconds >= 0"):
        NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), max_regexp_seconds=value)


@pytest.mark.cluster
def test_a_backtracking_pattern_neither_holds_up_the_cluster_nor_reaches_the_log(tmp_path):
    with LocalCluster(str(tmp_path / "cluster"), 3, election_timeout=STEADY_ELECTION_TIMEOUT,
                      connection_hooks=["django_dqcluster.backend.sql_functions:django_functions_hook"],
                      extra_args=["--max-regexp-seconds", "2"]) as cluster:
        leader = cluster.leader()
        conn = leader.connect()
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO t (name) VALUES (?)", (HARD_INPUT,))
        term = leader.status()["term"]
        committed = []
        matching = threading.Event()

        def write_while_it_matches():
            writer = leader.connect()
            try:
                matching.wait(10)
                while matching.is_set():
                    writer.execute("INSERT INTO t (name) VALUES ('during')")
                    committed.append(1)
            finally:
                writer.close()

        thread = threading.Thread(target=write_while_it_matches)
        thread.start()
        matching.set()
        try:
            with pytest.raises(dbapi.OperationalError, match="max_regexp_seconds"):
                conn.execute("SELECT id FROM t WHERE name REGEXP ?", (BACKTRACKING,)).fetchall()
            # The write fails on the leader; nobody applies it.
            with pytest.raises(dbapi.OperationalError, match="max_regexp_seconds"):
                conn.execute(f"UPDATE t SET name = 'matched' WHERE name REGEXP '{BACKTRACKING}'")
        finally:
            matching.clear()
            thread.join(30)
        # Writes committed all along (the GIL was free), with no election.
        assert committed
        assert leader.status()["term"] == term
        conn.execute("INSERT INTO t (name) VALUES ('last')")
        conn.close()
        rows = rows_on_every_node(cluster, "SELECT name, count(*) FROM t GROUP BY name ORDER BY name")
        assert len(set(map(tuple, rows.values()))) == 1
        assert dict(rows[leader.index])[HARD_INPUT] == 1 and "matched" not in dict(rows[leader.index])
