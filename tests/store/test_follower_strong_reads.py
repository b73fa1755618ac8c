"""Strong reads on a follower: the leader proves it leads, the follower's replica answers.

A follower used to send every strong read to the leader, so one process ran
the strong reads of every host. Now the read goes to the leader with the
index the follower's replica has applied; once the leader proved it still
leads (as for its own strong reads) it knows every write answered so far is
within its own applied index, and if the follower has applied that much, it
tells the follower to run the read itself. Otherwise (the follower has not
heard of the last commit yet, or lags) it runs the read, as before. Either
way one round trip, and the read sees every write answered before it began.
"""

import contextlib
import threading
import time

from django_dqcluster import dbapi
from django_dqcluster.store import Node, NodeConfig
from django_dqcluster.store.local_cluster import free_ports
from django_dqcluster.store.session import Session
from tests.waiting import wait_for

from .conftest import EMBEDDED_SECRET, Writer, followers


def strong_reads_of(node):
    return node.status()["strong_reads"]


def test_a_follower_that_holds_every_answered_write_answers_strong_reads_itself(steady_cluster):
    cluster = steady_cluster
    leader = cluster.leader()
    follower = followers(cluster, leader)[0]
    writer, reader = leader.connect(), follower.connect(consistency="strong")
    writer.execute("CREATE TABLE t (v INTEGER)")
    writer.execute("INSERT INTO t VALUES (1)")
    wait_for(lambda: follower.status()["applied_index"] >= leader.status()["applied_index"], 10,
             "the follower applying the leader's entries")
    before = strong_reads_of(follower)

    for _ in range(100):
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]

    after = strong_reads_of(follower)
    answered_here = after["answered_here"] - before["answered_here"]
    assert answered_here + after["sent_to_leader"] - before["sent_to_leader"] == 100
    # Nothing changed data meanwhile: all of them (the leader's barriers,
    # when its lease lapses on a loaded machine, change none).
    assert answered_here == 100, after


def test_a_strong_read_on_a_follower_sees_the_write_answered_just_before_it(cluster):
    leader = cluster.leader()
    follower = followers(cluster, leader)[0]
    writer, reader = leader.connect(), follower.connect(consistency="strong")
    writer.execute("CREATE TABLE t (v INTEGER)")
    for value in range(1, 101):
        writer.execute("INSERT INTO t VALUES (?)", (value,))
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(value,)]


def test_strong_reads_on_every_follower_see_every_write_acknowledged_before_they_began(cluster):
    """Linearizable: a read begun after a write's acknowledgement (to another client,
    through another node) sees it, while writes go on."""
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE log (value INTEGER)")
    conn.close()
    writer = Writer(cluster, connect_to=leader.client)
    writer.start()
    readers = [node.connect(consistency="strong") for node in followers(cluster, leader)]
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


@contextlib.contextmanager
def nodes_in_this_process(tmp_path, size):
    """``size`` nodes of one cluster, run in this process (to reach into them); the leader first."""
    ports = free_ports(2 * size)
    rafts = [f"127.0.0.1:{ports[2 * i]}" for i in range(size)]
    nodes = [Node(NodeConfig(bind=rafts[i], client=f"127.0.0.1:{ports[2 * i + 1]}", data_dir=str(tmp_path / f"n{i}"),
                             peers=rafts[:i] + rafts[i + 1:], secret=EMBEDDED_SECRET)).start() for i in range(size)]
    try:
        for node in nodes:
            node.wait_ready(15)
        yield sorted(nodes, key=lambda node: not node.is_leader())
    finally:
        for node in nodes:
            node.stop()


def connect(node, **kwargs):
    return dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=15, **kwargs)


def test_a_follower_whose_replica_lags_has_the_leader_run_its_strong_read(tmp_path):
    """Its apply held up (as by a long entry), it does not answer from its older state."""
    with nodes_in_this_process(tmp_path, 3) as (leader, lagging, _):
        writer, reader = connect(leader), connect(lagging, consistency="strong")
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: lagging.state_machine.last_index >= leader.state_machine.last_index, 10, "the follower caught up")
        assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]

        released = threading.Event()
        apply = lagging.state_machine.apply

        def apply_once_released(payload, index):
            released.wait(30)
            return apply(payload, index)

        lagging.state_machine.apply = apply_once_released  # its Raft thread waits in its next apply
        try:
            writer.execute("INSERT INTO t VALUES (2)")  # committed by the leader and the third node
            before = lagging.status()["strong_reads"]
            assert reader.execute("SELECT max(v) FROM t").fetchall() == [(2,)]
            after = lagging.status()["strong_reads"]
            assert after["sent_to_leader"] == before["sent_to_leader"] + 1
            assert after["answered_here"] == before["answered_here"]
        finally:
            released.set()
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

        released = threading.Event()
        apply = follower.state_machine.apply

        def apply_once_released(payload, index):
            released.wait(30)
            return apply(payload, index)

        follower.state_machine.apply = apply_once_released  # it applies no barrier from now on
        try:
            leader._barriers.wait(10)  # what a read barrier does when the lease has lapsed
            assert follower.state_machine.last_index < leader.state_machine.last_index
            before = follower.status()["strong_reads"]
            assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
            after = follower.status()["strong_reads"]
            assert after["answered_here"] == before["answered_here"] + 1, after
        finally:
            released.set()
        writer.close()
        reader.close()


def test_a_leader_of_an_older_release_runs_the_followers_strong_reads_as_before(tmp_path, monkeypatch):
    """It ignores the follower's applied index (a field it does not know) and answers with the rows."""
    autocommit = Session._autocommit

    def older_autocommit(self, sql, params, many, info=None, applied_there=None):
        return autocommit(self, sql, params, many, info)

    monkeypatch.setattr(Session, "_autocommit", older_autocommit)
    with nodes_in_this_process(tmp_path, 2) as (leader, follower):
        writer, reader = connect(leader), connect(follower, consistency="strong")
        writer.execute("CREATE TABLE t (v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        wait_for(lambda: follower.state_machine.last_index >= leader.state_machine.last_index, 10, "the follower caught up")
        for _ in range(10):
            assert reader.execute("SELECT max(v) FROM t").fetchall() == [(1,)]
        assert follower.status()["strong_reads"] == {"answered_here": 0, "sent_to_leader": 10}
        writer.close()
        reader.close()
