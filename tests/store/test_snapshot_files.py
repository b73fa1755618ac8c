"""A node's snapshot file is written beside the Raft thread, sent in order and taken in whole.

Measured on a 3-node cluster holding 300 MB: pysyncobj copied every database
on the Raft thread at each log compaction, long enough for the followers to
elect another leader; a transfer went on after a chunk lost with a replaced
connection; and it read the whole file into a connection's buffer as fast as
the disk allowed (see django_dqcluster/store/snapshot_files.py).
"""

import os
import sqlite3
import threading
import time

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.config import SERIALIZER_STATE

from django_dqcluster import dbapi
from django_dqcluster.store import NodeConfig, snapshot_files
from django_dqcluster.store.config import ConfigError
from django_dqcluster.store.databases import record_applied
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.raft import SafeSyncObj
from django_dqcluster.store.send_queue import SendQueue
from django_dqcluster.store.snapshot_files import SnapshotFiles
from django_dqcluster.store.statemachine import SnapshotCancelled, StateMachine

from .conftest import EMBEDDED_SECRET, start_embedded_node
from .test_raft_safety import NoStateMachine, RecordingTransport

RAFT_DATA = ((b"", 11, 1), (b"", 10, 1), [])


class FakeLink:
    """What SnapshotFiles asks of a connection: its unsent bytes and how often it dropped."""

    def __init__(self):
        self.waiting = 0
        self.drops = 0

    def getSendBufferSize(self):
        return self.waiting


class SlowSnapshot:
    """A PendingSnapshot whose copy takes as long as the test wants."""

    def __init__(self, contents=b"snapshot"):
        self.contents = contents
        self.release = threading.Event()

    def write(self, filename, cancelled=lambda: False):
        self.release.wait(10)
        if cancelled():
            raise SnapshotCancelled()
        with open(filename, "wb") as out:
            out.write(self.contents)


def files(tmp_path, begin=None, link=None, **kwargs):
    return SnapshotFiles(str(tmp_path / "raft.snapshot"), 4, begin=begin or (lambda data: SlowSnapshot()),
                         load=lambda filename: RAFT_DATA, link_to=lambda node: link, durable=False, **kwargs)


def wait_until_over(snapshots):
    for _ in range(1000):
        state, _ = snapshots.checkSerializing()
        if state != SERIALIZER_STATE.SERIALIZING:
            return state
        threading.Event().wait(0.01)
    raise AssertionError("the snapshot is still being written after 10 s")


# -- writing -----------------------------------------------------------------------------


def test_the_raft_thread_only_starts_a_snapshot_and_hears_when_it_is_written(tmp_path):
    slow = SlowSnapshot()
    snapshots = files(tmp_path, begin=lambda data: slow)

    snapshots.serialize((None,) + RAFT_DATA, 10)  # returns while the copy waits

    assert snapshots.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 10)
    assert not (tmp_path / "raft.snapshot").exists()
    slow.release.set()
    assert wait_until_over(snapshots) == SERIALIZER_STATE.SUCCESS
    assert (tmp_path / "raft.snapshot").read_bytes() == b"snapshot"
    assert snapshots.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)


def test_a_snapshot_holds_the_databases_as_they_were_when_it_was_taken(tmp_path):
    node = StateMachine(str(tmp_path / "node"))
    try:
        conn = node.databases.get("default").apply_connection()
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO item VALUES (?)", [(i,) for i in range(100)])
        record_applied(conn, "first", 10)
        conn.execute("COMMIT")
        node.databases.get("default").applied_index = node.last_index = 10

        node.members = {"127.0.0.1:1": "127.0.0.1:11"}

        pending = node.begin_snapshot(RAFT_DATA)
        # The Raft thread goes on applying while another thread writes the copy.
        node._apply_member({"raft": "127.0.0.1:2", "client": "127.0.0.1:12"})
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO item VALUES (?)", [(i,) for i in range(100, 150)])
        record_applied(conn, "second", 11)
        conn.execute("COMMIT")
        writer = threading.Thread(target=pending.write, args=(str(tmp_path / "snapshot"),))
        writer.start()
        writer.join(10)

        replica = StateMachine(str(tmp_path / "replica"))
        try:
            replica.read_snapshot(str(tmp_path / "snapshot"), lambda address: address)
            copy = sqlite3.connect(replica.databases.path_for("default"))
            assert copy.execute("SELECT count(*) FROM item").fetchone() == (100,)
            copy.close()
            assert replica.members == {"127.0.0.1:1": "127.0.0.1:11"}
        finally:
            replica.close()
        assert conn.execute("SELECT count(*) FROM item").fetchone() == (150,)
    finally:
        node.close()


def test_a_snapshot_abandoned_before_it_is_written_writes_nothing(tmp_path):
    node = StateMachine(str(tmp_path / "node"))
    try:
        pending = node.begin_snapshot(RAFT_DATA)
        pending.abandon()
        try:
            pending.write(str(tmp_path / "snapshot"))
        except SnapshotCancelled:
            pass
        else:
            raise AssertionError("an abandoned snapshot was written")
        assert not (tmp_path / "snapshot").exists()
    finally:
        node.close()


def test_a_snapshot_that_cannot_be_written_keeps_the_old_file_and_waits_before_the_next(tmp_path, caplog):
    now = [100.0]

    class Failing:
        def write(self, filename, cancelled):
            raise OSError(28, "No space left on device")

    (tmp_path / "raft.snapshot").write_bytes(b"older")
    snapshots = files(tmp_path, begin=lambda data: Failing(), clock=lambda: now[0])
    snapshots.serialize((None,) + RAFT_DATA, 10)

    assert wait_until_over(snapshots) == SERIALIZER_STATE.FAILED
    assert "No space left on device" in caplog.text
    assert (tmp_path / "raft.snapshot").read_bytes() == b"older"
    assert [name for name in os.listdir(tmp_path) if name != "raft.snapshot"] == []
    snapshots.serialize((None,) + RAFT_DATA, 10)
    assert snapshots.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None), "retried at once"
    now[0] += snapshot_files.RETRY_AFTER_FAILURE
    snapshots.serialize((None,) + RAFT_DATA, 10)
    assert snapshots.checkSerializing()[0] != SERIALIZER_STATE.NOT_SERIALIZING


def installed(snapshots):
    """Wait for the installing thread: what ``take_installed`` then says."""
    for _ in range(1000):
        outcome = snapshots.take_installed()
        if outcome is not None:
            return outcome
        threading.Event().wait(0.01)
    raise AssertionError("the snapshot is still being installed after 10 s")


def test_a_snapshot_received_while_one_is_written_is_not_replaced_by_it(tmp_path):
    slow = SlowSnapshot(b"ours, older")
    snapshots = files(tmp_path, begin=lambda data: slow)
    snapshots.serialize((None,) + RAFT_DATA, 10)

    assert not snapshots.setTransmissionData((b"the leader's", True, False))
    snapshots.setTransmissionData((b", newer", False, True))
    assert installed(snapshots) is True
    slow.release.set()

    assert snapshots.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None), \
        "pysyncobj would cut the log to the cancelled snapshot's entry"
    threading.Event().wait(0.2)  # the cancelled thread's last look at its flag
    assert (tmp_path / "raft.snapshot").read_bytes() == b"the leader's, newer"


def test_files_of_a_node_stopped_while_it_wrote_or_received_a_snapshot_are_removed_at_start(tmp_path):
    (tmp_path / "raft.snapshot").write_bytes(b"kept")
    (tmp_path / "raft.snapshot.writing-3").write_bytes(b"partial")
    (tmp_path / "raft.snapshot.receiving").write_bytes(b"partial")
    files(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["raft.snapshot"]


# -- installing -----------------------------------------------------------------------------


class Gate:
    """A ``load`` that installs only once the test opens it, counting its calls."""

    def __init__(self):
        self.open = threading.Event()
        self.calls = 0

    def __call__(self, filename):
        self.calls += 1
        assert self.open.wait(10)
        return RAFT_DATA


def receive(snapshots, *chunks):
    for i, chunk in enumerate(chunks):
        snapshots.setTransmissionData((chunk, i == 0, i == len(chunks) - 1))


def test_a_received_snapshot_is_installed_by_a_thread_of_its_own(tmp_path):
    """Installed on the Raft thread, 300 MB kept a node deaf to its leader for 3.5 s."""
    gate = Gate()
    snapshots = SnapshotFiles(str(tmp_path / "raft.snapshot"), 4, begin=None, load=gate, link_to=lambda node: None,
                              durable=False)

    receive(snapshots, b"the ", b"leader's", b"")  # returns while the install waits

    assert snapshots.installing
    assert snapshots.take_installed() is None
    gate.open.set()
    assert installed(snapshots) is True
    assert not snapshots.installing
    assert (tmp_path / "raft.snapshot").read_bytes() == b"the leader's"
    assert snapshots.deserialize() == (None,) + RAFT_DATA
    assert gate.calls == 1, "pysyncobj takes up what the thread installed, without installing it again"


def test_a_damaged_snapshot_received_installs_nothing_and_keeps_the_nodes_own(tmp_path, caplog):
    (tmp_path / "raft.snapshot").write_bytes(b"ours")
    gate = Gate()

    def check(path):
        raise ValueError(f"snapshot file {path} is damaged")

    snapshots = SnapshotFiles(str(tmp_path / "raft.snapshot"), 4, begin=None, load=gate, link_to=lambda node: None,
                              check=check, durable=False)
    receive(snapshots, b"torn", b"")

    assert installed(snapshots) is False
    assert gate.calls == 0
    assert sorted(os.listdir(tmp_path)) == ["raft.snapshot"]
    assert (tmp_path / "raft.snapshot").read_bytes() == b"ours", "the snapshot its log starts from"
    assert "could not install the snapshot received from the leader (ValueError: snapshot file" in caplog.text


def test_no_snapshot_is_taken_and_no_chunk_taken_while_one_is_installed(tmp_path):
    gate = Gate()
    taken = []
    snapshots = SnapshotFiles(str(tmp_path / "raft.snapshot"), 4, begin=lambda data: taken.append(data),
                              load=gate, link_to=lambda node: None, durable=False)
    receive(snapshots, b"first", b"")

    snapshots.serialize((None,) + RAFT_DATA, 12)
    receive(snapshots, b"second", b"")
    gate.open.set()

    assert taken == [], "a snapshot of databases being replaced"
    assert installed(snapshots) is True
    assert (tmp_path / "raft.snapshot").read_bytes() == b"first"
    assert not (tmp_path / "raft.snapshot.receiving").exists()


def test_a_node_stopping_waits_for_the_snapshot_it_installs(tmp_path):
    gate = Gate()
    snapshots = SnapshotFiles(str(tmp_path / "raft.snapshot"), 4, begin=None, load=gate, link_to=lambda node: None,
                              durable=False)
    receive(snapshots, b"first", b"")
    threading.Timer(0.2, gate.open.set).start()

    snapshots.wait_for_writing(timeout=10)

    assert snapshots.take_installed() is True, "over before the node closes its databases"


# -- sending -----------------------------------------------------------------------------


def sender(tmp_path, link, contents=b"0123456789"):
    (tmp_path / "raft.snapshot").write_bytes(contents)
    return files(tmp_path, link=link, buffer_limit=8)


def test_a_transfer_sends_the_file_in_chunks_in_order(tmp_path):
    snapshots = sender(tmp_path, FakeLink())
    chunks = [snapshots.getTransmissionData("follower") for _ in range(4)]
    assert chunks == [(b"0123", True, False), (b"4567", False, False), (b"89", False, False), (b"", False, True)]


def test_a_transfer_starts_over_on_a_connection_that_dropped_since_it_began(tmp_path):
    link = FakeLink()
    snapshots = sender(tmp_path, link)
    snapshots.getTransmissionData("follower")
    link.drops += 1  # the second chunk may be lost with it
    assert snapshots.getTransmissionData("follower") == (b"0123", True, False)


def test_a_transfer_starts_over_when_another_connection_replaced_its_own(tmp_path):
    links = [FakeLink()]
    (tmp_path / "raft.snapshot").write_bytes(b"0123456789")
    snapshots = SnapshotFiles(str(tmp_path / "raft.snapshot"), 4, begin=None, load=None,
                              link_to=lambda node: links[-1], durable=False)
    snapshots.getTransmissionData("follower")
    # The follower dialled again; the old connection's end never told the transport.
    links.append(FakeLink())
    assert snapshots.getTransmissionData("follower") == (b"0123", True, False)


def test_no_chunk_is_read_while_the_connection_holds_more_than_the_limit_unsent(tmp_path):
    link = FakeLink()
    snapshots = sender(tmp_path, link)
    assert snapshots.getTransmissionData("follower") == (b"0123", True, False)
    link.waiting = 9
    assert snapshots.getTransmissionData("follower") is None
    link.waiting = 0
    assert snapshots.getTransmissionData("follower") == (b"4567", False, False)


def test_a_newly_written_snapshot_restarts_the_transfers_of_the_previous_one(tmp_path):
    slow = SlowSnapshot(b"abcdefgh")
    link = FakeLink()
    (tmp_path / "raft.snapshot").write_bytes(b"0123456789")
    snapshots = files(tmp_path, begin=lambda data: slow, link=link)
    assert snapshots.getTransmissionData("follower") == (b"0123", True, False)

    snapshots.serialize((None,) + RAFT_DATA, 10)
    assert snapshots.getTransmissionData("follower") == (b"4567", False, False), "the old file goes on meanwhile"
    slow.release.set()
    assert wait_until_over(snapshots) == SERIALIZER_STATE.SUCCESS

    assert snapshots.getTransmissionData("follower") == (b"abcd", True, False)


def test_a_received_transfer_without_its_beginning_is_ignored(tmp_path):
    snapshots = files(tmp_path)
    assert not snapshots.setTransmissionData((b"4567", False, False))
    assert not snapshots.setTransmissionData((b"", False, True))
    assert not (tmp_path / "raft.snapshot").exists()


# -- the connection's queue ----------------------------------------------------------------


class TakesAFew:
    """A socket that takes at most ``size`` bytes per call."""

    def __init__(self, size):
        self.size = size
        self.received = bytearray()

    def sendmsg(self, buffers):
        data = b"".join(bytes(buffer) for buffer in buffers)[:self.size]
        self.received += data
        return len(data)

    def send(self, data):
        return self.sendmsg([data])


def test_queued_frames_leave_whole_and_in_order_however_the_socket_splits_them():
    queue = SendQueue(b"first|")
    for frame in (b"second|", b"third|", b"x" * 50):
        queue.append(frame)
    sock = TakesAFew(7)
    while queue:
        queue.send_to(sock)
    assert bytes(sock.received) == b"first|second|third|" + b"x" * 50
    assert len(queue) == 0


# -- the log after a restart -----------------------------------------------------------------


class SnapshotAt(NoStateMachine):
    def begin_snapshot(self, raft_data):
        raise AssertionError("not in this test")


def test_a_log_that_goes_on_past_the_snapshot_file_is_kept_at_restart(tmp_path):
    """The snapshot file is put in place before the log is cut: a node stopped in between keeps its entries."""
    journal, dump = str(tmp_path / "raft.journal"), str(tmp_path / "raft.snapshot")
    entries = [(b"\x00" + f"entry {index}".encode(), index, 1) for index in range(1, 21)]

    def conf():
        return SyncObjConf(autoTick=False, appendEntriesUseBatch=False, journalFile=journal, fullDumpFile=dump,
                           serializer=lambda filename, data: None,
                           deserializer=lambda filename: (entries[10], entries[9], []))

    engine = SafeSyncObj("127.0.0.1:2", [], conf(), SnapshotAt(), durable=False, transportClass=RecordingTransport)
    log = engine._SyncObj__raftLog
    log.clear()
    for entry in entries:
        log.add(*entry)
    engine.destroy()  # with autoTick off, this also closes the journal

    open(dump, "wb").close()  # a snapshot at entry 11, written before the log was cut
    restarted = SafeSyncObj("127.0.0.1:2", [], conf(), SnapshotAt(), durable=False,
                            transportClass=RecordingTransport)
    restarted.doTick()
    log = restarted._SyncObj__raftLog
    assert [entry[1] for entry in log] == list(range(10, 21)), "entries 12 to 20 were thrown away"


# -- the leader's round of sends -------------------------------------------------------------


def leader_owing_a_snapshot(tmp_path):
    """A leader whose log starts at entry 50 and a follower that needs entry 10: only a snapshot will do."""
    from pysyncobj.syncobj import _RAFT_STATE

    dump = tmp_path / "raft.snapshot"
    dump.write_bytes(b"x" * 100)
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, fullDumpFile=str(dump),
                       serializer=lambda filename, data: None, deserializer=lambda filename: RAFT_DATA,
                       logCompactionBatchSize=10)
    engine = SafeSyncObj("127.0.0.1:2", ["127.0.0.1:3"], conf, SnapshotAt(), durable=False,
                         transportClass=RecordingTransport)
    engine._SyncObj__serializer = engine._snapshot_files  # as its first tick does
    follower = next(iter(engine._SyncObj__otherNodes))
    link = FakeLink()
    engine._SyncObj__transport._connections = {follower: link}
    engine._SyncObj__raftState = _RAFT_STATE.LEADER
    engine._SyncObj__connectedNodes.add(follower)
    log = engine._SyncObj__raftLog
    log.clear()
    log.add(b"\x00", 50, 1)
    log.add(b"\x00", 51, 1)
    engine._SyncObj__raftNextIndex[follower] = 10
    return engine, follower, link


def test_a_leader_holding_back_the_next_chunk_sends_the_follower_one_message_in_a_round(tmp_path):
    """pysyncobj's loop asked again and again until its 0.1 s were up, sending an empty message each time."""
    engine, follower, link = leader_owing_a_snapshot(tmp_path)
    link.waiting = 10 ** 9
    sent = engine._SyncObj__transport.sent

    engine._SyncObj__sendAppendEntries()

    assert [message.get("serialized", "?") for node, message in sent if node == follower] == [None]
    assert engine._SyncObj__raftNextIndex[follower] == 10, "still owed the snapshot"


def test_a_leader_sends_the_whole_snapshot_then_goes_on_after_it(tmp_path):
    engine, follower, link = leader_owing_a_snapshot(tmp_path)
    sent = engine._SyncObj__transport.sent

    engine._SyncObj__sendAppendEntries()

    chunks = [message["serialized"] for node, message in sent if node == follower and "serialized" in message]
    assert b"".join(chunk[0] for chunk in chunks) == b"x" * 100
    assert chunks[0][1] and chunks[-1][2]
    assert engine._SyncObj__raftNextIndex[follower] == 52


# -- the follower's engine while it installs ---------------------------------------------------


def follower_sent_a_snapshot(tmp_path):
    """A follower holding entries 1-11 (term 1), sent a term-2 leader's snapshot at entry 20, installing it."""
    from .test_raft_safety import LEADER, append_entries, deliver, entries

    gate = threading.Event()

    def install(filename):
        assert gate.wait(10)
        return (b"", 20, 2), (b"", 19, 2), []

    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, fullDumpFile=str(tmp_path / "raft.snapshot"),
                       serializer=lambda filename, data: None, deserializer=install)
    engine = SafeSyncObj("127.0.0.1:2", [LEADER.address], conf, SnapshotAt(), durable=False,
                         transportClass=RecordingTransport)
    engine.doTick(0)  # a node's first tick loads its own snapshot file, before it reads any message
    deliver(engine, append_entries(1, 0, entries(2, 11)))
    for chunk in ((b"snap", True, False), (b"shot", False, False), (b"", False, True)):
        deliver(engine, {"type": "append_entries", "term": 2, "commit_index": 25, "serialized": chunk})
    return engine, gate


def replies(engine):
    return [message for _, message in engine._SyncObj__transport.sent if message["type"] == "next_node_idx"]


def test_a_follower_installing_a_snapshot_hears_its_leader_and_takes_no_entries(tmp_path):
    from pysyncobj.monotonic import monotonic as raft_clock

    from .test_raft_safety import append_entries, deliver, entries, log_of

    engine, gate = follower_sent_a_snapshot(tmp_path)
    answered = len(replies(engine))
    engine._SyncObj__raftElectionDeadline = raft_clock() - 1

    deliver(engine, append_entries(20, 2, entries(21, 22, term=2), term=2, commit=25))

    assert engine._SyncObj__raftElectionDeadline > raft_clock(), "a heartbeat all the same"
    assert log_of(engine)[-1] == (11, 1), "entries for a log the snapshot replaces"
    assert len(replies(engine)) == answered, "no word on where its log ends before the snapshot is in"
    assert engine._SyncObj__raftCommitIndex < 11
    gate.set()


def test_a_follower_tells_the_leader_where_its_log_ends_once_the_snapshot_is_installed(tmp_path):
    from .test_raft_safety import log_of

    engine, gate = follower_sent_a_snapshot(tmp_path)
    answered = len(replies(engine))
    engine.doTick(0)
    assert len(replies(engine)) == answered

    gate.set()
    for _ in range(1000):
        engine.doTick(0.01)
        if not engine._snapshot_files.installing:
            break

    assert log_of(engine) == [(19, 2), (20, 2)]
    assert engine._SyncObj__raftLastApplied == 20
    assert replies(engine)[-1] == {"type": "next_node_idx", "next_node_idx": 21, "reset": False, "success": True}


# -- compacting a log that grew large ------------------------------------------------------


def node_with_a_log_of(tmp_path, entries, entry_bytes, max_log_bytes):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, journalFile=str(tmp_path / "raft.journal"),
                       fullDumpFile=str(tmp_path / "raft.snapshot"), serializer=lambda filename, data: None,
                       deserializer=lambda filename: RAFT_DATA)
    engine = SafeSyncObj("127.0.0.1:2", ["127.0.0.1:3"], conf, SnapshotAt(), durable=False,
                         transportClass=RecordingTransport, max_log_bytes=max_log_bytes)
    engine._SyncObj__serializer = engine._snapshot_files  # as its first tick does
    for index in range(2, entries + 2):
        engine._SyncObj__raftLog.add(b"\x01" + b"x" * (entry_bytes - 1), index, 1)
    return engine


def test_a_log_past_its_size_limit_is_compacted_however_few_its_entries(tmp_path):
    """pysyncobj waits for 20,000 entries or 10 minutes, with the whole log in memory (670 MB after 300 MB)."""
    engine = node_with_a_log_of(tmp_path, entries=100, entry_bytes=1000, max_log_bytes=50_000)
    engine._compact_a_large_log()
    assert engine._SyncObj__forceLogCompaction
    engine.destroy()


def test_a_log_within_its_size_limit_waits_for_pysyncobjs_own_reasons(tmp_path):
    engine = node_with_a_log_of(tmp_path, entries=10, entry_bytes=1000, max_log_bytes=50_000)
    engine._compact_a_large_log()
    assert not engine._SyncObj__forceLogCompaction
    engine.destroy()


def test_no_second_compaction_is_asked_for_while_a_snapshot_is_written(tmp_path):
    engine = node_with_a_log_of(tmp_path, entries=100, entry_bytes=1000, max_log_bytes=50_000)
    slow = SlowSnapshot()
    engine._snapshot_files._begin = lambda data: slow
    engine._snapshot_files.serialize((None,) + RAFT_DATA, 10)

    engine._compact_a_large_log()

    assert not engine._SyncObj__forceLogCompaction, "the log is cut once it is written; then it is small"
    slow.release.set()
    engine.destroy()


@pytest.mark.parametrize("value", [0, -5, 1.5, "64", True])
def test_a_raft_log_limit_that_is_not_a_whole_number_of_mib_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^max_log_mb: need a whole number of MiB >= 1"):
        NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), max_log_mb=value)


def test_a_node_process_takes_its_raft_log_limit_from_its_command_line(tmp_path):
    with LocalCluster(str(tmp_path / "cluster"), 1, extra_args=["--max-log-mb", "1"]) as cluster:
        node = cluster.leader()
        conn = node.connect()
        conn.execute("CREATE TABLE t (v BLOB)")
        for _ in range(8):
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(400_000),))
        cluster.wait_for(lambda: node.status()["log_length"] < 8, 15, "the log compacted at 1 MiB")
        conn.close()


@pytest.mark.parametrize("max_log_mb, compacted", [(1, True), (None, False)])
def test_a_node_compacts_its_log_once_its_entries_take_max_log_mb(tmp_path, max_log_mb, compacted):
    """The limit is the node's setting (--max-log-mb, OPTIONS max_log_mb): a host short of memory lowers it."""
    settings = {} if max_log_mb is None else {"max_log_mb": max_log_mb}
    node = start_embedded_node(tmp_path / "node", **settings)
    try:
        conn = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=5)
        conn.execute("CREATE TABLE t (v BLOB)")
        for _ in range(8):  # 8 entries of 400 KB: 3.2 MB of log
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(400_000),))
        deadline = time.monotonic() + (15 if compacted else 2)  # a compaction takes well under 1 s
        while node.status()["log_length"] >= 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (node.status()["log_length"] < 8) == compacted, node.status()["log_length"]
        assert conn.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == (8, 3_200_000)
        conn.close()
    finally:
        node.stop()
