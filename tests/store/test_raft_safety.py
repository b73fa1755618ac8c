"""Raft §5.3 on the follower: keep entries that match, delete only from the first conflict.

pysyncobj 0.3.17 deletes every entry after ``prevLogIdx`` on each
AppendEntries, so a stale, shorter re-send makes a follower drop entries it
already acknowledged (design/pysyncobj-safety.md). These tests feed a single
follower hand-made leader messages, with no network and no clock, and read
its log and its replies. The stock class is tested too, so that the day
pysyncobj fixes the bug these tests say so.
"""

import pickle
import types

import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj import pickle as raft_pickle
from pysyncobj.node import TCPNode
from pysyncobj.transport import Transport

from django_dqcluster.store import large_entries
from django_dqcluster.store.raft import SafeSyncObj, check_engine

NO_OP = bytes([1])  # pysyncobj's no-op command type: never reaches a state machine
LEADER = TCPNode("127.0.0.1:1")


class RecordingTransport(Transport):
    """Captures what the follower sends instead of putting it on a network."""

    def __init__(self, syncObj, selfNode, otherNodes):
        super().__init__(syncObj, selfNode, otherNodes)
        self.sent = []

    def send(self, node, message):
        self.sent.append((node, message))
        return True


class NoStateMachine:
    def apply(self, payload, index):
        raise AssertionError("these tests never commit a regular entry")


def _conf():
    return SyncObjConf(autoTick=False, appendEntriesUseBatch=False)


def safe_follower():
    return SafeSyncObj("127.0.0.1:2", [LEADER.address], _conf(), NoStateMachine(), durable=False,
                       transportClass=RecordingTransport)


def stock_follower():
    return SyncObj("127.0.0.1:2", [LEADER.address], _conf(), transportClass=RecordingTransport)


def entries(first, last, term=1):
    return [(NO_OP + f"entry {i}".encode(), i, term) for i in range(first, last + 1)]


def append_entries(prev, prev_term, new_entries, term=1, commit=1):
    return {
        "type": "append_entries", "term": term, "commit_index": commit,
        "prevLogIdx": prev, "prevLogTerm": prev_term, "entries": new_entries,
    }


def deliver(follower, message):
    follower._SyncObj__onMessageReceived(LEADER, message)


def log_of(follower):
    return [(entry[1], entry[2]) for entry in follower._SyncObj__raftLog]


def last_reply(follower):
    replies = [m for _, m in follower._SyncObj__transport.sent if m["type"] == "next_node_idx"]
    return replies[-1]


def holds_ten_entries(follower):
    deliver(follower, append_entries(1, 0, entries(2, 11)))
    assert log_of(follower)[-1] == (11, 1)
    assert last_reply(follower)["next_node_idx"] == 12


def test_the_engine_is_the_release_the_fix_was_written_for():
    check_engine()  # raises EngineMismatch on any other pysyncobj


def test_stock_pysyncobj_drops_acknowledged_entries_on_a_shorter_resend():
    """The bug, reproduced: if this starts failing, pysyncobj changed and raft.py needs a look."""
    follower = stock_follower()
    holds_ten_entries(follower)
    deliver(follower, append_entries(3, 1, entries(4, 6), commit=11))
    assert log_of(follower)[-1] == (6, 1), "stock pysyncobj no longer truncates matching entries"


def test_a_shorter_resend_keeps_every_entry_the_follower_acknowledged():
    follower = safe_follower()
    holds_ten_entries(follower)
    deliver(follower, append_entries(3, 1, entries(4, 6), commit=11))
    assert log_of(follower) == [(1, 0)] + [(i, 1) for i in range(2, 12)]
    reply = last_reply(follower)
    assert reply["success"] is True
    assert reply["next_node_idx"] == 12


def test_a_resend_never_acknowledges_more_than_the_follower_holds():
    follower = safe_follower()
    holds_ten_entries(follower)
    for prev in range(1, 11):
        deliver(follower, append_entries(prev, 0 if prev == 1 else 1, entries(prev + 1, min(prev + 2, 11)), commit=11))
        reply = last_reply(follower)
        assert reply["next_node_idx"] - 1 <= log_of(follower)[-1][0]
    assert log_of(follower)[-1] == (11, 1)


def test_a_heartbeat_below_the_end_of_the_log_deletes_nothing():
    follower = safe_follower()
    holds_ten_entries(follower)
    deliver(follower, append_entries(5, 1, [], commit=11))
    assert log_of(follower)[-1] == (11, 1)


def test_a_conflicting_entry_is_replaced_from_the_first_conflict_on():
    follower = safe_follower()
    holds_ten_entries(follower)
    # A new leader of term 2 whose log differs from index 6 on.
    deliver(follower, append_entries(5, 1, entries(6, 7, term=2), term=2))
    assert log_of(follower) == [(1, 0)] + [(i, 1) for i in range(2, 6)] + [(6, 2), (7, 2)]
    assert last_reply(follower)["next_node_idx"] == 8


def test_matching_entries_before_a_conflict_are_kept_and_the_rest_replaced():
    follower = safe_follower()
    holds_ten_entries(follower)
    message_entries = entries(4, 6) + entries(7, 8, term=2)
    deliver(follower, append_entries(3, 1, message_entries, term=2))
    assert log_of(follower) == [(1, 0)] + [(i, 1) for i in range(2, 7)] + [(7, 2), (8, 2)]


def test_an_older_term_tail_not_known_to_match_is_not_acknowledged():
    follower = safe_follower()
    holds_ten_entries(follower)
    # A term-2 leader says it matches up to 4; entries 5..11 (term 1) were
    # never confirmed by it, so they may be kept but must not be acknowledged.
    deliver(follower, append_entries(4, 1, [], term=2, commit=4))
    reply = last_reply(follower)
    assert reply["success"] is True
    assert reply["next_node_idx"] == 5
    assert follower._SyncObj__raftCommitIndex <= 4


def test_the_commit_index_never_covers_entries_not_known_to_match():
    follower = safe_follower()
    holds_ten_entries(follower)
    deliver(follower, append_entries(4, 1, [], term=2, commit=11))
    assert follower._SyncObj__raftCommitIndex <= 4


def test_a_large_entry_resent_in_chunks_keeps_the_entries_after_it():
    follower = safe_follower()
    holds_ten_entries(follower)
    data = raft_pickle.dumps(entries(3, 3)[0])
    half = len(data) // 2
    base = {"type": "append_entries", "term": 1, "commit_index": 11, "prevLogIdx": 2, "prevLogTerm": 1}
    deliver(follower, dict(base, transmission="start", data=data[:half]))
    deliver(follower, dict(base, transmission="finish", data=data[half:]))
    assert log_of(follower)[-1] == (11, 1)
    assert last_reply(follower)["next_node_idx"] == 12


def test_an_entry_marked_finished_before_its_last_chunk_is_parsed_only_once_it_can_be_whole(monkeypatch):
    """An older leader marks chunks "finish" from half way (it compares with the command's length, not the pickle's).

    Each early "finish" chunk was parsed, failing in C and again in pure Python: seconds for a few MB.
    """
    follower = safe_follower()
    holds_ten_entries(follower)
    data = raft_pickle.dumps((NO_OP + b"x" * 3000, 12, 1))
    parsed = []
    monkeypatch.setattr(large_entries, "pickle", types.SimpleNamespace(
        STOP=pickle.STOP, loads=lambda data: parsed.append(len(data)) or pickle.loads(data)))
    base = {"type": "append_entries", "term": 1, "commit_index": 11, "prevLogIdx": 11, "prevLogTerm": 1}
    deliver(follower, dict(base, transmission="start", data=data[:1000]))
    for start in (1000, 2000, 3000):
        deliver(follower, dict(base, transmission="finish", data=data[start:start + 1000]))
    assert log_of(follower)[-1] == (12, 1)
    assert parsed == [len(data)]


@pytest.mark.parametrize("make", [safe_follower, stock_follower], ids=["safe", "stock"])
def test_new_entries_after_the_last_one_are_appended(make):
    follower = make()
    holds_ten_entries(follower)
    deliver(follower, append_entries(11, 1, entries(12, 13)))
    assert log_of(follower)[-1] == (13, 1)
    assert last_reply(follower)["next_node_idx"] == 14


def snapshot_chunk(term=2, commit=50):
    return {"type": "append_entries", "term": term, "commit_index": commit, "serialized": (b"chunk", True, False)}


@pytest.mark.parametrize("make,commits", [(safe_follower, False), (stock_follower, True)], ids=["safe", "stock"])
def test_a_snapshot_chunk_commits_nothing_of_the_log_it_is_sent_to_replace(make, commits):
    """Entries 2-11 (term 1) may be a deposed leader's, which the term-2 leader never had.

    Stock pysyncobj raised the commit index to the end of the follower's log
    with every chunk, and applied those entries: a database the snapshot
    holds at an older index would then keep them.
    """
    follower = make()
    holds_ten_entries(follower)

    deliver(follower, snapshot_chunk())

    assert (follower._SyncObj__raftCommitIndex >= 11) is commits
    assert follower._SyncObj__leaderCommitIndex == 50, "the leader's own, as pysyncobj's status shows it"
