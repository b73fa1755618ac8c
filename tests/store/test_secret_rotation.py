"""Rotating the cluster secret with no downtime, as a specification (README, "Rotating the cluster secret").

A secret file may hold fallbacks on the lines after the first: a node seals
its Raft messages and signs its answers with the first, and accepts Raft
messages and client sessions made with any. So the cluster moves to a new
secret in three steps: add the new secret as a fallback, put it first, drop
the old one. A node started from a secret file takes each step as the file
changes (store/secret_file.py); one given its secret otherwise takes it at
a restart. No moment needs every node changed at once.
"""

import time

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store import NodeConfig
from django_dqcluster.store.config import ConfigError, read_secrets
from django_dqcluster.store.local_cluster import LocalCluster

from .conftest import Writer, rows_on_every_node, start_embedded_node

OLD, NEW = "the-old-cluster-secret", "the-new-cluster-secret"


# -- where fallbacks come from --------------------------------------------------------------------


def test_a_secret_file_holds_the_secret_first_and_fallbacks_on_the_next_lines(tmp_path):
    path = tmp_path / "secret"
    path.write_text(f"  {NEW}\n\n{OLD}  \n")
    assert read_secrets(secret_file=str(path)) == (NEW, (OLD,))
    path.write_text(f"{OLD}\n")
    assert read_secrets(secret_file=str(path)) == (OLD, ())


def test_a_secret_given_as_a_list_is_the_secret_then_its_fallbacks():
    assert read_secrets([NEW, OLD]) == (NEW, (OLD,))
    assert read_secrets(OLD) == (OLD, ())
    assert read_secrets() == (None, ())


@pytest.mark.parametrize("secret", [[], [NEW, ""], [NEW, 7]], ids=["empty", "blank", "not-a-string"])
def test_a_malformed_list_of_secrets_is_refused_naming_secret(secret):
    with pytest.raises(ConfigError, match=r"^secret: a list of secrets"):
        read_secrets(secret)


def test_an_empty_secret_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "secret"
    path.write_text("\n  \n")
    with pytest.raises(ConfigError, match=r"^secret_file: .* is empty"):
        read_secrets(secret_file=str(path))


def test_fallbacks_without_a_secret_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^secret_fallbacks"):
        NodeConfig(bind="127.0.0.1:7301", data_dir=str(tmp_path), secret_fallbacks=(OLD,))


# -- a node with a fallback -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rotating_node(tmp_path_factory):
    node = start_embedded_node(tmp_path_factory.mktemp("rotating") / "node", NEW, secret_fallbacks=(OLD,))
    yield node
    node.stop()


@pytest.mark.parametrize("seal", [False, True], ids=["plain", "sealed"])
def test_a_node_serves_clients_of_the_old_secret_and_of_the_new(rotating_node, seal):
    for secret in (OLD, NEW):
        conn = dbapi.connect(rotating_node.config.client, secret=secret, isolation_level=None, timeout=5, seal=seal)
        try:
            assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
        finally:
            conn.close()


def test_a_client_of_neither_secret_is_refused(rotating_node):
    with pytest.raises(dbapi.InterfaceError, match="authentication failed"):
        dbapi.connect(rotating_node.config.client, secret="a-third-secret", timeout=5)


def test_the_node_says_when_a_client_last_needed_the_old_secret(rotating_node):
    conn = dbapi.connect(rotating_node.config.client, secret=NEW, isolation_level=None, timeout=5)
    try:
        dbapi.connect(rotating_node.config.client, secret=OLD, timeout=5).close()
        time.sleep(0.3)
        fallbacks = conn.status()["secret_fallbacks"]
    finally:
        conn.close()
    assert fallbacks["count"] == 1
    assert 0.2 <= fallbacks["clients_seconds_ago"] < 30
    assert fallbacks["raft_seconds_ago"] is None  # a one-node store: no peer sealed anything


def test_a_node_without_fallbacks_reports_none(embedded_node):
    conn = dbapi.connect(embedded_node.config.client, secret="embedded-test-secret", timeout=5)
    try:
        assert conn.status()["secret_fallbacks"] is None
    finally:
        conn.close()


# -- the whole rotation on a 3-node store ---------------------------------------------------------


def restart_one_by_one(cluster, secret_lines, client_secret):
    """Write the secret file, then restart each node in turn, as an operator host by host."""
    with open(cluster.secret_file, "w") as handle:
        handle.write("\n".join(secret_lines) + "\n")
    cluster.secret = client_secret  # what the helpers' own connections present
    for node in cluster.nodes:
        node.stop()
        node.start(peers=cluster.peers_of(node))
        wait_caught_up(cluster, node)


def wait_caught_up(cluster, node):
    """Until ``node`` has applied what the leader had committed (clients go on writing meanwhile)."""
    committed = cluster.wait_for_leader().status()["commit_index"]

    def caught_up():
        try:
            return node.status(timeout=2.0)["applied_index"] >= committed
        except dbapi.Error:
            return False

    cluster.wait_for(caught_up, 30, f"node{node.index} to catch up")


def cluster_on_the_old_secret(tmp_path):
    cluster = LocalCluster(str(tmp_path / "cluster"), 3)
    with open(cluster.secret_file, "w") as handle:
        handle.write(OLD + "\n")
    cluster.secret = OLD
    return cluster


def assert_every_acknowledged_row_on_every_replica(cluster, writer):
    replicas = rows_on_every_node(cluster, f"SELECT value FROM {writer.table}")
    rows = replicas[cluster.nodes[0].index]
    assert all(replica == rows for replica in replicas.values()), "the replicas differ"
    values = {value for (value,) in rows}
    assert set(writer.acked) <= values, f"acknowledged rows lost: {sorted(set(writer.acked) - values)[:10]}"
    assert values <= set(writer.acked) | set(writer.unknown)


def test_a_cluster_moves_to_a_new_secret_by_rolling_restarts_while_a_client_writes(tmp_path):
    with cluster_on_the_old_secret(tmp_path) as cluster:
        setup = cluster.leader().connect()
        setup.execute("CREATE TABLE before_step_3 (value INTEGER)")
        setup.execute("CREATE TABLE in_step_3 (value INTEGER)")
        setup.close()
        old_writer = writer = Writer(cluster, "before_step_3")  # holds the old secret, as clients not yet restarted do
        writer.start()
        try:
            restart_one_by_one(cluster, [OLD, NEW], client_secret=OLD)  # 1. the new secret accepted
            restart_one_by_one(cluster, [NEW, OLD], client_secret=NEW)  # 2. the new secret used
            first, last = cluster.nodes[0], cluster.nodes[-1]
            # Restarted first in step 2, the first node met peers still sealing
            # with the old secret; the last met none.
            assert first.status()["secret_fallbacks"]["raft_seconds_ago"] is not None
            assert last.status()["secret_fallbacks"]["raft_seconds_ago"] is None
            assert any(node.status()["secret_fallbacks"]["clients_seconds_ago"] is not None
                       for node in cluster.nodes), "the writer still holds the old secret, and status says so"
        finally:
            writer.stop.set()
            writer.join(30)
        assert not writer.errors, writer.errors
        assert len(writer.acked) > 0

        new_writer = writer = Writer(cluster, "in_step_3")  # restarted clients hold the new secret
        writer.start()
        try:
            restart_one_by_one(cluster, [NEW], client_secret=NEW)  # 3. the old secret dropped
        finally:
            writer.stop.set()
            writer.join(30)
        assert not writer.errors, writer.errors
        assert len(writer.acked) > 0

        for node in cluster.nodes:
            assert node.status()["secret_fallbacks"] is None
            with pytest.raises(dbapi.InterfaceError, match="authentication failed"):
                node.connect(secret=OLD, timeout=5)
        for writer in (old_writer, new_writer):
            assert_every_acknowledged_row_on_every_replica(cluster, writer)


def test_a_client_uses_the_first_line_of_a_secret_file_that_holds_fallbacks(embedded_node, tmp_path):
    path = tmp_path / "secret"
    path.write_text("embedded-test-secret\nsome-fallback\n")
    conn = dbapi.connect(embedded_node.config.client, secret_file=str(path), timeout=5)
    conn.close()
    path.write_text("\n")
    with pytest.raises(dbapi.InterfaceError, match="is empty"):
        dbapi.connect(embedded_node.config.client, secret_file=str(path), timeout=5)


def rewrite_everywhere(cluster, secret_lines, client_secret):
    """Write the secret file (shared here by every host's node) and wait until each node put it in use."""
    before = {node.index: node.status()["secret_file"]["changes"] for node in cluster.nodes}
    with open(cluster.secret_file, "w") as handle:
        handle.write("\n".join(secret_lines) + "\n")
    cluster.secret = client_secret
    for node in cluster.nodes:
        cluster.wait_for(lambda: node.status()["secret_file"]["changes"] > before[node.index], 30,
                         f"node{node.index} to take up the secret file")


def test_a_cluster_moves_to_a_new_secret_by_editing_the_secret_file_while_a_client_writes(tmp_path):
    with cluster_on_the_old_secret(tmp_path) as cluster:
        setup = cluster.leader().connect()
        setup.execute("CREATE TABLE log (value INTEGER)")
        setup.close()
        old_client = cluster.leader().connect()  # holds the old secret only
        # Reads the file again when it reconnects, as the Django backend given 'secret_file' does.
        writer = Writer(cluster, "log", secret_file=cluster.secret_file)
        writer.start()
        try:
            rewrite_everywhere(cluster, [OLD, NEW], client_secret=OLD)  # 1. the new secret accepted
            rewrite_everywhere(cluster, [NEW, OLD], client_secret=NEW)  # 2. the new secret used
            assert old_client.execute("SELECT 1").fetchone() == (1,)
            acked_before_step_3 = len(writer.acked)
            rewrite_everywhere(cluster, [NEW], client_secret=NEW)  # 3. the old secret dropped
            # Raft traffic sealed with the new secret alone still commits, and a
            # node started now (knowing nothing of the old secret) rejoins.
            cluster.wait_for(lambda: len(writer.acked) > acked_before_step_3 + 20, 30, "writes after step 3")
            restarted = cluster.nodes[0]
            restarted.stop()
            restarted.start(peers=cluster.peers_of(restarted))
            wait_caught_up(cluster, restarted)
        finally:
            writer.stop.set()
            writer.join(30)
        assert not writer.errors, writer.errors
        with pytest.raises(dbapi.Error):
            old_client.execute("SELECT 2")  # its session was closed at step 3; it cannot open another
        for node in cluster.nodes:
            status = node.status()
            assert status["secret_fallbacks"] is None and status["secret_file"]["error"] is None
            with pytest.raises(dbapi.InterfaceError, match="authentication failed"):
                node.connect(secret=OLD, timeout=5)
        assert_every_acknowledged_row_on_every_replica(cluster, writer)
