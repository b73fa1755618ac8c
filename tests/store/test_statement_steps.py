"""A statement that never ends cannot hold up the cluster (store/statement_steps.py), as a specification.

Every node applies a committed entry on its Raft thread, so one endless
statement in the log used to stop every node at once, and again after each
restart. Now a statement is stopped after ``max_statement_steps`` SQLite
steps: counted, not timed, so every node stops it at the same point, records
the same error and goes on.
"""

import signal
import sqlite3
import threading

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store import NodeConfig
from django_dqcluster.store.config import ConfigError
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.statemachine import StateMachine, encode_entry
from django_dqcluster.store.statement_steps import MAX_STEPS_PER_CHECK, LimitedConnection

from .conftest import EMBEDDED_SECRET, rows_on_every_node, start_embedded_node
from .test_group_commit import rows, tx

LIMIT = 300_000
STOPPED = f"statement stopped after {LIMIT:,} SQLite steps, the store's limit \\(max_statement_steps\\)"
# Counts for ever and never finds a row.
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n WHERE i < 0"
# About two million steps, then done.
LONG = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) SELECT count(*) FROM n"


# -- the counting connection -------------------------------------------------------------------


@pytest.fixture
def limited(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "db.sqlite3"), isolation_level=None, factory=LimitedConnection)
    yield conn
    conn.close()


def test_a_statement_past_its_limit_is_stopped_with_an_error_naming_the_limit(limited):
    limited.limit_steps(LIMIT)
    with pytest.raises(sqlite3.OperationalError) as raised:
        limited.execute(ENDLESS).fetchall()
    error = limited.stopped(raised.value)
    assert isinstance(error, sqlite3.OperationalError) and error is not raised.value
    assert "statement stopped after 300,000 SQLite steps" in str(error)
    assert getattr(error, "sqlite_errorname", None) is None  # not SQLITE_INTERRUPT: not a node's own trouble


def test_without_a_limit_a_long_statement_runs_to_its_end(limited):
    limited.limit_steps(LIMIT)
    limited.unlimit_steps()  # what every caller does once its statement ended
    assert limited.execute(LONG).fetchone() == (100000,)


def test_other_errors_and_interruptions_pass_through_unchanged(limited):
    limited.limit_steps(LIMIT)
    with pytest.raises(sqlite3.OperationalError) as raised:
        limited.execute("SELECT * FROM no_such_table")
    assert limited.stopped(raised.value) is raised.value
    limited.limit_steps(10 ** 12)
    # Interrupted from another thread, as the node does to a deposed leader's transaction: not the limit.
    threading.Timer(0.1, limited.interrupt).start()
    with pytest.raises(sqlite3.OperationalError) as raised:
        limited.execute(ENDLESS).fetchall()
    assert limited.stopped(raised.value) is raised.value


class SignalRaised(Exception):
    """What a signal handler raises in these tests, as Celery's soft time limit does."""


def raise_from_a_signal_handler_after(seconds):
    def handler(signum, frame):
        raise SignalRaised()

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return lambda: signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("limit", [LIMIT * 10 ** 6, None])
def test_in_the_main_thread_a_signal_handlers_exception_stops_the_statement_and_is_raised_as_itself(limited, limit):
    """The progress handler is where Python runs it; the sqlite3 module alone would drop it."""
    restore = raise_from_a_signal_handler_after(0.2)
    try:
        with pytest.raises(SignalRaised):
            with limited.steps_limited(limit):
                limited.execute(ENDLESS).fetchall()
    finally:
        restore()
    with limited.steps_limited(limit):
        assert limited.execute(LONG).fetchone() == (100000,)


def test_a_progress_handler_that_ended_is_replaced_for_the_next_statement(limited):
    """A signal handled between two of its checks can end it; the next statement gets a new one."""
    limited.limit_steps(LIMIT)
    limited._checker.close()
    with pytest.raises(sqlite3.OperationalError, match=STOPPED):
        with limited.steps_limited(LIMIT):
            limited.execute(ENDLESS).fetchall()


# -- applying entries: the leader's limit, on every node -----------------------------------------


@pytest.fixture
def machines(tmp_path):
    made = [StateMachine(str(tmp_path / f"node{n}"), fsync=False) for n in range(2)]
    for machine in made:
        machine.apply(encode_entry(tx("CREATE TABLE t (i INTEGER)")), 1)
    yield made
    for machine in made:
        machine.close()


def test_an_entry_carries_the_leaders_limit_and_every_node_stops_its_statement_alike(machines):
    entry = encode_entry({**tx(f"INSERT INTO t {ENDLESS}"), "steps": LIMIT, "format": 2})
    outcomes = [machine.apply(entry, 2) for machine in machines]
    assert [outcome["error"]["kind"] for outcome in outcomes] == ["OperationalError", "OperationalError"]
    assert all("statement stopped after 300,000 SQLite steps" in outcome["error"]["message"] for outcome in outcomes)
    # Applied as nothing, and the next entry applies on every node.
    for machine in machines:
        machine.apply(encode_entry(tx("INSERT INTO t VALUES (7)")), 3)
        assert rows(machine, "SELECT i FROM t") == [(7,)]
        assert machine.databases.get("app").applied_index == 3


def test_an_entry_without_a_limit_runs_its_statements_to_their_end(machines):
    """Entries written before the limit existed (format 1) carry none: they run as they always did."""
    machine = machines[0]
    outcome = machine.apply(encode_entry(tx(f"INSERT INTO t {LONG}")), 2)
    assert "error" not in outcome
    assert rows(machine, "SELECT i FROM t") == [(100000,)]
    stopped = machine.apply(encode_entry({**tx(f"INSERT INTO t {LONG}"), "steps": LIMIT, "format": 2}), 3)
    assert "statement stopped" in stopped["error"]["message"]


def exact_steps(sql):
    """The steps ``sql`` takes, counted one by one on a fresh connection."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (i INTEGER)")
    counted = [0]

    def one():
        counted[0] += 1
        return 0

    conn.set_progress_handler(one, 1)
    conn.execute(sql)
    conn.close()
    return counted[0]


def test_a_node_that_ran_the_statement_before_counts_its_steps_like_one_that_never_did(machines):
    """SQLite counts a cached statement's steps on from its earlier runs; every node must count
    from zero, or a statement ending near the limit would be stopped on some nodes only."""
    sql = "INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) " \
          "SELECT count(*) FROM n"
    steps = exact_steps(sql)
    limit = steps + steps // 2  # counted from zero, the statement ends well before it
    ran_it_before, never_did = machines
    ran_it_before.apply(encode_entry(tx(sql)), 2)
    never_did.apply(encode_entry(tx("INSERT INTO t VALUES (0)")), 2)
    entry = encode_entry({**tx(sql), "steps": limit, "format": 2})
    outcomes = [machine.apply(entry, 3) for machine in machines]
    assert [outcome.get("error") for outcome in outcomes] == [None, None]
    assert [rows(machine, "SELECT count(*) FROM t") for machine in machines] == [[(2,)], [(2,)]]


def test_a_limit_beyond_the_largest_check_stops_within_one_check_of_it(limited):
    limited.limit_steps(MAX_STEPS_PER_CHECK + 1)
    with pytest.raises(sqlite3.OperationalError) as raised:
        limited.execute(ENDLESS).fetchall()
    assert "statement stopped after 10,000,001 SQLite steps" in str(limited.stopped(raised.value))


# -- a node and its clients ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    running = start_embedded_node(tmp_path_factory.mktemp("steps") / "node", max_statement_steps=LIMIT)
    conn = client(running)
    conn.execute("CREATE TABLE t (i INTEGER)")
    conn.close()
    yield running
    running.stop()


def client(node):
    return dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=5)


@pytest.mark.parametrize("sql", [
    f"INSERT INTO t {ENDLESS}",  # an autocommit write: applied on the Raft thread
    ENDLESS,  # a read
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n WHERE i = 1 OR i < 0",
], ids=["write", "read", "read-after-its-first-row"])
def test_an_endless_statement_is_stopped_and_the_node_goes_on(node, sql):
    conn = client(node)
    try:
        with pytest.raises(dbapi.OperationalError, match=STOPPED):
            conn.execute(sql).fetchall()
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM t WHERE i < 0").fetchone() == (0,)
    finally:
        conn.close()


@pytest.mark.parametrize("begin", ["BEGIN", "BEGIN DEFERRED"])
def test_an_endless_statement_in_a_transaction_is_stopped_before_it_reaches_the_log(node, begin):
    conn, other = client(node), client(node)
    try:
        conn.execute(begin)
        conn.execute("INSERT INTO t VALUES (-5)")
        with pytest.raises(dbapi.OperationalError, match=STOPPED):
            conn.execute(ENDLESS).fetchall()
        with pytest.raises(dbapi.OperationalError, match=STOPPED):
            conn.execute(f"INSERT INTO t {ENDLESS}")
        # As in SQLite, a write stopped this way ends its transaction: nothing of it was committed.
        assert not conn.in_transaction
        other.execute("INSERT INTO t VALUES (2)")  # the write lock is free
        assert conn.execute("SELECT count(*) FROM t WHERE i < 0").fetchone() == (0,)
    finally:
        conn.close()
        other.close()


def test_a_page_after_the_first_is_held_to_the_limit_too(node):
    conn = client(node)
    try:
        # 10 KB rows: the first answer holds about a page (1 MiB) of them, the
        # endless part comes after row 600, a few pages on.
        cursor = conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                              "SELECT i, zeroblob(10000) FROM n WHERE i <= 600 OR i < 0")
        assert [row[0] for row in cursor.fetchmany(300)] == list(range(1, 301))
        with pytest.raises(dbapi.OperationalError, match=STOPPED):
            cursor.fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("value", [-1, True, 1.5, "many"])
def test_a_limit_that_is_not_a_whole_number_of_steps_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^max_statement_steps: "):
        NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), max_statement_steps=value)


# -- a cluster -------------------------------------------------------------------------------------


@pytest.mark.cluster
def test_an_endless_write_leaves_a_cluster_serving_and_its_replicas_alike_even_after_a_lost_disk(tmp_path):
    """The entry stays in the log: a node that lost its disk applies it again, and is stopped again."""
    with LocalCluster(str(tmp_path / "cluster"), 3, extra_args=["--max-statement-steps", str(LIMIT)]) as cluster:
        leader = cluster.leader()
        conn = leader.connect()
        conn.execute("CREATE TABLE t (i INTEGER)")
        with pytest.raises(dbapi.OperationalError, match=STOPPED):
            conn.execute(f"INSERT INTO t {ENDLESS}")
        conn.execute("INSERT INTO t VALUES (1)")
        follower = next(node for node in cluster.nodes if node is not leader)
        follower.kill()
        follower.wipe()
        conn.execute("INSERT INTO t VALUES (2)")
        follower.start(peers=cluster.peers_of(follower))
        conn.execute("INSERT INTO t VALUES (3)")
        conn.close()
        assert rows_on_every_node(cluster, "SELECT i FROM t ORDER BY i") == \
            {node.index: [(1,), (2,), (3,)] for node in cluster.nodes}
