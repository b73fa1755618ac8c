"""A request interrupted in the client, and a client that leaves while its request runs.

A Python exception can stop a thread while it waits for the node's answer:
Ctrl-C in ``dbshell``, a Celery task's soft time limit, any exception a signal
handler raises. The answer then arrives on a connection nobody reads; were the
connection used again, every later statement would read the answer of the
statement before it. So the driver closes such a connection and the next
request opens a new session; inside a transaction, the transaction is over
(the node rolls it back) and the driver says so until the caller rolls back.
On the node's side, a client that closed its connection while its statement
runs gets that statement cancelled, so no work runs on for nobody. A node
embedded in the process runs the statement in the caller's thread: there the
exception stops the statement itself, and is raised as it was raised.
"""

import contextlib
import logging
import signal
import threading
import time

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.session import Session
from django_dqcluster.store.statement_steps import cancel_statement_of
from tests.waiting import wait_for

from .conftest import EMBEDDED_SECRET, connections_to, start_embedded_node

#: Tens of millions of SQLite steps: seconds of work, far longer than the 0.2 s before the interruption.
SLOW_READ = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000000) SELECT sum(x) FROM c"
#: No end but the node's step limit (none on the nodes of these tests).
ENDLESS_READ = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


class Interruption(Exception):
    """What a signal handler raises in these tests, as Celery's time limit raises SoftTimeLimitExceeded."""


@contextlib.contextmanager
def interrupted_after(seconds, interruption=Interruption):
    """Raise ``interruption`` in this (the main) thread ``seconds`` from now, wherever it is."""
    def raise_interruption(signum, frame):
        raise interruption()

    previous = signal.signal(signal.SIGALRM, raise_interruption)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with pytest.raises(interruption):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """An embedded node without a step limit: only a cancellation ends ENDLESS_READ."""
    running = start_embedded_node(tmp_path_factory.mktemp("interrupted") / "node", max_statement_steps=0)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def limited_node(tmp_path_factory):
    """An embedded node with the default step limit, whose checks run while a statement runs."""
    running = start_embedded_node(tmp_path_factory.mktemp("interrupted-limited") / "node")
    yield running
    running.stop()


@pytest.fixture(params=["embedded", "socket"])
def connect(request, node):
    with connections_to(node, request.param) as connect:
        yield connect


@pytest.fixture
def table(connect):
    conn = connect()
    name = f"t_{time.monotonic_ns()}"
    conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v)")
    return name


def test_after_an_interrupted_statement_each_statement_reads_its_own_answer(connect):
    conn = connect()
    with interrupted_after(0.2):
        conn.execute(SLOW_READ).fetchall()

    assert conn.execute("SELECT 42").fetchall() == [(42,)]
    assert conn.execute("SELECT 43").fetchall() == [(43,)]
    assert not conn.in_transaction


def test_an_interrupted_transaction_is_rolled_back_and_says_so_until_rolled_back(connect, table):
    conn, other = connect(), connect()
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (v) VALUES ('in the interrupted transaction')")
    with interrupted_after(0.2):
        conn.execute(SLOW_READ).fetchall()

    assert conn.in_transaction  # for the caller, until it rolls back
    with pytest.raises(dbapi.OperationalError, match=r"interrupted \(Interruption while a request ran\)") as caught:
        conn.execute(f"INSERT INTO {table} (v) VALUES ('would run outside the transaction')")
    assert caught.value.retryable
    conn.rollback()

    assert not conn.in_transaction
    assert other.execute(f"SELECT count(*) FROM {table}").fetchall() == [(0,)]
    conn.execute(f"INSERT INTO {table} (v) VALUES ('after the rollback')")
    assert other.execute(f"SELECT v FROM {table}").fetchall() == [("after the rollback",)]


@pytest.mark.parametrize("ending", ["COMMIT statement", "commit()"])
def test_committing_an_interrupted_transaction_commits_nothing_and_ends_it(connect, table, ending):
    conn, other = connect(), connect()
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (v) VALUES (1)")
    with interrupted_after(0.2):
        conn.execute(SLOW_READ).fetchall()

    with pytest.raises(dbapi.OperationalError, match="nothing of it was committed; retry it"):
        if ending == "commit()":
            conn.commit()
        else:
            conn.execute("COMMIT")

    assert not conn.in_transaction
    assert other.execute(f"SELECT count(*) FROM {table}").fetchall() == [(0,)]
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchall() == [(0,)]


def test_a_rollback_statement_ends_an_interrupted_transaction(connect, table):
    conn = connect()
    conn.execute("BEGIN")
    with interrupted_after(0.2):
        conn.execute(SLOW_READ).fetchall()

    conn.execute("ROLLBACK")

    assert not conn.in_transaction
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchall() == [(0,)]


@contextlib.contextmanager
def watchdog(seconds):
    """Cancel the statement this thread runs after ``seconds``; ``fired()`` says whether it had to."""
    fired = threading.Event()

    def cancel():
        fired.set()
        cancel_statement_of(main_thread, "the test's watchdog: nothing else stopped the statement")

    main_thread = threading.get_ident()
    timer = threading.Timer(seconds, cancel)
    timer.start()
    try:
        yield fired.is_set
    finally:
        timer.cancel()


@pytest.mark.parametrize("step_limit", ["default step limit", "no step limit"])
@pytest.mark.parametrize("interruption", [Interruption, KeyboardInterrupt])
def test_an_embedded_node_stops_the_statement_an_exception_interrupts_and_raises_that_exception(
        node, limited_node, step_limit, interruption):
    """Ctrl-C or a Celery time limit in the thread that runs the statement: Python runs the signal
    handler in SQLite's progress handler. The statement stops there and the caller gets its own
    exception, not a database error ("interrupted") that a retry or an ``except`` would take for one."""
    embedded = limited_node if step_limit == "default step limit" else node
    conn = dbapi.connect(node=embedded, isolation_level=None)
    try:
        with watchdog(30) as had_to_stop_it:
            with interrupted_after(0.3, interruption):
                conn.execute(ENDLESS_READ).fetchall()
        assert not had_to_stop_it()
        assert conn.execute("SELECT 42").fetchall() == [(42,)]
    finally:
        conn.close()


def test_a_write_an_exception_interrupts_in_a_transaction_leaves_nothing_and_frees_the_database(connect, table):
    conn, other = connect(), connect()
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (v) VALUES ('before')")
    endless_insert = f"INSERT INTO {table} (v) " + ENDLESS_READ.replace("count(*)", "x")
    with watchdog(30) as had_to_stop_it:
        with interrupted_after(0.3):
            conn.execute(endless_insert)
    assert not had_to_stop_it()
    conn.rollback()

    other.execute(f"INSERT INTO {table} (v) VALUES ('from another connection')")
    assert conn.execute(f"SELECT v FROM {table}").fetchall() == [("from another connection",)]


def clients_running(node):
    return [client for client in node.server._clients if client.busy]


def test_the_node_cancels_the_statement_of_a_client_that_closed_its_connection(node, caplog):
    conn = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, timeout=5, isolation_level=None)
    caplog.set_level(logging.INFO, logger="django_dqcluster.store")
    try:
        with interrupted_after(0.3):
            conn.execute(ENDLESS_READ).fetchall()
        # Without a cancellation the node would run it for ever (no step limit here).
        wait_for(lambda: not clients_running(node), 20, "the endless read stopped")
    finally:
        conn.close()
    assert "closed its connection while its request ran: cancelling it" in caplog.text
    fresh = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, timeout=5)
    assert fresh.execute("SELECT 1").fetchall() == [(1,)]
    fresh.close()


def test_the_read_connection_a_cancelled_session_used_serves_the_next_session_in_full(node):
    """Its cancellation does not reach the statements run on it next."""
    leaving = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, timeout=5, isolation_level=None)
    staying = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, timeout=5, isolation_level=None)
    try:
        with interrupted_after(0.3):
            leaving.execute(ENDLESS_READ).fetchall()
        leaving.close()
        wait_for(lambda: not clients_running(node), 20, "the endless read stopped")
        for _ in range(20):
            count = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 300000) SELECT count(*) FROM c"
            assert staying.execute(count).fetchall() == [(300000,)]
    finally:
        staying.close()


def test_a_follower_passes_the_cancellation_on_to_the_leader(tmp_path):
    """A transaction runs on the leader; the client on a follower leaves while its statement runs there.

    The follower drops its forwarded connection, the leader cancels the
    statement and rolls the transaction back: its write lock is free again.
    """
    with LocalCluster(str(tmp_path / "cluster"), 3, extra_args=("--max-statement-steps", "0")) as cluster:
        leader = cluster.leader()
        follower = next(node for node in cluster.nodes if node is not leader)
        conn, watcher = follower.connect(), leader.connect()
        try:
            conn.execute("CREATE TABLE t (v)")
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (1)")
            assert watcher.status()["write_locks"]
            with interrupted_after(0.5):
                conn.execute(ENDLESS_READ).fetchall()
            wait_for(lambda: not watcher.status()["write_locks"], 20, "the leader released the write lock")
            assert watcher.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
        finally:
            conn.close()
            watcher.close()


def test_an_interrupted_commit_ends_the_transaction(connect, table, monkeypatch):
    """Its outcome is unknown, as any interrupted write's: the caller had the exception, not an answer."""
    conn = connect()
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (v) VALUES (1)")

    def interrupted_exchange(message, may_write):
        raise Interruption()

    with monkeypatch.context() as patched:
        patched.setattr(conn, "_exchange", interrupted_exchange)
        with pytest.raises(Interruption):
            conn.commit()

    assert not conn.in_transaction
    assert conn.execute("SELECT 42").fetchall() == [(42,)]


def test_cancelling_a_session_between_its_requests_stops_nothing_its_thread_runs_next(node):
    """Thread ids are reused. By the time the node cancels the request of a client that left, that
    request may have ended, its thread exited and a new client's thread got its id: the session
    cancelled by that id, and another client's statement stopped. A session cancels only the
    request it is running. Here one thread serves two sessions in turn, as two threads with
    the same id would."""
    leaving, staying = Session(node, peer="leaving"), Session(node, peer="staying")
    answers = {}

    def serve_one_then_the_other():
        answers["leaving"] = leaving.handle({"op": "exec", "sql": "SELECT 1"})
        answers["staying"] = staying.handle({"op": "exec", "sql": SLOW_READ})

    thread = threading.Thread(target=serve_one_then_the_other)
    thread.start()
    wait_for(lambda: "leaving" in answers and staying._thread_id is not None, 10, "the second request running")
    time.sleep(0.1)  # into its statement
    leaving.cancel("the client that left (test)")
    thread.join(60)
    assert answers["leaving"]["ok"], answers
    assert answers["staying"]["ok"], answers["staying"]
    assert answers["staying"]["rows"] == [[20000000 * 20000001 // 2]]
