"""Who may vote while a leader's lease may still hold.

A leader answers strong reads from its own copy while a majority echoed one
of its messages within the last 0.8 election timeouts (SafeSyncObj.lease_valid).
That is safe only if no member that echoed it votes for another candidate
before the election timeout has passed: no second leader can then commit a
write the first one's reads would miss. A follower remembers hearing from its
leader; a member that restarted does not, so it waits an election timeout
after it started before it votes at all. Members may run with different
election timeouts: each says with its echo how long it will wait, and the
leader counts on no more than that. Holding its lease, the leader answers a
strong read from what it applied, once that holds every write any leader
answered.
"""

import time
from time import monotonic

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.tcp_connection import CONNECTION_STATE

from django_dqcluster.store.large_entries import LEADER_BUSY, LEADER_BUSY_PROMISE
from django_dqcluster.store.raft import FlushingTransport, SafeSyncObj
from django_dqcluster.store.vote_promises import VotePromise

from .test_raft_safety import LEADER, NoStateMachine, RecordingTransport, deliver, holds_ten_entries

ELECTION_TIMEOUT = 0.3
CANDIDATE = type(LEADER)("127.0.0.1:9")


def started_member(vote_promise_file=None):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, appendEntriesPeriod=0.05,
                       raftMinTimeout=ELECTION_TIMEOUT, raftMaxTimeout=2 * ELECTION_TIMEOUT)
    return SafeSyncObj("127.0.0.1:2", [LEADER.address, CANDIDATE.address], conf, NoStateMachine(), durable=False,
                       transportClass=RecordingTransport,
                       vote_promise_file=str(vote_promise_file) if vote_promise_file else None)


def asks_for_its_vote(member, term):
    member._SyncObj__transport.sent.clear()
    member._SyncObj__onMessageReceived(
        CANDIDATE, {"type": "request_vote", "term": term, "last_log_index": 20, "last_log_term": 1})
    return [message for _, message in member._SyncObj__transport.sent if message["type"] == "response_vote"]


def test_a_member_that_just_started_votes_for_no_one_until_an_election_timeout_has_passed():
    member = started_member()

    assert asks_for_its_vote(member, term=2) == []
    assert member._SyncObj__raftCurrentTerm == 0  # nor does it take the candidate's term

    time.sleep(ELECTION_TIMEOUT)
    assert asks_for_its_vote(member, term=2) != []
    assert member._SyncObj__raftCurrentTerm == 2


def test_a_follower_votes_for_no_one_within_an_election_timeout_of_hearing_from_its_leader():
    member = started_member()
    time.sleep(ELECTION_TIMEOUT)
    holds_ten_entries(member)  # it hears from LEADER, in term 1

    assert asks_for_its_vote(member, term=2) == []

    time.sleep(ELECTION_TIMEOUT)  # nothing from the leader since
    assert asks_for_its_vote(member, term=2) != []


def test_a_heartbeat_keeps_a_follower_from_voting():
    member = started_member()
    time.sleep(ELECTION_TIMEOUT)
    holds_ten_entries(member)
    for _ in range(3):
        time.sleep(ELECTION_TIMEOUT / 2)
        deliver(member, {"type": "append_entries", "term": 1, "commit_index": 1, "prevLogIdx": 11,
                         "prevLogTerm": 1, "entries": []})
        assert asks_for_its_vote(member, term=2) == []


class Connection:
    state = CONNECTION_STATE.CONNECTED
    sendRandKey = b"keys exchanged"

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def test_a_follower_says_with_its_echo_how_long_it_will_vote_for_no_one():
    member, to_leader = started_member(), Connection()
    transport = object.__new__(FlushingTransport)  # the node's own, on a connection that records
    transport._syncObj, transport._connections, transport._send_random_sleep_duration = member, {LEADER: to_leader}, 0
    member._SyncObj__transport = transport

    deliver(member, {"type": "append_entries", "term": 1, "commit_index": 1, "prevLogIdx": 1, "prevLogTerm": 0,
                     "entries": [], "lease_ts": 123.5})

    reply = to_leader.sent[-1]
    assert reply["type"] == "next_node_idx"
    assert (reply["lease_echo"], reply["lease_window"]) == (123.5, ELECTION_TIMEOUT)


# -- the leader's side: a lease from the promises of a majority ---------------------------------

FOLLOWERS = [type(LEADER)("127.0.0.1:3"), type(LEADER)("127.0.0.1:4")]


def leader():
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, appendEntriesPeriod=0.05,
                       raftMinTimeout=ELECTION_TIMEOUT, raftMaxTimeout=2 * ELECTION_TIMEOUT)
    engine = SafeSyncObj("127.0.0.1:2", [node.address for node in FOLLOWERS], conf, NoStateMachine(), durable=False,
                         transportClass=RecordingTransport)
    engine._SyncObj__raftState = _RAFT_STATE.LEADER
    for follower in FOLLOWERS:
        engine._SyncObj__raftNextIndex[follower], engine._SyncObj__raftMatchIndex[follower] = 2, 1
    engine._leader_since = monotonic() - 1.0
    # Its own term's first entry (the no-op every new leader appends) is committed.
    engine._SyncObj__noopIDx = engine._SyncObj__raftCommitIndex = 1
    return engine


def echo(engine, follower, sent_at, **window):
    engine._SyncObj__onMessageReceived(follower, {
        "type": "next_node_idx", "next_node_idx": 2, "success": True, "reset": False,
        "term": engine._SyncObj__raftCurrentTerm, "lease_echo": sent_at, **window,
    })


def test_a_leader_holds_no_lease_until_a_majority_echoed_it():
    engine = leader()
    assert not engine.lease_valid()
    echo(engine, FOLLOWERS[0], monotonic(), lease_window=ELECTION_TIMEOUT)
    assert engine.lease_valid()  # with itself, two of three


def test_the_lease_lasts_most_of_the_window_the_follower_promised_not_the_leaders_own_timeout():
    short, long = leader(), leader()
    sent_at = monotonic()
    echo(short, FOLLOWERS[0], sent_at, lease_window=ELECTION_TIMEOUT / 3)  # a member started with a shorter timeout
    echo(long, FOLLOWERS[0], sent_at, lease_window=ELECTION_TIMEOUT * 10)

    time.sleep(ELECTION_TIMEOUT / 3)
    assert not short.lease_valid()
    assert long.lease_valid()


def test_a_follower_of_a_release_that_states_no_window_is_taken_to_share_the_leaders():
    engine = leader()
    echo(engine, FOLLOWERS[0], monotonic())
    assert engine.lease_valid()
    time.sleep(0.8 * ELECTION_TIMEOUT)
    assert not engine.lease_valid()


@pytest.mark.parametrize("window", ["0.3", True, None])
def test_an_echo_with_a_window_that_is_not_a_number_extends_nothing(window):
    engine = leader()
    echo(engine, FOLLOWERS[0], monotonic(), lease_window=window)
    assert not engine.lease_valid()


def test_an_echo_of_a_message_sent_before_it_led_extends_nothing():
    engine = leader()
    echo(engine, FOLLOWERS[0], engine._leader_since - 0.01, lease_window=60.0)
    assert not engine.lease_valid()


# -- what the lease lets the leader answer ------------------------------------------------------


def applying(engine, last_applied, commit_index):
    engine._SyncObj__raftLastApplied, engine._SyncObj__raftCommitIndex = last_applied, commit_index


def test_a_leader_holding_its_lease_answers_strong_reads_while_it_applies_entries_just_committed():
    # Their writers hear back only once the leader applied them: a read may come before.
    engine = leader()
    echo(engine, FOLLOWERS[0], monotonic(), lease_window=ELECTION_TIMEOUT)
    applying(engine, last_applied=40, commit_index=42)
    assert engine.answers_reads_locally()


def test_a_leader_answers_no_read_locally_before_it_applied_what_earlier_leaders_committed():
    # Everything before its own first entry (the no-op at 40) may have been answered by them.
    engine = leader()
    engine._SyncObj__noopIDx = 40
    echo(engine, FOLLOWERS[0], monotonic(), lease_window=ELECTION_TIMEOUT)
    applying(engine, last_applied=39, commit_index=42)
    assert not engine.answers_reads_locally()
    applying(engine, last_applied=40, commit_index=42)
    assert engine.answers_reads_locally()


def test_a_leader_without_its_lease_answers_no_read_locally():
    engine = leader()
    applying(engine, last_applied=42, commit_index=42)
    assert not engine.answers_reads_locally()



# -- a leader busy with a large entry: a lease as long as the followers' promises ------------------

BUSY_SECONDS = 10 * ELECTION_TIMEOUT  # a lease that outlasts a loaded machine's longest hiccup


def busy_notice(**extra):
    return {"type": LEADER_BUSY, "term": 1, "seconds": BUSY_SECONDS, **extra}


def promises(member):
    return [message for _, message in member._SyncObj__transport.sent if message["type"] == LEADER_BUSY_PROMISE]


def test_a_follower_told_its_leader_is_busy_promises_no_vote_for_that_long_on_disk_first(tmp_path):
    member = started_member(tmp_path / "raft.vote-promise")
    time.sleep(ELECTION_TIMEOUT)
    holds_ten_entries(member)

    deliver(member, busy_notice(lease_ts=50.0))

    [promise] = promises(member)
    assert (promise["term"], promise["lease_ts"]) == (1, 50.0)
    assert promise["seconds"] == pytest.approx(BUSY_SECONDS, abs=0.05)
    assert VotePromise(str(tmp_path / "raft.vote-promise")).seconds_left() == pytest.approx(BUSY_SECONDS, abs=0.1)
    member._heard_from_leader_at -= 10.0  # long after the leader's last message
    assert asks_for_its_vote(member, term=2) == []


def test_a_leader_of_a_release_that_counts_on_no_promise_gets_none(tmp_path):
    member = started_member(tmp_path / "raft.vote-promise")
    holds_ten_entries(member)
    deliver(member, busy_notice())  # no lease_ts
    assert promises(member) == [] and not (tmp_path / "raft.vote-promise").exists()


def test_a_member_restarted_while_it_keeps_a_promise_neither_votes_nor_stands_until_it_ends(tmp_path):
    VotePromise(str(tmp_path / "raft.vote-promise")).make(3 * ELECTION_TIMEOUT)

    member = started_member(tmp_path / "raft.vote-promise")
    member._onTick(0)
    assert member._SyncObj__raftElectionDeadline >= monotonic() + 2 * ELECTION_TIMEOUT  # its own vote neither
    time.sleep(1.5 * ELECTION_TIMEOUT)  # past its election timeout, not past the promise
    assert asks_for_its_vote(member, term=2) == []

    time.sleep(1.5 * ELECTION_TIMEOUT)
    assert asks_for_its_vote(member, term=2) != []


def test_a_majoritys_promises_keep_a_busy_leaders_lease_past_its_election_timeout():
    engine = leader()
    sent_at = monotonic()
    engine._SyncObj__onMessageReceived(FOLLOWERS[0], {
        "type": LEADER_BUSY_PROMISE, "term": engine._SyncObj__raftCurrentTerm, "lease_ts": sent_at,
        "seconds": BUSY_SECONDS})

    time.sleep(2 * ELECTION_TIMEOUT)  # no echo since: its Raft thread writes and applies the entry
    assert engine.lease_valid()
    time.sleep(0.8 * BUSY_SECONDS - 2 * ELECTION_TIMEOUT)
    assert not engine.lease_valid()


NOW = object()  # the leader's clock when the test runs


@pytest.mark.parametrize("term, lease_ts, seconds", [
    (0, NOW, BUSY_SECONDS),  # to an earlier term's leader
    (1, "now", BUSY_SECONDS),
    (1, NOW, None),
], ids=["another term", "lease_ts not a number", "seconds not a number"])
def test_a_promise_not_made_to_this_leader_extends_nothing(term, lease_ts, seconds):
    engine = leader()
    engine._SyncObj__raftCurrentTerm = 1
    engine._SyncObj__onMessageReceived(FOLLOWERS[0], {
        "type": LEADER_BUSY_PROMISE, "term": term, "lease_ts": monotonic() if lease_ts is NOW else lease_ts,
        "seconds": seconds})
    assert not engine.lease_valid()
