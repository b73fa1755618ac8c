"""A node that cannot listen says where: at configuration for an address no node
could listen on, at start for a port another process holds; and leaves nothing running."""

import socket

import pytest

from django_dqcluster.store import Node, NodeConfig
from django_dqcluster.store.config import ConfigError
from django_dqcluster.store.local_cluster import free_ports

SECRET = "node-start-test-secret"


def config(tmp_path, raft, client):
    return NodeConfig(bind=f"127.0.0.1:{raft}", client=f"127.0.0.1:{client}", data_dir=str(tmp_path / "node"),
                      secret=SECRET)


@pytest.mark.parametrize("addresses, setting, problem", [
    ({"bind": "127.0.0.1:99999"}, "bind", "port 99999 is not in 1-65535"),
    ({"bind": "127.0.0.1:0"}, "bind", "port 0 is not in 1-65535"),
    ({"bind": "unix:/tmp/raft.sock"}, "bind", "Raft addresses must be HOST:PORT"),
    ({"bind": "127.0.0.1:7000", "peers": ["127.0.0.1:70000"], "secret": SECRET}, "peers", "port 70000"),
    ({"bind": "127.0.0.1:7000", "client": "127.0.0.1:65536"}, "client", "port 65536"),
    # The client port defaults to the Raft port + 1, which does not exist here.
    ({"bind": "127.0.0.1:65535"}, "client", r"port 65536 .*the bind port \+ 1"),
])
def test_an_address_no_node_could_listen_on_is_refused_naming_the_setting(tmp_path, addresses, setting, problem):
    with pytest.raises(ConfigError, match=rf"^{setting}: .*{problem}"):
        NodeConfig(data_dir=str(tmp_path / "node"), **addresses)
    assert not (tmp_path / "node").exists()


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
