"""A transaction aborted on the leader is rolled back once, by whoever gets there first.

Leadership lost aborts every open transaction; the node's idle transaction
timeout aborts one that holds a database's write lock and runs nothing.

Its session finds out at its next statement, possibly after the node leads
again and another client's transaction holds the write lock and the scratch
connection. Cleaning up then must leave that transaction alone: it used to
roll it back, so its next statements ran on the leader's file directly,
outside Raft, and were applied a second time at its COMMIT.
"""

import threading
import time

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store import NodeConfig
from django_dqcluster.store.config import ConfigError
from django_dqcluster.store.local_cluster import LocalCluster
from tests.waiting import wait_for

from .conftest import EMBEDDED_SECRET, start_embedded_node


def connect(node):
    return dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=3)


def values(conn):
    return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY rowid")]


def test_a_session_learning_its_transaction_was_aborted_leaves_the_next_one_alone(embedded_node):
    aborted, next_one, reader = connect(embedded_node), connect(embedded_node), connect(embedded_node)
    aborted.execute("CREATE TABLE t (v TEXT)")
    aborted.execute("BEGIN")
    aborted.execute("INSERT INTO t VALUES ('a1')")
    embedded_node.leader_state.abort_all("leadership was lost (test)")
    next_one.execute("BEGIN")  # the node leads (again): the lock is free
    next_one.execute("INSERT INTO t VALUES ('b1')")

    with pytest.raises(dbapi.OperationalError, match=r"transaction aborted: leadership was lost \(test\)"):
        aborted.execute("INSERT INTO t VALUES ('a2')")
    assert not aborted.in_transaction
    next_one.execute("INSERT INTO t VALUES ('b2')")
    assert values(reader) == []  # nothing of next_one's is visible before its COMMIT
    next_one.execute("COMMIT")
    assert values(reader) == ["b1", "b2"]  # once each, nothing of the aborted one's


def test_a_deferred_transaction_aborted_while_it_takes_the_lock_gives_it_back(embedded_node):
    conn, other = connect(embedded_node), connect(embedded_node)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("BEGIN DEFERRED")
    assert values(conn) == []
    embedded_node.leader_state.abort_all("leadership was lost (test)")
    with pytest.raises(dbapi.OperationalError, match="transaction aborted"):
        conn.execute("INSERT INTO t VALUES ('x')")
    other.execute("BEGIN")  # the lock and the scratch connection are free
    other.execute("INSERT INTO t VALUES ('y')")
    other.execute("COMMIT")
    assert values(other) == ["y"]


@pytest.fixture
def idle_timeout():
    return 0.6


@pytest.fixture
def node_with_idle_timeout(tmp_path, idle_timeout):
    node = start_embedded_node(tmp_path / "node", idle_transaction_timeout=idle_timeout, busy_timeout=5.0)
    yield node
    node.stop()


def test_a_transaction_idle_longer_than_the_idle_timeout_is_aborted_and_frees_its_writers(node_with_idle_timeout):
    node = node_with_idle_timeout
    idle, writer = connect(node), connect(node)
    idle.execute("CREATE TABLE t (v TEXT)")
    idle.execute("BEGIN")
    idle.execute("INSERT INTO t VALUES ('never')")
    started = time.monotonic()
    writer.execute("INSERT INTO t VALUES ('w')")  # waits for the lock, not for the 5 s busy timeout
    assert time.monotonic() - started < 4.0  # the idle timeout, not the busy timeout, let it through
    with pytest.raises(dbapi.OperationalError, match=r"transaction aborted: it ran nothing for 0\.6 s "
                                                     r"\(the node's idle transaction timeout\)") as info:
        idle.execute("INSERT INTO t VALUES ('late')")
    assert info.value.retryable and not idle.in_transaction
    assert values(writer) == ["w"]


@pytest.mark.parametrize("idle_timeout", [2.0])  # far from the 0.25 s between statements on a loaded machine
def test_a_transaction_that_keeps_running_statements_is_not_idle(node_with_idle_timeout):
    conn = connect(node_with_idle_timeout)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("BEGIN")
    for n in range(10):  # 2.5 s in all, never 2 s without a statement
        conn.execute("INSERT INTO t VALUES (?)", (str(n),))
        time.sleep(0.25)
    conn.execute("COMMIT")
    assert values(conn) == [str(n) for n in range(10)]


def test_a_deferred_transaction_that_only_reads_holds_no_lock_so_is_never_idle(node_with_idle_timeout):
    conn = connect(node_with_idle_timeout)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("BEGIN DEFERRED")
    assert values(conn) == []
    time.sleep(1.2)  # twice the idle timeout, reading nothing
    conn.execute("INSERT INTO t VALUES ('x')")  # takes the lock now
    conn.execute("COMMIT")
    assert values(conn) == ["x"]


def test_a_transaction_whose_commit_is_under_way_is_never_aborted_as_idle(embedded_node, caplog):
    """It holds the lock until its entry is enqueued (log order): an abort then would free it too early."""
    conn = connect(embedded_node)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES ('x')")
    enqueue = embedded_node.enqueue

    def enqueue_while_the_reaper_runs(*args, **kwargs):
        embedded_node.leader_state.abort_idle(0.0)  # the housekeeping thread, right now
        return enqueue(*args, **kwargs)

    embedded_node.enqueue = enqueue_while_the_reaper_runs
    try:
        conn.execute("COMMIT")
    finally:
        embedded_node.enqueue = enqueue
    assert "aborted a transaction" not in caplog.text
    assert values(conn) == ["x"]


@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_an_idle_transaction_timeout_that_is_not_a_positive_number_of_seconds_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^idle_transaction_timeout: "):
        NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), idle_transaction_timeout=value)


def test_a_node_process_takes_the_idle_timeout_from_its_command_line(tmp_path):
    with LocalCluster(str(tmp_path / "cluster"), 1, extra_args=["--idle-transaction-timeout", "0.5"]) as cluster:
        conn = cluster.leader().connect()
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES ('x')")
        (node,) = cluster.nodes
        # Without the option, the node never aborts it: the wait would time out.
        wait_for(lambda: "(idle transaction timeout 0.5 s)" in node.log(), 20, "the node to abort it")
        with pytest.raises(dbapi.OperationalError, match=r"it ran nothing for 0\.5 s \(the node's idle transaction"):
            conn.execute("INSERT INTO t VALUES ('y')")
        assert values(conn) == []
        conn.close()


#: Seconds of SQLite work: still running when the abort comes.
SLOW_READ = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 50000000) SELECT sum(x) FROM c"
#: Five thousand rows at once, then one every hundred million numbers: its later pages take seconds.
THINNING_READ = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 500000000) "
                 "SELECT x, zeroblob(2000) FROM c WHERE x <= 5000 OR x % 100000000 = 0")
#: A fraction of a second of SQLite work, and its answer.
MEDIUM_READ = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) SELECT sum(x) FROM c"
MEDIUM_READ_SUM = 2000000 * 2000001 // 2


@pytest.mark.parametrize("running", ["a statement", "a fetch of the next page"])
def test_a_transaction_whose_statement_runs_as_leadership_is_lost_gets_the_aborts_retryable_error(
        embedded_node, running):
    """The abort interrupts the statement; its client used to get SQLite's bare "interrupted",
    which is not retryable, so a client retrying lost leaders gave up (found by the chaos run)."""
    conn, reader = connect(embedded_node), connect(embedded_node)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES ('in the aborted transaction')")
    abort = threading.Timer(0.5, embedded_node.leader_state.abort_all, ("leadership was lost (test)",))
    with pytest.raises(dbapi.OperationalError, match=r"transaction aborted: leadership was lost \(test\)") as raised:
        if running == "a statement":
            abort.start()
            conn.execute(SLOW_READ)
        else:
            cursor = conn.execute(THINNING_READ)
            cursor.fetchmany(10)
            abort.start()
            cursor.fetchall()
    abort.join()
    assert raised.value.retryable
    conn.rollback()
    assert values(reader) == []
    conn.execute("INSERT INTO t VALUES ('after')")  # the write lock is free again
    assert values(reader) == ["after"]


def test_a_transaction_aborted_between_requests_with_a_result_left_open_leaves_the_next_one_alone(embedded_node):
    """SQLite keeps an interrupt pending while any statement of the connection is open (a result
    not read to its end), failing every later statement, ROLLBACK included: the next transaction
    on the scratch connection got SQLite's bare "interrupted" (found by the chaos run)."""
    aborted, next_one, reader = connect(embedded_node), connect(embedded_node), connect(embedded_node)
    aborted.execute("CREATE TABLE t (v TEXT)")
    aborted.execute("BEGIN")
    aborted.execute("INSERT INTO t VALUES ('a1')")
    cursor = aborted.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) "
                             "SELECT x, printf('%100d', x) FROM c")
    cursor.fetchmany(10)  # more than a page: the statement stays open on the node

    embedded_node.leader_state.abort_all("leadership was lost (test)")  # no statement of it runs now

    next_one.execute("BEGIN")
    next_one.execute("INSERT INTO t VALUES ('b1')")
    next_one.execute("COMMIT")
    assert values(reader) == ["b1"]
    with pytest.raises(dbapi.OperationalError, match="transaction aborted"):
        cursor.fetchall()


def test_an_abort_interrupts_a_statement_of_its_own_transaction_only(embedded_node, monkeypatch):
    """Aborting looked at whether the transaction held the write lock, then interrupted the scratch
    connection. If the transaction ended in between and the next one began a statement, that
    statement was interrupted instead, and its client got SQLite's bare "interrupted", which is
    not retryable. Here any interrupt the abort sends waits for exactly that moment."""
    aborted, next_one = connect(embedded_node), connect(embedded_node)
    aborted.execute("CREATE TABLE t (v TEXT)")
    aborted.execute("BEGIN")
    aborted.execute("INSERT INTO t VALUES ('a1')")  # holds the lock, runs nothing now
    database = embedded_node.state_machine.databases.get("default")
    outcome = {}

    def next_transactions_read():
        try:
            outcome["sum"] = next_one.execute(MEDIUM_READ).fetchone()[0]
        except dbapi.Error as exc:
            outcome["error"] = exc

    reader = threading.Thread(target=next_transactions_read)
    real_interrupt = type(database.scratch_connection()).interrupt

    def interrupt_once_the_next_transactions_statement_runs(conn):
        if not reader.is_alive() and "sum" not in outcome and "error" not in outcome:
            aborted.rollback()  # its client ends it meanwhile: the lock is free
            next_one.execute("BEGIN")
            reader.start()
            while database.scratch_mutex.acquire(blocking=False):  # free until the read runs
                database.scratch_mutex.release()
                time.sleep(0.001)
        real_interrupt(conn)

    monkeypatch.setattr(type(database.scratch_connection()), "interrupt",
                        interrupt_once_the_next_transactions_statement_runs)
    embedded_node.leader_state.abort_all("leadership was lost (test)")
    if not reader.is_alive() and not outcome:  # the abort interrupted nothing
        next_one.execute("BEGIN")
        reader.start()
    reader.join()
    assert outcome == {"sum": MEDIUM_READ_SUM}
    next_one.execute("COMMIT")


def test_an_abort_that_lands_while_the_node_classifies_a_statement_is_reported_as_the_abort(
        embedded_node, monkeypatch):
    """Before it runs a statement of a transaction, the leader compiles it on the scratch connection
    to tell reads from writes (PRAGMA schema_version, EXPLAIN). An abort's interrupt landing there
    reached the client as SQLite's bare "interrupted", which is not retryable, and a client that
    retries lost leaders gave up (the chaos run's transfers client, after a failover). Here the
    transaction has a result open on the scratch connection, so the interrupt stays pending for
    whatever the connection runs next, and the abort comes just as the node classifies an UPDATE."""
    conn, reader = connect(embedded_node), connect(embedded_node)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES ('in the aborted transaction')")
    open_result = conn.cursor()
    open_result.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) "
                        "SELECT x, printf('%100d', x) FROM c")
    open_result.fetchmany(10)  # more than a page: the statement stays open on the node
    leader_state = embedded_node.leader_state
    classify = leader_state.classifier
    abort = threading.Thread(target=leader_state.abort_all, args=("leadership was lost (test)",))
    interrupted = threading.Event()
    connection_type = type(embedded_node.state_machine.databases.get("default").scratch_connection())
    real_interrupt = connection_type.interrupt

    def interrupt_and_say_so(scratch):
        real_interrupt(scratch)
        interrupted.set()

    def classify_once_the_abort_interrupted(scratch, sql, params, scope=""):
        if sql.startswith("UPDATE") and not abort.is_alive():
            abort.start()  # it interrupts, then waits for the statement to end to roll back
            assert interrupted.wait(5), "the abort sent no interrupt"
        return classify(scratch, sql, params, scope)

    monkeypatch.setattr(connection_type, "interrupt", interrupt_and_say_so)
    monkeypatch.setattr(leader_state, "classifier", classify_once_the_abort_interrupted)
    with pytest.raises(dbapi.OperationalError, match=r"transaction aborted: leadership was lost \(test\)") as raised:
        conn.execute("UPDATE t SET v = 'changed'")
    abort.join()
    assert raised.value.retryable
    conn.rollback()
    assert values(reader) == []
    conn.execute("INSERT INTO t VALUES ('after')")  # the write lock and the scratch connection are free again
    assert values(reader) == ["after"]
