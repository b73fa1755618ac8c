"""A committed entry this node cannot apply yet (a full disk, an entry of newer code):

the node retries that same entry, keeps doing Raft meanwhile, answers the
entry's client once it applies, leaves leadership to a member that can
apply, and logs the problem once, then once a minute, not once a tick.
The engine tests drive one engine by hand (no network); the clock is a fake.
"""

import logging

import pytest
from pysyncobj import FAIL_REASON, SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _RAFT_STATE

from django_dqcluster.store.apply_stall import ApplyStall, EntryNotApplied
from django_dqcluster.store import statemachine
from django_dqcluster.store.raft import SafeSyncObj
from django_dqcluster.store.statemachine import ApplyFailed, StateMachine, encode_entry

from .test_group_commit import rows, tx
from .test_raft_safety import RecordingTransport

OTHER = TCPNode("127.0.0.1:3")
THIRD = TCPNode("127.0.0.1:4")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FailingStateMachine:
    """Applies every entry, except while ``failure`` names why it cannot."""

    failure = None

    def __init__(self):
        self.applied = []

    def apply(self, payload, index):
        if self.failure:
            raise EntryNotApplied(self.failure)
        self.applied.append(index)
        return f"result of {index}"


def engine_alone(state_machine, clock):
    """A single-member cluster, leader after its first ticks."""
    engine = SafeSyncObj("127.0.0.1:2", [], SyncObjConf(autoTick=False, appendEntriesUseBatch=False),
                         state_machine, durable=False, transportClass=RecordingTransport)
    engine.apply_stall = ApplyStall(clock=clock)
    engine._SyncObj__raftElectionDeadline = 0
    for _ in range(3):
        engine._onTick(0)
    assert engine._isLeader()
    return engine


def engine_of_three(state_machine, clock, state):
    engine = SafeSyncObj("127.0.0.1:2", [OTHER.address, THIRD.address],
                         SyncObjConf(autoTick=False, appendEntriesUseBatch=False), state_machine,
                         durable=False, transportClass=RecordingTransport)
    engine.apply_stall = ApplyStall(clock=clock)
    engine._SyncObj__raftState = state
    for node in (OTHER, THIRD):
        engine._SyncObj__connectedNodes.add(node)
        engine._SyncObj__raftMatchIndex[node] = engine._SyncObj__getCurrentLogIndex()
    return engine


def stall(engine, index=7, reason="database or disk is full"):
    engine.apply_stall.failed(index, reason)


def test_the_entry_is_retried_and_its_client_answered_once_it_applies(caplog):
    clock, machine = FakeClock(), FailingStateMachine()
    engine = engine_alone(machine, clock)
    answers = []
    machine.failure = "database or disk is full"

    engine.apply_entry(b"insert", callback=lambda result, error: answers.append((result, error)))
    for _ in range(5):
        engine._onTick(0)  # must not raise: the tick goes on
    index = engine.apply_stall.index

    assert index == engine.raftCommitIndex == engine.raftLastApplied + 1
    assert answers == []

    machine.failure = None
    engine._onTick(0)
    assert answers == [], "retried before its time"
    clock.now += 0.1
    engine._onTick(0)

    assert answers == [(f"result of {index}", FAIL_REASON.SUCCESS)]
    assert engine.raftLastApplied == index and not engine.apply_stall.stalled
    assert machine.applied[-1] == index


def test_a_stalled_node_logs_the_failure_once_then_once_a_minute_and_says_when_it_is_over(caplog):
    clock = FakeClock()
    stalled = ApplyStall(clock=clock)
    caplog.set_level(logging.INFO, logger="django_dqcluster.store")

    for _ in range(100):  # ten seconds of attempts
        stalled.failed(7, "database or disk is full")
        clock.now += 0.1
    assert [r.getMessage() for r in caplog.records] == [
        "cannot apply entry 7: database or disk is full; retrying every 0.1s until it applies"]

    clock.now += 50
    stalled.failed(7, "database or disk is full")
    assert caplog.records[-1].getMessage() == "still cannot apply entry 7 after 60s (101 attempts): database or disk is full"

    stalled.failed(7, "disk I/O error")
    assert caplog.records[-1].getMessage().endswith("(102 attempts): disk I/O error"), "a new reason is news"

    stalled.applied_up_to(6)
    assert stalled.stalled
    stalled.applied_up_to(9)
    assert not stalled.stalled
    assert caplog.records[-1].levelno == logging.WARNING
    assert caplog.records[-1].getMessage() == ("applied entry 7 at last, 60.0s after the first of 102 failed "
                                               "attempts; this node goes on")
    assert len(caplog.records) == 4


def test_retries_wait_their_interval_and_a_new_entry_starts_a_new_stall():
    clock = FakeClock()
    stalled = ApplyStall(clock=clock, retry_every=0.5)
    assert stalled.may_retry()

    stalled.failed(7, "full")
    assert not stalled.may_retry()
    clock.now += 0.5
    assert stalled.may_retry()

    stalled.failed(7, "full")
    stalled.failed(8, "full")
    assert (stalled.index, stalled.attempts, stalled.since) == (8, 1, clock.now)


def test_a_stuck_node_is_one_stalled_for_a_second_or_more():
    clock = FakeClock()
    stalled = ApplyStall(clock=clock)
    stalled.failed(7, "database is locked")  # a deposed leader's transaction, rolling back
    assert stalled.stalled and not stalled.stuck

    clock.now += 1.0
    stalled.failed(7, "database or disk is full")
    assert stalled.stuck

    stalled.applied_up_to(7)
    assert not stalled.stuck


def test_a_stuck_leader_hands_leadership_over_and_takes_it_back_only_once_it_applies():
    clock = FakeClock()
    engine = engine_of_three(FailingStateMachine(), clock, _RAFT_STATE.LEADER)
    stall(engine)
    engine._keep_a_stalled_node_from_leading()
    assert not engine._handover_requested, "a passing stall is no reason to hand over"

    clock.now += 1.0
    engine._keep_a_stalled_node_from_leading()
    engine._checkCommandsToApply()
    assert [node for node, message in engine._SyncObj__transport.sent
            if message.get("type") == "timeout_now"] == [THIRD]

    engine.apply_stall.applied_up_to(7)
    engine._keep_a_stalled_node_from_leading()
    assert not engine._handover_requested


def test_a_stalled_follower_calls_no_election_but_a_healthy_one_does():
    engine = engine_of_three(FailingStateMachine(), FakeClock(), _RAFT_STATE.FOLLOWER)
    engine._SyncObj__raftElectionDeadline = 0
    stall(engine)

    engine._keep_a_stalled_node_from_leading()
    assert engine._SyncObj__raftElectionDeadline > 0

    engine.apply_stall.applied_up_to(7)
    engine._SyncObj__raftElectionDeadline = 0
    engine._keep_a_stalled_node_from_leading()
    assert engine._SyncObj__raftElectionDeadline == 0


def test_a_stuck_node_alone_stays_leader():
    clock = FakeClock()
    engine = engine_alone(FailingStateMachine(), clock)
    stall(engine)
    clock.now += 1.0

    engine._keep_a_stalled_node_from_leading()

    assert not engine._handover_requested


# -- the store's state machine ------------------------------------------------------------------


def test_a_statement_out_of_memory_leaves_nothing_applied_and_its_entry_is_offered_again(tmp_path):
    """A Python function in the statement ran out of memory: the node's own trouble, as a full disk.

    The MemoryError used to escape the state machine with the SQLite transaction left open, and
    pysyncobj logged its traceback ten times a second."""
    calls = []

    def short_of_memory_once(conn):
        def value():
            calls.append(1)
            if len(calls) == 1:
                raise MemoryError
            return 7
        conn.create_function("value", 0, value)

    machine = StateMachine(str(tmp_path / "data"), fsync=False, configure_connection=short_of_memory_once)
    try:
        machine.apply(encode_entry(tx("CREATE TABLE t (v)")), 1)
        entry = encode_entry(tx("INSERT INTO t VALUES (1), (value())"))
        with pytest.raises(ApplyFailed, match=r"out of memory applying a transaction \(database 'app'\)"):
            machine.apply(entry, 2)
        assert rows(machine, "SELECT v FROM t") == []
        assert "error" not in machine.apply(entry, 2)  # offered again, with memory to spare
        assert rows(machine, "SELECT v FROM t ORDER BY v") == [(1,), (7,)]
    finally:
        machine.close()


def test_an_error_nobody_foresaw_leaves_nothing_applied_and_is_logged_once_and_the_entry_offered_again(
        tmp_path, monkeypatch, caplog):
    """What no branch expects (a bug, a Python error where SQLite's was expected) is handled like a full
    disk: pysyncobj used to log its traceback at every tick, with the transaction left open."""
    machine = StateMachine(str(tmp_path / "data"), fsync=False)
    try:
        machine.apply(encode_entry(tx("CREATE TABLE t (v)")), 1)
        bugs = [KeyError("a bug"), KeyError("a bug")]
        recorded = statemachine.record_applied

        def record_applied(conn, entry_ids, index):
            if bugs:
                raise bugs.pop()
            recorded(conn, entry_ids, index)

        monkeypatch.setattr(statemachine, "record_applied", record_applied)
        entry = encode_entry(tx("INSERT INTO t VALUES (1)"))  # inserted, then its bookkeeping fails
        with caplog.at_level(logging.ERROR, logger="django_dqcluster.store"):
            for attempt in range(2):
                with pytest.raises(ApplyFailed, match=r"applying entry 2 failed: KeyError: 'a bug'"):
                    machine.apply(entry, 2)
                assert not machine.databases.get("app").apply_connection().in_transaction
                assert rows(machine, "SELECT v FROM t") == []
                assert machine.fatal == "applying entry 2 failed: KeyError: 'a bug'"
        assert caplog.text.count("applying entry 2 failed") == 1
        machine.apply(entry, 2)
        assert rows(machine, "SELECT v FROM t") == [(1,)]
        assert machine.fatal is None
    finally:
        machine.close()
