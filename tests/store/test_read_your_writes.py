"""A ``none`` client on a follower reads its own writes.

Its writes run on the leader; its reads come from the follower's replica
(through the node, or from the node's file on this host). The follower
answers such a write only once its replica holds it, so the next read, this
client's or any other ``none`` reader's on that node, sees it. Before, the
answer came as soon as the leader had applied it, and the follower learned
of the commit up to a heartbeat later: every read right after a write missed
it (200 of 200 in a loop of write-then-count).

The connection remembers the newest entry its writes were answered with; a
node it fails over to must have applied that entry before it reads there.
"""

import pytest

from django_dqcluster import dbapi

from .conftest import followers


@pytest.fixture
def follower(cluster):
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.close()
    cluster.wait_converged()
    return followers(cluster, leader)[0]


@pytest.mark.parametrize("local_reads", [True, False], ids=["from its file", "through the node"])
def test_each_read_after_a_write_sees_it(follower, local_reads):
    conn = follower.connect(consistency="none", local_reads=local_reads)
    missed = []
    for n in range(100):
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        count = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        if count != n + 1:
            missed.append((n, count))
    assert missed == []
    assert conn.replica_reads == (100 if local_reads else 0)


def test_a_committed_transaction_is_read_back_at_once(follower):
    conn = follower.connect(consistency="none")
    for n in range(20):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        conn.execute("COMMIT")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2 * (n + 1)


def test_other_none_readers_of_that_node_see_a_write_once_it_is_answered(follower):
    writer = follower.connect(consistency="none")
    reader = follower.connect(consistency="none")
    for n in range(50):
        writer.execute("INSERT INTO t VALUES (?)", (n,))
        assert reader.execute("SELECT max(n) FROM t").fetchone()[0] == n
    assert reader.replica_reads == 50


@pytest.mark.parametrize("local_reads", [True, False], ids=["from its file", "through the node"])
def test_after_a_failover_to_a_node_that_lags_a_connection_still_never_misses_its_writes(cluster, local_reads):
    """Its node dies; the node it fails over to missed its writes and cannot catch up
    (no leader): reads there fail retryably instead of missing them, and see them once
    it has caught up."""
    leader = cluster.leader()
    setup = leader.connect()
    setup.execute("CREATE TABLE t (n INTEGER)")
    setup.close()
    cluster.wait_converged()
    first, lagging = followers(cluster, leader)
    conn = dbapi.connect(f"{first.client},{lagging.client}", secret=cluster.secret, isolation_level=None,
                         consistency="none", local_reads=local_reads, timeout=3, retry_timeout=1)
    lagging.pause()  # misses the writes below
    for n in range(20):
        conn.execute("INSERT INTO t VALUES (?)", (n,))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (20,)
    first.kill()
    leader.kill()  # the lagging node is alone now: no leader to catch up from
    lagging.resume()

    with pytest.raises(dbapi.OperationalError, match="has not yet applied entry") as info:
        conn.execute("SELECT count(*) FROM t").fetchone()
    assert info.value.retryable

    leader.start(peers=cluster.peers_of(leader))
    cluster.wait_for_leader()
    cluster.wait_converged()  # it has caught up (the connection retries for 1 s only)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (20,)
