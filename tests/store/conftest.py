"""Fixtures for the store: an embedded one-node store, and local multi-process clusters."""

import contextlib
import threading
import time

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store import Node, NodeConfig
from django_dqcluster.store.local_cluster import LocalCluster, free_ports


EMBEDDED_SECRET = "embedded-test-secret"


def start_embedded_node(data_dir, secret=EMBEDDED_SECRET, **settings):
    """A one-node store running in this process, on free loopback ports, ready to serve."""
    raft_port, client_port = free_ports(2)
    node = Node(NodeConfig(
        bind=f"127.0.0.1:{raft_port}", client=f"127.0.0.1:{client_port}",
        data_dir=str(data_dir), secret=secret, **settings,
    )).start()
    node.wait_ready(15)
    return node


def open_connection(node, kind, secret=EMBEDDED_SECRET, **kwargs):
    """A driver connection to ``node``: in this process (``embedded``), or through its client port (``socket``).

    Autocommit unless told otherwise.
    """
    kwargs.setdefault("isolation_level", None)
    if kind == "embedded":
        return dbapi.connect(node=node, **kwargs)
    return dbapi.connect(node.config.client, secret=secret, timeout=5, **kwargs)


@contextlib.contextmanager
def connections_to(node, kind, secret=EMBEDDED_SECRET):
    """``connect(**kwargs)``, opening connections of one ``kind`` to ``node``; all are closed on leaving."""
    opened = []

    def connect(**kwargs):
        conn = open_connection(node, kind, secret, **kwargs)
        opened.append(conn)
        return conn

    connect.kind = kind
    try:
        yield connect
    finally:
        for conn in opened:
            conn.close()


@pytest.fixture
def embedded_node(tmp_path):
    """A one-node store running in this process."""
    node = start_embedded_node(tmp_path / "node")
    yield node
    node.stop()


@pytest.fixture
def embedded_conn(embedded_node):
    conn = dbapi.connect(node=embedded_node, isolation_level=None)
    yield conn
    conn.close()


@pytest.fixture
def cluster(tmp_path):
    """Three node processes on 127.0.0.1 with a shared secret; killed at the end."""
    with LocalCluster(str(tmp_path / "cluster"), 3) as running:
        yield running


#: Election timeouts for tests that assert no election happens. With the default
#: 0.4-1.4 s, a follower that hears no heartbeat for 0.4 s, its leader or itself
#: held up by a loaded CI machine (or a busy disk), calls an election whatever
#: the code under test does. Heartbeats still go every 0.1 s.
STEADY_ELECTION_TIMEOUT = (1.0, 2.0)


@pytest.fixture
def steady_cluster(tmp_path):
    """A ``cluster`` with STEADY_ELECTION_TIMEOUT, for tests that count on its leader and term staying put."""
    with LocalCluster(str(tmp_path / "cluster"), 3, election_timeout=STEADY_ELECTION_TIMEOUT) as running:
        yield running


def rows_on_every_node(cluster, sql, database="default", converge=True):
    """The result of ``sql`` read from each live node's own replica."""
    if converge:
        cluster.wait_converged()
    results = {}
    for node in cluster.nodes:
        if node.alive:
            conn = node.connect(consistency="none", database=database)
            results[node.index] = conn.execute(sql).fetchall()
            conn.close()
    return results


def followers(cluster, leader):
    return [node for node in cluster.nodes if node is not leader and node.alive]


class Writer(threading.Thread):
    """Inserts numbered rows until stopped; remembers which ones were acknowledged."""

    def __init__(self, cluster, table="log", connect_to=None, secret_file=None):
        super().__init__(daemon=True)
        self.addresses = connect_to or ",".join(n.client for n in cluster.nodes)
        # The secret the cluster has now, or the file to read it from at each reconnection.
        self.credentials = {"secret_file": secret_file} if secret_file else {"secret": cluster.secret}
        self.table = table
        self.acked = []
        self.unknown = []
        self.retried = []  # retryable errors: the row was not written, the writer goes on
        self.stop = threading.Event()
        self.errors = []

    def run(self):
        conn = dbapi.connect(self.addresses, isolation_level=None, timeout=20, **self.credentials)
        value = 0
        while not self.stop.is_set():
            value += 1
            try:
                conn.execute(f"INSERT INTO {self.table} (value) VALUES (?)", (value,))
                self.acked.append(value)
            except dbapi.OperationalError as error:
                if error.unknown_outcome:
                    self.unknown.append(value)
                elif not error.retryable:
                    self.errors.append(error)
                    return
                else:
                    self.retried.append(error)
                time.sleep(0.05)


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


@contextlib.contextmanager
def applies_held(node):
    """Within the block, ``node``'s Raft thread waits in its next apply (as behind a long entry); it goes on after."""
    released = threading.Event()
    apply = node.state_machine.apply

    def apply_once_released(payload, index):
        released.wait(30)
        return apply(payload, index)

    node.state_machine.apply = apply_once_released
    try:
        yield
    finally:
        released.set()
