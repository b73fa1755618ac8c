"""A transaction aborted on the leader (leadership lost) is rolled back once, by whoever gets there first.

Its session finds out at its next statement, possibly after the node leads
again and another client's transaction holds the write lock and the scratch
connection. Cleaning up then must leave that transaction alone: it used to
roll it back, so its next statements ran on the leader's file directly,
outside Raft, and were applied a second time at its COMMIT.
"""

import pytest

from django_dqcluster import dbapi

from .conftest import EMBEDDED_SECRET


def connect(node):
    return dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=3)


def values(conn):
    return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY rowid")]


def test_a_session_learning_its_transaction_was_aborted_leaves_the_next_one_alone(embedded_node):
    aborted, next_one, reader = connect(embedded_node), connect(embedded_node), connect(embedded_node)
    aborted.execute("CREATE TABLE t (v TEXT)")
    aborted.execute("BEGIN")
    aborted.execute("INSERT INTO t VALUES ('a1')")
    embedded_node.leader_state.abort_all("leadership was lost (test)")
    next_one.execute("BEGIN")  # the node leads (again): the lock is free
    next_one.execute("INSERT INTO t VALUES ('b1')")

    with pytest.raises(dbapi.OperationalError, match=r"transaction aborted: leadership was lost \(test\)"):
        aborted.execute("INSERT INTO t VALUES ('a2')")
    assert not aborted.in_transaction
    next_one.execute("INSERT INTO t VALUES ('b2')")
    assert values(reader) == []  # nothing of next_one's is visible before its COMMIT
    next_one.execute("COMMIT")
    assert values(reader) == ["b1", "b2"]  # once each, nothing of the aborted one's


def test_a_deferred_transaction_aborted_while_it_takes_the_lock_gives_it_back(embedded_node):
    conn, other = connect(embedded_node), connect(embedded_node)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("BEGIN DEFERRED")
    assert values(conn) == []
    embedded_node.leader_state.abort_all("leadership was lost (test)")
    with pytest.raises(dbapi.OperationalError, match="transaction aborted"):
        conn.execute("INSERT INTO t VALUES ('x')")
    other.execute("BEGIN")  # the lock and the scratch connection are free
    other.execute("INSERT INTO t VALUES ('y')")
    other.execute("COMMIT")
    assert values(other) == ["y"]
