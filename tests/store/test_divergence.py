"""Defence in depth: replicas compare a replicated checkpoint of their history and stop on divergence."""

import os
import uuid

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.statemachine import BARRIER, CHECKPOINT, StateMachine, encode_entry


def barrier(entry_id):
    return encode_entry({"kind": BARRIER, "id": entry_id})


def replay(machine, ids):
    for index, entry_id in enumerate(ids, start=2):
        machine.apply(barrier(entry_id), index)


@pytest.fixture
def machines(tmp_path):
    made = [StateMachine(str(tmp_path / name)) for name in ("leader", "replica")]
    yield made
    for machine in made:
        machine.close()


def test_replicas_with_the_same_history_agree_at_a_checkpoint(machines):
    leader, replica = machines
    ids = [uuid.uuid4().hex for _ in range(5)]
    replay(leader, ids)
    replay(replica, ids)
    checkpoint = encode_entry({"kind": CHECKPOINT, "id": "c", "upto": 6, "hash": leader.hash})
    replica.apply(checkpoint, 7)
    assert replica.diverged is None


def test_a_replica_that_applied_a_different_entry_detects_it_at_the_next_checkpoint(machines):
    leader, replica = machines
    replica.databases.publish_instance()
    ids = [uuid.uuid4().hex for _ in range(5)]
    replay(leader, ids)
    replay(replica, ids[:2] + ["something else"] + ids[3:])
    checkpoint = encode_entry({"kind": CHECKPOINT, "id": "c", "upto": 6, "hash": leader.hash})
    replica.apply(checkpoint, 7)
    assert replica.diverged is not None
    assert "index 6" in replica.diverged
    # Clients on this host stop reading its files themselves (dbapi.replica).
    assert replica.databases.replica_offer("default") is None
    assert not os.path.exists(os.path.join(replica.data_dir, "db", ".instance"))


def test_a_diverged_node_refuses_queries_with_a_clear_error(embedded_node, embedded_conn):
    embedded_conn.execute("CREATE TABLE t (v)")
    embedded_node.state_machine.diverged = "replica diverged: at index 9 ... (test)"
    with pytest.raises(dbapi.OperationalError, match="stopped serving: replica diverged"):
        embedded_conn.execute("SELECT * FROM t")
    # status stays available for operators
    assert embedded_conn.status()["diverged"].startswith("replica diverged")


def test_the_leader_appends_checkpoints_that_every_replica_verifies(tmp_path):
    with LocalCluster(str(tmp_path / "cluster"), 3, extra_args=["--checkpoint-every", "20"]) as cluster:
        conn = cluster.leader().connect()
        conn.execute("CREATE TABLE t (v INTEGER)")
        for i in range(60):
            conn.execute("INSERT INTO t (v) VALUES (?)", (i,))
        cluster.wait_for(
            lambda: all((node.status()["last_checkpoint"] or 0) > 20 for node in cluster.nodes),
            20, "every node to verify a checkpoint",
        )
        assert all(node.status()["diverged"] is None for node in cluster.nodes)
