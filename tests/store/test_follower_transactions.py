"""Deferred transactions on a follower: they read there, and move to the leader at their first write.

A client's BEGIN DEFERRED on a follower (Django's transaction_mode DEFERRED,
every transaction of a read-only client) runs on that follower while it only
reads. Its first read asks the leader, as a strong or weak read outside a
transaction does, whether this replica holds every answered write; if so, its
snapshot is this replica's, and its later reads, savepoints and COMMIT ask
nobody (``none`` asks nobody at all). Its first write moves it to the leader,
which takes the write lock only if nothing was committed to the database
since that snapshot, as it does for its own deferred transactions; the
savepoints open by then are opened there too. A replica that is behind has
the leader run the transaction from its first read.
"""

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.session import Session
from tests.waiting import wait_for

from .conftest import applies_held, connect, nodes_in_this_process


def counts(node):
    return node.status()["follower_transactions"]


def caught_up(follower, leader):
    return follower.state_machine.last_index >= leader.state_machine.last_index


def statements_forwarded_to(leader, monkeypatch):
    """The SQL the leader runs for followers' sessions from now on, in order."""
    seen = []
    handle = Session.handle

    def recorded(self, request, answer_later=None):
        if self.node is leader and self.hops > 0 and request.get("op") == "exec":
            seen.append(request.get("sql"))
        return handle(self, request, answer_later)

    monkeypatch.setattr(Session, "handle", recorded)
    return seen


@pytest.fixture
def three_nodes(tmp_path):
    """(leader, follower, third), a table t holding 1 that the follower has applied, and a client on the leader."""
    with nodes_in_this_process(tmp_path, 3) as (leader, follower, third):
        writer = connect(leader)
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: caught_up(follower, leader), 10, "the follower applying the leader's entries")
        yield leader, follower, third, writer
        writer.close()


def values(conn):
    return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY v")]


@pytest.mark.parametrize("consistency", ["strong", "weak"])
def test_a_transaction_that_only_reads_asks_the_leader_once_and_reads_on_the_follower(
        three_nodes, monkeypatch, consistency):
    leader, follower, _, _ = three_nodes
    reader = connect(follower, consistency=consistency)
    before, reads_before = counts(follower), follower.status()["follower_reads"][consistency]
    forwarded = statements_forwarded_to(leader, monkeypatch)

    reader.execute("BEGIN DEFERRED")
    for _ in range(5):
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
    reader.execute('SAVEPOINT "s1"')
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    reader.execute('RELEASE SAVEPOINT "s1"')
    reader.commit()

    assert forwarded == ["SELECT max(v) FROM t"]  # its first read, which the leader let the follower run
    after = counts(follower)
    assert after["begun_here"] == before["begun_here"] + 1
    assert (after["moved_to_leader"], after["run_by_leader"]) == (before["moved_to_leader"], before["run_by_leader"])
    assert follower.status()["follower_reads"][consistency]["answered_here"] == reads_before["answered_here"] + 1
    reader.close()


def test_with_none_a_transaction_that_only_reads_asks_nobody(three_nodes, monkeypatch):
    leader, follower, _, _ = three_nodes
    reader = connect(follower, consistency="none")
    forwarded = statements_forwarded_to(leader, monkeypatch)
    reader.execute("BEGIN DEFERRED")
    assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
    reader.commit()
    assert forwarded == []
    reader.close()


def test_its_reads_see_one_snapshot_while_others_commit(three_nodes):
    leader, follower, _, writer = three_nodes
    reader = connect(follower)
    reader.execute("BEGIN DEFERRED")
    assert values(reader) == [1]
    writer.execute("INSERT INTO t VALUES (2)")
    wait_for(lambda: caught_up(follower, leader), 10, "the follower applying the insert")
    assert values(reader) == [1]
    reader.commit()
    assert values(reader) == [1, 2]
    reader.close()


@pytest.mark.parametrize("consistency", ["strong", "weak", "none"])
def test_it_writes_on_the_leader_when_nothing_was_committed_since_it_read(three_nodes, consistency):
    leader, follower, _, writer = three_nodes
    reader = connect(follower, consistency=consistency)
    before = counts(follower)
    reader.execute("BEGIN DEFERRED")
    (latest,) = reader.execute("SELECT max(v) FROM t").fetchone()
    reader.execute("INSERT INTO t VALUES (?)", (latest + 1,))
    assert values(reader) == [1, 2]  # its own write, read on the leader
    reader.commit()
    assert values(writer) == [1, 2]
    assert counts(follower)["moved_to_leader"] == before["moved_to_leader"] + 1
    reader.close()


def test_a_commit_since_its_snapshot_fails_its_first_write_and_nothing_of_it_is_applied(three_nodes):
    """As SQLite's SQLITE_BUSY_SNAPSHOT: serializable, a read-modify-write never overwrites a commit it missed."""
    leader, follower, _, writer = three_nodes
    reader = connect(follower)
    reader.execute("BEGIN DEFERRED")
    (latest,) = reader.execute("SELECT max(v) FROM t").fetchone()
    writer.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(dbapi.OperationalError, match="database is locked") as raised:
        reader.execute("INSERT INTO t VALUES (?)", (latest + 1,))
    assert raised.value.retryable and raised.value.sqlite_errorname == "SQLITE_BUSY_SNAPSHOT"
    reader.rollback()
    assert values(writer) == [1, 2]
    # Retried, it reads the new state and writes.
    reader.execute("BEGIN DEFERRED")
    (latest,) = reader.execute("SELECT max(v) FROM t").fetchone()
    reader.execute("INSERT INTO t VALUES (?)", (latest + 1,))
    reader.commit()
    assert values(writer) == [1, 2, 3]
    reader.close()


def test_the_savepoints_open_at_its_first_write_are_opened_on_the_leader(three_nodes):
    leader, follower, third, writer = three_nodes
    reader = connect(follower)
    reader.execute("BEGIN DEFERRED")
    assert values(reader) == [1]
    reader.execute('SAVEPOINT "gone"')
    reader.execute('RELEASE SAVEPOINT "gone"')
    with pytest.raises(dbapi.OperationalError, match="no such savepoint: gone"):
        reader.execute('ROLLBACK TO SAVEPOINT "gone"')
    reader.execute('SAVEPOINT "outer"')
    reader.execute('SAVEPOINT "inner"')
    reader.execute("INSERT INTO t VALUES (10)")  # it moves to the leader here
    reader.execute('ROLLBACK TO SAVEPOINT "inner"')
    reader.execute("INSERT INTO t VALUES (11)")
    reader.execute('RELEASE SAVEPOINT "outer"')
    with pytest.raises(dbapi.OperationalError, match="no such savepoint: gone"):
        reader.execute('ROLLBACK TO SAVEPOINT "gone"')
    reader.commit()
    assert values(writer) == [1, 11]
    on_the_third_node = connect(third, consistency="none")
    wait_for(lambda: values(on_the_third_node) == [1, 11], 10, "the third node applying the transaction alike")
    on_the_third_node.close()
    reader.close()


def test_a_transaction_that_writes_first_runs_on_the_leader(three_nodes, monkeypatch):
    leader, follower, _, writer = three_nodes
    reader = connect(follower)
    forwarded = statements_forwarded_to(leader, monkeypatch)
    reader.execute("BEGIN DEFERRED")
    reader.execute("INSERT INTO t VALUES (5)")
    assert values(reader) == [1, 5]
    reader.commit()
    assert values(writer) == [1, 5]
    assert forwarded[:2] == ["BEGIN DEFERRED", "INSERT INTO t VALUES (5)"]
    reader.close()


def test_a_replica_behind_has_the_leader_run_the_transaction_from_its_first_read(three_nodes):
    leader, follower, _, writer = three_nodes
    reader = connect(follower)
    with applies_held(follower):
        writer.execute("INSERT INTO t VALUES (2)")  # committed by the leader and the third node
        before = counts(follower)
        reader.execute("BEGIN DEFERRED")
        assert values(reader) == [1, 2]
        reader.execute("INSERT INTO t VALUES (3)")
        reader.commit()
        after = counts(follower)
        assert after["run_by_leader"] == before["run_by_leader"] + 1
        assert after["moved_to_leader"] == before["moved_to_leader"]
    assert values(writer) == [1, 2, 3]
    reader.close()


def test_its_first_read_sees_every_write_answered_before_it(three_nodes):
    leader, follower, _, writer = three_nodes
    reader = connect(follower)
    for value in range(2, 52):
        writer.execute("INSERT INTO t VALUES (?)", (value,))
        reader.execute("BEGIN DEFERRED")
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(value,)]
        reader.commit()
    reader.close()


def older_leader(leader, monkeypatch):
    """The leader ignores what a release from before reads on followers does not know."""
    handle = Session.handle

    def older_handle(self, request, answer_later=None):
        if self.node is leader:
            request = {k: v for k, v in request.items() if k not in ("applied_here", "begin_deferred", "read_at")}
        return handle(self, request, answer_later)

    monkeypatch.setattr(Session, "handle", older_handle)


def test_a_leader_of_an_older_release_runs_the_transaction_from_its_first_read(three_nodes, monkeypatch):
    leader, follower, _, writer = three_nodes
    older_leader(leader, monkeypatch)
    reader = connect(follower)
    before = counts(follower)
    reader.execute("BEGIN DEFERRED")
    assert values(reader) == [1]
    writer.execute("INSERT INTO t VALUES (2)")
    assert values(reader) == [1]  # one snapshot, the leader's
    with pytest.raises(dbapi.OperationalError, match="database is locked"):
        reader.execute("INSERT INTO t VALUES (3)")
    reader.rollback()
    assert counts(follower)["run_by_leader"] == before["run_by_leader"] + 1
    assert values(writer) == [1, 2]
    reader.close()


def test_a_leader_of_an_older_release_that_cannot_check_what_it_read_rolls_it_back_once(three_nodes, monkeypatch):
    """It would not check the follower's snapshot: the write could overwrite a commit the transaction missed."""
    leader, follower, _, writer = three_nodes
    older_leader(leader, monkeypatch)
    reader = connect(follower, consistency="none")  # (its snapshot is taken without asking the leader)
    reader.execute("BEGIN DEFERRED")
    assert values(reader) == [1]
    writer.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(dbapi.OperationalError, match="older release") as raised:
        reader.execute("INSERT INTO t VALUES (3)")
    assert raised.value.retryable and not reader.in_transaction
    assert values(writer) == [1, 2]
    # Until the leader changes, this follower's transactions run on the leader.
    begun = counts(follower)["begun_here"]
    reader.execute("BEGIN DEFERRED")
    (latest,) = reader.execute("SELECT max(v) FROM t").fetchone()
    reader.execute("INSERT INTO t VALUES (?)", (latest + 1,))
    reader.commit()
    assert values(writer) == [1, 2, 3]
    assert counts(follower)["begun_here"] == begun
    reader.close()


def test_a_follower_that_became_leader_meanwhile_goes_on_with_its_transaction(tmp_path):
    """Its first write goes to the leader, which is now its own node; the snapshot check holds there too."""
    with nodes_in_this_process(tmp_path, 2) as (leader, follower):
        writer = connect(leader)
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: caught_up(follower, leader), 10, "the follower applying the leader's entries")
        reader, stale = connect(follower), connect(follower)
        reader.execute("BEGIN DEFERRED")
        stale.execute("BEGIN DEFERRED")
        assert values(reader) == values(stale) == [1]

        leader._hand_over_leadership(10)
        wait_for(follower.is_leader, 10, "the follower leading")
        reader.execute("INSERT INTO t VALUES (2)")
        reader.commit()
        with pytest.raises(dbapi.OperationalError, match="database is locked"):
            stale.execute("INSERT INTO t VALUES (3)")
        stale.rollback()
        assert values(stale) == [1, 2]
        for conn in (writer, reader, stale):
            conn.close()


def test_the_leader_says_back_the_index_a_moved_transaction_read_at_and_holds_its_statements_to_it(three_nodes):
    """The leader's side of a move (as a follower's session sends it): a read there too must see that index."""
    leader, _, _, writer = three_nodes
    session = Session(leader, peer="a follower")
    assert session.handle({"op": "open", "db": "default", "hops": 1})["ok"]
    read_at = leader.state_machine.databases.get("default").applied_index
    begun = session.handle({"op": "exec", "sql": "BEGIN DEFERRED", "read_at": read_at})
    assert begun["ok"] and begun["read_at"] == read_at and begun["in_tx"]
    assert session.handle({"op": "exec", "sql": "SELECT max(v) FROM t"})["rows"] == [[1]]
    session.handle({"op": "exec", "sql": "ROLLBACK"})

    writer.execute("INSERT INTO t VALUES (2)")  # the database moves past read_at
    assert session.handle({"op": "exec", "sql": "BEGIN DEFERRED", "read_at": read_at})["ok"]
    for _ in range(2):  # no snapshot of a later state stays to answer the next one
        refused = session.handle({"op": "exec", "sql": "SELECT max(v) FROM t"})
        assert refused["error"]["code"] == "SQLITE_BUSY_SNAPSHOT" and refused["in_tx"]
    refused = session.handle({"op": "exec", "sql": "INSERT INTO t VALUES (3)"})
    assert refused["error"]["code"] == "SQLITE_BUSY_SNAPSHOT"
    session.handle({"op": "exec", "sql": "ROLLBACK"})
    bad = session.handle({"op": "exec", "sql": "BEGIN DEFERRED", "read_at": "12"})
    assert "read_at must be an index" in bad["error"]["message"] and not bad["in_tx"]
    session.close()
    assert values(writer) == [1, 2]
