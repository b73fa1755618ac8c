"""In a rolling upgrade, a leader writes entries every member applies.

Members of two releases run side by side while hosts are upgraded one at a
time, and any of them may lead. A member meeting an entry of a format its
code does not know stops there until it is upgraded (test_entry_format.py).
So each member announces the newest entry format its code applies (member
entries' ``applies``), and a leader writes the newest format every member
announced, leaving out what an older one would not apply; once the last
member runs the new release, the new format follows by itself. Nobody has to
upgrade the leader last.
"""

import uuid

import pytest

from pysyncobj.syncobj import SyncObj

from django_dqcluster.store import statemachine
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.send_queue import UNSENT_LIMIT
from django_dqcluster.store.statemachine import MEMBER, StateMachine, encode_entry, writable_entry_format

from .conftest import rows_on_every_node
from .test_send_flow import QueueingConnection, leader_with_a_follower_behind

NEXT = statemachine.ENTRY_FORMAT + 1
# A node of the next release: the same code, applying (and able to write) one entry format more.
NEXT_RELEASE = ("-c", "import sys; from django_dqcluster.store import statemachine; "
                f"statemachine.ENTRY_FORMAT = {NEXT}; "
                "from django_dqcluster.store.__main__ import main; sys.exit(main())")


def member(raft, **fields):
    return encode_entry({"kind": MEMBER, "id": uuid.uuid4().hex, "raft": raft, "client": "127.0.0.1:1", **fields})


@pytest.fixture
def machine(tmp_path):
    machine = StateMachine(str(tmp_path / "data"), fsync=False)
    yield machine
    machine.close()


def test_a_member_entry_records_the_formats_its_member_applies(machine):
    machine.apply(member("a:1", applies=3), 1)
    machine.apply(member("b:1", applies=2), 2)
    assert machine.entry_formats == {"a:1": 3, "b:1": 2}


def test_an_announcement_that_does_not_say_makes_the_format_unknown_again(machine):
    # An older release announces its client address only (and the leader adding a member cannot know its code).
    machine.apply(member("a:1", applies=5), 1)
    machine.apply(member("a:1"), 2)
    machine.apply(member("b:1", applies="3"), 3)
    assert machine.entry_formats == {}


def test_a_removed_member_is_forgotten(machine):
    machine.apply(member("a:1", applies=3), 1)
    machine.apply(encode_entry({"kind": MEMBER, "id": uuid.uuid4().hex, "raft": "a:1", "remove": True}), 2)
    assert machine.entry_formats == {} and machine.members == {}


def test_a_snapshot_carries_the_formats(machine, tmp_path):
    machine.apply(member("a:1", applies=3), 1)
    filename = str(tmp_path / "snapshot")
    machine.write_snapshot(filename, ((b"", 1, 1), (b"", 0, 1), []))
    replica = StateMachine(str(tmp_path / "replica"), fsync=False)
    try:
        replica.read_snapshot(filename, lambda address: address)
        assert replica.entry_formats == {"a:1": 3}
    finally:
        replica.close()


@pytest.mark.parametrize("formats, others, written", [
    ({}, [], statemachine.ENTRY_FORMAT),  # alone
    ({"b:1": NEXT, "c:1": NEXT}, ["b:1", "c:1"], statemachine.ENTRY_FORMAT),  # never newer than its own code
    ({"b:1": 2, "c:1": NEXT}, ["b:1", "c:1"], 2),  # the oldest member's
    ({"c:1": 2}, ["b:1"], statemachine.UNANNOUNCED_FORMAT),  # a member that has not said; c:1 left
])
def test_a_leader_writes_the_newest_format_every_member_applies(formats, others, written):
    assert writable_entry_format(formats, others) == written


def test_a_member_left_out_of_a_round_of_sends_still_holds_the_format_back(monkeypatch):
    """Sessions ask for the members while the Raft thread sends: a round leaves out a backed-up follower."""
    connection = QueueingConnection(waiting=UNSENT_LIMIT + 1)
    engine, follower = leader_with_a_follower_behind(connection)
    seen = []
    stock_round = SyncObj._SyncObj__sendAppendEntries
    monkeypatch.setattr(SyncObj, "_SyncObj__sendAppendEntries", lambda self: (
        seen.append((set(self._SyncObj__otherNodes), self.other_member_addresses())), stock_round(self))[1])

    engine._SyncObj__sendAppendEntries()

    assert seen == [(set(), {follower.address})]  # out of the round, not out of the cluster
    assert writable_entry_format({follower.address: 2}, seen[0][1]) == 2


@pytest.mark.cluster
def test_a_leader_of_the_next_release_writes_what_a_member_of_this_one_applies(tmp_path):
    cluster = LocalCluster(str(tmp_path / "cluster"), 3)
    try:
        newer, older = cluster.nodes[:2], cluster.nodes[2]
        for node in newer:  # two of three: they elect a leader of the next release
            node.start(peers=cluster.peers_of(node), command=NEXT_RELEASE)
        leader = cluster.leader()
        older.start(peers=cluster.peers_of(older))

        def formats_are(expected, written):
            status = leader.status()
            return (status["entry_format"] == written
                    and {m["raft"]: m["applies"] for m in status["members"]} == expected)

        cluster.wait_for(lambda: formats_are({newer[0].raft: NEXT, newer[1].raft: NEXT,
                                              older.raft: statemachine.ENTRY_FORMAT}, statemachine.ENTRY_FORMAT),
                         30, "every member to announce its entry formats")
        conn = leader.connect()
        conn.execute("CREATE TABLE t (n INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("COMMIT")
        # A format-NEXT entry would have stopped it (and rows_on_every_node would time out).
        assert rows_on_every_node(cluster, "SELECT n FROM t ORDER BY n") == {0: [(1,), (2,)], 1: [(1,), (2,)],
                                                                             2: [(1,), (2,)]}
        assert older.status()["fatal"] is None

        older.stop()  # its host upgraded: the next release's code on the same data
        older.start(peers=cluster.peers_of(older), command=NEXT_RELEASE)
        cluster.wait_for(lambda: formats_are({node.raft: NEXT for node in cluster.nodes}, NEXT),
                         30, "the upgraded member to announce the next format")
        conn.execute("INSERT INTO t VALUES (3)")  # format NEXT, which every member now applies
        assert rows_on_every_node(cluster, "SELECT count(*) FROM t") == {0: [(3,)], 1: [(3,)], 2: [(3,)]}
        assert all(node.status()["fatal"] is None for node in cluster.nodes)
        conn.close()
    finally:
        cluster.kill()
