"""A local cluster started again on its directory is the same cluster; a member is who Raft says.

`python -m django_dqcluster.store.local_cluster` (and `./run_example.sh cluster`)
keep their data in a directory; running them twice must not turn three nodes
into three new members plus three that never answer.
"""

import os

from django_dqcluster.store.local_cluster import LocalCluster

from .conftest import rows_on_every_node


def members(node):
    return sorted(member["raft"] for member in node.status()["members"])


def write_and_stop(cluster, values):
    conn = cluster.leader().connect()
    conn.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
    conn.executemany("INSERT INTO log (value) VALUES (?)", [(value,) for value in values])
    conn.close()
    cluster.wait_converged()
    cluster.stop()  # graceful; leaving the with block kills -9 only what did not stop


def test_started_again_on_its_directory_the_nodes_keep_their_addresses_and_data(tmp_path):
    directory = str(tmp_path / "cluster")
    with LocalCluster(directory, 3) as first:
        write_and_stop(first, [1, 2])
    addresses = [(node.raft, node.client) for node in first.nodes]

    with LocalCluster(directory, 3) as second:
        assert [(node.raft, node.client) for node in second.nodes] == addresses
        assert rows_on_every_node(second, "SELECT value FROM log ORDER BY id") == {
            0: [(1,), (2,)], 1: [(1,), (2,)], 2: [(1,), (2,)]}
        assert members(second.leader()) == sorted(raft for raft, _ in addresses)


def test_members_that_came_back_under_other_addresses_are_listed_once_under_the_new_ones(tmp_path):
    directory = str(tmp_path / "cluster")
    with LocalCluster(directory, 3) as first:
        write_and_stop(first, [1])
    old = {node.raft for node in first.nodes}
    os.remove(os.path.join(directory, "addresses.json"))  # as before the addresses were kept: new ports

    with LocalCluster(directory, 3) as moved:
        new = {node.raft for node in moved.nodes}
        assert not old & new
        leader = moved.leader()
        conn = leader.connect()
        conn.execute("INSERT INTO log (value) VALUES (2)")
        # The old addresses were announced in the replicated log and are still
        # in every node's state; they are not members.
        moved.wait_converged()
        for node in moved.nodes:
            assert members(node) == sorted(new)
        # What a driver learns to fail over to: the new client addresses only
        # (each member announces its own within a second of starting).
        moved.wait_for(lambda: all(server["client"] for server in conn.servers()), 10,
                       "every member to announce its client address")
        servers = conn.servers()
        assert {server["raft"] for server in servers} == new
        assert {server["client"] for server in servers} == {node.client for node in moved.nodes}
