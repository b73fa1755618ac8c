"""A follower whose tick comes late reads the leader's heartbeats before it calls an election.

pysyncobj checks the election timer before reading messages, so a follower
that was busy (a long apply, a starved CPU) for longer than the election
timeout starts an election although the heartbeats that prove the leader
alive sit unread in its socket, and a healthy leader steps down. These tests
drive one follower by hand: its poller hands over a waiting heartbeat.
"""

from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.syncobj import _RAFT_STATE

from .test_raft_safety import LEADER, append_entries, safe_follower, stock_follower


class WaitingHeartbeat:
    """A poller with one heartbeat from the leader waiting to be read."""

    def __init__(self, follower):
        self.follower = follower
        self.waiting = True

    def poll(self, timeout):
        if self.waiting:
            self.waiting = False
            log = self.follower._SyncObj__raftLog
            self.follower._SyncObj__onMessageReceived(
                LEADER, append_entries(log[-1][1], log[-1][2], [], term=1, commit=log[-1][1])
            )


def late_tick(follower):
    """Tick a follower of the term-1 leader after its election timer ran out."""
    follower._SyncObj__raftCurrentTerm = 1
    follower._SyncObj__connectedNodes.add(LEADER)
    follower._poller = WaitingHeartbeat(follower)
    follower._SyncObj__raftElectionDeadline = raft_clock() - 1.0
    follower.doTick(0)
    return follower._SyncObj__raftState, follower._SyncObj__raftCurrentTerm


def test_stock_pysyncobj_calls_an_election_with_the_leaders_heartbeat_unread():
    assert late_tick(stock_follower()) == (_RAFT_STATE.CANDIDATE, 2)


def test_a_late_follower_reads_the_waiting_heartbeat_and_stays_a_follower_in_the_same_term():
    follower = safe_follower()
    started = raft_clock()
    assert late_tick(follower) == (_RAFT_STATE.FOLLOWER, 1)
    # The heartbeat gave it a fresh timeout (however long the tick took on a loaded machine).
    assert follower._SyncObj__raftElectionDeadline >= started + follower.conf.raftMinTimeout


def test_with_nothing_from_the_leader_a_late_follower_still_calls_its_election():
    follower = safe_follower()
    follower._SyncObj__raftCurrentTerm = 1
    follower._SyncObj__connectedNodes.add(LEADER)
    follower._poller = WaitingHeartbeat(follower)
    follower._poller.waiting = False  # the leader is really gone
    follower._SyncObj__raftElectionDeadline = raft_clock() - 1.0
    follower.doTick(0)
    assert (follower._SyncObj__raftState, follower._SyncObj__raftCurrentTerm) == (_RAFT_STATE.CANDIDATE, 2)



def silent_leader_follower():
    follower = safe_follower()
    follower._SyncObj__raftCurrentTerm = 1
    follower._SyncObj__connectedNodes.add(LEADER)
    follower._poller = WaitingHeartbeat(follower)
    follower._poller.waiting = False
    # Its first tick, however long after it was made, finds its election timer running.
    follower._SyncObj__raftElectionDeadline = raft_clock() + 60.0
    follower.doTick(0)
    return follower


def test_a_follower_that_stood_still_longer_than_any_election_timeout_first_gives_the_leader_one(caplog):
    """A paused process, a starved CPU: it heard nothing from anyone, which is no reason to depose the leader."""
    follower = silent_leader_follower()
    follower._last_tick_at -= 2 * follower.conf.raftMaxTimeout  # that tick took this long
    follower._SyncObj__raftElectionDeadline = raft_clock() - 1.0

    started = raft_clock()
    follower.doTick(0)

    assert (follower._SyncObj__raftState, follower._SyncObj__raftCurrentTerm) == (_RAFT_STATE.FOLLOWER, 1)
    assert "stood still for" in caplog.text, "an operator hears of it"
    assert follower._SyncObj__raftElectionDeadline >= started + follower.conf.raftMinTimeout
    # Still nothing from the leader once that timeout is over: the election goes ahead.
    follower._SyncObj__raftElectionDeadline = raft_clock() - 0.001
    follower._last_tick_at = raft_clock()  # it ticked on time since
    follower.doTick(0)
    assert (follower._SyncObj__raftState, follower._SyncObj__raftCurrentTerm) == (_RAFT_STATE.CANDIDATE, 2)


def test_a_stall_shorter_than_the_longest_election_timeout_changes_nothing():
    follower = silent_leader_follower()
    follower._SyncObj__raftElectionDeadline = raft_clock() - 1.0
    follower._last_tick_at = raft_clock() - 0.5 * follower.conf.raftMaxTimeout  # its last tick, this long ago
    follower.doTick(0)
    assert (follower._SyncObj__raftState, follower._SyncObj__raftCurrentTerm) == (_RAFT_STATE.CANDIDATE, 2)


def test_a_leader_that_steps_down_waits_a_fresh_timeout_before_calling_an_election():
    """A paused leader woke up, found no majority answering and stepped down: its old timer deposed the new leader."""
    node = silent_leader_follower()
    node._led_at_last_tick = True  # it led at its last tick, then pysyncobj's leader fallback made it a follower
    node._SyncObj__raftElectionDeadline = raft_clock() - 10.0  # the timer it had before it led
    node._last_tick_at = raft_clock()  # no stall: only its stepping down is to give the leader time

    started = raft_clock()
    node.doTick(0)

    assert (node._SyncObj__raftState, node._SyncObj__raftCurrentTerm) == (_RAFT_STATE.FOLLOWER, 1)
    assert node._SyncObj__raftElectionDeadline >= started + node.conf.raftMinTimeout


class Silence:
    """A poller with nothing to read."""

    def poll(self, timeout):
        return None


def a_leader_whose_follower_last_answered(seconds_ago, stood_still_for):
    leader = safe_follower()
    leader._SyncObj__raftCurrentTerm = 1
    leader._SyncObj__raftState = _RAFT_STATE.LEADER
    leader._SyncObj__connectedNodes.add(LEADER)  # (here the follower)
    leader._poller = Silence()
    last = leader._SyncObj__raftLog[-1][1]
    leader._SyncObj__raftNextIndex[LEADER], leader._SyncObj__raftMatchIndex[LEADER] = last + 1, last
    leader._SyncObj__lastResponseTime[LEADER] = raft_clock() - seconds_ago
    leader._last_tick_at = raft_clock() - stood_still_for
    leader._led_at_last_tick = True
    return leader


def test_a_leader_that_stood_still_gives_its_followers_an_election_timeout_to_answer_before_it_steps_down():
    """A large entry written and applied: it sent nothing, so nobody answered; the cluster was healthy."""
    fallback = safe_follower().conf.leaderFallbackTimeout
    leader = a_leader_whose_follower_last_answered(fallback + 5.0, stood_still_for=fallback + 5.0)

    leader.doTick(0)
    assert leader._SyncObj__raftState == _RAFT_STATE.LEADER

    # Still nobody answering an election timeout later: it steps down, as a partitioned leader must.
    leader._SyncObj__lastResponseTime[LEADER] -= leader.conf.raftMaxTimeout + 0.1
    leader._last_tick_at = raft_clock()
    leader.doTick(0)
    assert leader._SyncObj__raftState == _RAFT_STATE.FOLLOWER


def test_a_leader_that_ticked_on_time_with_no_follower_answering_steps_down():
    fallback = safe_follower().conf.leaderFallbackTimeout
    leader = a_leader_whose_follower_last_answered(fallback + 5.0, stood_still_for=0.0)
    leader.doTick(0)
    assert leader._SyncObj__raftState == _RAFT_STATE.FOLLOWER
