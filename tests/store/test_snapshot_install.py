"""A replica that is sent a snapshot takes it in while its clients go on reading.

A follower that fell behind the leader's log (or lost its disk) is sent the
leader's snapshot: a copy of every database. Session threads on that node keep
answering reads while the Raft thread takes it in, so installing it must never
leave a file that mixes the old database with the new one (found by the chaos
run: "database disk image is malformed" on a wiped node whose auditors read
while it installed a snapshot).
"""

import sqlite3
import threading

import pytest

from django_dqcluster.store import statemachine
from django_dqcluster.store.databases import record_applied
from django_dqcluster.store.statemachine import StateMachine

ROWS = 500


def leader_snapshot(tmp_path, applied_index, page_size=None):
    """A snapshot file of a leader whose ``default`` database holds ROWS rows, as of ``applied_index``."""
    leader = StateMachine(str(tmp_path / "leader"))
    try:
        database = leader.databases.get("default")
        conn = database.apply_connection()
        if page_size is not None:
            # As a VACUUM run through the store after PRAGMA page_size would leave it.
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute(f"PRAGMA page_size={page_size}")
            conn.execute("VACUUM")
            conn.execute("PRAGMA journal_mode=WAL")
            assert conn.execute("PRAGMA page_size").fetchone() == (page_size,)
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.execute("CREATE INDEX item_name ON item (name)")
        conn.executemany("INSERT INTO item (name) VALUES (?)", [(f"item {i:04d}",) for i in range(ROWS)])
        record_applied(conn, "setup", applied_index)
        conn.execute("COMMIT")
        database.applied_index = leader.last_index = applied_index
        filename = str(tmp_path / "leader.snapshot")
        entry = (b"", applied_index, 1)
        leader.write_snapshot(filename, (entry, (b"", applied_index - 1, 1), []))
        return filename
    finally:
        leader.close()


def replica_holding(tmp_path, name, applied_index):
    """A replica whose ``default`` database holds one item, ``name``, as of ``applied_index``."""
    replica = StateMachine(str(tmp_path / "replica"))
    database = replica.databases.get("default")
    conn = database.apply_connection()
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.execute("INSERT INTO item (name) VALUES (?)", (name,))
    record_applied(conn, name, applied_index)
    conn.execute("COMMIT")
    database.applied_index = applied_index
    return replica


def in_another_thread(work):
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except Exception as error:  # noqa: BLE001 - reported to the test below
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return outcome


@pytest.fixture
def reads_while_installing(monkeypatch):
    """Run ``read`` on another thread (a session) while the snapshot's bytes are being copied."""
    reads = []
    outcomes = []
    copy = statemachine._copy_exactly

    def copy_then_read(src, out, size):
        copy(src, out, size)
        for read in reads:
            outcomes.append(in_another_thread(read))

    monkeypatch.setattr(statemachine, "_copy_exactly", copy_then_read)
    return reads, outcomes


def sound_contents(path):
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return conn.execute("SELECT count(*), max(name) FROM item").fetchone()
    finally:
        conn.close()


def test_a_wiped_replica_read_while_it_installs_a_snapshot_ends_up_with_the_snapshot_whole(
        tmp_path, reads_while_installing):
    snapshot = leader_snapshot(tmp_path, applied_index=40)
    replica = StateMachine(str(tmp_path / "replica"))
    reads, outcomes = reads_while_installing
    # A session's read on an empty replica: the database is not there yet.
    reads.append(lambda: replica.databases.get("default").borrow_reader().execute(
        "SELECT count(*) FROM sqlite_master").fetchone())
    try:
        replica.read_snapshot(snapshot, lambda address: address)
        assert len(outcomes) == 1 and "error" not in outcomes[0], outcomes
        path = replica.databases.path_for("default")
        assert sound_contents(path) == (ROWS, f"item {ROWS - 1:04d}")
        assert replica.databases.get("default").read_applied_index() == 40
        # The node's own connections read the snapshot too.
        reader = replica.databases.get("default").borrow_reader()
        assert reader.execute("SELECT count(*) FROM item").fetchone() == (ROWS,)
    finally:
        replica.close()
    # And so does the node started again on that data dir.
    assert sound_contents(path) == (ROWS, f"item {ROWS - 1:04d}")


@pytest.mark.parametrize("leader_page_size", [None, 8192], ids=["same page size", "leader's page size changed"])
def test_a_lagging_replica_installs_a_snapshot_under_an_open_read_which_keeps_what_it_saw(tmp_path, leader_page_size):
    snapshot = leader_snapshot(tmp_path, applied_index=80, page_size=leader_page_size)
    replica = replica_holding(tmp_path, "old", applied_index=10)
    try:
        database = replica.databases.get("default")
        # A session in the middle of a read transaction on this replica.
        reader = database.borrow_reader()
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM item").fetchone() == (1,)

        replica.read_snapshot(snapshot, lambda address: address)

        # Its transaction still reads the database it began on...
        assert reader.execute("SELECT name FROM item").fetchall() == [("old",)]
        reader.execute("COMMIT")
        # ...and its next one reads the snapshot.
        assert reader.execute("SELECT count(*) FROM item").fetchone() == (ROWS,)
        assert replica.databases.get("default").read_applied_index() == 80
        assert sound_contents(replica.databases.path_for("default")) == (ROWS, f"item {ROWS - 1:04d}")
    finally:
        replica.close()


def test_a_replica_already_past_the_snapshot_keeps_its_database(tmp_path):
    snapshot = leader_snapshot(tmp_path, applied_index=30)
    replica = replica_holding(tmp_path, "newer", applied_index=35)
    try:

        replica.read_snapshot(snapshot, lambda address: address)

        assert sound_contents(replica.databases.path_for("default")) == (1, "newer")
    finally:
        replica.close()


def test_copies_left_by_a_node_killed_while_it_wrote_or_installed_a_snapshot_are_removed_at_start(tmp_path):
    data_dir = tmp_path / "node"
    for scratch in (".snapshot-k1ll3d", ".installing-k1ll3d"):
        (data_dir / scratch).mkdir(parents=True)
        (data_dir / scratch / "default").write_bytes(b"\0" * 4096)
    (data_dir / "raft.journal").write_bytes(b"kept")

    StateMachine(str(data_dir)).close()

    assert sorted(entry.name for entry in data_dir.iterdir()) == ["db", "raft.journal"]


# -- a damaged snapshot file ---------------------------------------------------------------------

def two_database_snapshot(tmp_path, applied_index=50):
    """A leader snapshot holding ``default`` (ROWS items) and ``second`` (one table)."""
    filename = leader_snapshot(tmp_path, applied_index)
    leader = StateMachine(str(tmp_path / "leader"))
    try:
        conn = leader.databases.get("second").apply_connection()
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE second_item (v)")
        record_applied(conn, "second", applied_index)
        conn.execute("COMMIT")
        leader.databases.get("second").applied_index = leader.last_index = applied_index
        entry = (b"", applied_index, 1)
        leader.write_snapshot(filename, (entry, (b"", applied_index - 1, 1), []))
    finally:
        leader.close()
    return filename


def database_names(replica):
    return sorted(replica.databases.names())


@pytest.mark.parametrize("damage", ["a chunk lost in the middle", "cut short"])
def test_a_snapshot_file_with_bytes_lost_installs_nothing_and_says_it_is_damaged(tmp_path, damage):
    filename = two_database_snapshot(tmp_path)
    with open(filename, "rb") as src:
        whole = src.read()
    middle = len(whole) // 3  # inside the first database's copy
    damaged = whole[:middle] + whole[middle + 4096:] if damage == "a chunk lost in the middle" else whole[:-100]
    with open(filename, "wb") as out:
        out.write(damaged)
    replica = replica_holding(tmp_path, "old", applied_index=10)
    try:
        with pytest.raises(ValueError, match=r"snapshot file .* is damaged .*nothing of it was installed"):
            replica.read_snapshot(filename, lambda address: address)

        assert sound_contents(replica.databases.path_for("default")) == (1, "old")
        assert database_names(replica) == ["default"]
    finally:
        replica.close()


def test_a_snapshot_checked_and_then_damaged_is_checked_again_before_it_installs(tmp_path, monkeypatch):
    """check_snapshot spares read_snapshot a second read of the same file, never of another."""
    import os

    filename = two_database_snapshot(tmp_path)
    replica = replica_holding(tmp_path, "old", applied_index=10)
    checks = []
    verify = statemachine._verify_snapshot
    monkeypatch.setattr(statemachine, "_verify_snapshot", lambda name: checks.append(name) or verify(name))
    try:
        replica.check_snapshot(filename)
        os.truncate(filename, os.path.getsize(filename) - 100)  # (its size tells it changed)
        with pytest.raises(ValueError, match="is damaged"):
            replica.read_snapshot(filename, lambda address: address)
        assert sound_contents(replica.databases.path_for("default")) == (1, "old")

        whole = two_database_snapshot(tmp_path / "again")
        replica.check_snapshot(whole)
        os.replace(whole, filename)  # as a received file is put in place
        replica.read_snapshot(filename, lambda address: address)
        assert len(checks) == 3, "checked once each, and once more after it changed"
        assert database_names(replica) == ["default", "second"]
    finally:
        replica.close()


def test_a_snapshot_file_from_a_release_without_checksums_still_installs(tmp_path):
    import msgpack

    filename = two_database_snapshot(tmp_path)
    with open(filename, "rb") as src:
        header = msgpack.unpackb(statemachine._read_block(src), raw=False, strict_map_key=False)
        rest = src.read()
    assert set(header["sha256"]) == {"default", "second"}
    del header["sha256"]
    with open(filename, "wb") as out:
        statemachine._write_block(out, msgpack.packb(header, use_bin_type=True))
        out.write(rest)
    replica = replica_holding(tmp_path, "old", applied_index=10)
    try:
        replica.read_snapshot(filename, lambda address: address)

        assert sound_contents(replica.databases.path_for("default")) == (ROWS, f"item {ROWS - 1:04d}")
        assert database_names(replica) == ["default", "second"]
    finally:
        replica.close()


def test_a_transfer_broken_by_a_dropped_connection_starts_again_from_the_first_chunk(tmp_path):
    """pysyncobj would go on after the chunk the dead connection lost: the follower's file would have a hole."""
    from pysyncobj import SyncObjConf
    from pysyncobj.node import TCPNode

    from django_dqcluster.store.raft import SafeSyncObj

    from .test_raft_safety import NoStateMachine, RecordingTransport

    dump = tmp_path / "raft.snapshot"
    dump.write_bytes(b"x" * 10_000)
    follower = TCPNode("127.0.0.1:3")
    engine = SafeSyncObj("127.0.0.1:2", [follower.address],
                         SyncObjConf(autoTick=False, appendEntriesUseBatch=False, fullDumpFile=str(dump),
                                     logCompactionBatchSize=1_000),
                         NoStateMachine(), durable=False, transportClass=RecordingTransport)
    serializer = engine._SyncObj__serializer
    assert serializer.getTransmissionData(follower)[1], "the first chunk"
    assert not serializer.getTransmissionData(follower)[1]

    engine._SyncObj__onNodeDisconnected(follower)

    assert serializer.getTransmissionData(follower)[1], "after a reconnection, the first chunk again"
