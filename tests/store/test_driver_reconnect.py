"""The driver reconnects when the node closed an idle connection, instead of an unknown outcome."""

from django_dqcluster import dbapi
from django_dqcluster.store import Node, NodeConfig
from django_dqcluster.store.local_cluster import free_ports


def test_write_after_the_node_restarted_reconnects(tmp_path):
    raft, client = free_ports(2)
    config = dict(bind=f"127.0.0.1:{raft}", client=f"127.0.0.1:{client}", data_dir=str(tmp_path / "n"), secret="s")
    node = Node(NodeConfig(**config)).start()
    node.wait_ready(15)
    conn = dbapi.connect(config["client"], secret="s", isolation_level=None, timeout=20)
    try:
        conn.execute("CREATE TABLE t (x integer)")
        node.stop()  # closes the idle client connection
        node = Node(NodeConfig(**config)).start()
        node.wait_ready(15)
        conn.execute("INSERT INTO t VALUES (1)")  # nothing was sent on the dead socket: safe to resend
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        conn.close()
        node.stop()
