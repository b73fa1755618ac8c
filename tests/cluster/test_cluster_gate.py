"""The version gate through ``Cluster.ensure_schema``, on sqlite3 AND PostgreSQL.

seed-behaviour.md §4.1 (#1-#7) and the fixes §4.8 #66, #67, #69, #70. Unless a test says
otherwise the database holds the schema table + FreshSchema (version 2) and this node's
version ("ours") is (2, 1).
"""

from __future__ import annotations

import pytest
from cluster_fakes import (
    FaultyConnection,
    MemoryFileSystem,
    Sleeper,
    add_node,
    node_rows,
    node_version,
    preload_fresh_schema,
    schema_versions,
    table_exists,
)

from django_dqcluster.cluster import (
    BasicAPIExtensions,
    Cluster,
    GateState,
    InconsistentVersionsError,
    NodeBehindError,
    Schema,
    SchemaProvider,
    Tx,
    fresh_schema,
    gate_decision,
    transaction,
)
from django_dqcluster.cluster.sql import (
    FRESH_SCHEMA,
    STMT_INITIAL_NODE,
    STMT_SELECT_NODES_VERSIONS,
    STMT_UPDATE_NODE_VERSION,
)

SCHEMA, API = 2, 1


def make_cluster(database, *, api=API, provider=None, **options):
    options.setdefault("filesystem", MemoryFileSystem())
    options.setdefault("sleeper", Sleeper())
    return Cluster(
        BasicAPIExtensions(api),
        provider or SchemaProvider(filesystem=MemoryFileSystem()),
        database=database,
        **options,
    )


@pytest.fixture
def fresh(conn):
    preload_fresh_schema(conn)
    return conn


# -- §4.1 ------------------------------------------------------------------------------


def test_unclustered_node_is_ready_whatever_address_is_passed(fresh):
    add_node(fresh, "0.0.0.0", SCHEMA, API)

    assert make_cluster(fresh).ensure_schema("1.2.3.4:666", "/unused/db/dir") is True


def test_peer_schema_behind_means_wait_and_our_row_is_committed(fresh):
    add_node(fresh, "1", 1, 0)  # an older row of ours, so that "committed" shows
    add_node(fresh, "2", SCHEMA - 1, API)
    cluster = make_cluster(fresh)

    ready = cluster.ensure_schema("1", "/unused/db/dir")

    assert ready is False
    assert node_version(fresh, "1") == (SCHEMA, API)
    assert cluster.last_gate.state is GateState.PEERS_BEHIND


def test_peer_api_extensions_behind_means_wait(fresh):
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA, API - 1)

    assert make_cluster(fresh).ensure_schema("1", "/unused/db/dir") is False


def test_waiting_node_applies_no_pending_update(fresh):
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA, API)
    provider = ProviderWithThirdUpdate()

    ready = make_cluster(fresh, provider=provider).ensure_schema("1", "/unused/db/dir")

    assert ready is False  # node 2 is at schema 2, we are at 3
    assert schema_versions(fresh) == [2]
    assert not table_exists(fresh, "third")
    assert node_version(fresh, "1") == (3, API)


def test_peer_schema_ahead_means_please_upgrade(fresh):
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA + 1, API)

    with pytest.raises(NodeBehindError) as caught:
        make_cluster(fresh).ensure_schema("1", "/unused/db/dir")

    assert str(caught.value) == "this node's version is behind, please upgrade"


def test_peer_api_extensions_ahead_means_please_upgrade(fresh):
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA, API + 1)

    with pytest.raises(NodeBehindError) as caught:
        make_cluster(fresh).ensure_schema("1", "/unused/db/dir")

    assert str(caught.value) == "this node's version is behind, please upgrade"


def test_inconsistent_peer_is_an_error(fresh):
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA + 1, API - 1)

    with pytest.raises(InconsistentVersionsError) as caught:
        make_cluster(fresh).ensure_schema("1", "/unused/db/dir")

    assert str(caught.value) == "nodes have inconsistent versions"


def test_our_version_row_is_always_refreshed(fresh):
    add_node(fresh, "1", SCHEMA - 1, API - 1)

    assert make_cluster(fresh).ensure_schema("1", "/unused/db/dir") is True
    assert node_version(fresh, "1") == (SCHEMA, API)


def test_our_version_row_is_committed_even_when_a_peer_is_behind(fresh):
    # The upstream test meant to check this but never called its setup (§4.1 #7).
    add_node(fresh, "1", SCHEMA - 1, API - 1)
    add_node(fresh, "2", SCHEMA, API - 1)

    assert make_cluster(fresh).ensure_schema("1", "/unused/db/dir") is False
    assert node_version(fresh, "1") == (SCHEMA, API)


def test_please_upgrade_rolls_back_our_version_row(fresh):
    add_node(fresh, "1", SCHEMA - 1, API - 1)
    add_node(fresh, "2", SCHEMA + 1, API + 1)

    with pytest.raises(NodeBehindError):
        make_cluster(fresh).ensure_schema("1", "/unused/db/dir")

    assert node_version(fresh, "1") == (SCHEMA - 1, API - 1)


def test_gate_error_lists_every_member_version(fresh):
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA + 1, API)

    with pytest.raises(NodeBehindError) as caught:
        make_cluster(fresh).ensure_schema("1", "/unused/db/dir")

    report = caught.value.report().splitlines()
    assert report[0] == "this node's version is behind, please upgrade"
    assert "  2: schema 3, api_extensions 1" in report
    assert "  1: schema 2, api_extensions 1" in report
    assert [m.address for m in caught.value.members] == ["1", "2"]


# -- §4.8 #69: the decision does not depend on row order ---------------------------------


@pytest.mark.parametrize("peers", [["ahead", "behind"], ["behind", "ahead"]])
def test_gate_decision_ignores_row_order_any_peer_ahead_means_upgrade(fresh, peers):
    versions = {"ahead": (SCHEMA + 1, API), "behind": (SCHEMA, API - 1)}
    add_node(fresh, "1", SCHEMA, API)
    for name in peers:
        add_node(fresh, name, *versions[name])

    with pytest.raises(NodeBehindError):
        make_cluster(fresh).ensure_schema("1", "/unused/db/dir")


@pytest.mark.parametrize("peers", [["inconsistent", "behind"], ["behind", "inconsistent"]])
def test_gate_decision_ignores_row_order_inconsistency_beats_waiting(fresh, peers):
    versions = {"inconsistent": (SCHEMA + 1, API - 1), "behind": (SCHEMA - 1, API)}
    add_node(fresh, "1", SCHEMA, API)
    for name in peers:
        add_node(fresh, name, *versions[name])

    with pytest.raises(InconsistentVersionsError):
        make_cluster(fresh).ensure_schema("1", "/unused/db/dir")


# -- §4.8 #70: LXD-2025 mode ---------------------------------------------------------------


def test_wait_when_behind_mode_waits_with_our_row_committed(fresh):
    add_node(fresh, "1", SCHEMA, API + 1)  # our row says newer: we were downgraded
    add_node(fresh, "2", SCHEMA, API + 1)
    cluster = make_cluster(fresh, wait_when_behind=True)

    ready = cluster.ensure_schema("1", "/unused/db/dir")

    assert ready is False
    assert node_version(fresh, "1") == (SCHEMA, API)
    assert cluster.last_gate.state is GateState.WE_ARE_BEHIND


def test_wait_when_behind_mode_still_fails_on_inconsistent_versions(fresh):
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA + 1, API - 1)

    with pytest.raises(InconsistentVersionsError):
        make_cluster(fresh, wait_when_behind=True).ensure_schema("1", "/unused/db/dir")


def test_same_schema_downgrade_recovers_when_every_member_downgrades(fresh):
    # canonical/lxd#15313: both members go back from 2 API extensions to 1.
    add_node(fresh, "1", SCHEMA, API + 1)
    add_node(fresh, "2", SCHEMA, API + 1)

    first = make_cluster(fresh, wait_when_behind=True).ensure_schema("1", "/unused/db/dir")
    second = make_cluster(fresh, wait_when_behind=True).ensure_schema("2", "/unused/db/dir")
    again = make_cluster(fresh, wait_when_behind=True).ensure_schema("1", "/unused/db/dir")

    assert (first, second, again) == (False, True, True)


# -- §4.8 #67: bootstrap is one transaction ------------------------------------------------


def test_fresh_bootstrap_creates_schema_and_initial_node_together(conn):
    ready = make_cluster(conn).ensure_schema("1", "/unused/db/dir")

    assert ready is True
    assert schema_versions(conn) == [2]
    assert node_rows(conn) == [(1, "none", "0.0.0.0", SCHEMA, API)]


def test_failed_initial_node_insert_leaves_no_schema_behind(conn):
    class FailingBootstrapProvider(SchemaProvider):
        def schema(self):
            schema = super().schema()
            return BootstrapFailsSchema(schema)

    with pytest.raises(RuntimeError, match="crash before the node row"):
        make_cluster(conn, provider=FailingBootstrapProvider(MemoryFileSystem())).ensure_schema("1", "/d")

    assert not table_exists(conn, "schema")
    assert not table_exists(conn, "nodes")


# -- §4.8 #66: the "peers are behind" outcome belongs to one attempt -------------------------


def test_peers_behind_seen_by_a_failed_attempt_does_not_stick(sqlite_path):
    import sqlite3

    real = sqlite3.connect(sqlite_path)
    preload_fresh_schema(real)
    add_node(real, "1", SCHEMA, API)
    add_node(real, "2", SCHEMA - 1, API)
    locked = sqlite3.OperationalError("database is locked")
    faulty = FaultyConnection(real, commit_errors=[locked])

    def peer_upgrades_meanwhile(attempt):
        with_our_row_at(real, "2", (SCHEMA, API))

    cluster = make_cluster(faulty, sleeper=Sleeper(on_sleep=peer_upgrades_meanwhile))

    # Attempt 1: peer 2 is behind (graceful abort) but the commit fails transiently.
    # Attempt 2: everybody is equal. The seed's sticky flag would still say "wait".
    assert cluster.ensure_schema("1", "/unused/db/dir") is True
    assert cluster.last_gate.state is GateState.READY


# -- helpers ---------------------------------------------------------------------------------


def with_our_row_at(connection, address, version):
    with transaction(connection) as tx:
        tx.execute("UPDATE nodes SET schema=?, api_extensions=? WHERE address=?", (*version, address))


def create_third_table(tx: Tx) -> None:
    tx.execute("CREATE TABLE third (id INTEGER)")


class ProviderWithThirdUpdate(SchemaProvider):
    """The cluster schema plus a third update: this code is at schema 3."""

    def __init__(self):
        super().__init__(MemoryFileSystem())

    def updates(self):
        return super().updates() + [create_third_table]


class BootstrapFailsSchema:
    """Delegates to a real Schema but makes the bootstrap insert the node row, then crash."""

    def __init__(self, schema: Schema):
        self._schema = schema

    def bootstrap(self, fn):
        def insert_then_crash(tx):
            fn(tx)
            assert tx.query("SELECT COUNT(*) FROM nodes") == [(1,)]
            raise RuntimeError("crash before the node row is committed")

        self._schema.bootstrap(insert_then_crash)

    def __getattr__(self, name):
        return getattr(self._schema, name)


# -- the seed's statements, as its documentation gives them ------------------------------
#
# Written out here from /work/shared/seed/cluster-package-doc.txt (which prints the two
# nodes statements in full, Go raw strings with their leading and trailing newlines) and
# seed-behaviour.md §2.1-2.2 (the initial node statement and the fresh schema, which the
# documentation gives without their original layout), never from sql.py.

SEED_SELECT_NODES_VERSIONS = "\nSELECT schema, api_extensions FROM nodes\n"

SEED_UPDATE_NODE_VERSION = "\nUPDATE nodes SET schema=?, api_extensions=? WHERE address=?\n"

SEED_INITIAL_NODE = (
    "INSERT INTO nodes (id, name, address, schema, api_extensions) "
    "VALUES (1, 'none', '0.0.0.0', ?, ?)"
)
# "StmtInitialNode = `` /* 226-byte string literal not displayed */"
SEED_INITIAL_NODE_BYTES = 226

SEED_FRESH_SCHEMA_STATEMENTS = [
    """CREATE TABLE config (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        key TEXT NOT NULL,
        value TEXT,
        UNIQUE (key)
    )""",
    """CREATE TABLE nodes (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT DEFAULT '',
        address TEXT NOT NULL,
        schema INTEGER NOT NULL,
        api_extensions INTEGER NOT NULL,
        heartbeat DATETIME DEFAULT CURRENT_TIMESTAMP,
        pending INTEGER NOT NULL DEFAULT 0,
        UNIQUE (name),
        UNIQUE (address)
    )""",
    """CREATE TABLE operations (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        uuid TEXT NOT NULL,
        node_id TEXT NOT NULL,
        type TEXT NOT NULL,
        UNIQUE (uuid),
        FOREIGN KEY (node_id) REFERENCES nodes (id) ON DELETE CASCADE
    )""",
    """CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        uuid TEXT NOT NULL,
        node_id TEXT NOT NULL,
        query TEXT NOT NULL,
        schedule INTEGER NOT NULL,
        result TEXT NOT NULL,
        status INTEGER NOT NULL,
        UNIQUE (uuid),
        FOREIGN KEY (node_id) REFERENCES nodes (id) ON DELETE CASCADE
    )""",
    """CREATE TABLE services (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        address TEXT NOT NULL,
        daemon_address TEXT NOT NULL,
        daemon_nonce TEXT NOT NULL,
        heartbeat DATETIME DEFAULT CURRENT_TIMESTAMP,
        UNIQUE (name),
        UNIQUE (address),
        UNIQUE (daemon_address)
    )""",
    'INSERT INTO schema (version, updated_at) VALUES (2, strftime("%s"))',
]


def without_layout(sql):
    """``sql`` with its layout (line breaks, tabs, indentation) reduced to single spaces.

    The documentation gives statements without the original's layout, so only the
    layout is left out of the comparison: every word and punctuation mark still counts.
    """
    return " ".join(sql.split()).replace("( ", "(").replace(" )", ")")


def test_select_nodes_versions_statement_is_the_seed_literal():
    assert STMT_SELECT_NODES_VERSIONS == SEED_SELECT_NODES_VERSIONS


def test_update_node_version_statement_is_the_seed_literal():
    assert STMT_UPDATE_NODE_VERSION == SEED_UPDATE_NODE_VERSION


def test_initial_node_statement_is_the_seed_literal():
    assert without_layout(STMT_INITIAL_NODE) == SEED_INITIAL_NODE
    # The layout itself is known only by its size: multi-line, trailing spaces, 226 bytes.
    assert len(STMT_INITIAL_NODE.encode()) == SEED_INITIAL_NODE_BYTES
    assert STMT_INITIAL_NODE.count("\n") > 1 and " \n" in STMT_INITIAL_NODE


def test_fresh_schema_is_the_seed_schema_statement_by_statement():
    statements = [statement for statement in FRESH_SCHEMA.split(";") if statement.strip()]

    assert [without_layout(s) for s in statements] == [without_layout(s) for s in SEED_FRESH_SCHEMA_STATEMENTS]
    assert fresh_schema() == FRESH_SCHEMA


def test_gate_reads_the_same_rows_as_the_seed_versions_select(fresh):
    # sql.py explains why the gate runs its own statement; it must see what the seed saw,
    # pending members included.
    add_node(fresh, "1", SCHEMA, API)
    add_node(fresh, "2", SCHEMA - 1, API, pending=True)
    add_node(fresh, "3", SCHEMA, API - 1)

    with transaction(fresh, write=False) as tx:
        seed_rows = tx.query(STMT_SELECT_NODES_VERSIONS)
        decision = gate_decision(tx, (SCHEMA, API))

    gate_rows = [(member.schema, member.api_extensions) for member in decision.members]
    assert sorted(gate_rows) == sorted(tuple(row) for row in seed_rows)
    assert len(gate_rows) == 3


# -- concurrency and identity ------------------------------------------------------------------


def test_two_nodes_bootstrapping_at_once_both_succeed_once(connect):
    import threading

    results, errors = [], []
    barrier = threading.Barrier(2)

    def bootstrap():
        connection = connect()
        barrier.wait()
        try:
            results.append(make_cluster(connection).ensure_schema("10.0.0.1", "/unused"))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=bootstrap) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert results == [True, True]
    checker = connect()
    assert schema_versions(checker) == [2]
    assert node_rows(checker) == [(1, "none", "0.0.0.0", SCHEMA, API)]


def test_nodes_can_be_added_after_the_bootstrap_row(conn):
    make_cluster(conn).ensure_schema("10.0.0.1", "/unused")

    add_node(conn, "10.0.0.2", SCHEMA, API)  # no explicit id: must not collide with 1

    assert [row[0] for row in node_rows(conn)] == [1, 2]
