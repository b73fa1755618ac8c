"""BEGIN DEFERRED (Django's transaction_mode "DEFERRED"): no lock until the first write.

A plain BEGIN (Django's default) takes the database's write lock at once, so
transactions run one at a time. A deferred transaction reads a snapshot and
holds nothing while it only reads, so read-only transactions (every view under
ATOMIC_REQUESTS) neither wait for nor hold up anyone. Its snapshot starts at its
first read, as in SQLite. Its first write takes the lock, and only if nothing
was committed since its snapshot (if it read at all): otherwise it
fails with "database is locked" (SQLite's SQLITE_BUSY_SNAPSHOT) and nothing it
did is applied, so it stays serializable.
"""

import threading
import time

import pytest

from django_dqcluster import dbapi

from .conftest import EMBEDDED_SECRET, start_embedded_node


@pytest.fixture
def busy_timeout():
    """How long the node's writers wait for a lock before "database is locked": 1 s (5 s by default)."""
    return 1.0


@pytest.fixture
def embedded_node(tmp_path, busy_timeout):
    """A one-node store whose writers give up waiting for a lock after ``busy_timeout``."""
    node = start_embedded_node(tmp_path / "node", busy_timeout=busy_timeout)
    yield node
    node.stop()


@pytest.fixture
def client(embedded_node):
    opened = []

    def connect(**kwargs):
        kwargs.setdefault("timeout", 3)
        conn = dbapi.connect(embedded_node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, **kwargs)
        opened.append(conn)
        return conn

    setup = connect()
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    setup.execute("INSERT INTO t (v) VALUES (1)")
    yield connect
    for conn in opened:
        conn.close()


def values(conn):
    return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY id")]


def test_read_only_deferred_transactions_neither_wait_for_nor_hold_up_anyone(client):
    # Not retrying: a writer kept waiting for a lock is told "database is locked" after the busy timeout.
    a, b, writer = client(), client(), client(retry_timeout=0)
    a.execute("BEGIN DEFERRED")
    assert values(a) == [1]
    b.execute("BEGIN DEFERRED")
    assert values(b) == [1]
    writer.execute("INSERT INTO t (v) VALUES (2)")  # with a plain BEGIN open, this waits for its lock
    writer.execute("BEGIN")
    writer.execute("INSERT INTO t (v) VALUES (3)")
    writer.execute("COMMIT")
    a.execute("COMMIT")
    b.execute("ROLLBACK")
    assert values(writer) == [1, 2, 3]


def test_a_deferred_transaction_reads_one_snapshot(client):
    reader, writer = client(), client()
    reader.execute("BEGIN DEFERRED")
    assert values(reader) == [1]
    writer.execute("INSERT INTO t (v) VALUES (2)")
    assert values(reader) == [1]  # not the commit made after its snapshot
    reader.execute("COMMIT")
    assert values(reader) == [1, 2]


def test_its_snapshot_starts_at_its_first_read_not_at_begin(client):
    conn, writer = client(), client()
    conn.execute("BEGIN DEFERRED")
    writer.execute("INSERT INTO t (v) VALUES (2)")
    assert values(conn) == [1, 2]  # committed before its first read: as in SQLite, it sees it
    writer.execute("INSERT INTO t (v) VALUES (3)")
    assert values(conn) == [1, 2]
    conn.execute("COMMIT")


def test_one_that_writes_before_it_reads_is_not_failed_by_commits_made_since_begin(client):
    """With nothing read, there is nothing a commit could have made stale: as in SQLite.

    (When each BEGIN DEFERRED took a snapshot, every such transaction failed
    while another client committed steadily: 99% of them, measured.)
    """
    conn, writer = client(), client()
    conn.execute("BEGIN DEFERRED")
    writer.execute("INSERT INTO t (v) VALUES (2)")
    conn.execute("INSERT INTO t (v) VALUES (3)")
    conn.execute("COMMIT")
    assert values(writer) == [1, 2, 3]


def test_its_first_write_takes_the_lock_when_nothing_was_committed_since_its_snapshot(client):
    conn, other = client(), client(retry_timeout=0)  # told "database is locked" once, not retrying
    conn.execute("BEGIN DEFERRED")
    (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
    conn.execute("INSERT INTO t (v) VALUES (?)", (count + 1,))
    assert values(conn) == [1, 2]  # its own write, read inside it
    # It now holds the lock, as a plain BEGIN does: other writers wait for it.
    with pytest.raises(dbapi.OperationalError, match="database is locked"):
        other.execute("INSERT INTO t (v) VALUES (99)")
    conn.execute("COMMIT")
    assert values(other) == [1, 2]


def test_a_write_after_another_commit_fails_as_database_is_locked_and_applies_nothing(client):
    conn, writer = client(), client()
    conn.execute("BEGIN DEFERRED")
    (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
    writer.execute("INSERT INTO t (v) VALUES (2)")
    with pytest.raises(dbapi.OperationalError, match="database is locked: another transaction committed since") as info:
        conn.execute("INSERT INTO t (v) VALUES (?)", (count + 1,))  # a read-modify-write on a stale read
    assert info.value.retryable and info.value.sqlite_errorname == "SQLITE_BUSY_SNAPSHOT"
    assert conn.in_transaction  # as in SQLite: the application rolls it back
    conn.execute("ROLLBACK")
    assert values(writer) == [1, 2]
    # Run again, it sees the commit and writes.
    conn.execute("BEGIN DEFERRED")
    (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
    conn.execute("INSERT INTO t (v) VALUES (?)", (count + 1,))
    conn.execute("COMMIT")
    assert values(writer) == [1, 2, 3]


@pytest.mark.parametrize("busy_timeout", [10.0])  # room for the holder's end to come while the write waits
def test_a_write_waiting_for_a_plain_transaction_succeeds_only_if_it_committed_nothing(client):
    holder, deferred = client(), client(timeout=5)
    for holder_ends_with, expected in (("ROLLBACK", None), ("COMMIT", "database is locked")):
        holder.execute("BEGIN")  # takes the lock at once
        holder.execute("INSERT INTO t (v) VALUES (50)")
        deferred.execute("BEGIN DEFERRED")
        assert 50 not in values(deferred)
        ending = threading.Timer(0.3, holder.execute, (holder_ends_with,))
        ending.start()
        if expected is None:
            deferred.execute("INSERT INTO t (v) VALUES (60)")  # waits for the lock, then writes
            deferred.execute("COMMIT")
        else:
            with pytest.raises(dbapi.OperationalError, match=expected):
                deferred.execute("INSERT INTO t (v) VALUES (60)")
            deferred.execute("ROLLBACK")
        ending.join()  # the holder's answer may come after the deferred one's
    assert values(holder) == [1, 60, 50]


def test_its_savepoints_take_no_lock_until_its_first_write_opens_them(client):
    """As in SQLite: a savepoint marks a place to roll back to, and there is nothing to undo before a write."""
    conn, writer = client(), client()
    conn.execute("BEGIN DEFERRED")
    conn.execute("SAVEPOINT s1")
    writer.execute("INSERT INTO t (v) VALUES (2)")  # not held up
    conn.execute("INSERT INTO t (v) VALUES (3)")  # takes the lock, s1 opened before it
    conn.execute("SAVEPOINT s2")
    conn.execute("INSERT INTO t (v) VALUES (4)")
    conn.execute("ROLLBACK TO s1")
    conn.execute("INSERT INTO t (v) VALUES (5)")
    conn.execute("RELEASE s1")
    conn.execute("COMMIT")
    assert values(writer) == [1, 2, 5]


def test_a_deferred_transaction_is_aborted_when_the_node_stops_leading(client, embedded_node):
    conn = client()
    conn.execute("BEGIN DEFERRED")
    assert values(conn) == [1]
    embedded_node.leader_state.abort_all("leadership lost (test)")
    with pytest.raises(dbapi.OperationalError, match="transaction aborted: leadership lost") as info:
        conn.execute("SELECT count(*) FROM t")
    assert info.value.retryable and not conn.in_transaction
    assert values(conn) == [1]


def test_its_paged_results_survive_its_end(client):
    conn = client(max_frame=16 * 1024)
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(n,) for n in range(2, 3001)])
    conn.execute("BEGIN DEFERRED")
    cursor = conn.execute("SELECT v, printf('%.40c', 'x') FROM t ORDER BY id")
    first = cursor.fetchmany(10)
    conn.execute("COMMIT")
    assert [row[0] for row in first + cursor.fetchall()] == list(range(1, 3001))


def test_a_plain_begin_still_takes_the_lock_at_once(client):
    holder, other = client(), client(retry_timeout=0)  # told "database is locked" once, not retrying
    holder.execute("BEGIN")
    with pytest.raises(dbapi.OperationalError, match="database is locked"):
        other.execute("INSERT INTO t (v) VALUES (2)")
    holder.execute("ROLLBACK")
