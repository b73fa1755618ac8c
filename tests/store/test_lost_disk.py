"""A node that lost its disk must not help elect a leader that lacks committed entries.

Raft counts on every member remembering what it acknowledged. A node whose data
directory was wiped (a replaced disk, a restored VM image) comes back with an
empty log and no vote: as an ordinary voter it would grant its vote to any
candidate, and a lagging one could then win and lose writes that were
committed and acknowledged with the wiped node's copy. Such a node therefore
starts out catching up: it votes only for a candidate whose log is as empty as
its own (a cluster forming for the first time) and stands for election only
while its own log is empty, until it holds everything the leader it hears from
(of the newest term it heard) had committed. Until then, what it cannot vote
for waits: unavailable rather than lossy.
"""

import shutil
import time

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.node import TCPNode

from django_dqcluster.store.raft import LOST_ENTRIES, SafeSyncObj

from .conftest import followers, rows_on_every_node
from .test_raft_safety import LEADER, NoStateMachine, RecordingTransport, append_entries, deliver, entries

ROWS = 40


# -- one engine, fed messages by hand ----------------------------------------------------------


def engine(marker):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, raftMinTimeout=0.01, raftMaxTimeout=0.02,
                       appendEntriesPeriod=0.002)
    return SafeSyncObj("127.0.0.1:2", [LEADER.address, "127.0.0.1:3"], conf, NoStateMachine(), durable=False,
                       transportClass=RecordingTransport, catching_up_file=str(marker))


def votes_for(node, last_log_index, last_log_term=1):
    time.sleep(0.03)  # past the leader stickiness of these short timeouts
    node._SyncObj__transport.sent.clear()
    term = node._SyncObj__raftCurrentTerm + 1
    node._SyncObj__onMessageReceived(LEADER, {"type": "request_vote", "term": term, "last_log_index": last_log_index,
                                              "last_log_term": last_log_term})
    return any(message["type"] == "response_vote" for _, message in node._SyncObj__transport.sent)


def test_an_empty_node_votes_only_for_an_empty_candidate_until_it_holds_what_the_leader_had_committed(tmp_path):
    marker = tmp_path / "raft.catching-up"
    node = engine(marker)
    assert node.catching_up and marker.read_text() == ""
    assert not votes_for(node, last_log_index=11)
    assert votes_for(node, last_log_index=1, last_log_term=0)  # a cluster forming: nothing to lose

    deliver(node, append_entries(1, 0, entries(2, 6), term=5, commit=11))
    assert node.catching_up and marker.read_text() == "11"  # what the leader had committed
    assert not votes_for(node, last_log_index=11)
    deliver(node, append_entries(6, 1, entries(7, 11), term=5, commit=11))
    assert not node.catching_up and not marker.exists()
    assert votes_for(node, last_log_index=11)


def test_a_node_restarted_part_way_through_is_still_catching_up(tmp_path):
    marker = tmp_path / "raft.catching-up"
    marker.write_text("57")
    node = engine(marker)
    deliver(node, append_entries(1, 0, entries(2, 11), term=5, commit=11))
    assert node.catching_up and not votes_for(node, last_log_index=11)  # 57 is the mark, not 11


def test_a_later_leader_raises_the_mark(tmp_path):
    marker = tmp_path / "raft.catching-up"
    node = engine(marker)
    deliver(node, append_entries(1, 0, entries(2, 3), term=5, commit=10))
    assert marker.read_text() == "10"
    deliver(node, append_entries(3, 1, entries(4, 4), term=6, commit=20))  # the first was deposed
    assert node.catching_up and marker.read_text() == "20"
    deliver(node, append_entries(4, 1, entries(5, 12), term=5, commit=12))  # the deposed one, still sending
    assert node.catching_up and marker.read_text() == "20"


def lost_entries(node, catch_up_to, term=5):
    return {"type": LOST_ENTRIES, "term": term, "log_end": 3, "acknowledged": catch_up_to, "catch_up_to": catch_up_to}


def caught_up_node(marker):
    node = engine(marker)
    deliver(node, append_entries(1, 0, entries(2, 11), term=5, commit=11))
    assert not node.catching_up and not marker.exists()
    return node


def test_a_node_its_leader_says_lost_acknowledged_entries_catches_up_before_it_votes(tmp_path):
    """A data directory restored from an older copy is not empty: the leader notices what it lacks."""
    marker = tmp_path / "raft.catching-up"
    node = caught_up_node(marker)
    deliver(node, lost_entries(node, catch_up_to=20))
    assert node.catching_up and marker.read_text() == "20" and node.catching_up_to == 20
    assert not votes_for(node, last_log_index=11)
    deliver(node, append_entries(11, 1, entries(12, 20, term=5), term=5, commit=20))
    assert not node.catching_up and not marker.exists() and node.catching_up_to is None
    assert votes_for(node, last_log_index=20, last_log_term=5)


@pytest.mark.parametrize("sender, term", [("another member", 5), ("its leader", 4)])
def test_only_the_current_leader_can_say_so(tmp_path, sender, term):
    node = caught_up_node(tmp_path / "raft.catching-up")
    other = TCPNode("127.0.0.1:3") if sender == "another member" else LEADER
    node._SyncObj__onMessageReceived(other, lost_entries(node, catch_up_to=20, term=term))
    assert not node.catching_up


def test_a_node_asking_to_join_for_the_first_time_lost_nothing_and_votes_at_once(tmp_path):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False)
    node = SafeSyncObj("127.0.0.1:2", [LEADER.address, "127.0.0.1:3"], conf, NoStateMachine(), durable=False,
                       transportClass=RecordingTransport, catching_up_file=str(tmp_path / "marker"),
                       fresh_member=True)
    assert not node.catching_up and not (tmp_path / "marker").exists()


def test_a_node_that_starts_with_its_log_is_an_ordinary_member(tmp_path):
    node = SafeSyncObj("127.0.0.1:2", [], SyncObjConf(autoTick=False), NoStateMachine(), durable=False,
                       transportClass=RecordingTransport, catching_up_file=str(tmp_path / "marker"))
    assert not node.catching_up  # alone: nobody to elect wrongly
    assert not (tmp_path / "marker").exists()


# -- three node processes ----------------------------------------------------------------------



@pytest.mark.cluster
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
    assert wiped.status()["catching_up"] and not lagging.status()["catching_up"]

    leader.start(peers=cluster.peers_of(leader))
    cluster.wait_for_leader(timeout=30)
    counts = rows_on_every_node(cluster, "SELECT count(*) FROM t")
    assert counts == {0: [(ROWS,)], 1: [(ROWS,)], 2: [(ROWS,)]}


@pytest.mark.cluster
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
    assert not wiped.status()["catching_up"]
    # Now it is an ordinary member again: with the old leader gone, it and the
    # other follower elect one of themselves.
    leader.kill()
    new_leader = cluster.wait_for_leader(timeout=30, exclude=[leader])
    assert new_leader in (wiped, other)
    assert {index: rows for index, rows in rows_on_every_node(cluster, "SELECT count(*) FROM t").items()} == {
        wiped.index: [(ROWS,)], other.index: [(ROWS,)]}


@pytest.mark.cluster
def test_a_follower_restored_from_an_older_copy_is_told_so_and_catches_up_while_a_killed_one_is_not(
        cluster, tmp_path):
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    cluster.wait_converged()
    restored, _ = followers(cluster, leader)
    restored.stop()
    shutil.copytree(restored.data_dir, tmp_path / "older copy")
    restored.start(peers=cluster.peers_of(restored))
    for n in range(ROWS):
        conn.execute("INSERT INTO t VALUES (?)", (n,))
    cluster.wait_converged()  # every node acknowledged every row

    restored.kill()  # a crash: what it acknowledged was flushed first
    restored.start(peers=cluster.peers_of(restored))
    cluster.wait_converged()
    assert "no longer holds entries" not in leader.log() + restored.log()

    restored.kill()
    shutil.rmtree(restored.data_dir)
    shutil.copytree(tmp_path / "older copy", restored.data_dir)  # the rows are gone from its log
    restored.start(peers=cluster.peers_of(restored))
    cluster.wait_for(lambda: "no longer holds entries it acknowledged" in restored.log(), 15, "the leader telling it")
    assert f"member {restored.raft} no longer holds entries it acknowledged" in leader.log()
    counts = rows_on_every_node(cluster, "SELECT count(*) FROM t")
    assert counts == {0: [(ROWS,)], 1: [(ROWS,)], 2: [(ROWS,)]}
    assert not restored.status()["catching_up"]  # caught up: an ordinary member again
    conn.close()
