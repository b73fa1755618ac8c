"""``Cluster.open`` (§4.4 #28-#30), the default DatabaseIO and the start-up sequence
(§4.5 #31-#37).

§4.5 #39-#40 and §4.8 #71 (upgrade notifications, re-checking on a timer, running an
update hook when outdated) belong to the Celery task and management command layer that
calls ``ensure_schema`` / ``node_is_outdated`` again; they are tested there, not faked here.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from cluster_fakes import MemoryFileSystem, Sleeper, add_node, preload_fresh_schema

from django_dqcluster.cluster import (
    CLUSTER_DSN,
    BasicAPIExtensions,
    Cluster,
    ClusterError,
    ClusterOpenError,
    Database,
    DBAPIDatabaseIO,
    DQClusterNameProvider,
    MemoryServerStore,
    SchemaProvider,
    ServerInfo,
    SomeNodesAreBehind,
    open_and_ensure,
    sqlite_connect,
    wait_for_database,
)


class RecordingDatabaseIO:
    """Records the seed's Create / Drivers / Register / Open calls."""

    def __init__(self, *, registered=(), create_error=None, open_error=None):
        self.calls = []
        self.registered = list(registered)
        self.create_error = create_error
        self.open_error = open_error
        self.driver = object()
        self.handle = object()

    def create(self, server_store, **options):
        self.calls.append(("create", server_store, options))
        if self.create_error:
            raise self.create_error
        return self.driver

    def drivers(self):
        self.calls.append(("drivers",))
        return list(self.registered)

    def register(self, name, driver):
        self.calls.append(("register", name, driver))
        self.registered.append(name)

    def open(self, name, dsn):
        self.calls.append(("open", name, dsn))
        if self.open_error:
            raise self.open_error
        return self.handle


class FixedNames:
    def __init__(self, *names):
        self.names = list(names)
        self.calls = 0

    def driver_name(self):
        self.calls += 1
        return self.names.pop(0)


def cluster_with(io, names=None):
    return Cluster(
        BasicAPIExtensions(1),
        SchemaProvider(MemoryFileSystem()),
        database_io=io,
        name_provider=names or FixedNames("dqcluster-test-0"),
    )


# -- §4.4 ------------------------------------------------------------------------------------


def test_open_creates_names_registers_and_opens_in_seed_order():
    io = RecordingDatabaseIO()
    store = MemoryServerStore()
    cluster = cluster_with(io)

    cluster.open(store, timeout=10)

    assert io.calls == [
        ("create", store, {"timeout": 10}),
        ("drivers",),
        ("register", "dqcluster-test-0", io.driver),
        ("open", "dqcluster-test-0", "db.bin?_foreign_keys=1"),
    ]
    assert cluster.db() is io.handle


def test_open_skips_registration_of_an_already_registered_name():
    io = RecordingDatabaseIO(registered=["dqcluster-test-0"])
    cluster_with(io).open(MemoryServerStore())
    assert [call[0] for call in io.calls] == ["create", "drivers", "open"]


def test_second_open_on_the_same_cluster_registers_its_new_name():
    # The seed registered once per Cluster and the second Open hit an unknown driver.
    io = RecordingDatabaseIO()
    cluster = cluster_with(io, FixedNames("a", "b"))
    cluster.open(MemoryServerStore())
    cluster.open(MemoryServerStore())
    assert [call[1] for call in io.calls if call[0] == "register"] == ["a", "b"]


def test_open_error_surfaces_with_its_cause():
    boom = OSError("no such host")
    cluster = cluster_with(RecordingDatabaseIO(open_error=boom))

    with pytest.raises(ClusterOpenError) as caught:
        cluster.open(MemoryServerStore())

    assert str(caught.value) == "cannot open cluster database: no such host"
    assert caught.value.__cause__ is boom
    assert cluster.db() is None


def test_driver_creation_error_surfaces_unchanged():
    boom = ValueError("bad store")
    with pytest.raises(ValueError) as caught:
        cluster_with(RecordingDatabaseIO(create_error=boom)).open(MemoryServerStore())
    assert caught.value is boom


def test_driver_names_are_unique_and_increasing():
    provider = DQClusterNameProvider()
    first, second = provider.driver_name(), DQClusterNameProvider().driver_name()

    assert first.startswith("dqcluster-") and second.startswith("dqcluster-")
    assert int(second.split("-")[1]) == int(first.split("-")[1]) + 1


def test_driver_names_stay_unique_across_threads():
    provider = DQClusterNameProvider()
    names = []
    lock = threading.Lock()

    def take():
        mine = [provider.driver_name() for _ in range(200)]
        with lock:
            names.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(names)) == 1600


# -- the default DatabaseIO -------------------------------------------------------------------


def test_default_database_io_opens_lazily_with_foreign_keys(tmp_path):
    cluster = Cluster(
        BasicAPIExtensions(1),
        SchemaProvider(MemoryFileSystem()),
        database_io=DBAPIDatabaseIO(sqlite_connect(str(tmp_path))),
    )

    cluster.open(MemoryServerStore([ServerInfo(1, "10.0.0.1:9000")]))

    assert not (tmp_path / "db.bin").exists()  # no connection until first use
    connection = cluster.db().connection()
    assert (tmp_path / "db.bin").exists()
    assert connection.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert cluster.db().connection() is connection  # a pool of one


def test_registering_a_name_twice_is_refused():
    io = DBAPIDatabaseIO(sqlite_connect("/unused"))
    name = DQClusterNameProvider().driver_name()
    io.register(name, io.create(None))
    with pytest.raises(ValueError, match="Register called twice"):
        io.register(name, io.create(None))


def test_opening_an_unregistered_name_fails():
    with pytest.raises(ClusterError, match='unknown driver "never-registered"'):
        DBAPIDatabaseIO(sqlite_connect("/unused")).open("never-registered", CLUSTER_DSN)


def test_driver_receives_the_server_store_and_options():
    seen = {}

    def connect(dsn, server_store=None, **options):
        seen.update(dsn=dsn, server_store=server_store, options=options)
        return sqlite3.connect(":memory:")

    store = MemoryServerStore()
    cluster = Cluster(BasicAPIExtensions(1), SchemaProvider(), database_io=DBAPIDatabaseIO(connect))
    cluster.open(store, timeout=3)
    cluster.db().connection()

    assert seen == {"dsn": CLUSTER_DSN, "server_store": store, "options": {"timeout": 3}}


def test_broken_connection_is_reopened_by_the_handle():
    opened = []

    def connect():
        opened.append(sqlite3.connect(":memory:"))
        return opened[-1]

    database = Database(connect)
    first = database.connection()
    first.close()
    database.discard_if_broken()

    assert database.connection() is not first
    assert len(opened) == 2


def test_wrapped_connection_is_never_closed_by_the_handle(sqlite_conn):
    Database.of(sqlite_conn).close()
    assert sqlite_conn.execute("SELECT 1").fetchone() == (1,)


# -- §4.5: the start-up sequence ---------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path):
    """A node data dir whose db.bin holds the cluster schema (version 2)."""
    connection = sqlite3.connect(str(tmp_path / "db.bin"))
    preload_fresh_schema(connection)
    connection.close()
    return tmp_path


def start(data_dir, address, **options):
    cluster = Cluster(
        BasicAPIExtensions(1),
        SchemaProvider(MemoryFileSystem()),
        database_io=DBAPIDatabaseIO(sqlite_connect(str(data_dir))),
        filesystem=MemoryFileSystem(),
        sleeper=Sleeper(),
    )
    return open_and_ensure(cluster, MemoryServerStore(), address, str(data_dir), sleeper=Sleeper(), **options)


def with_nodes(data_dir, *nodes):
    connection = sqlite3.connect(str(data_dir / "db.bin"))
    for node in nodes:
        add_node(connection, *node)
    connection.close()


def test_single_unclustered_node_has_id_1(data_dir):
    with_nodes(data_dir, ("0.0.0.0", 2, 1))
    assert start(data_dir, "10.0.0.1:9000") == 1


def test_node_id_comes_from_the_row_with_our_address(data_dir):
    with_nodes(data_dir, ("10.0.0.1", 2, 1), ("10.0.0.2", 2, 1), ("10.0.0.3", 2, 1))
    assert start(data_dir, "10.0.0.2") == 2


def test_fresh_database_starts_as_node_1(tmp_path):
    assert start(tmp_path, "10.0.0.1") == 1


def test_address_without_a_row_is_reported(data_dir):
    with_nodes(data_dir, ("10.0.0.1", 2, 1), ("10.0.0.2", 2, 1))

    from django_dqcluster.cluster import NodeNotFoundError, local_node_id

    connection = sqlite3.connect(str(data_dir / "db.bin"))
    with pytest.raises(NodeNotFoundError) as caught:
        local_node_id(connection, "10.0.0.9")
    assert str(caught.value) == 'no node registered with address "10.0.0.9"'


def test_waiting_node_gets_some_nodes_are_behind_with_its_node_id(data_dir):
    with_nodes(data_dir, ("10.0.0.1", 2, 1), ("10.0.0.2", 2, 0))

    with pytest.raises(SomeNodesAreBehind) as caught:
        start(data_dir, "10.0.0.1")

    assert str(caught.value) == "some nodes are behind this node's version"
    assert caught.value.node_id == 1
    assert [m.address for m in caught.value.members] == ["10.0.0.1", "10.0.0.2"]


def test_open_failure_is_an_error(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(sqlite3.OperationalError):
        start(missing, "10.0.0.1")


def test_ensure_error_is_wrapped(data_dir):
    with_nodes(data_dir, ("10.0.0.1", 2, 1), ("10.0.0.2", 3, 1))

    with pytest.raises(ClusterError) as caught:
        start(data_dir, "10.0.0.1")

    assert str(caught.value) == "failed to ensure schema: this node's version is behind, please upgrade"


class LeaderlessDatabase:
    """A handle whose connection raises a retryable error ``failures`` times first."""

    class NoLeader(Exception):
        retryable = True

    def __init__(self, failures, error=None):
        self.failures = failures
        self.error = error
        self.discarded = 0

    def connection(self):
        if self.failures:
            self.failures -= 1
            raise self.error or self.NoLeader("no available leader")
        return sqlite3.connect(":memory:")

    def discard_if_broken(self):
        self.discarded += 1


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_ping_waits_out_no_leader_errors():
    clock = FakeClock()
    sleeper = Sleeper(on_sleep=lambda n: setattr(clock, "now", clock.now + 2.0))

    wait_for_database(LeaderlessDatabase(7), timeout=60, interval=2.0, sleeper=sleeper, clock=clock)

    assert sleeper.sleeps == [2.0] * 7


def test_ping_gives_up_after_the_timeout():
    clock = FakeClock()
    sleeper = Sleeper(on_sleep=lambda n: setattr(clock, "now", clock.now + 2.0))

    with pytest.raises(ClusterError, match="failed to connect to cluster database"):
        wait_for_database(LeaderlessDatabase(100), timeout=10, interval=2.0, sleeper=sleeper, clock=clock)

    assert sleeper.sleeps == [2.0] * 5  # the sleep always comes before the deadline check


def test_ping_raises_a_non_transient_error_at_once():
    sleeper = Sleeper()
    refused = PermissionError("authentication failed")

    with pytest.raises(PermissionError):
        wait_for_database(LeaderlessDatabase(1, refused), sleeper=sleeper, clock=FakeClock())

    assert sleeper.sleeps == []
