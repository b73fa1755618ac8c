"""A node stopped with SIGTERM (one host of a rolling restart) drains its clients and,
as leader, hands leadership over: its clients finish what they started, the rest of
their work runs on another node, and none of them sees an error."""

import socket
import threading

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.local_cluster import LocalCluster

from .conftest import STEADY_ELECTION_TIMEOUT, Writer, followers, rows_on_every_node


@pytest.fixture
def cluster(tmp_path):
    # INFO: the node logs its handover there. Longer election timeouts: the tests count
    # elections (the handover's only). A drain of 20 s (5 by default): what the clients
    # finish during it may be slow on a loaded machine; stop() waits 30 s for the node.
    with LocalCluster(str(tmp_path / "cluster"), 3, log_level="INFO", election_timeout=STEADY_ELECTION_TIMEOUT,
                      extra_args=["--drain-timeout", "20"]) as running:
        yield running


def write_through(cluster, stopping_node, connect_to=None, rows=30):
    """Stop ``stopping_node`` while a Writer inserts rows.

    Returns the writer once it wrote ``rows`` more, and the term just before the stop.
    """
    writer = Writer(cluster, connect_to=connect_to)
    writer.start()
    cluster.wait_for(lambda: len(writer.acked) >= rows, 20, f"{rows} rows before the stop")
    stopped_after = len(writer.acked)
    term = cluster.leader().status()["term"]
    stopping_node.stop()
    cluster.wait_for(lambda: len(writer.acked) >= stopped_after + rows or writer.errors, 20,
                     f"{rows} rows after the stop")
    writer.stop.set()
    writer.join(30)
    return writer, term


def assert_every_acknowledged_row_once(cluster, writer):
    rows = rows_on_every_node(cluster, "SELECT value FROM log ORDER BY value")
    for node_rows in rows.values():
        assert [value for (value,) in node_rows] == writer.acked


def listening(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_stopping_leader_hands_leadership_over_and_its_clients_see_no_error(cluster):
    leader = cluster.leader()
    leader.connect().execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")

    writer, term = write_through(cluster, leader)

    # Before the drain, the stop cut the writer's running INSERT: "outcome unknown".
    assert (writer.errors, writer.unknown, writer.retried) == ([], [], [])
    successor = cluster.wait_for_leader(exclude=[leader])
    assert f"handed leadership to {successor.raft}" in leader.log()
    assert successor.status()["term"] == term + 1  # one round of votes: the handover's
    assert_every_acknowledged_row_once(cluster, writer)


def test_a_stopping_follower_sends_its_clients_to_another_node_without_an_error(cluster):
    leader = cluster.leader()
    leader.connect().execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
    follower = followers(cluster, leader)[0]
    # The writer's driver reaches the follower first, which forwards its writes.
    addresses = ",".join([follower.client] + [node.client for node in cluster.nodes if node is not follower])

    writer, term = write_through(cluster, follower, connect_to=addresses)

    assert (writer.errors, writer.unknown, writer.retried) == ([], [], [])
    assert leader.status()["term"] == term  # a follower's stop costs no election
    assert_every_acknowledged_row_once(cluster, writer)


def test_an_idle_connection_to_a_stopped_leader_runs_its_next_write_on_another_node(cluster):
    """A pooled connection that sat idle through the stop finds the goodbye when it next writes."""
    leader = cluster.leader()
    addresses = ",".join([leader.client] + [node.client for node in cluster.nodes if node is not leader])
    conn = dbapi.connect(addresses, secret=cluster.secret, isolation_level=None, timeout=20)
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
    leader.stop()

    conn.execute("INSERT INTO log (value) VALUES (1)")

    assert rows_on_every_node(cluster, "SELECT value FROM log") == {
        node.index: [(1,)] for node in cluster.nodes if node.alive
    }


def test_a_transaction_open_on_a_stopping_leader_may_still_commit(cluster):
    leader = cluster.leader()
    addresses = ",".join([leader.client] + [node.client for node in cluster.nodes if node is not leader])
    conn = dbapi.connect(addresses, secret=cluster.secret, isolation_level=None, timeout=20)
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO log (value) VALUES (1)")
    stopper = threading.Thread(target=leader.stop)
    stopper.start()
    # The drain has begun once the node takes no new connections.
    cluster.wait_for(lambda: not listening(leader.client), 10, "the leader to stop listening")
    assert leader.alive

    conn.execute("INSERT INTO log (value) VALUES (2)")
    conn.commit()
    stopper.join(30)
    # The connection's next statement runs on another node.
    conn.execute("INSERT INTO log (value) VALUES (3)")

    assert rows_on_every_node(cluster, "SELECT value FROM log ORDER BY value") == {
        node.index: [(1,), (2,), (3,)] for node in cluster.nodes if node.alive
    }


def test_a_result_with_pages_left_on_a_stopping_node_may_still_be_read_to_the_end(cluster):
    leader = cluster.leader()
    addresses = ",".join([leader.client] + [node.client for node in cluster.nodes if node is not leader])
    conn = dbapi.connect(addresses, secret=cluster.secret, isolation_level=None, timeout=20, max_frame=16 * 1024)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [("x" * 500,) for _ in range(300)])
    cursor = conn.execute("SELECT id, v FROM items ORDER BY id")
    assert cursor.fetchone()[0] == 1
    stopper = threading.Thread(target=leader.stop)
    stopper.start()
    cluster.wait_for(lambda: not listening(leader.client), 10, "the leader to stop listening")
    assert leader.alive

    assert [row[0] for row in cursor.fetchall()] == list(range(2, 301))
    stopper.join(30)
    # The connection's next statement runs on another node.
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (300,)
    assert conn.node_address != leader.client


def test_a_transaction_still_open_after_the_drain_timeout_is_rolled_back(tmp_path):
    with LocalCluster(str(tmp_path / "cluster"), 3, extra_args=["--drain-timeout", "0.5"]) as cluster:
        leader = cluster.leader()
        conn = leader.connect()
        conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO log (value) VALUES (1)")
        leader.stop()  # returns once the node has exited: 0.5 s of drain, then the cut

        with pytest.raises(dbapi.OperationalError) as info:
            conn.execute("INSERT INTO log (value) VALUES (2)")
        assert info.value.retryable and not info.value.unknown_outcome
        assert not conn.in_transaction
        cluster.wait_for_leader(exclude=[leader])
        assert rows_on_every_node(cluster, "SELECT count(*) FROM log") == {
            node.index: [(0,)] for node in cluster.nodes if node.alive
        }


@pytest.mark.parametrize("value", [-1, "5", None])
def test_a_drain_timeout_that_is_not_a_number_of_seconds_is_refused_naming_it(tmp_path, value):
    from django_dqcluster.store.config import ConfigError, NodeConfig

    with pytest.raises(ConfigError, match=r"^drain_timeout: "):
        NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), drain_timeout=value)
    assert NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), drain_timeout=0).drain_timeout == 0


def test_a_follower_whose_forward_connection_got_the_stopping_leaders_goodbye_goes_on_without_an_error(cluster):
    """A follower keeps one connection to the leader per client session. A stopping
    leader says goodbye on it while it is idle; the follower finds that goodbye when
    it next uses the connection, here to pass on a PRAGMA. That used to escape as an
    "internal error in the node" (InternalError, not retryable)."""
    leader = cluster.leader()
    follower = followers(cluster, leader)[0]
    holder = leader.connect()
    holder.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
    conn = follower.connect()
    conn.execute("INSERT INTO log (value) VALUES (1)")  # the follower's session now forwards
    holder.execute("BEGIN")  # an open transaction keeps the leader draining
    holder.execute("INSERT INTO log (value) VALUES (2)")
    stopper = threading.Thread(target=leader.stop)
    stopper.start()
    cluster.wait_for(lambda: not listening(leader.client), 10, "the leader to stop listening")

    conn.execute("PRAGMA foreign_keys = OFF")
    holder.commit()
    stopper.join(30)
    conn.execute("INSERT INTO log (value) VALUES (3)")

    assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)
    assert "Traceback" not in follower.log()
    assert rows_on_every_node(cluster, "SELECT value FROM log ORDER BY value") == {
        node.index: [(1,), (2,), (3,)] for node in cluster.nodes if node.alive
    }
