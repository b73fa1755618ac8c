"""A query's rows come a page at a time (store/result_pages.py).

A result larger than a connection's frame limit is read whole, a page per
answer; the node holds a page, not the result; an open result never hides
later commits from the session that opened it; results left unread are
freed; inside a transaction, the rows left when it ends stay readable.
"""

import threading
import time

import pytest

from django_dqcluster import dbapi, wire
from django_dqcluster.store.result_pages import MAX_OPEN_RESULTS

from .conftest import EMBEDDED_SECRET, followers

ROWS = 600
ROW_TEXT = "x" * 500  # ~300 KB in all: many pages on a connection with a 16 KiB max_frame
SMALL_FRAME = 16 * 1024


@pytest.fixture
def node(embedded_node):
    conn = dbapi.connect(node=embedded_node, isolation_level=None)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [(f"{n:05d}{ROW_TEXT}",) for n in range(ROWS)])
    conn.close()
    return embedded_node


def small_frame_client(node, **kwargs):
    """A socket client whose frames are far smaller than the table."""
    return dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None,
                         max_frame=SMALL_FRAME, timeout=5, **kwargs)


class CountingFetches:
    """Counts the fetch requests a connection sends."""

    def __init__(self, conn):
        self.count = 0
        original = conn._fetch

        def fetch(result_id):
            self.count += 1
            return original(result_id)

        conn._fetch = fetch


def test_a_result_larger_than_max_frame_is_read_whole_a_page_at_a_time(node):
    conn = small_frame_client(node)
    fetches = CountingFetches(conn)
    rows = conn.execute("SELECT id, v FROM items ORDER BY id").fetchall()
    assert [row[0] for row in rows] == list(range(1, ROWS + 1))
    assert all(row[1] == f"{n:05d}{ROW_TEXT}" for n, row in enumerate(rows))
    # Each page fits a quarter of the frame: 300 KB need at least 75 of them.
    assert fetches.count >= 300_000 // (SMALL_FRAME // 4) - 1
    conn.close()


def test_fetchone_fetchmany_and_iteration_cross_page_boundaries(node):
    conn = small_frame_client(node)
    cursor = conn.execute("SELECT id, v FROM items ORDER BY id")
    assert cursor.fetchone()[0] == 1
    assert [row[0] for row in cursor.fetchmany(250)] == list(range(2, 252))
    assert [row[0] for row in cursor] == list(range(252, ROWS + 1))
    assert cursor.fetchone() is None and cursor.fetchmany(10) == [] and cursor.fetchall() == []
    conn.close()


def test_a_row_larger_than_a_page_travels_alone(node):
    conn = small_frame_client(node)
    conn.execute("CREATE TABLE wide (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO wide (v) VALUES (?)", [("w" * 6000,), ("a",), ("w" * 6000,)])
    assert [len(row[0]) for row in conn.execute("SELECT v FROM wide ORDER BY id")] == [6000, 1, 6000]
    conn.close()


def test_a_small_result_is_one_answer(node):
    conn = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None)
    fetches = CountingFetches(conn)
    assert conn.execute("SELECT count(*), max(id) FROM items").fetchall() == [(ROWS, ROWS)]
    assert len(conn.execute("SELECT id FROM items").fetchall()) == ROWS
    assert fetches.count == 0
    conn.close()


def test_an_open_result_does_not_hide_later_commits_from_its_session(node):
    conn = small_frame_client(node)
    cursor = conn.execute("SELECT id, v FROM items ORDER BY id")
    assert cursor.fetchone()[0] == 1
    conn.execute("INSERT INTO items (v) VALUES ('after')")
    # A read on the same connection while the first result is still open.
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (ROWS + 1,)
    assert conn.execute("SELECT v FROM items WHERE v = 'after'").fetchall() == [("after",)]
    # The open result is a snapshot from before the insert, as in SQLite.
    assert len(cursor.fetchall()) == ROWS - 1
    conn.close()


def test_a_result_left_unread_is_freed_on_the_node(node):
    conn = small_frame_client(node)
    session = only_session(node)
    closed = conn.execute("SELECT id, v FROM items")
    closed.fetchmany(3)
    closed.close()
    executed_again = conn.cursor()
    executed_again.execute("SELECT id, v FROM items")
    executed_again.execute("SELECT 1")
    dropped = conn.execute("SELECT id, v FROM items")
    dropped.fetchone()
    del dropped
    assert len(session.results) == 1  # `dropped`, until the next request says so
    kept = conn.execute("SELECT id, v FROM items ORDER BY id")
    assert len(session.results) == 1  # `kept` only
    assert len(kept.fetchall()) == ROWS
    assert len(session.results) == 0
    conn.close()


def test_a_session_keeps_a_bounded_number_of_open_results_and_says_which_was_closed(node):
    conn = small_frame_client(node)
    cursors = [conn.execute("SELECT id, v FROM items ORDER BY id") for _ in range(MAX_OPEN_RESULTS + 1)]
    assert len(only_session(node).results) == MAX_OPEN_RESULTS
    with pytest.raises(dbapi.OperationalError, match=f"dropped unread: a connection keeps at most {MAX_OPEN_RESULTS} results"):
        cursors[0].fetchall()
    assert len(cursors[-1].fetchall()) == ROWS
    conn.close()


def test_inside_a_transaction_pages_see_its_writes_and_the_rest_survives_commit(node):
    conn = small_frame_client(node)
    conn.execute("BEGIN")
    conn.execute("DELETE FROM items WHERE id > 500")
    cursor = conn.execute("SELECT id, v FROM items ORDER BY id")
    assert cursor.fetchone()[0] == 1
    conn.execute("COMMIT")
    assert [row[0] for row in cursor.fetchall()] == list(range(2, 501))
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (500,)
    conn.close()


def test_a_rolled_back_transactions_result_is_still_read_whole(node):
    conn = small_frame_client(node)
    conn.execute("BEGIN")
    conn.execute("UPDATE items SET v = 'changed' WHERE id <= 10")
    cursor = conn.execute("SELECT v FROM items ORDER BY id")
    first = cursor.fetchmany(5)
    conn.execute("ROLLBACK")
    rows = first + cursor.fetchall()
    assert len(rows) == ROWS and rows[0] == ("changed",)  # what the transaction saw
    assert conn.execute("SELECT count(*) FROM items WHERE v = 'changed'").fetchone() == (0,)
    conn.close()


def test_fetching_after_the_connection_was_lost_says_to_run_the_query_again(node):
    conn = small_frame_client(node)
    cursor = conn.execute("SELECT id, v FROM items ORDER BY id")
    cursor.fetchone()
    conn._transport.close()  # as if the node had closed it
    with pytest.raises(dbapi.OperationalError, match="rest of this result is gone.*run the query again") as info:
        cursor.fetchall()
    assert not info.value.retryable
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (ROWS,)
    conn.close()


def test_a_client_that_does_not_ask_for_pages_gets_the_whole_result_in_one_answer(node):
    """A driver of an earlier release (no page_bytes in its open request) must never see a partial result."""
    sock = wire.open_socket(node.config.client, timeout=5)
    wire.client_handshake(sock, wire.client_token(EMBEDDED_SECRET))
    wire.send_frame(sock, {"id": 1, "op": "open", "db": "default"})
    assert wire.recv_frame(sock)["ok"]
    wire.send_frame(sock, {"id": 2, "op": "exec", "sql": "SELECT id FROM items ORDER BY id"})
    response = wire.recv_frame(sock)
    sock.close()
    assert "more" not in response and [row[0] for row in response["rows"]] == list(range(1, ROWS + 1))


def test_the_embedded_transport_pages_too(node):
    conn = dbapi.connect(node=node, isolation_level=None, max_frame=SMALL_FRAME)
    fetches = CountingFetches(conn)
    assert len(conn.execute("SELECT v FROM items").fetchall()) == ROWS
    assert fetches.count > 10
    conn.close()


def only_session(node):
    clients = list(node.server._clients)
    assert len(clients) == 1
    return clients[0].session


# -- on a cluster ---------------------------------------------------------------------------------


@pytest.mark.cluster
def test_pages_come_through_a_follower_that_forwards_to_the_leader_and_from_its_own_replica(cluster):
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [(f"{n:05d}{ROW_TEXT}",) for n in range(ROWS)])
    conn.close()
    follower = followers(cluster, leader)[0]
    for consistency in ("strong", "none"):
        # local_reads off: a consistency none read is the follower node's to answer.
        reader = dbapi.connect(follower.client, secret=cluster.secret, consistency=consistency,
                               max_frame=SMALL_FRAME, local_reads=False, timeout=10)
        fetches = CountingFetches(reader)
        if consistency == "none":
            deadline = time.monotonic() + 10
            while reader.execute("SELECT count(*) FROM items").fetchone() != (ROWS,):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        rows = reader.execute("SELECT id, v FROM items ORDER BY id").fetchall()
        assert [row[0] for row in rows] == list(range(1, ROWS + 1)), consistency
        assert fetches.count > 10, consistency
        reader.close()


def test_two_threads_read_large_results_on_their_own_connections(node):
    failures = []

    def read():
        try:
            conn = small_frame_client(node)
            for _ in range(3):
                assert len(conn.execute("SELECT id, v FROM items").fetchall()) == ROWS
            conn.close()
        except Exception as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
