"""A large transaction commits on a cluster without stopping it.

pysyncobj sent an entry larger than a message by pickling all of it again
for each follower and queueing every chunk at once, and a follower put the
chunks together by copying all it had for each one: measured on a 3-node
cluster here, 32 MB committed in 8-10 s and 64 MB never (the leader,
standing still, was deposed). See django_dqcluster/store/large_entries.py.
"""

import os
import pickle
import threading
import time

import pytest
from pysyncobj.journal import FileJournal
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.tcp_connection import CONNECTION_STATE

from django_dqcluster import dbapi
from django_dqcluster.store import large_entries
from django_dqcluster.store.config import ConfigError, NodeConfig
from django_dqcluster.store.journal_records import add_in_place
from django_dqcluster.store.large_entries import LEADER_BUSY, LargeEntrySender, pickle_parts
from django_dqcluster.store.send_queue import UNSENT_LIMIT

from .conftest import open_connection, start_embedded_node
from .test_raft_safety import (
    LEADER, NO_OP, append_entries, deliver, holds_ten_entries, last_reply, log_of, safe_follower, stock_follower,
)
from .test_send_flow import leader_of_one_follower

MIB = 2 ** 20
CHUNK = MIB  # the leader's message size in these tests (the node's is 256 KiB)


class Link:
    """A connected follower's connection whose queue drains only when the test says so."""

    state = CONNECTION_STATE.CONNECTED
    sendRandKey = b"k" * 32

    def __init__(self):
        self.waiting = 0
        self.sent = []
        self.drops = 0

    def send(self, message):
        self.sent.append(message)
        self.waiting += len(message.get("data", b""))

    def getSendBufferSize(self):
        return self.waiting


def leader_with_a_large_entry(size=20 * MIB, follower_next=11):
    """A leader whose follower lacks entries from ``follower_next`` on; entry 11 is of ``size`` bytes."""
    link = Link()
    engine, follower = leader_of_one_follower(link, batch_bytes=CHUNK)
    engine._SyncObj__raftCurrentTerm = 1
    log = engine._SyncObj__raftLog
    for index in range(1, 11):
        log.add(NO_OP + f"entry {index}".encode(), index, 1)
    large = (NO_OP + os.urandom(size), 11, 1)
    log.add(*large)
    log.add(NO_OP + b"entry 12", 12, 1)
    engine._large_entries.note(log)  # what a new leader does with its log (and then with what it appends)
    engine._SyncObj__raftNextIndex[follower] = follower_next
    return engine, follower, link, large


def chunks(link):
    return [message for message in link.sent if "transmission" in message]


def test_a_follower_is_queued_a_large_entry_a_bounded_amount_at_a_time():
    engine, follower, link, large = leader_with_a_large_entry(20 * MIB)

    engine._SyncObj__sendAppendEntries()
    first_round = len(chunks(link))
    assert first_round * CHUNK == UNSENT_LIMIT + CHUNK, "chunks until more than the limit waits, no more"
    assert engine._SyncObj__raftNextIndex[follower] == 11, "not past the entry before its last chunk"

    engine._SyncObj__sendAppendEntries()
    assert len(chunks(link)) == first_round, "a round with the queue full sends nothing"

    while engine._SyncObj__raftNextIndex[follower] == 11:
        link.waiting = 0  # the socket took it all: the tick queues more
        engine._send_large_entries(engine._large_entries.nodes)
    assert engine._SyncObj__raftNextIndex[follower] == 12

    sent = chunks(link)
    assert [message["transmission"] for message in sent] == ["start"] + ["process"] * (len(sent) - 2) + ["finish"]
    data = b"".join(message["data"] for message in sent)
    assert {message["size"] for message in sent} == {len(data)}
    assert pickle.loads(data) == large
    assert {(message["prevLogIdx"], message["prevLogTerm"]) for message in sent} == {(10, 1)}


def test_a_follower_behind_a_large_entry_gets_the_entries_before_it_then_its_chunks():
    """pysyncobj's loop met the large entry after the others, and sent it its own way (pickled again, all at once)."""
    engine, follower, link, large = leader_with_a_large_entry(3 * MIB, follower_next=5)

    engine._SyncObj__sendAppendEntries()
    while engine._SyncObj__raftNextIndex[follower] <= 11:
        link.waiting = 0
        engine._send_large_entries(engine._large_entries.nodes)
    engine._SyncObj__sendAppendEntries()

    regular = [entry[1] for message in link.sent for entry in message.get("entries", [])]
    assert regular == [5, 6, 7, 8, 9, 10, 12]
    sent = chunks(link)
    assert all("size" in message for message in sent), "no chunk of pysyncobj's own"
    assert pickle.loads(b"".join(message["data"] for message in sent)) == large
    assert engine._SyncObj__raftNextIndex[follower] == 13


def test_a_transfer_whose_connection_dropped_starts_over_from_its_first_chunk():
    engine, follower, link, large = leader_with_a_large_entry(20 * MIB)
    engine._SyncObj__sendAppendEntries()
    link.drops += 1  # what was queued is lost, and the follower's half-collected entry with it
    link.waiting = 0

    engine._SyncObj__sendAppendEntries()

    after_the_drop = chunks(link)[len(chunks(link)) - (UNSENT_LIMIT // CHUNK + 1):]
    assert after_the_drop[0]["transmission"] == "start"
    assert pickle.loads(b"".join(message["data"] for message in after_the_drop) + b"".join(
        message["data"] for message in _rest_of_transfer(engine, follower, link))) == large


def _rest_of_transfer(engine, follower, link):
    before = len(link.sent)
    while engine._SyncObj__raftNextIndex[follower] == 11:
        link.waiting = 0
        engine._send_large_entries(engine._large_entries.nodes)
    return [message for message in link.sent[before:] if "transmission" in message]


def test_an_entry_is_pickled_once_for_all_its_followers(monkeypatch):
    made = []
    monkeypatch.setattr(large_entries, "pickle_parts", lambda entry: made.append(entry[1]) or pickle_parts(entry))
    sender = LargeEntrySender(CHUNK)
    entry = (NO_OP + b"x" * (3 * CHUNK), 11, 1)
    for node in ("a", "b", "c"):
        transfer = sender.transfer_to(node, entry, Link())
        while not transfer.done:
            transfer.next_message({}, CHUNK)
    assert made == [11]


def test_the_pickle_of_an_entry_made_in_parts_is_the_entry():
    for entry in [(b"x" * 10, 5, 1), (bytes(300), 2 ** 40, 2 ** 31 + 5), (b"", 1, 0), (NO_OP + b"\x80.", 12, 3)]:
        assert pickle.loads(b"".join(pickle_parts(entry))) == entry


def transfer_messages(entry, prev=(11, 1), size=None):
    sender = LargeEntrySender(1000)
    transfer = sender.transfer_to("follower", entry, Link())
    header = {"type": "append_entries", "term": 1, "commit_index": 11, "prevLogIdx": prev[0], "prevLogTerm": prev[1]}
    messages = []
    while not transfer.done:
        messages.append(transfer.next_message(header, 1000))
    return messages


@pytest.mark.parametrize("make", [safe_follower, stock_follower], ids=["safe", "older release (stock)"])
def test_a_follower_appends_a_large_entry_once_it_holds_every_chunk(make):
    follower = make()
    holds_ten_entries(follower)
    entry = (NO_OP + os.urandom(5000), 12, 1)
    messages = transfer_messages(entry)

    for message in messages[:-1]:
        deliver(follower, message)
        assert log_of(follower)[-1] == (11, 1)
        assert (last_reply(follower)["success"], last_reply(follower)["reset"]) == (False, False)

    deliver(follower, messages[-1])
    assert log_of(follower)[-1] == (12, 1)
    assert follower._SyncObj__raftLog[-1][0] == entry[0]
    assert (last_reply(follower)["success"], last_reply(follower)["next_node_idx"]) == (True, 13)


def test_a_follower_that_missed_the_first_chunks_asks_for_the_entry_again():
    """Its start went to a connection that dropped: it appends nothing, and the leader sends it all again."""
    follower = safe_follower()
    holds_ten_entries(follower)
    entry = (NO_OP + os.urandom(5000), 12, 1)
    messages = transfer_messages(entry)

    for message in messages[2:]:
        deliver(follower, message)

    assert log_of(follower)[-1] == (11, 1)
    assert resends_asked(follower) == [12], "its log ends at 11: the leader goes back to 12"

    for message in messages:
        deliver(follower, message)
    assert log_of(follower)[-1] == (12, 1)


def test_a_chunk_that_does_not_continue_the_entry_is_left_out():
    """One still waiting on a connection the leader replaced, read after the new connection's chunks."""
    follower = safe_follower()
    holds_ten_entries(follower)
    entry = (NO_OP + os.urandom(5000), 12, 1)
    messages = transfer_messages(entry)

    for message in messages[:3] + [messages[1]] + messages[3:]:  # chunk 1 again, after chunk 2
        deliver(follower, message)

    assert log_of(follower)[-1] == (12, 1)
    assert follower._SyncObj__raftLog[-1][0] == entry[0]


def test_a_repeated_chunk_in_place_of_a_missed_one_is_never_taken_for_the_entry():
    """Same size, wrong bytes: without offsets the follower parsed it, and appended an entry the leader never had."""
    follower = safe_follower()
    holds_ten_entries(follower)
    entry = (NO_OP + os.urandom(5000), 12, 1)
    messages = transfer_messages(entry)

    for message in messages[:2] + [messages[1]] + messages[3:]:  # chunk 2 missed, chunk 1 twice
        deliver(follower, message)

    assert log_of(follower)[-1] == (11, 1)
    assert resends_asked(follower) == [12]


def resends_asked(follower):
    """The indexes the follower's refusals ask the leader to send again from."""
    replies = [m for _, m in follower._SyncObj__transport.sent if m["type"] == "next_node_idx"]
    return [m["next_node_idx"] for m in replies if m["reset"]]


def test_the_journal_written_in_place_holds_the_same_bytes_as_pysyncobjs(tmp_path):
    entries = [(NO_OP + b"first", 1, 1), (NO_OP + os.urandom(3 * MIB), 2, 1), (NO_OP + b"third", 3, 2)]
    theirs, ours = FileJournal(str(tmp_path / "theirs")), FileJournal(str(tmp_path / "ours"))
    add_in_place(ours)
    for entry in entries:
        theirs.add(*entry)
        ours.add(*entry)
    end = theirs._FileJournal__currentOffset
    assert ours._FileJournal__currentOffset == end
    assert ours._FileJournal__journalFile.read(0, end) == theirs._FileJournal__journalFile.read(0, end)
    assert list(FileJournal(str(tmp_path / "ours"))) == entries


# -- a leader busy with a large entry --------------------------------------------------------------


def a_follower_of_the_leader():
    follower = safe_follower()
    holds_ten_entries(follower)  # it heard from LEADER, in term 1
    return follower


def test_a_follower_told_its_leader_is_busy_waits_that_much_longer_to_call_an_election():
    follower = a_follower_of_the_leader()
    told = raft_clock()

    deliver(follower, {"type": LEADER_BUSY, "term": 1, "seconds": 30.0})
    assert follower._SyncObj__raftElectionDeadline >= told + 30.0 + follower.conf.raftMinTimeout

    deliver(follower, append_entries(11, 1, []))  # pysyncobj sets the timer from now at each heartbeat
    assert follower._SyncObj__raftElectionDeadline >= told + 30.0 + follower.conf.raftMinTimeout


def test_a_follower_told_its_leader_is_busy_votes_for_no_one_meanwhile():
    follower = a_follower_of_the_leader()
    deliver(follower, {"type": LEADER_BUSY, "term": 1, "seconds": 30.0})
    follower._heard_from_leader_at -= 10.0  # long after the leader's last message

    candidate = type(LEADER)("127.0.0.1:9")
    follower._SyncObj__onMessageReceived(
        candidate, {"type": "request_vote", "term": 2, "last_log_index": 11, "last_log_term": 1})

    assert not [m for _, m in follower._SyncObj__transport.sent if m["type"] == "response_vote"]
    assert follower._SyncObj__raftCurrentTerm == 1


@pytest.mark.parametrize("notice", [
    {"type": LEADER_BUSY, "term": 0, "seconds": 30.0},  # an older term's leader
    {"type": LEADER_BUSY, "term": 1, "seconds": "30"},
], ids=["older term", "not a number"])
def test_a_busy_notice_that_is_not_from_the_current_leader_changes_nothing(notice):
    follower = a_follower_of_the_leader()
    deadline = follower._SyncObj__raftElectionDeadline
    deliver(follower, notice)
    assert follower._SyncObj__raftElectionDeadline == deadline


# -- the store's limit on a transaction's size -----------------------------------------------------


@pytest.fixture
def one_mib_store(tmp_path):
    node = start_embedded_node(tmp_path / "node", max_transaction_mb=1)
    conn = open_connection(node, "socket")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    yield conn
    conn.close()
    node.stop()


def test_the_statement_that_takes_a_transaction_past_the_limit_fails_and_does_nothing(one_mib_store):
    conn = one_mib_store
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t (b) VALUES (?)", (bytes(600_000),))
    limit = r"over the store's limit, max_transaction_mb \(1 MiB, 1,048,576 bytes\); the statement did nothing"
    with pytest.raises(dbapi.OperationalError, match=r"transaction too large: .* " + limit):
        conn.execute("INSERT INTO t (b) VALUES (?)", (bytes(600_000),))
    conn.execute("INSERT INTO t (b) VALUES (?)", (b"small",))
    conn.execute("COMMIT")
    assert conn.execute("SELECT length(b) FROM t ORDER BY id").fetchall() == [(600_000,), (5,)]


def test_a_statement_outside_a_transaction_is_held_to_the_limit_too(one_mib_store):
    with pytest.raises(dbapi.OperationalError, match=r"statement too large: .*max_transaction_mb"):
        one_mib_store.execute("INSERT INTO t (b) VALUES (?)", (bytes(2 * MIB),))
    assert one_mib_store.execute("SELECT count(*) FROM t").fetchall() == [(0,)]


@pytest.mark.parametrize("value", [0, -1, 1.5, "256", True])
def test_the_limit_is_a_whole_number_of_mib(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^max_transaction_mb: need a whole number of MiB >= 1"):
        NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), max_transaction_mb=value)


# -- on a cluster ----------------------------------------------------------------------------------


def test_a_64_mib_transaction_commits_on_a_cluster_with_no_election(cluster):
    """Before: the leader stood still for seconds, was deposed, and the client was told the outcome was unknown."""
    leader = cluster.leader()
    term = leader.status()["term"]
    conn = leader.connect()
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    blob = os.urandom(8 * MIB)

    conn.execute("BEGIN")
    for _ in range(8):
        conn.execute("INSERT INTO t (b) VALUES (?)", (blob,))
    conn.execute("COMMIT")
    conn.close()

    cluster.wait_converged()
    for node in cluster.nodes:
        replica = node.connect(consistency="none")
        assert replica.execute("SELECT count(*), sum(length(b)) FROM t").fetchall() == [(8, 64 * MIB)]
        replica.close()
        status = node.status()
        assert status["term"] == term, f"node {node.index} saw an election:\n{node.log()}"
    assert cluster.leader() is leader


def test_strong_reads_go_on_while_the_leader_commits_a_64_mib_transaction(cluster):
    """Before: its Raft thread, writing and applying the entry, confirmed no lease for seconds, and the reads waited.

    The followers told it is busy promise to vote for no one meanwhile, so its
    lease lasts through the commit (store/vote_promises.py).
    """
    leader = cluster.leader()
    writer, reader = leader.connect(), leader.connect(consistency="strong")
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    writer.execute("CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT)")
    writer.execute("INSERT INTO small (v) VALUES ('read me')")
    blob = os.urandom(8 * MIB)
    writer.execute("BEGIN")
    for _ in range(8):
        writer.execute("INSERT INTO t (b) VALUES (?)", (blob,))
    committing, committed, failed = threading.Event(), threading.Event(), []

    def commit():
        committing.set()
        try:
            writer.execute("COMMIT")
        except Exception as error:  # noqa: BLE001 - reported below, in the test's thread
            failed.append(error)
        finally:
            committed.set()

    thread = threading.Thread(target=commit)
    thread.start()
    committing.wait()
    started = time.monotonic()
    longest, reads = 0.0, 0
    while not committed.is_set():
        began = time.monotonic()
        assert reader.execute("SELECT v FROM small").fetchall() == [("read me",)]
        longest, reads = max(longest, time.monotonic() - began), reads + 1
    commit_seconds = time.monotonic() - started
    thread.join()
    assert not failed, failed
    if commit_seconds < 1.0:
        pytest.skip(f"the commit took {commit_seconds:.2f} s: too short here to tell a read that waits for it")
    assert longest < commit_seconds / 2, f"{reads} reads, the longest {longest:.2f} s of a {commit_seconds:.2f} s commit"
