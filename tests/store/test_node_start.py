"""A node that cannot listen for clients says where, and leaves nothing running."""

import socket

import pytest

from django_dqcluster.store import Node, NodeConfig
from django_dqcluster.store.local_cluster import free_ports

SECRET = "node-start-test-secret"


def config(tmp_path, raft, client):
    return NodeConfig(bind=f"127.0.0.1:{raft}", client=f"127.0.0.1:{client}", data_dir=str(tmp_path / "node"),
                      secret=SECRET)


def test_a_taken_client_port_is_named_and_the_raft_port_and_data_dir_are_released(tmp_path):
    raft, client = free_ports(2)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", client))
        squatter.listen(1)
        node = Node(config(tmp_path, raft, client))
        with pytest.raises(OSError, match=f"cannot listen for clients on 127.0.0.1:{client}"):
            node.start()
        assert node.engine is None and node.server is None

    # Same data dir, same Raft port: a node left running by the failed start
    # would hold both.
    node = Node(config(tmp_path, raft, client)).start()
    try:
        node.wait_ready(15)
        node.submit({"kind": "tx", "db": "default", "now": 0.0, "seed": 1, "pragmas": {},
                     "stmts": [[0, "CREATE TABLE t (v INTEGER)", [], False, False]]}, timeout=10)
        reader = node.state_machine.databases.get("default").read_connection()
        assert reader.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall() == [("t",)]
    finally:
        node.stop()
