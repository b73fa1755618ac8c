"""A node that lost its disk must not help elect a leader that lacks committed entries.

Raft counts on every member remembering what it acknowledged. A node whose data
directory was wiped (a replaced disk, a restored VM image) comes back with an
empty log and no vote: as an ordinary voter it would grant its vote to any
candidate, and a lagging one could then win and lose writes that were
committed and acknowledged with the wiped node's copy. Such a node therefore
starts out catching up: it votes only for a candidate whose log is as empty as
its own (a cluster forming for the first time) and stands for election only
while its own log is empty, until it holds everything the leader it first hears
from had committed. Until then, what it cannot vote for waits: unavailable
rather than lossy.
"""

import pytest

from .conftest import followers, rows_on_every_node

pytestmark = pytest.mark.cluster

ROWS = 40


def test_a_wiped_follower_and_a_lagging_one_elect_no_leader_and_lose_no_acknowledged_write(cluster):
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    cluster.wait_converged()
    lagging, wiped = followers(cluster, leader)

    lagging.pause()  # misses the writes below: they are committed on the leader and `wiped`
    for n in range(ROWS):
        conn.execute("INSERT INTO t VALUES (?)", (n,))  # each acknowledged
    conn.close()
    wiped.kill()
    wiped.wipe()  # its copy of those writes is gone
    leader.kill()  # now they live only in the leader's files
    wiped.start(peers=cluster.peers_of(wiped))
    lagging.resume()

    # Electing the lagging node would lose the acknowledged writes: no leader.
    with pytest.raises(TimeoutError):
        cluster.wait_for_leader(timeout=6)

    leader.start(peers=cluster.peers_of(leader))
    cluster.wait_for_leader(timeout=30)
    counts = rows_on_every_node(cluster, "SELECT count(*) FROM t")
    assert counts == {0: [(ROWS,)], 1: [(ROWS,)], 2: [(ROWS,)]}


def test_a_wiped_follower_catches_up_and_votes_again(cluster):
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(ROWS)])
    conn.close()
    cluster.wait_converged()
    wiped, other = followers(cluster, leader)
    wiped.kill()
    wiped.wipe()
    wiped.start(peers=cluster.peers_of(wiped))
    cluster.wait_converged()  # it holds everything the leader had committed
    # Now it is an ordinary member again: with the old leader gone, it and the
    # other follower elect one of themselves.
    leader.kill()
    new_leader = cluster.wait_for_leader(timeout=30, exclude=[leader])
    assert new_leader in (wiped, other)
    assert {index: rows for index, rows in rows_on_every_node(cluster, "SELECT count(*) FROM t").items()} == {
        wiped.index: [(ROWS,)], other.index: [(ROWS,)]}
