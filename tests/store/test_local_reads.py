"""Reads with consistency ``none`` from the replica file of a node on this host.

A client beside its node reads the node's SQLite file itself instead of
asking over the socket: same data, no round trip. These tests pin down when
it may (a SELECT outside a transaction, a live node that proved the file is
its own) and that it never reads a file the node no longer keeps up to date.
"""

import os
import sqlite3
import time
import tracemalloc

import pytest

from django_dqcluster import dbapi
from django_dqcluster.dbapi.replica import PAGE_ROWS, RETRY_AFTER, ReplicaFile

from .conftest import followers


@pytest.fixture
def follower(cluster):
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT INTO kv VALUES ('a', 1)")
    conn.close()
    cluster.wait_converged()
    return followers(cluster, leader)[0]


def write(cluster, sql, database="default"):
    conn = cluster.leader().connect(database=database)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def test_a_none_read_beside_the_node_is_answered_from_its_replica_file(cluster, follower):
    local = follower.connect(consistency="none")
    assert local.execute("SELECT v FROM kv WHERE k = ?", ("a",)).fetchall() == [(1,)]
    cursor = local.execute("SELECT k, v FROM kv")
    assert [column[0] for column in cursor.description] == ["k", "v"]
    assert cursor.fetchall() == [("a", 1)]
    assert local.replica_reads == 2


def test_strong_weak_and_opted_out_connections_always_ask_the_node(cluster, follower):
    for options in ({"consistency": "strong"}, {"consistency": "weak"}, {"consistency": "none", "local_reads": False}):
        conn = follower.connect(**options)
        assert conn.execute("SELECT v FROM kv").fetchall() == [(1,)]
        assert conn.replica_reads == 0, options


def test_writes_pragmas_and_ctes_go_to_the_node(cluster, follower):
    local = follower.connect(consistency="none")
    local.execute("INSERT INTO kv VALUES ('b', 2)")  # forwarded to the leader
    assert local.execute("PRAGMA foreign_keys").fetchall() == [(1,)]
    assert local.execute("WITH x AS (SELECT 1) SELECT * FROM x").fetchall() == [(1,)]
    assert local.replica_reads == 0


def test_reads_inside_a_transaction_run_on_the_leader_and_see_its_writes(cluster, follower):
    local = follower.connect(consistency="none")
    local.execute("BEGIN")
    local.execute("UPDATE kv SET v = 5 WHERE k = 'a'")
    assert local.execute("SELECT v FROM kv").fetchall() == [(5,)]
    local.execute("ROLLBACK")
    assert local.replica_reads == 0
    assert local.execute("SELECT v FROM kv").fetchall() == [(1,)]
    assert local.replica_reads == 1


def test_a_local_read_is_as_stale_as_the_node_and_catches_up_with_it(cluster, follower):
    local = follower.connect(consistency="none")
    follower.pause()
    try:
        write(cluster, "UPDATE kv SET v = 2 WHERE k = 'a'")
        # The paused node has not applied it: neither has its file.
        assert local.execute("SELECT v FROM kv").fetchall() == [(1,)]
    finally:
        follower.resume()
    cluster.wait_converged()
    assert local.execute("SELECT v FROM kv").fetchall() == [(2,)]
    assert local.replica_reads == 2


def fill_big_table(cluster, rows, blob_bytes):
    conn = cluster.leader().connect()
    try:
        conn.execute("CREATE TABLE big (n INTEGER PRIMARY KEY, blob BLOB)")
        # Entries of at most ~1 MB: the test is about reading them.
        batch = max(1, min(500, 1_000_000 // max(blob_bytes, 1)))
        for start in range(0, rows, batch):
            conn.executemany("INSERT INTO big VALUES (?, ?)",
                             [(n, bytes(blob_bytes)) for n in range(start, min(start + batch, rows))])
    finally:
        conn.close()
    cluster.wait_converged()


def open_files():
    return len(os.listdir("/proc/self/fd"))


def execute_locally(conn, sql):
    """``conn.execute(sql)``, read from the replica file.

    A file this process momentarily cannot open (busy while the node writes
    it) is left to the node for RETRY_AFTER: then try again after that.
    """
    for _ in range(5):
        before = conn.replica_reads
        cursor = conn.execute(sql)
        if conn.replica_reads > before:
            return cursor
        cursor.close()
        time.sleep(RETRY_AFTER + 0.1)
    raise AssertionError(f"the node answered {sql!r} five times; never read from its file")


def test_a_large_local_read_holds_a_page_in_memory_not_the_whole_result(cluster, follower):
    fill_big_table(cluster, 2000, 4_000)  # 8 MB of blobs
    local = follower.connect(consistency="none")
    tracemalloc.start()
    try:
        cursor = execute_locally(local, "SELECT n, blob FROM big ORDER BY n")
        first = cursor.fetchone()
        held = tracemalloc.get_traced_memory()[0]
        numbers = [first[0]] + [row[0] for row in cursor]
    finally:
        tracemalloc.stop()
    assert numbers == list(range(2000))
    # A page of 256 rows is ~1 MB; the whole result would be 8 MB.
    assert held < 3_000_000, f"{held} bytes held after the first row"


def test_reads_while_a_large_local_result_is_iterated_see_the_newest_state(cluster, follower):
    fill_big_table(cluster, PAGE_ROWS * 3, 10)
    local = follower.connect(consistency="none")
    cursor = execute_locally(local, "SELECT n FROM big ORDER BY n")
    assert cursor.fetchone() == (0,)
    write(cluster, "INSERT INTO big VALUES (100000, NULL)")
    cluster.wait_converged()
    assert execute_locally(local, "SELECT count(*) FROM big").fetchone() == (PAGE_ROWS * 3 + 1,)
    # The iterated result keeps the snapshot it started with, as in SQLite.
    assert [row[0] for row in cursor] == list(range(1, PAGE_ROWS * 3))


def test_large_local_results_left_unread_close_their_files(cluster, follower):
    fill_big_table(cluster, PAGE_ROWS * 2, 10)
    local = follower.connect(consistency="none")
    execute_locally(local, "SELECT 1 FROM big LIMIT 1").fetchall()  # the replica's own connection is open
    before = open_files()
    for _ in range(20):
        cursor = local.execute("SELECT n FROM big")
        cursor.fetchone()
        cursor.close()
    for _ in range(20):
        local.execute("SELECT n FROM big").fetchone()  # dropped unclosed
    cursor = local.cursor()
    for _ in range(20):
        cursor.execute("SELECT n FROM big").fetchone()  # executed again before the last page
    assert open_files() <= before + 3  # a result still open, and its SQLite files
    left_open = local.execute("SELECT n FROM big")
    left_open.fetchone()
    local.close()
    assert open_files() < before


def test_sql_errors_are_the_nodes_own(cluster, follower):
    local = follower.connect(consistency="none")
    with pytest.raises(dbapi.OperationalError, match="no such table: missing"):
        local.execute("SELECT * FROM missing")
    assert local.replica_reads == 0


def test_a_database_dropped_and_created_again_is_read_from_its_new_file(cluster, follower):
    write(cluster, "CREATE TABLE t (n INTEGER)", database="scratch")
    write(cluster, "INSERT INTO t VALUES (1)", database="scratch")
    cluster.wait_converged()
    local = follower.connect(consistency="none", database="scratch")
    assert local.execute("SELECT n FROM t").fetchall() == [(1,)]
    admin = cluster.leader().connect()
    admin.drop_database("scratch")
    write(cluster, "CREATE TABLE t (n INTEGER)", database="scratch")
    write(cluster, "INSERT INTO t VALUES (2)", database="scratch")
    cluster.wait_converged()
    # The first file was deleted while this client had it open: a read of it
    # would still find 1.
    assert local.execute("SELECT n FROM t").fetchall() == [(2,)]
    assert local.replica_reads == 2


def connect_beside(cluster, node):
    """A none connection to ``node`` first, with the other members to fail over to."""
    others = [other.client for other in cluster.nodes if other is not node]
    return dbapi.connect([node.client, *others], secret=cluster.secret, consistency="none", isolation_level=None)


def test_a_killed_nodes_file_is_never_read_again(cluster, follower):
    local = connect_beside(cluster, follower)
    assert local.execute("SELECT v FROM kv").fetchall() == [(1,)]
    follower.kill()
    write(cluster, "UPDATE kv SET v = 3 WHERE k = 'a'")
    cluster.wait_converged()
    # The dead node's file still says 1; the client fails over to a live node
    # (whose own file, on this host too, is up to date).
    assert local.execute("SELECT v FROM kv").fetchall() == [(3,)]
    assert local.node_address != follower.client
    # That read went to the new node; the next one reads its file.
    assert local.execute("SELECT v FROM kv").fetchall() == [(3,)]
    assert local.replica_reads == 2


def test_a_stopping_node_withdraws_its_files_from_local_readers(cluster, follower):
    instance_file = os.path.join(follower.data_dir, "db", ".instance")
    assert os.path.exists(instance_file)
    local = connect_beside(cluster, follower)
    assert local.execute("SELECT v FROM kv").fetchall() == [(1,)]
    follower.stop()
    assert not os.path.exists(instance_file)
    write(cluster, "UPDATE kv SET v = 4 WHERE k = 'a'")
    cluster.wait_converged()
    assert local.execute("SELECT v FROM kv").fetchall() == [(4,)]


def test_a_client_reads_only_files_whose_instance_id_the_node_sent_it(tmp_path):
    """A client on another host (or not allowed to read the node's files) never finds the id."""
    instance_file = tmp_path / ".instance"
    offer = {"path": str(tmp_path / "default.sqlite3"), "instance_file": str(instance_file), "instance": "ab12"}
    assert ReplicaFile.offered(offer) is None  # no such file here
    instance_file.write_text("cd34")
    assert ReplicaFile.offered(offer) is None  # another node's files
    assert ReplicaFile.offered(None) is None  # a node that offers nothing (older, or diverged)
    instance_file.write_text("ab12")
    assert ReplicaFile.offered(offer).path == offer["path"]


def test_a_file_this_process_cannot_read_is_left_to_the_node_for_a_while(tmp_path, monkeypatch):
    path = tmp_path / "default.sqlite3"
    path.write_bytes(b"not a database" * 500)
    now = [100.0]
    read = "SELECT count(*) FROM sqlite_master"
    replica = ReplicaFile(str(path), str(tmp_path / ".instance"), clock=lambda: now[0])
    opened = []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *args, **kwargs: opened.append(args) or connect(*args, **kwargs))
    assert replica.query(read, ()) is None  # SQLITE_NOTADB: the node answers
    assert replica.query(read, ()) is None
    assert len(opened) == 1  # not tried again at once
    now[0] += 1.5
    assert replica.query(read, ()) is None
    assert len(opened) == 2


def test_a_statement_the_file_cannot_answer_does_not_stop_local_reads(tmp_path):
    path = tmp_path / "default.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (n)")
        conn.execute("INSERT INTO t VALUES (7)")
    replica = ReplicaFile(str(path), str(tmp_path / ".instance"))
    assert replica.query("SELECT * FROM missing", ()) is None  # the node reports the error
    assert replica.query("SELECT n FROM t", ())["rows"] == [(7,)]
    replica.close()
