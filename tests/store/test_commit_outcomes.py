"""A request that may commit the open transaction, its answer lost: the outcome is unknown.

A COMMIT statement (not only the driver's commit()), a script holding one,
and the RELEASE of the savepoint that began the transaction all commit, as in
SQLite. If the connection breaks before their answer arrives, the driver must
not say "rolled back, retry it": the commit may have happened, and a retry
would apply the transaction twice. Any other request lost in a transaction
leaves it rolled back, and says so.

The answer is lost by a transport that delivers the request, then fails as
a reset connection would.
"""

import pytest

from django_dqcluster import dbapi

from ..waiting import wait_for
from .conftest import open_connection, start_embedded_node


class Interruption(Exception):
    """What a signal handler (a Celery time limit, Ctrl-C) raises in the middle of a request."""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    running = start_embedded_node(tmp_path_factory.mktemp("outcomes") / "node")
    yield running
    running.stop()


@pytest.fixture
def conn(node):
    conn = open_connection(node, "socket")
    conn.execute("CREATE TABLE IF NOT EXISTS t (v)")
    conn.execute("DELETE FROM t")
    yield conn
    conn.close()


def rows(node):
    reader = open_connection(node, "socket")
    try:
        return reader.execute("SELECT v FROM t ORDER BY v").fetchall()
    finally:
        reader.close()


def losing_the_answer(conn, monkeypatch, failure=ConnectionResetError("connection reset by peer")):
    """The next request reaches the node and runs; its answer never comes back."""
    transport = conn._transport
    deliver = transport.request

    def delivered_then_lost(message, raise_errors=True):
        deliver(message, raise_errors=raise_errors)
        raise failure

    monkeypatch.setattr(transport, "request", delivered_then_lost)


@pytest.mark.parametrize("begin, commit", [
    ("BEGIN", "COMMIT"),
    ("BEGIN", "END TRANSACTION"),
    ("SAVEPOINT outer_one", "RELEASE outer_one"),
    ("SAVEPOINT outer_one", "RELEASE SAVEPOINT OUTER_ONE"),
])
def test_a_statement_that_commits_lost_on_its_way_has_an_unknown_outcome(node, conn, monkeypatch, begin, commit):
    conn.execute(begin)
    conn.execute("INSERT INTO t VALUES (1)")
    losing_the_answer(conn, monkeypatch)

    with pytest.raises(dbapi.OperationalError) as lost:
        conn.execute(commit)

    assert lost.value.unknown_outcome and not lost.value.retryable
    assert "outcome is unknown" in str(lost.value)
    assert rows(node) == [(1,)], "it did commit: 'rolled back, retry it' would have doubled it"


def test_a_script_that_commits_lost_on_its_way_has_an_unknown_outcome(node, conn, monkeypatch):
    conn.execute("BEGIN")
    losing_the_answer(conn, monkeypatch)

    with pytest.raises(dbapi.OperationalError) as lost:
        conn.executescript("INSERT INTO t VALUES (2); COMMIT;")

    assert lost.value.unknown_outcome
    assert rows(node) == [(2,)]


@pytest.mark.parametrize("begin, release", [
    (["SAVEPOINT outer_one", "SAVEPOINT inner_one"], "RELEASE inner_one"),
    (["BEGIN", "SAVEPOINT outer_one"], "RELEASE outer_one"),  # BEGIN began it: only COMMIT commits
])
def test_a_release_that_does_not_commit_lost_on_its_way_rolled_the_transaction_back(
        node, conn, monkeypatch, begin, release):
    for statement in begin:
        conn.execute(statement)
    conn.execute("INSERT INTO t VALUES (3)")
    losing_the_answer(conn, monkeypatch)

    with pytest.raises(dbapi.OperationalError) as lost:
        conn.execute(release)

    assert lost.value.retryable and not lost.value.unknown_outcome
    assert "rolled back" in str(lost.value)
    wait_for(lambda: not node.status()["write_locks"], 10, "the node rolled the transaction back")
    assert rows(node) == []


def test_an_interrupted_commit_statement_ends_the_transaction_as_commit_does(node, conn, monkeypatch):
    conn.execute("SAVEPOINT outer_one")
    conn.execute("INSERT INTO t VALUES (5)")
    losing_the_answer(conn, monkeypatch, failure=Interruption())

    with pytest.raises(Interruption):
        conn.execute("RELEASE outer_one")

    assert not conn.in_transaction
    assert conn.execute("SELECT v FROM t").fetchall() == [(5,)]
