"""What a client session holds on its node, and gives back when it ends.

Django opens a connection to the store per request by default
(CONN_MAX_AGE = 0), so a node sees a new session for every request it serves:
whatever a session holds must be given back, or the node runs out of file
descriptors after a few thousand requests.
"""

import os
import time

from django_dqcluster import dbapi

from .conftest import EMBEDDED_SECRET


def open_files():
    return len(os.listdir("/proc/self/fd"))


def sessions_come_and_go(node, count, sql):
    """Open, use and close ``count`` sessions one after another.

    A client's close reaches the node a moment later, so each session is
    waited out on the node before the next opens: otherwise a busy machine
    overlaps a few of them, and each overlap rightly takes a connection of
    its own.
    """
    for _ in range(count):
        conn = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=5)
        conn.execute(sql).fetchall()
        conn.close()
        wait_for_sessions_to_end(node)


def wait_for_sessions_to_end(node, timeout=5.0):
    deadline = time.monotonic() + timeout
    while node.server._clients and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not node.server._clients


def test_a_node_does_not_keep_a_connection_open_per_client_that_came_and_went(embedded_node):
    setup = dbapi.connect(node=embedded_node, isolation_level=None)
    setup.execute("CREATE TABLE t (v)")
    setup.execute("INSERT INTO t VALUES (1)")
    setup.close()
    sessions_come_and_go(embedded_node, 20, "SELECT count(*) FROM t")  # warm up
    before = open_files()
    sessions_come_and_go(embedded_node, 200, "SELECT count(*) FROM t")
    sessions_come_and_go(embedded_node, 50, "INSERT INTO t VALUES (2)")  # classified on a read connection
    # Each SQLite connection holds the database file and its WAL open: before
    # sessions gave their read connections back, this grew by 500.
    assert open_files() - before <= 4


def test_read_connections_are_reused_by_later_sessions(embedded_node):
    setup = dbapi.connect(node=embedded_node, isolation_level=None)
    setup.execute("CREATE TABLE t (v)")
    setup.close()
    database = embedded_node.state_machine.databases.get("default")
    sessions_come_and_go(embedded_node, 30, "SELECT count(*) FROM t")
    assert len(database._idle_readers) == 1
    assert database._open_readers == set(database._idle_readers)


def test_sessions_reading_at_the_same_time_each_have_their_own_connection(embedded_node):
    setup = dbapi.connect(node=embedded_node, isolation_level=None)
    setup.execute("CREATE TABLE t (v)")
    setup.close()
    conns = [dbapi.connect(embedded_node.config.client, secret=EMBEDDED_SECRET, isolation_level=None)
             for _ in range(3)]
    for conn in conns:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    database = embedded_node.state_machine.databases.get("default")
    assert len(database._open_readers - set(database._idle_readers)) == 3
    for conn in conns:
        conn.close()
    wait_for_sessions_to_end(embedded_node)
    assert database._open_readers == set(database._idle_readers)


def test_a_result_over_a_page_in_few_rows_gives_its_read_connection_back(embedded_node):
    """Its rows all read at once, though more than one page: nothing is left stepping on the connection."""
    setup = dbapi.connect(node=embedded_node, isolation_level=None)
    setup.execute("CREATE TABLE t (v BLOB)")
    setup.executemany("INSERT INTO t VALUES (?)", [(bytes([n]) * 30_000,) for n in range(100)])  # 3 MB, 100 rows
    setup.close()
    database = embedded_node.state_machine.databases.get("default")
    sessions_come_and_go(embedded_node, 2, "SELECT count(*) FROM t")
    before = open_files()
    sessions_come_and_go(embedded_node, 30, "SELECT v FROM t")
    conn = dbapi.connect(node=embedded_node, isolation_level=None)
    for _ in range(30):  # one session
        assert len(conn.execute("SELECT v FROM t").fetchall()) == 100
    conn.close()
    wait_for_sessions_to_end(embedded_node)
    # Each such read left its connection open, lent to nobody: 60 of them here.
    assert database._open_readers == set(database._idle_readers)
    assert len(database._open_readers) <= 2
    assert open_files() - before <= 4
