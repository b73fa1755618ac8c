"""A node whose disk fills up: the cluster goes on without it, and it loses nothing.

Two places fill. The node's SQLite files: it cannot apply the next committed
entry, so it keeps that entry, retries it, says why once (not once a tick),
leaves leadership and its clients to members that can apply, and goes on
once there is room.
Its Raft journal: the log entry is already in pysyncobj's memory, so the node
stops (exit status 3), naming the file, as PostgreSQL stops when it cannot
write its WAL; started again once there is room, it catches up. Before, the
journal's memory map killed the process with SIGBUS and no word in the log.

Each node's directory (or its SQLite directory) is a small tmpfs, filled by a
file the test writes: those tests need root (mount).
"""

import os
import shutil
import subprocess
import time

import pytest

from pysyncobj import FAIL_REASON, SyncObjConf

from django_dqcluster import dbapi
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.raft import JournalWriteFailed, SafeSyncObj

from ..waiting import wait_for
from .conftest import rows_on_every_node, start_embedded_node
from .test_raft_safety import NoStateMachine, RecordingTransport

needs_mount = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="fills a tmpfs mounted for the test: needs root and mount(8)")

DISK = "16m"
ROW = 100_000  # bytes of randomblob per row


def mount_small_disk(path):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", path], check=True)


def unmount(path):
    subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def fill(path, leave_free):
    """Write a filler file that leaves ``leave_free`` bytes free on the disk of ``path``."""
    usage = shutil.disk_usage(path)
    with open(os.path.join(path, "filler"), "wb") as handle:
        handle.write(b"\0" * max(usage.free - leave_free, 0))


def free(path):
    os.remove(os.path.join(path, "filler"))


@pytest.fixture
def small_disks(tmp_path):
    mounted = []

    def mount(path):
        mount_small_disk(path)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        unmount(path)


def create_blob_table(cluster):
    """Create the table the tests fill; every node's client address."""
    everyone = [node.client for node in cluster.nodes]
    conn = dbapi.connect(everyone, secret=cluster.secret, isolation_level=None, timeout=30)
    conn.execute("CREATE TABLE blob (id INTEGER PRIMARY KEY, b BLOB)")
    conn.close()
    return everyone


def insert_rows(addresses, secret, first, count):
    """Insert rows ``first``..; retry a write of unknown outcome under its own id."""
    conn = dbapi.connect(addresses, secret=secret, isolation_level=None, timeout=30)
    for row in range(first, first + count):
        while True:
            try:
                conn.execute("INSERT OR IGNORE INTO blob (id, b) VALUES (?, randomblob(?))", (row, ROW))
                break
            except dbapi.OperationalError as exc:
                if not getattr(exc, "unknown_outcome", False):
                    raise
    conn.close()


def log_lines(node, text):
    return [line for line in node.log().splitlines() if text in line]


@needs_mount
def test_a_leader_whose_sqlite_disk_fills_hands_over_retries_quietly_and_catches_up(tmp_path, small_disks):
    cluster = LocalCluster(str(tmp_path / "cluster"), 3, log_level="INFO")
    for node in cluster.nodes:
        small_disks(os.path.join(node.data_dir, "db"))
    with cluster:
        everyone = create_blob_table(cluster)
        stalled = cluster.leader()
        sqlite_dir = os.path.join(stalled.data_dir, "db")
        fill(sqlite_dir, leave_free=3 * ROW)

        insert_rows(everyone, cluster.secret, 1, 40)

        status = stalled.status()
        assert stalled.alive and status["role"] == "follower"
        assert "database or disk is full" in status["fatal"]
        assert status["applied_index"] < status["commit_index"]
        # A client that lists it first is sent on to another node.
        conn = dbapi.connect([stalled.client] + [node.client for node in cluster.nodes if node is not stalled],
                             secret=cluster.secret, isolation_level=None, timeout=30)
        conn.execute("INSERT INTO blob (id, b) VALUES (41, randomblob(?))", (ROW,))
        assert conn.execute("SELECT count(*) FROM blob").fetchall() == [(41,)]
        conn.close()
        assert len(log_lines(stalled, "ERROR django_dqcluster.store: cannot apply entry")) == 1, \
            "logged once, not at every retry"
        assert log_lines(stalled, "hands leadership over: it cannot apply entry")
        assert "Traceback" not in stalled.log()

        free(sqlite_dir)
        cluster.wait_converged(timeout=60)

        assert stalled.status()["fatal"] is None
        assert log_lines(stalled, "at last") and "this node goes on" in log_lines(stalled, "at last")[0]
        rows = rows_on_every_node(cluster, "SELECT count(*), sum(length(b)) FROM blob")
        assert list(rows.values()) == [[(41, 41 * ROW)]] * 3


@needs_mount
def test_a_follower_whose_journal_disk_fills_stops_naming_it_and_catches_up_once_started_again(
        tmp_path, small_disks):
    cluster = LocalCluster(str(tmp_path / "cluster"), 3, log_level="INFO")
    for node in cluster.nodes:
        small_disks(node.data_dir)
    with cluster:
        create_blob_table(cluster)
        leader = cluster.leader()
        full = next(node for node in cluster.nodes if node is not leader)
        fill(full.data_dir, leave_free=ROW)

        insert_rows([node.client for node in cluster.nodes if node is not full], cluster.secret, 1, 40)

        wait_for(lambda: not full.alive, timeout=30, what="the node whose disk is full to stop")
        assert full.process.returncode == 3
        stopped = log_lines(full, "this node stopped: free space on that disk")
        assert len(stopped) == 1 and "CRITICAL" in stopped[0]
        assert "No space left on device" in stopped[0] and full.data_dir in stopped[0]
        assert "Traceback" not in full.log() and "Fatal Python error" not in full.log()

        free(full.data_dir)
        full.start()
        started = time.monotonic()
        cluster.wait_converged(timeout=60)

        rows = rows_on_every_node(cluster, "SELECT count(*), sum(length(b)) FROM blob")
        assert list(rows.values()) == [[(40, 40 * ROW)]] * 3, f"after {time.monotonic() - started:.1f}s"


def test_a_node_that_cannot_write_its_journal_stops_and_tells_the_waiting_clients_at_once():
    engine = SafeSyncObj("127.0.0.1:2", [], SyncObjConf(autoTick=False, appendEntriesUseBatch=False),
                         NoStateMachine(), durable=False, transportClass=RecordingTransport)
    answers = []
    engine._SyncObj__commandsWaitingCommit[5].append((1, lambda result, error: answers.append(error)))

    engine._stop_for_journal_write(JournalWriteFailed(28, "cannot grow the Raft journal /data/raft.journal "
                                                          "to 32768 bytes: No space left on device"))

    assert engine.failed == ("cannot grow the Raft journal /data/raft.journal to 32768 bytes: No space left on "
                             "device; this node stopped: free space on that disk, then start it again")
    assert answers == [FAIL_REASON.UNKNOWN_OUTCOME]


@needs_mount
def test_an_embedded_node_that_stopped_answers_its_process_queries_with_the_reason(tmp_path, small_disks):
    disk = small_disks(str(tmp_path / "disk"))
    node = start_embedded_node(os.path.join(disk, "node"))
    try:
        conn = dbapi.connect(node=node, isolation_level=None)
        conn.execute("CREATE TABLE blob (id INTEGER PRIMARY KEY, b BLOB)")
        fill(disk, leave_free=0)

        with pytest.raises(dbapi.OperationalError) as raised:
            conn.execute("INSERT INTO blob (b) VALUES (randomblob(?))", (ROW,))
        assert raised.value.unknown_outcome, "its entry is in the log: whether it counts, a restart tells"

        with pytest.raises(dbapi.OperationalError, match="stopped serving: .*No space left on device; this node "
                                                         "stopped: free space on that disk, then start it again"):
            conn.execute("SELECT count(*) FROM blob")
        assert "No space left on device" in node.status()["fatal"]
    finally:
        node.stop()


def test_the_journal_fills_the_holes_an_older_version_left_before_writing_into_them(tmp_path):
    path = str(tmp_path / "raft.journal")
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, journalFile=path)
    SafeSyncObj("127.0.0.1:2", [], conf, NoStateMachine(), durable=False,
                transportClass=RecordingTransport)._SyncObj__raftLog._destroy()
    os.truncate(path, 1 << 20)  # what pysyncobj's growth leaves: a sparse tail
    assert os.stat(path).st_blocks * 512 < 1 << 20

    engine = SafeSyncObj("127.0.0.1:2", [], conf, NoStateMachine(), durable=False, transportClass=RecordingTransport)

    assert os.stat(path).st_blocks * 512 >= 1 << 20
    engine._SyncObj__raftLog._destroy()
