"""A leader handing over (graceful stop) appends nothing and names one target;
a node that stopped leading never forwards a transaction it took as leader.

Raft's leadership transfer: the leader sends TimeoutNow to a follower that
holds its whole log, and that follower wins the election at once, because the
old leader's vote and its own are a majority of three. If the leader appends
an entry after the TimeoutNow (a member announcing its client address, a
checkpoint), the target's log is shorter than the old leader's and the old
leader refuses its vote: no leader until an election timeout later, two
terms more. Once it follows, pysyncobj would forward what its command queue
still holds to the new leader: a transaction's entry must fail instead (its
statements read this node's state), other entries may go. These tests drive
one engine by hand (no network, no clock).
"""

import pickle

from pysyncobj import FAIL_REASON
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _RAFT_STATE

from django_dqcluster.store.raft import NOT_APPLIED, SafeSyncObj

from .test_raft_safety import NoStateMachine, RecordingTransport, _conf

LOWER = TCPNode("127.0.0.1:3")
HIGHER = TCPNode("127.0.0.1:4")


def leader_with_commands():
    """A leader of three whose followers hold its whole log, with a command waiting on every tick."""
    engine = SafeSyncObj("127.0.0.1:2", [LOWER.address, HIGHER.address], _conf(), NoStateMachine(),
                         durable=False, transportClass=RecordingTransport)
    engine._SyncObj__raftState = _RAFT_STATE.LEADER
    engine._SyncObj__raftLeader = engine._SyncObj__selfNode
    for node in (LOWER, HIGHER):
        engine._SyncObj__connectedNodes.add(node)
        engine._SyncObj__raftMatchIndex[node] = last_index(engine)
        engine._SyncObj__raftNextIndex[node] = last_index(engine) + 1
    engine.command_source = lambda: [(b"a member announces its client address", None)]
    return engine


def last_index(engine):
    return engine._SyncObj__getCurrentLogIndex()


def timeouts_sent(engine):
    return [node for node, message in engine._SyncObj__transport.sent if message.get("type") == "timeout_now"]


def test_a_leader_takes_commands_while_not_handing_over():
    engine = leader_with_commands()
    before = last_index(engine)

    engine._checkCommandsToApply()

    assert last_index(engine) == before + 1
    assert timeouts_sent(engine) == []


def test_a_leader_handing_over_appends_nothing_so_its_target_can_win_the_election():
    engine = leader_with_commands()
    before = last_index(engine)
    engine.request_handover()

    for _ in range(3):
        engine._checkCommandsToApply()

    assert last_index(engine) == before
    assert timeouts_sent(engine) == [HIGHER, HIGHER, HIGHER]


def test_the_handover_keeps_its_first_target_when_another_follower_catches_up():
    engine = leader_with_commands()
    engine._SyncObj__raftMatchIndex[HIGHER] = last_index(engine) - 1  # still receiving
    engine.request_handover()
    engine._checkCommandsToApply()

    engine._SyncObj__raftMatchIndex[HIGHER] = last_index(engine)
    engine._checkCommandsToApply()

    # pysyncobj alone would now pick HIGHER: two followers starting elections
    # in the same term split the votes.
    assert timeouts_sent(engine) == [LOWER, LOWER]


def test_no_timeout_now_goes_out_while_no_follower_holds_the_whole_log():
    engine = leader_with_commands()
    for node in (LOWER, HIGHER):
        engine._SyncObj__raftMatchIndex[node] = last_index(engine) - 1
    engine.request_handover()

    engine._checkCommandsToApply()

    assert timeouts_sent(engine) == []


def test_a_cancelled_handover_takes_commands_again():
    engine = leader_with_commands()
    before = last_index(engine)
    engine.request_handover()
    engine._checkCommandsToApply()

    engine.cancel_handover()
    engine._checkCommandsToApply()

    assert last_index(engine) == before + 1


class TransactionsOutcome:
    """Stands in for the callback of an entry holding transactions (group_commit)."""

    leader_only = True

    def __init__(self):
        self.outcomes = []

    def __call__(self, result, error):
        self.outcomes.append((result, error))


def test_a_node_that_stopped_leading_fails_its_transactions_and_forwards_the_rest():
    engine = leader_with_commands()
    transactions = TransactionsOutcome()
    engine.command_source = lambda: [(b"UPDATE t SET v = v + 1", transactions),
                                     (b"a member announces its client address", None)]
    engine._SyncObj__raftState = _RAFT_STATE.FOLLOWER
    engine._SyncObj__raftLeader = HIGHER
    before = last_index(engine)

    engine._checkCommandsToApply()

    assert transactions.outcomes == [(None, FAIL_REASON.NOT_LEADER)]
    assert FAIL_REASON.NOT_LEADER in NOT_APPLIED  # the client gets a retryable error
    forwarded = [(node, pickle.loads(message["command"][1:])[1]) for node, message in engine._SyncObj__transport.sent
                 if message.get("type") == "apply_command"]
    assert forwarded == [(HIGHER, (b"a member announces its client address",))]
    assert last_index(engine) == before


def test_a_leader_appends_its_transactions():
    engine = leader_with_commands()
    transactions = TransactionsOutcome()
    engine.command_source = lambda: [(b"UPDATE t SET v = v + 1", transactions)]
    before = last_index(engine)

    engine._checkCommandsToApply()

    assert last_index(engine) == before + 1
    assert transactions.outcomes == []  # answered once committed
