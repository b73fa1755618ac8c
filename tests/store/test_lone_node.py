"""A node alone (an embedded store, a one-node cluster) commits an entry in the tick that appends it.

Its own copy is the whole majority, and no follower's reply ends the poll
that follows the append: pysyncobj would commit it at the next tick, after
a wake-up through its pipe. These tests drive one node by hand.
"""

from pysyncobj import FAIL_REASON, SyncObjConf

from django_dqcluster.store.raft import SafeSyncObj

from .test_raft_safety import RecordingTransport


class RecordingStateMachine:
    def __init__(self):
        self.applied = []

    def apply(self, payload, index):
        self.applied.append((index, payload))
        return {"index": index}


class NoPoller:
    """Nothing ever arrives: what a lone node's poll sees but for its own pipe."""

    def poll(self, timeout):
        pass


def lone_leader(tmp_path, durable):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, journalFile=str(tmp_path / "raft.journal"))
    machine = RecordingStateMachine()
    engine = SafeSyncObj("127.0.0.1:2", [], conf, machine, durable=durable, transportClass=RecordingTransport)
    engine._poller = NoPoller()
    engine._SyncObj__raftElectionDeadline = 0
    engine._onTick(0)  # elects itself
    engine._onTick(0)  # commits its term's no-op
    assert engine._isLeader()
    return engine, machine


def queue(engine, payload):
    outcomes = []
    waiting = [(payload, lambda result, error: outcomes.append((result, error)))]
    engine.command_source = lambda: [waiting.pop()] if waiting else []
    return outcomes


def test_an_entry_is_committed_and_applied_in_the_tick_that_appends_it(tmp_path):
    engine, machine = lone_leader(tmp_path, durable=True)
    outcomes = queue(engine, b"the payload")

    engine._onTick(0)

    index = engine._SyncObj__raftLog[-1][1]
    assert machine.applied == [(index, b"the payload")]
    assert outcomes == [({"index": index}, FAIL_REASON.SUCCESS)]
    assert engine._SyncObj__raftCommitIndex == engine._SyncObj__raftLastApplied == index
    assert engine._flushed_upto == engine._SyncObj__raftLog[-1][1:3]  # on disk before it counted
    engine._SyncObj__raftLog._destroy()


def test_without_fsync_an_entry_is_committed_in_that_tick_too(tmp_path):
    engine, machine = lone_leader(tmp_path, durable=False)
    outcomes = queue(engine, b"the payload")

    engine._onTick(0)

    assert [payload for _, payload in machine.applied] == [b"the payload"]
    assert [error for _, error in outcomes] == [FAIL_REASON.SUCCESS]
    engine._SyncObj__raftLog._destroy()
