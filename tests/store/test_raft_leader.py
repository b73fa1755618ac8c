"""The leader's view of a follower's progress: success replies advance it, never rewind it.

pysyncobj sets a follower's next index from every success reply, so the reply
to an older AppendEntries, arriving while newer ones are in flight, rewinds it
and the next message re-sends entries already on their way. These tests drive
one leader by hand (no network, no clock) and read its next/match indexes.
"""

from pysyncobj import SyncObj
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _RAFT_STATE

from django_dqcluster.store.raft import LOST_ENTRIES, SafeSyncObj

from .test_raft_safety import NoStateMachine, RecordingTransport, _conf

FOLLOWER = TCPNode("127.0.0.1:3")


def leader(cls=SafeSyncObj):
    kwargs = {"durable": False} if cls is SafeSyncObj else {}
    args = (NoStateMachine(),) if cls is SafeSyncObj else ()
    engine = cls("127.0.0.1:2", [FOLLOWER.address], _conf(), *args, transportClass=RecordingTransport, **kwargs)
    engine._SyncObj__raftState = _RAFT_STATE.LEADER
    # Entries up to 8 were sent to the follower; it has acknowledged none yet.
    engine._SyncObj__raftNextIndex[FOLLOWER] = 9
    engine._SyncObj__raftMatchIndex[FOLLOWER] = 0
    return engine


def reply(engine, next_node_idx, success=True, reset=False):
    engine._SyncObj__onMessageReceived(FOLLOWER, {
        "type": "next_node_idx", "next_node_idx": next_node_idx, "success": success, "reset": reset,
        "term": engine._SyncObj__raftCurrentTerm,
    })
    return engine._SyncObj__raftNextIndex[FOLLOWER], engine._SyncObj__raftMatchIndex[FOLLOWER]


def test_stock_pysyncobj_rewinds_to_entries_in_flight_on_an_older_reply():
    assert reply(leader(SyncObj), 6) == (6, 5)


def test_a_reply_to_an_older_append_entries_records_the_match_and_keeps_the_next_index():
    assert reply(leader(), 6) == (9, 5)


def test_a_reply_covering_everything_sent_advances_both():
    engine = leader()
    reply(engine, 6)
    assert reply(engine, 9) == (9, 8)
    engine._SyncObj__raftNextIndex[FOLLOWER] = 12
    assert reply(engine, 12) == (12, 11)


def test_a_reset_reply_still_moves_the_next_index_back():
    engine = leader()
    assert reply(engine, 4, success=False, reset=True) == (4, 0)


def test_a_stale_reply_never_lowers_the_match_index():
    engine = leader()
    reply(engine, 9)
    assert reply(engine, 6) == (9, 8)


# -- a follower that lost entries it acknowledged ------------------------------------------------


def lost_entries_notices(engine):
    return [message for _, message in engine._SyncObj__transport.sent if message["type"] == LOST_ENTRIES]


def test_stock_pysyncobj_counts_acknowledgements_a_follower_no_longer_holds():
    engine = leader(SyncObj)
    reply(engine, 9)
    assert reply(engine, 4, success=False, reset=True) == (4, 8)  # entries 4-8 still count toward a commit


def test_a_follower_whose_log_ends_below_what_it_acknowledged_is_told_to_catch_up_and_its_acks_stop_counting():
    """Its data directory was restored from an older copy, or its disk lost flushed writes."""
    engine = leader()
    engine._SyncObj__raftCommitIndex = 6
    reply(engine, 9)  # it holds entries up to 8
    assert reply(engine, 4, success=False, reset=True) == (4, 0)  # ... and now only up to 3: counts for nothing
    assert lost_entries_notices(engine) == [{"type": LOST_ENTRIES, "term": engine._SyncObj__raftCurrentTerm,
                                             "log_end": 3, "acknowledged": 8, "catch_up_to": 8}]


def test_it_is_told_once_while_the_leader_walks_its_log_back():
    engine = leader()
    reply(engine, 9)
    reply(engine, 6, success=False, reset=True)
    reply(engine, 5, success=False, reset=True)  # a conflicting entry at 5: further back
    assert len(lost_entries_notices(engine)) == 1


def test_a_follower_refusing_entries_past_what_it_acknowledged_lost_nothing():
    """It lags, or holds another leader's entries there: ordinary Raft, nothing to tell."""
    engine = leader()
    reply(engine, 6)  # acknowledged up to 5
    assert reply(engine, 6, success=False, reset=True) == (6, 5)  # its log ends at 5: all it acknowledged
    assert lost_entries_notices(engine) == []


def test_a_member_added_again_under_the_same_address_lost_nothing():
    """Removed, then added with a new data directory: its empty log is no loss."""
    engine = leader()
    reply(engine, 9)
    engine._SyncObj__doChangeCluster(["rem", FOLLOWER.id, FOLLOWER])
    engine._SyncObj__doChangeCluster(["add", FOLLOWER.id, FOLLOWER])
    reply(engine, 1, success=False, reset=True)
    assert lost_entries_notices(engine) == []
