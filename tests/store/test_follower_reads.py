"""Strong and weak reads on a follower: the leader says whether the follower's replica may answer.

A follower used to send every strong and weak read to the leader, so one
process ran the reads of every host. Now the read goes to the leader with the
index the follower's replica has applied. A strong read's leader first proves
it still leads (as for its own strong reads) and then knows every write
answered so far is within its own applied index; a weak read is of the
leader's applied state, unproven. Either way, if the follower has applied that
much, the leader tells it to run the read itself; otherwise (the follower has
not heard of the last commit yet, or lags) the leader runs it, as before. One
round trip, and the read sees what the leader would have shown it, or newer.
"""

import time

import pytest

from django_dqcluster.store.session import Session
from tests.waiting import wait_for

from .conftest import Writer, applies_held, connect, followers, nodes_in_this_process


def follower_reads(node, consistency):
    return node.status()["follower_reads"][consistency]


def caught_up(follower, leader):
    return follower.status()["applied_index"] >= leader.status()["applied_index"]


@pytest.mark.parametrize("consistency", ["strong", "weak"])
def test_a_follower_that_holds_every_answered_write_answers_reads_itself(steady_cluster, consistency):
    cluster = steady_cluster
    leader = cluster.leader()
    follower = followers(cluster, leader)[0]
    writer, reader = leader.connect(), follower.connect(consistency=consistency)
    writer.execute("CREATE TABLE t (v INTEGER)")
    writer.execute("INSERT INTO t VALUES (1)")
    wait_for(lambda: caught_up(follower, leader), 10, "the follower applying the leader's entries")
    before = follower_reads(follower, consistency)

    for _ in range(100):
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]

    after = follower_reads(follower, consistency)
    answered_here = after["answered_here"] - before["answered_here"]
    assert answered_here + after["sent_to_leader"] - before["sent_to_leader"] == 100
    # Nothing changed data meanwhile: all of them (the leader's barriers,
    # when its lease lapses on a loaded machine, change none).
    assert answered_here == 100, after


@pytest.mark.parametrize("consistency", ["strong", "weak"])
@pytest.mark.parametrize("written_through", ["the leader", "the follower"])
def test_a_read_on_a_follower_sees_the_write_answered_just_before_it(cluster, consistency, written_through):
    leader = cluster.leader()
    follower = followers(cluster, leader)[0]
    reader = follower.connect(consistency=consistency)
    writer = leader.connect() if written_through == "the leader" else reader
    writer.execute("CREATE TABLE t (v INTEGER)")
    for value in range(1, 101):
        writer.execute("INSERT INTO t VALUES (?)", (value,))
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(value,)]


@pytest.mark.parametrize("consistency", ["strong", "weak"])
def test_reads_on_every_follower_see_every_write_acknowledged_before_they_began(cluster, consistency):
    """Linearizable with ``strong``: a read begun after a write's acknowledgement (to
    another client, through another node) sees it, while writes go on. ``weak`` holds
    this too while the leader stays (it only skips proving that it still leads)."""
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE log (value INTEGER)")
    conn.close()
    writer = Writer(cluster, connect_to=leader.client)
    writer.start()
    readers = [node.connect(consistency=consistency) for node in followers(cluster, leader)]
    stale = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for reader in readers:
                acknowledged = writer.acked[-1] if writer.acked else 0
                seen = reader.execute("SELECT coalesce(max(value), 0) FROM log").fetchall()[0][0]
                if seen < acknowledged:
                    stale.append((acknowledged, seen))
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.errors == [] and len(writer.acked) > 20
    assert stale == []


@pytest.mark.parametrize("consistency", ["strong", "weak"])
def test_a_follower_whose_replica_lags_has_the_leader_run_its_read(tmp_path, consistency):
    """Its apply held up (as by a long entry), it does not answer from its older state."""
    with nodes_in_this_process(tmp_path, 3) as (leader, lagging, _):
        writer, reader = connect(leader), connect(lagging, consistency=consistency)
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: lagging.state_machine.last_index >= leader.state_machine.last_index, 10, "the follower caught up")
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]

        with applies_held(lagging):
            writer.execute("INSERT INTO t VALUES (2)")  # committed by the leader and the third node
            before = follower_reads(lagging, consistency)
            assert reader.execute("SELECT max(v) FROM t").fetchall() == [(2,)]
            after = follower_reads(lagging, consistency)
            assert after["sent_to_leader"] == before["sent_to_leader"] + 1
            assert after["answered_here"] == before["answered_here"]
        writer.close()
        reader.close()


def test_entries_that_change_no_data_do_not_send_a_followers_strong_reads_to_the_leader(tmp_path):
    """A leader whose lease lapsed (a loaded machine) proves it leads with a barrier entry
    per read; a follower that had not applied the last one yet sent its reads to the
    leader, whose next barrier put it behind again. A barrier changes no data."""
    with nodes_in_this_process(tmp_path, 3) as (leader, follower, _):
        writer, reader = connect(leader), connect(follower, consistency="strong")
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: follower.state_machine.last_index >= leader.state_machine.last_index, 10, "the follower caught up")

        with applies_held(follower):  # it applies no barrier from now on
            leader._barriers.wait(10)  # what a read barrier does when the lease has lapsed
            assert follower.state_machine.last_index < leader.state_machine.last_index
            before = follower_reads(follower, "strong")
            assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
            after = follower_reads(follower, "strong")
            assert after["answered_here"] == before["answered_here"] + 1, after
        writer.close()
        reader.close()


@pytest.mark.parametrize("consistency", ["strong", "weak"])
def test_a_leader_of_an_older_release_runs_the_followers_reads_as_before(tmp_path, monkeypatch, consistency):
    """It ignores the follower's applied index (a field it does not know) and answers with the rows."""
    autocommit = Session._autocommit

    def older_autocommit(self, sql, params, many, info=None, applied_there=None):
        return autocommit(self, sql, params, many, info)

    monkeypatch.setattr(Session, "_autocommit", older_autocommit)
    with nodes_in_this_process(tmp_path, 2) as (leader, follower):
        writer, reader = connect(leader), connect(follower, consistency=consistency)
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: follower.state_machine.last_index >= leader.state_machine.last_index, 10, "the follower caught up")
        for _ in range(10):
            assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
        assert follower_reads(follower, consistency) == {"answered_here": 0, "sent_to_leader": 10}
        writer.close()
        reader.close()


def test_a_weak_read_on_a_follower_asks_the_leader_for_no_proof_that_it_leads(tmp_path):
    """``weak`` is the leader's state without a read barrier, from whichever replica holds it."""
    with nodes_in_this_process(tmp_path, 3) as (leader, follower, _):
        writer = connect(leader)
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: follower.state_machine.last_index >= leader.state_machine.last_index, 10, "the follower caught up")
        proofs = []
        read_barrier = leader.read_barrier

        def counted_read_barrier(*args, **kwargs):
            proofs.append(1)
            return read_barrier(*args, **kwargs)

        leader.read_barrier = counted_read_barrier
        weak, strong = connect(follower, consistency="weak"), connect(follower, consistency="strong")
        for _ in range(10):
            assert weak.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
        assert proofs == []
        assert follower_reads(follower, "weak")["answered_here"] == 10
        assert strong.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
        assert proofs == [1]  # (the check counts what it should)
        for conn in (writer, weak, strong):
            conn.close()
