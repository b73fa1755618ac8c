"""``Cluster.ensure_schema`` orchestration (§4.2 #8-#15) and the VersionGate's check and
hook (§4.3 #16-#27)."""

from __future__ import annotations

import sqlite3

import pytest
from cluster_fakes import (
    Boom,
    FaultyConnection,
    MemoryFileSystem,
    ScriptedTx,
    Sleeper,
    add_node,
    node_rows,
    node_version,
    preload_fresh_schema,
    table_exists,
)

from django_dqcluster.cluster import (
    BasicAPIExtensions,
    Cluster,
    ClusterError,
    GateState,
    GracefulAbort,
    InconsistentVersionsError,
    NodeBehindError,
    NodeVersionUpdateError,
    SchemaProvider,
    UnclusteredNodesError,
    Version,
    VersionGate,
    transaction,
)
from django_dqcluster.cluster.dialect import SQLITE3
from django_dqcluster.cluster.sql import (
    STMT_COUNT_UNCLUSTERED_NODES,
    STMT_INITIAL_NODE,
    STMT_SELECT_NODES_MEMBERS,
    STMT_UPDATE_NODE_VERSION,
)

# --------------------------------------------------------------------------------------
# §4.2 #8: the seed's call order, recorded by fakes


class Recorder:
    def __init__(self):
        self.calls = []


class RecordingAPIExtensions:
    def __init__(self, recorder, count):
        self.recorder, self._count = recorder, count

    def count(self):
        self.recorder.calls.append("api.count")
        return self._count


class RecordingSchema:
    """Records configuration calls; ``ensure`` bootstraps with a recording tx, returns 0."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.bootstrap_fn = None

    def file(self, path):
        self.recorder.calls.append(("schema.file", path))

    def check(self, fn):
        self.recorder.calls.append("schema.check")

    def hook(self, fn):
        self.recorder.calls.append("schema.hook")

    def bootstrap(self, fn):
        self.recorder.calls.append("schema.bootstrap")
        self.bootstrap_fn = fn

    def ensure(self, connection):
        self.recorder.calls.append("schema.ensure")
        tx = RecordingTx(self.recorder)
        self.bootstrap_fn(tx)
        return 0


class RecordingTx(ScriptedTx):
    def __init__(self, recorder):
        super().__init__()
        self.recorder = recorder

    def execute(self, sql, params=None):
        self.recorder.calls.append(("tx.execute", sql, params))
        return 1


class RecordingProvider:
    def __init__(self, recorder, updates):
        self.recorder, self._updates = recorder, updates

    def updates(self):
        self.recorder.calls.append("provider.updates")
        return list(self._updates)

    def schema(self):
        self.recorder.calls.append("provider.schema")
        return RecordingSchema(self.recorder)


def test_ensure_schema_calls_collaborators_in_seed_order():
    recorder = Recorder()
    cluster = Cluster(
        RecordingAPIExtensions(recorder, 1),
        RecordingProvider(recorder, [lambda tx: None]),
        database=object(),
    )

    assert cluster.ensure_schema("1.2.3.4", "/db/dir") is True
    assert recorder.calls == [
        "api.count",
        "provider.updates",
        "provider.schema",
        ("schema.file", "/db/dir/patch.global.sql"),
        "schema.check",
        "schema.hook",
        "schema.bootstrap",
        "schema.ensure",
        # Inside the ensure transaction now (§4.8 #67), not a second one.
        ("tx.execute", STMT_INITIAL_NODE, (1, 1)),
    ]


# --------------------------------------------------------------------------------------
# §4.2 #9-#15 on a real sqlite3 database


def cluster_on(database, *, sleeper=None, api=1):
    return Cluster(
        BasicAPIExtensions(api),
        SchemaProvider(MemoryFileSystem()),
        database=database,
        filesystem=MemoryFileSystem(),
        sleeper=sleeper or Sleeper(),
    )


def test_fresh_bootstrap_inserts_the_initial_node_row(sqlite_conn):
    assert cluster_on(sqlite_conn, api=7).ensure_schema("1", "/d") is True
    assert node_rows(sqlite_conn) == [(1, "none", "0.0.0.0", 2, 7)]


def test_non_transient_ensure_error_is_raised_without_retrying(sqlite_conn):
    sleeper = Sleeper()
    preload_fresh_schema(sqlite_conn)  # ...but no node row: the update hits 0 rows

    with pytest.raises(ClusterError) as caught:
        cluster_on(sqlite_conn, sleeper=sleeper).ensure_schema("1", "/d")

    assert str(caught.value) == "failed to update node version info: updated 0 rows instead of 1"
    assert sleeper.sleeps == []


def test_failure_to_begin_the_transaction_propagates(sqlite_conn):
    refused = sqlite3.OperationalError("cannot begin: refused")
    faulty = FaultyConnection(sqlite_conn, fail_sql=lambda sql: refused if sql.startswith("BEGIN") else None)

    with pytest.raises(sqlite3.OperationalError) as caught:
        cluster_on(faulty).ensure_schema("1", "/d")

    assert caught.value is refused


def _fail_initial_node_insert(error):
    return lambda sql: error if sql == STMT_INITIAL_NODE else None


def test_initial_node_insert_failure_rolls_back_and_returns_the_insert_error(sqlite_conn):
    insert_error = sqlite3.IntegrityError("insert failed")
    faulty = FaultyConnection(sqlite_conn, fail_sql=_fail_initial_node_insert(insert_error))

    with pytest.raises(sqlite3.IntegrityError) as caught:
        cluster_on(faulty).ensure_schema("1", "/d")

    assert caught.value is insert_error
    assert faulty.rollbacks == 1
    assert not table_exists(sqlite_conn, "schema")


def test_rollback_failure_keeps_the_insert_error_as_the_cause(sqlite_conn):
    insert_error = sqlite3.IntegrityError("insert failed")
    faulty = FaultyConnection(
        sqlite_conn,
        fail_sql=_fail_initial_node_insert(insert_error),
        rollback_errors=[sqlite3.OperationalError("rollback failed")],
    )

    with pytest.raises(sqlite3.IntegrityError) as caught:
        cluster_on(faulty).ensure_schema("1", "/d")

    assert caught.value is insert_error
    assert any("rollback failed" in note for note in caught.value.__notes__)


def test_commit_failure_is_returned_and_nothing_is_kept(sqlite_conn):
    commit_error = sqlite3.OperationalError("commit refused")
    faulty = FaultyConnection(sqlite_conn, commit_errors=[commit_error])

    with pytest.raises(sqlite3.OperationalError) as caught:
        cluster_on(faulty).ensure_schema("1", "/d")

    assert caught.value is commit_error
    assert not table_exists(sqlite_conn, "nodes")


def test_schema_version_is_the_number_of_updates():
    cluster = Cluster(BasicAPIExtensions(1), SchemaProvider(MemoryFileSystem()), database=None)
    assert cluster.schema_version() == 2


def test_schema_provider_has_two_updates_and_a_schema():
    provider = SchemaProvider(MemoryFileSystem())
    assert len(provider.updates()) == 2
    assert provider.schema() is not None
    assert len(provider.schema()) == 2


class StatementLog(ScriptedTx):
    """Accepts any statement and keeps it."""

    def _answer(self, sql, params):
        self.calls.append((sql, params))
        return 0


def test_first_update_issues_exactly_one_sql_string():
    tx = StatementLog()

    SchemaProvider().updates()[0](tx)

    assert len(tx.calls) == 1
    assert "CREATE TABLE nodes" in tx.calls[0][0]


def test_ensure_schema_without_database_is_a_clear_error():
    cluster = Cluster(BasicAPIExtensions(1), SchemaProvider(MemoryFileSystem()))
    with pytest.raises(ClusterError, match="not open"):
        cluster.ensure_schema("1", "/d")


def test_updates_of_the_cluster_schema_match_the_fresh_schema(sqlite_conn):
    """Applying update 1 and 2 one by one gives the same tables as FreshSchema."""
    from django_dqcluster.cluster import Schema

    by_updates = sqlite3.connect(":memory:")
    Schema(SchemaProvider().updates()).ensure(by_updates)
    preload_fresh_schema(sqlite_conn)

    def tables(connection):
        return connection.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()

    assert tables(by_updates) == tables(sqlite_conn)
    by_updates.close()


# --------------------------------------------------------------------------------------
# §4.3: the check


def gate(ours=(2, 1), **options):
    options.setdefault("filesystem", MemoryFileSystem())
    return VersionGate("1", "/dir", Version(*ours), **options)


def check_answers(*, count=0, updated=1, members=(("1", 2, 1),)):
    return {
        STMT_COUNT_UNCLUSTERED_NODES: count if isinstance(count, Exception) else [(count,)],
        STMT_UPDATE_NODE_VERSION: updated,
        STMT_SELECT_NODES_MEMBERS: members if isinstance(members, Exception) else list(members),
    }


def test_check_on_empty_database_runs_no_queries():
    tx = ScriptedTx()
    gate().check(0, tx)
    assert tx.calls == []


def test_check_on_unclustered_node_updates_the_sentinel_row(sqlite_conn):
    preload_fresh_schema(sqlite_conn)
    add_node(sqlite_conn, "0.0.0.0", 1, 0)

    with transaction(sqlite_conn) as tx:
        gate().check(1, tx)

    assert node_version(sqlite_conn, "0.0.0.0") == (2, 1)


def test_check_updates_our_row_with_schema_api_and_address():
    tx = ScriptedTx(check_answers())
    gate(ours=(2, 1)).check(2, tx)
    assert (STMT_UPDATE_NODE_VERSION, (2, 1, "1")) in tx.calls


def test_check_with_two_unclustered_rows_fails():
    with pytest.raises(UnclusteredNodesError) as caught:
        gate().check(1, ScriptedTx(check_answers(count=2)))
    assert str(caught.value) == "found more than one unclustered nodes"


def test_check_count_that_cannot_be_scanned_fails():
    tx = ScriptedTx({STMT_COUNT_UNCLUSTERED_NODES: [("not a number",)]})
    with pytest.raises(ClusterError) as caught:
        gate().check(1, tx)
    assert str(caught.value) == "failed to fetch unclustered nodes count: failed to scan count column"


def test_check_count_query_error_propagates():
    with pytest.raises(ClusterError) as caught:
        gate().check(1, ScriptedTx(check_answers(count=Boom())))
    assert str(caught.value) == "failed to fetch unclustered nodes count: boom"
    assert isinstance(caught.value.__cause__, Boom)


def test_check_update_error_propagates():
    with pytest.raises(ClusterError) as caught:
        gate().check(1, ScriptedTx(check_answers(updated=Boom())))
    assert str(caught.value) == "failed to update node version info: boom"


def test_check_update_of_two_rows_fails():
    answers = check_answers(updated=2)
    answers["SELECT address FROM nodes ORDER BY id"] = [("1",), ("1 again",)]
    with pytest.raises(ClusterError) as caught:
        gate().check(1, ScriptedTx(answers))
    assert str(caught.value) == "failed to update node version info: updated 2 rows instead of 1"


def test_check_update_with_unknown_row_count_fails():
    with pytest.raises(ClusterError) as caught:
        gate().check(1, ScriptedTx(check_answers(updated=-1)))
    assert str(caught.value) == (
        "failed to update node version info: the driver did not report how many rows were updated"
    )


def test_missing_address_error_names_the_address_and_the_addresses_present(sqlite_conn):
    preload_fresh_schema(sqlite_conn)
    add_node(sqlite_conn, "10.0.0.1", 2, 1)
    add_node(sqlite_conn, "10.0.0.2", 2, 1)

    with pytest.raises(ClusterError) as caught:
        cluster_on(sqlite_conn).ensure_schema("10.0.0.9", "/d")

    assert str(caught.value) == "failed to update node version info: updated 0 rows instead of 1"
    assert isinstance(caught.value.__cause__, NodeVersionUpdateError)
    report = caught.value.report()
    assert "address looked up: 10.0.0.9" in report
    assert "addresses present: 10.0.0.1, 10.0.0.2" in report


def test_check_versions_query_failure_propagates():
    with pytest.raises(ClusterError) as caught:
        gate().check(1, ScriptedTx(check_answers(members=Boom())))
    assert str(caught.value) == "failed to fetch current nodes versions: boom"


def test_check_versions_that_cannot_be_scanned_fail():
    with pytest.raises(ClusterError) as caught:
        gate().check(1, ScriptedTx(check_answers(members=[("1", "two", 1)])))
    assert str(caught.value).startswith("failed to fetch current nodes versions: invalid literal")


def test_check_peer_ahead_is_please_upgrade():
    answers = check_answers(members=[("1", 1, 10), ("2", 10, 10)])
    with pytest.raises(NodeBehindError) as caught:
        gate(ours=(1, 10)).check(1, ScriptedTx(answers))
    assert str(caught.value) == "this node's version is behind, please upgrade"


def test_check_inconsistent_peer_is_an_error():
    answers = check_answers(members=[("1", 1, 10), ("2", 12, 0)])
    with pytest.raises(InconsistentVersionsError) as caught:
        gate(ours=(1, 10)).check(1, ScriptedTx(answers))
    assert str(caught.value) == "nodes have inconsistent versions"


def test_check_peer_behind_aborts_gracefully_and_records_it():
    answers = check_answers(members=[("1", 2, 11), ("2", 1, 10)])
    version_gate = gate(ours=(2, 11))

    with pytest.raises(GracefulAbort) as caught:
        version_gate.check(2, ScriptedTx(answers))

    assert str(caught.value) == "schema check gracefully aborted"
    assert version_gate.decision.state is GateState.PEERS_BEHIND


def test_check_all_equal_passes():
    version_gate = gate()
    version_gate.check(2, ScriptedTx(check_answers(members=[("1", 2, 1), ("2", 2, 1)])))
    assert version_gate.decision.state is GateState.READY


# --------------------------------------------------------------------------------------
# §4.3: the hook


def test_hook_backs_up_global_once_for_an_unclustered_node(sqlite_conn):
    preload_fresh_schema(sqlite_conn)
    add_node(sqlite_conn, "0.0.0.0", 2, 1)
    fs = MemoryFileSystem()
    version_gate = gate(filesystem=fs)

    with transaction(sqlite_conn) as tx:
        version_gate.hook(2, tx)
        version_gate.hook(3, tx)

    assert fs.copies == [("/dir/global", "/dir/global.bak")]


def test_hook_does_not_back_up_a_clustered_node(sqlite_conn):
    preload_fresh_schema(sqlite_conn)
    add_node(sqlite_conn, "10.0.0.1", 2, 1)
    fs = MemoryFileSystem()

    with transaction(sqlite_conn) as tx:
        gate(filesystem=fs).hook(2, tx)

    assert fs.copies == []


def test_hook_without_schema_table_does_nothing():
    tx = ScriptedTx({SQLITE3.schema_table_exists_sql: [(0,)]})
    fs = MemoryFileSystem()
    gate(filesystem=fs).hook(-1, tx)
    assert [sql for sql, _ in tx.calls] == [SQLITE3.schema_table_exists_sql]
    assert fs.copies == []


def test_hook_with_backup_disabled_copies_nothing(sqlite_conn):
    preload_fresh_schema(sqlite_conn)
    add_node(sqlite_conn, "0.0.0.0", 2, 1)
    fs = MemoryFileSystem()

    with transaction(sqlite_conn) as tx:
        gate(filesystem=fs, backup_dir=None).hook(2, tx)

    assert fs.copies == []


HOOK_TABLE_EXISTS = {SQLITE3.schema_table_exists_sql: [(1,)]}


@pytest.mark.parametrize(
    "answers, message",
    [
        ({SQLITE3.schema_table_exists_sql: Boom()}, "failed to check if schema table exists: boom"),
        (
            {SQLITE3.schema_table_exists_sql: []},
            "failed to check if schema table exists: schema table query returned no rows",
        ),
        (
            {SQLITE3.schema_table_exists_sql: [("x",)]},
            "failed to check if schema table exists: failed to scan schema table count: "
            "invalid literal for int() with base 10: 'x'",
        ),
        (
            {**HOOK_TABLE_EXISTS, STMT_COUNT_UNCLUSTERED_NODES: []},
            "failed to fetch unclustered nodes count: no rows returned",
        ),
        (
            {**HOOK_TABLE_EXISTS, STMT_COUNT_UNCLUSTERED_NODES: [("x",)]},
            "failed to fetch unclustered nodes count: failed to scan count column",
        ),
        (
            {**HOOK_TABLE_EXISTS, STMT_COUNT_UNCLUSTERED_NODES: [(1,), (1,)]},
            "failed to fetch unclustered nodes count: more than one row returned",
        ),
        (
            {**HOOK_TABLE_EXISTS, STMT_COUNT_UNCLUSTERED_NODES: Boom("rows failed")},
            "failed to fetch unclustered nodes count: rows failed",
        ),
        ({**HOOK_TABLE_EXISTS, STMT_COUNT_UNCLUSTERED_NODES: [(2,)]}, "found more than one unclustered nodes"),
    ],
    ids=[
        "exists-query-error",
        "exists-no-rows",
        "exists-scan-error",
        "count-no-rows",
        "count-scan-error",
        "count-two-rows",
        "count-rows-error",
        "two-unclustered",
    ],
)
def test_hook_error_paths(answers, message):
    with pytest.raises(ClusterError) as caught:
        gate().hook(1, ScriptedTx(answers))
    assert str(caught.value) == message


def test_hook_backup_failure_is_wrapped():
    fs = MemoryFileSystem()
    fs.fail["copy_dir"] = OSError("disk full")
    answers = {**HOOK_TABLE_EXISTS, STMT_COUNT_UNCLUSTERED_NODES: [(1,)]}

    with pytest.raises(ClusterError) as caught:
        gate(filesystem=fs).hook(1, ScriptedTx(answers))

    assert str(caught.value) == "failed to backup global database: disk full"


def test_backup_happens_before_the_update_of_an_unclustered_node(sqlite_conn):
    """End to end: a third update on a never-clustered node backs up <dir>/global once."""
    preload_fresh_schema(sqlite_conn)
    add_node(sqlite_conn, "0.0.0.0", 2, 1)
    fs = MemoryFileSystem()

    class ThreeUpdates(SchemaProvider):
        def updates(self):
            return super().updates() + [lambda tx: tx.execute("CREATE TABLE third (id INTEGER)")]

    cluster = Cluster(
        BasicAPIExtensions(1), ThreeUpdates(MemoryFileSystem()), database=sqlite_conn, filesystem=fs
    )

    assert cluster.ensure_schema("10.0.0.1", "/data") is True
    assert fs.copies == [("/data/global", "/data/global.bak")]
    assert table_exists(sqlite_conn, "third")
    assert node_version(sqlite_conn, "0.0.0.0") == (3, 1)
