"""A node that cannot start says why: at configuration for an address no node could
listen on, at start for a port or a data directory another node holds; and leaves
nothing running."""

import os
import socket
import subprocess
import sys

import pytest

from django_dqcluster.store import Node, NodeConfig
from django_dqcluster.store.config import ConfigError
from django_dqcluster.store.datadir import DataDirInUse
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
        reader = node.state_machine.databases.get("default").borrow_reader()
        assert reader.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall() == [("t",)]
    finally:
        node.stop()


def test_a_second_node_on_a_data_dir_in_use_is_refused_naming_the_first_and_starts_nothing(tmp_path):
    first = Node(config(tmp_path, *free_ports(2))).start()
    try:
        raft, client = free_ports(2)
        second = Node(config(tmp_path, raft, client))
        with pytest.raises(DataDirInUse, match=rf"{tmp_path / 'node'} is in use by the node of pid {os.getpid()} "
                                               rf"\(Raft {first.config.bind}, clients {first.config.client}\)"):
            second.start()
        assert second.engine is None and second.server is None
        for port in (raft, client):  # the refused node listens on neither of its ports
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
    finally:
        first.stop()
    # Stopping (or dying: the kernel drops the lock with the process) frees the directory.
    Node(config(tmp_path, *free_ports(2))).start().stop()


def test_the_node_command_says_why_it_cannot_start_instead_of_a_traceback(tmp_path):
    holder = Node(config(tmp_path, *free_ports(2))).start()
    try:
        raft, client = free_ports(2)
        result = subprocess.run(
            [sys.executable, "-m", "django_dqcluster.store", "--bind", f"127.0.0.1:{raft}",
             "--client", f"127.0.0.1:{client}", "--data-dir", str(tmp_path / "node"), "--secret", SECRET],
            capture_output=True, text=True, timeout=60)
    finally:
        holder.stop()
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "is in use by the node of pid" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_raft_port_is_named_and_nothing_is_left_running(tmp_path):
    raft, client = free_ports(2)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", raft))
        squatter.listen(1)
        node = Node(config(tmp_path, raft, client))
        # pysyncobj alone would retry the bind forever, in silence, while the
        # node served clients and never reached its peers.
        with pytest.raises(OSError, match=f"cannot listen for Raft on 127.0.0.1:{raft}"):
            node.start()
        assert node.engine is None and node.server is None
    Node(config(tmp_path, raft, client)).start().stop()  # the data dir and both ports are free again


def test_a_node_listens_only_on_the_addresses_it_was_given(tmp_path):
    raft, client = free_ports(2)
    node = Node(config(tmp_path, raft, client)).start()
    try:
        node.wait_ready(15)
        for port in (raft, client):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            # Another address of this machine (still loopback, so no traffic
            # leaves it): nothing listens there. pysyncobj binds the Raft port
            # on every interface unless told where.
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        node.stop()
