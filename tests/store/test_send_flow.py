"""A leader queues a follower a bounded amount, however far behind the follower is.

pysyncobj sends a follower every entry it lacks, for up to 0.1 s per round of
sends, and goes on from there at the next round whether or not the first ones
left: a follower catching up a long log, or a slow one, had all of it queued
in the leader's memory, with the heartbeats behind it
(``bench/catchup_bench.py`` measures it on a cluster).
"""

from pysyncobj import SyncObjConf
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.tcp_connection import CONNECTION_STATE

from django_dqcluster.store.raft import FlushingTransport, SafeSyncObj
from django_dqcluster.store.send_queue import UNSENT_LIMIT

from .test_raft_safety import NoStateMachine, RecordingTransport

ENTRY = 600  # bytes: two entries fill one message of the batch size below


class QueueingConnection:
    """A connected peer that takes nothing yet: what is sent waits in its queue."""

    state = CONNECTION_STATE.CONNECTED
    sendRandKey = b"k" * 32

    def __init__(self, waiting=0):
        self.waiting = waiting
        self.sent = []

    def send(self, message):
        self.sent.append(message)
        self.waiting += sum(len(entry[0]) for entry in message.get("entries", []))
        if message.get("serialized"):
            self.waiting += len(message["serialized"][0])

    def getSendBufferSize(self):
        return self.waiting


def leader_of_one_follower(connection, batch_bytes=1000):
    """A leader whose one follower, connected, is reached through ``connection``; its log is empty."""
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, appendEntriesBatchSizeBytes=batch_bytes)
    engine = SafeSyncObj("127.0.0.1:2", ["127.0.0.1:3"], conf, NoStateMachine(), durable=False,
                         transportClass=RecordingTransport)
    follower = next(iter(engine._SyncObj__otherNodes))
    transport = object.__new__(FlushingTransport)
    transport._syncObj = engine
    transport._connections = {follower: connection}
    transport._send_random_sleep_duration = 0
    engine._SyncObj__transport = transport
    engine._SyncObj__raftState = _RAFT_STATE.LEADER
    engine._SyncObj__connectedNodes.add(follower)
    engine._SyncObj__raftLog.clear()
    return engine, follower


def leader_with_a_follower_behind(connection):
    """A leader holding entries 40-60; its follower needs them from 50 on."""
    engine, follower = leader_of_one_follower(connection)
    log = engine._SyncObj__raftLog
    for index in range(40, 61):
        log.add(b"\x00" + b"x" * (ENTRY - 1), index, 1)
    engine._SyncObj__raftNextIndex[follower] = 50
    return engine, follower


def sent_entries(connection):
    return [entry[1] for message in connection.sent for entry in message.get("entries", [])]


def test_a_follower_with_room_in_its_queue_is_sent_every_entry_it_lacks():
    connection = QueueingConnection()
    engine, follower = leader_with_a_follower_behind(connection)

    engine._SyncObj__sendAppendEntries()

    assert sent_entries(connection) == list(range(50, 61))
    assert engine._SyncObj__raftNextIndex[follower] == 61


def test_a_follower_whose_queue_passes_the_limit_in_a_round_is_sent_nothing_more_in_it():
    connection = QueueingConnection(waiting=UNSENT_LIMIT - 10)
    engine, follower = leader_with_a_follower_behind(connection)

    engine._SyncObj__sendAppendEntries()

    assert sent_entries(connection) == [50, 51], "the message that took it past the limit"
    assert engine._SyncObj__raftNextIndex[follower] == 52, "the next round goes on after what was sent"

    connection.waiting = 0  # it all left
    engine._SyncObj__sendAppendEntries()
    assert sent_entries(connection) == list(range(50, 61))


def test_outside_a_round_of_sends_a_full_queue_holds_nothing_back():
    connection = QueueingConnection(waiting=UNSENT_LIMIT + 1)
    engine, follower = leader_with_a_follower_behind(connection)

    engine._SyncObj__transport.send(follower, {"type": "append_entries", "term": 1, "commit_index": 0})

    assert engine._SyncObj__raftNextIndex[follower] == 50
    assert engine._held_sends == {}


def test_a_follower_with_more_than_the_limit_queued_when_a_round_begins_is_sent_nothing_in_it():
    """Rounds come with every commit: one message each would add an entry per commit to the queue."""
    connection = QueueingConnection(waiting=UNSENT_LIMIT - 10)
    engine, follower = leader_with_a_follower_behind(connection)
    engine._SyncObj__sendAppendEntries()
    assert sent_entries(connection) == [50, 51]

    engine._SyncObj__sendAppendEntries()
    engine._SyncObj__sendAppendEntries()

    assert sent_entries(connection) == [50, 51], "what waits carries its heartbeats"
    assert engine._SyncObj__raftNextIndex[follower] == 52
    assert follower in engine._SyncObj__otherNodes, "a member still, counted in every majority"


def test_a_snapshot_chunk_that_fills_the_queue_does_not_end_the_transfer_in_a_muddle():
    """Holding after a chunk, pysyncobj's loop went on sending heartbeats from past the log for 0.1 s."""
    from django_dqcluster.store.snapshot_files import SnapshotFiles

    connection = QueueingConnection(waiting=UNSENT_LIMIT - 10)
    engine, follower = leader_with_a_follower_behind(connection)
    engine._SyncObj__raftNextIndex[follower] = 30  # before the log's start (40): it needs the snapshot
    engine._SyncObj__serializer = SnapshotFiles(
        "/dev/zero", 100, begin=None, load=None, link_to=lambda node: connection, hold=engine._hold_sends,
        durable=False)

    engine._SyncObj__sendAppendEntries()

    kinds = [("chunk" if message["serialized"] else "no chunk") if "serialized" in message else "entries"
             for message in connection.sent]
    assert kinds == ["chunk", "no chunk"], "a chunk, then nothing more in this round (the queue is full)"
    assert engine._SyncObj__raftNextIndex[follower] == 30
