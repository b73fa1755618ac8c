"""The schema engine (§4.6 #41-#63) and the patch-file fix (§4.8 #68)."""

from __future__ import annotations

import sqlite3
import sys

import pytest
from cluster_fakes import (
    Boom,
    MemoryFileSystem,
    ScriptedTx,
    ids_in_test_table,
    schema_versions,
    table_exists,
    update_add_column,
    update_boom,
    update_create_table,
    update_insert_value,
    update_noop,
)

from django_dqcluster.cluster import (
    GracefulAbort,
    Schema,
    SchemaError,
    TransactionStateError,
    schema_table_exists,
    transaction,
)
from django_dqcluster.cluster.dialect import SQLITE3
from django_dqcluster.cluster.schema import (
    ensure_updates_are_applied,
    format_sql,
    query_current_version,
)
from django_dqcluster.cluster.sql import STMT_INSERT_SCHEMA_VERSION

PATCH = "/data/patch.global.sql"


@pytest.fixture
def fs():
    return MemoryFileSystem()


@pytest.fixture
def schema(fs):
    return Schema.empty(filesystem=fs)


def insert_version(connection, version):
    with transaction(connection) as tx:
        tx.execute(STMT_INSERT_SCHEMA_VERSION, (version,))


# -- #41-#44 ---------------------------------------------------------------------------


def test_no_updates_creates_an_empty_schema_table(schema, sqlite_conn):
    assert schema.ensure(sqlite_conn) == 0
    assert table_exists(sqlite_conn, "schema")
    assert schema_versions(sqlite_conn) == []


def test_updates_are_applied_in_order_on_an_empty_database(schema, sqlite_conn):
    schema.add(update_create_table)
    schema.add(update_insert_value)

    assert schema.ensure(sqlite_conn) == 0
    assert schema_versions(sqlite_conn) == [1, 2]
    assert ids_in_test_table(sqlite_conn) == [1]


def test_only_missing_updates_are_applied(schema, sqlite_conn):
    schema.add(update_create_table)
    schema.ensure(sqlite_conn)
    schema.add(update_insert_value)

    assert schema.ensure(sqlite_conn) == 1
    assert schema_versions(sqlite_conn) == [1, 2]
    assert ids_in_test_table(sqlite_conn) == [1]


def test_fresh_dump_then_a_new_update(schema, sqlite_conn):
    schema.add(update_create_table)
    schema.add(update_add_column)
    schema.ensure(sqlite_conn)
    dump = schema.dump(sqlite_conn)

    other = sqlite3.connect(":memory:")
    schema.fresh(dump)
    schema.ensure(other)
    schema.add(update_noop)
    assert schema.ensure(other) == 2
    assert schema_versions(other) == [2, 3]


# -- #45-#49 ---------------------------------------------------------------------------


def test_dump_round_trip_recreates_the_tables(schema, sqlite_conn):
    schema.add(update_create_table)
    schema.add(update_add_column)
    schema.ensure(sqlite_conn)
    dump = schema.dump(sqlite_conn)

    other = sqlite3.connect(":memory:")
    schema.fresh(dump)
    assert schema.ensure(other) == 0
    assert schema_versions(other) == [2]
    other.execute("SELECT id, name FROM test")  # both columns exist


def test_dump_format_puts_columns_on_their_own_lines(schema, sqlite_conn):
    schema.add(lambda tx: tx.execute("CREATE TABLE t (a INTEGER, b TEXT,\nUNIQUE (a, b))"))
    schema.ensure(sqlite_conn)

    dump = schema.dump(sqlite_conn)

    assert dump == (
        "CREATE TABLE t (a INTEGER,\n    b TEXT,\nUNIQUE (a, b))"
        ';\n\nINSERT INTO schema (version, updated_at) VALUES (1, strftime("%s"))\n'
    )


def test_format_sql_leaves_unique_lines_alone():
    assert format_sql("a, b\nUNIQUE (x, y)") == "a,\n    b\nUNIQUE (x, y)"


def test_dump_with_missing_updates_fails(schema, sqlite_conn):
    schema.add(update_create_table)
    schema.ensure(sqlite_conn)
    schema.add(update_add_column)

    with pytest.raises(SchemaError) as caught:
        schema.dump(sqlite_conn)
    assert str(caught.value) == "update level is 1, expected 2"


def test_dump_of_an_empty_schema_table_fails(schema, sqlite_conn):
    schema.ensure(sqlite_conn)
    with pytest.raises(SchemaError) as caught:
        schema.dump(sqlite_conn)
    assert str(caught.value) == "expected schema table to contain at least one row"


def test_database_newer_than_updates_fails(schema, sqlite_conn):
    schema.add(update_noop)
    schema.ensure(sqlite_conn)
    newer_code_was_here = Schema.empty(filesystem=MemoryFileSystem())

    with pytest.raises(SchemaError) as caught:
        newer_code_was_here.ensure(sqlite_conn)
    assert str(caught.value) == "schema version '1' is more recent than expected '0'"


def test_garbage_fresh_schema_fails(schema, sqlite_conn):
    schema.add(update_noop)
    schema.fresh("garbage")

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)
    assert str(caught.value) == 'cannot apply fresh schema: near "garbage": syntax error'


def test_holes_in_versions_fail(schema, sqlite_conn):
    schema.add(update_noop)
    schema.ensure(sqlite_conn)
    insert_version(sqlite_conn, 3)
    schema.add(update_noop)
    schema.add(update_noop)

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)
    assert str(caught.value) == "missing updates: 1 -> 3"


# -- #50-#53 ---------------------------------------------------------------------------


def test_failing_update_rolls_everything_back(schema, sqlite_conn):
    schema.add(update_create_table)
    schema.add(update_boom)

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)

    assert str(caught.value) == "failed to apply update 1: boom"
    assert not table_exists(sqlite_conn, "schema")
    assert not table_exists(sqlite_conn, "test")


def test_failing_hook_rolls_everything_back(schema, sqlite_conn):
    schema.add(update_create_table)

    def hook(version, tx):
        raise Boom()

    schema.hook(hook)

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)

    assert str(caught.value) == "failed to execute hook (version 0): boom"
    assert not table_exists(sqlite_conn, "schema")


def test_graceful_abort_commits_check_side_effects_and_applies_nothing(schema, sqlite_conn):
    def check(current, tx):
        tx.execute("CREATE TABLE test (n INTEGER)")
        raise GracefulAbort()

    schema.add(update_create_table)
    schema.check(check)

    with pytest.raises(GracefulAbort) as caught:
        schema.ensure(sqlite_conn)

    assert str(caught.value) == "schema check gracefully aborted"
    assert caught.value.version == 0
    assert sqlite_conn.execute("SELECT n FROM test").fetchall() == []
    assert schema_versions(sqlite_conn) == []


def test_check_error_rolls_back_and_surfaces(schema, sqlite_conn):
    def check(current, tx):
        tx.execute("CREATE TABLE test (n INTEGER)")
        raise Boom("check says no")

    schema.add(update_create_table)
    schema.check(check)

    with pytest.raises(Boom, match="check says no"):
        schema.ensure(sqlite_conn)
    assert not table_exists(sqlite_conn, "test")
    assert not table_exists(sqlite_conn, "schema")


def test_check_receives_the_current_version(schema, sqlite_conn):
    seen = []
    schema.add(update_noop)
    schema.ensure(sqlite_conn)
    schema.add(update_noop)
    schema.check(lambda current, tx: seen.append(current))

    schema.ensure(sqlite_conn)

    assert seen == [1]


# -- #54-#58 and §4.8 #68: the patch file -------------------------------------------------


def test_patch_file_runs_before_the_updates_and_is_removed(schema, fs, sqlite_conn):
    schema.add(update_insert_value)
    fs.files[PATCH] = b"CREATE TABLE test (id INTEGER);\n\tINSERT INTO test VALUES (2);\n\t"
    schema.file(PATCH)

    schema.ensure(sqlite_conn)

    assert PATCH not in fs.files
    assert ids_in_test_table(sqlite_conn) == [1, 2]


def test_patch_file_hook_gets_minus_one_before_the_file(schema, fs, sqlite_conn):
    schema.add(update_insert_value)
    fs.files[PATCH] = b"INSERT INTO test VALUES (2);"
    schema.file(PATCH)
    versions = []

    def hook(version, tx):
        versions.append(version)
        if version == -1:
            tx.execute("CREATE TABLE test (id INTEGER)")

    schema.hook(hook)

    schema.ensure(sqlite_conn)

    assert versions == [-1, 0]
    assert ids_in_test_table(sqlite_conn) == [1, 2]


def test_missing_patch_file_is_a_noop(schema, fs, sqlite_conn):
    schema.add(update_create_table)
    schema.file(PATCH)

    assert schema.ensure(sqlite_conn) == 0
    assert fs.opened == []
    assert schema_versions(sqlite_conn) == [1]


def test_garbage_patch_file_fails_changes_nothing_and_is_kept(schema, fs, sqlite_conn):
    schema.add(update_create_table)
    fs.files[PATCH] = b"SELECT FROM FROM"
    schema.file(PATCH)

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)

    assert str(caught.value) == f'failed to execute queries from "{PATCH}": near "FROM": syntax error'
    assert PATCH in fs.files
    assert not table_exists(sqlite_conn, "schema")


@pytest.mark.parametrize("step, message", [("open", "failed to open file"), ("read", "failed to read file")])
def test_patch_file_that_cannot_be_read_does_not_call_the_hook(schema, fs, sqlite_conn, step, message):
    fs.files[PATCH] = b"CREATE TABLE test (id INTEGER);"
    fs.fail[step] = OSError("permission denied")
    schema.file(PATCH)
    hook_calls = []
    schema.hook(lambda version, tx: hook_calls.append(version))

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)

    assert str(caught.value) == f'failed to execute queries from "{PATCH}": {message}: permission denied'
    assert hook_calls == []


def test_patch_file_hook_failure_skips_the_file_and_keeps_it(schema, fs, sqlite_conn):
    fs.files[PATCH] = b"CREATE TABLE test (id INTEGER);"
    schema.file(PATCH)
    schema.hook(lambda version, tx: (_ for _ in ()).throw(Boom()))

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)

    assert str(caught.value) == f'failed to execute queries from "{PATCH}": failed to execute hook: boom'
    assert not table_exists(sqlite_conn, "test")
    assert PATCH in fs.files


def test_patch_file_is_kept_when_the_transaction_rolls_back(schema, fs, sqlite_conn):
    # §4.8 #68: the seed removed the file before the commit, losing the repair SQL.
    fs.files[PATCH] = b"CREATE TABLE test (id INTEGER);"
    schema.file(PATCH)
    schema.add(update_boom)

    with pytest.raises(SchemaError, match="failed to apply update 0: boom"):
        schema.ensure(sqlite_conn)

    assert PATCH in fs.files
    assert not table_exists(sqlite_conn, "test")


def test_patch_file_is_removed_after_a_graceful_abort_commits_it(schema, fs, sqlite_conn):
    fs.files[PATCH] = b"CREATE TABLE test (id INTEGER);"
    schema.file(PATCH)
    schema.add(update_noop)
    schema.check(lambda current, tx: (_ for _ in ()).throw(GracefulAbort()))

    with pytest.raises(GracefulAbort):
        schema.ensure(sqlite_conn)

    assert PATCH not in fs.files
    assert table_exists(sqlite_conn, "test")


def test_patch_file_removal_failure_after_commit_is_reported(schema, fs, sqlite_conn):
    fs.files[PATCH] = b"CREATE TABLE test (id INTEGER);"
    fs.fail["remove"] = OSError("read-only file system")
    schema.file(PATCH)

    with pytest.raises(SchemaError) as caught:
        schema.ensure(sqlite_conn)

    assert str(caught.value) == (
        f'failed to execute queries from "{PATCH}": failed to remove file: read-only file system'
    )
    assert table_exists(sqlite_conn, "test")  # committed: the note tells the operator
    assert any("committed" in note for note in caught.value.__notes__)


# -- #59-#63 ---------------------------------------------------------------------------


def test_trim_keeps_the_first_updates_and_clears_fresh(schema, sqlite_conn):
    for update in (update_create_table, update_insert_value, update_noop, update_noop):
        schema.add(update)
    schema.fresh("garbage")

    trimmed = schema.trim(2)

    assert len(schema) == 2 and schema.len() == 2
    assert trimmed == [update_noop, update_noop]
    assert schema.ensure(sqlite_conn) == 0  # "garbage" would have failed
    assert schema_versions(sqlite_conn) == [1, 2]


def test_current_version_is_the_highest_recorded(sqlite_conn):
    Schema.empty(filesystem=MemoryFileSystem()).ensure(sqlite_conn)
    for version in (1, 2, 3):
        insert_version(sqlite_conn, version)

    with transaction(sqlite_conn) as tx:
        assert query_current_version(tx) == 3


def test_current_version_with_holes_is_an_error(sqlite_conn):
    Schema.empty(filesystem=MemoryFileSystem()).ensure(sqlite_conn)
    for version in (1, 3):
        insert_version(sqlite_conn, version)

    with pytest.raises(SchemaError, match=r"missing updates: 1 -> 3"):
        with transaction(sqlite_conn) as tx:
            query_current_version(tx)


def test_pending_update_gets_the_hook_with_version_zero_and_a_version_row():
    tx = ScriptedTx({STMT_INSERT_SCHEMA_VERSION: 1})
    hooks = []

    ensure_updates_are_applied(tx, 0, [update_noop], lambda version, tx: hooks.append(version))

    assert hooks == [0]
    assert tx.calls == [(STMT_INSERT_SCHEMA_VERSION, (1,))]


def test_current_beyond_the_updates_errors_before_any_hook():
    hooks = []
    with pytest.raises(SchemaError, match="schema version '2' is more recent than expected '1'"):
        ensure_updates_are_applied(ScriptedTx(), 2, [update_noop], lambda v, tx: hooks.append(v))
    assert hooks == []


def test_no_updates_means_nothing_happens():
    tx = ScriptedTx()
    ensure_updates_are_applied(tx, 0, [], None)
    assert tx.calls == []


def test_failed_version_insert_is_an_error():
    insert_error = sqlite3.OperationalError("disk full")
    tx = ScriptedTx({STMT_INSERT_SCHEMA_VERSION: insert_error})

    with pytest.raises(SchemaError) as caught:
        ensure_updates_are_applied(tx, 0, [update_noop], None)

    assert str(caught.value) == "failed to insert version 1"
    assert caught.value.__cause__ is insert_error


@pytest.mark.parametrize("count, exists", [(1, True), (0, False), (2, False)])
def test_schema_table_exists_only_for_a_count_of_one(count, exists):
    tx = ScriptedTx({SQLITE3.schema_table_exists_sql: [(count,)]})
    assert schema_table_exists(tx) is exists


def test_schema_table_exists_without_rows_is_an_error():
    tx = ScriptedTx({SQLITE3.schema_table_exists_sql: []})
    with pytest.raises(SchemaError, match="schema table query returned no rows"):
        schema_table_exists(tx)


def test_schema_table_exists_scan_error_is_an_error():
    tx = ScriptedTx({SQLITE3.schema_table_exists_sql: [(None,)]})
    with pytest.raises(SchemaError, match="failed to scan schema table count"):
        schema_table_exists(tx)


def test_from_map_with_a_gap_is_refused():
    with pytest.raises(ValueError, match="updates map misses version 2"):
        Schema.from_map({1: update_noop, 3: update_noop})


def test_from_map_orders_updates_by_version(sqlite_conn):
    schema = Schema.from_map({2: update_insert_value, 1: update_create_table}, filesystem=MemoryFileSystem())
    schema.ensure(sqlite_conn)
    assert ids_in_test_table(sqlite_conn) == [1]


def test_exercise_update_applies_up_to_the_version_only():
    schema = Schema([update_create_table, update_add_column, update_boom], filesystem=MemoryFileSystem())
    seen_before = []

    def hook(connection):
        seen_before.append([row[1] for row in connection.execute("PRAGMA table_info(test)")])

    connection, initial = schema.exercise_update(2, hook)

    assert initial == 0
    assert seen_before == [["id"]]  # the hook ran between update 1 and update 2
    assert schema_versions(connection) == [1, 2]
    connection.execute("SELECT id, name FROM test")


# -- transactions on each kind of connection ---------------------------------------------


@pytest.mark.parametrize("isolation_level", ["", "DEFERRED", None], ids=["default", "deferred", "autocommit"])
def test_ddl_rolls_back_in_every_sqlite3_transaction_mode(isolation_level):
    connection = sqlite3.connect(":memory:", isolation_level=isolation_level)
    schema = Schema([update_create_table, update_boom], filesystem=MemoryFileSystem())

    with pytest.raises(SchemaError):
        schema.ensure(connection)

    assert not table_exists(connection, "test")
    assert not table_exists(connection, "schema")
    assert connection.in_transaction is False


def test_connection_with_an_open_transaction_is_refused(sqlite_conn):
    sqlite_conn.execute("CREATE TABLE mine (id INTEGER)")
    sqlite_conn.execute("INSERT INTO mine VALUES (1)")  # legacy mode: opens a transaction

    with pytest.raises(TransactionStateError):
        Schema.empty(filesystem=MemoryFileSystem()).ensure(sqlite_conn)

    assert sqlite_conn.in_transaction  # the caller's work is neither committed nor lost


@pytest.mark.postgres
@pytest.mark.parametrize("autocommit", [False, True], ids=["pep249", "autocommit"])
def test_ddl_rolls_back_on_postgresql(pg_connect, autocommit):
    connection = pg_connect(autocommit=autocommit)
    schema = Schema([update_create_table, update_boom], filesystem=MemoryFileSystem())

    with pytest.raises(SchemaError, match="failed to apply update 1: boom"):
        schema.ensure(connection)

    assert not table_exists(connection, "test")
    assert not table_exists(connection, "schema")


@pytest.mark.postgres
def test_updates_and_versions_on_postgresql(pg_connect):
    connection = pg_connect()
    schema = Schema([update_create_table, update_insert_value], filesystem=MemoryFileSystem())

    assert schema.ensure(connection) == 0
    assert schema_versions(connection) == [1, 2]
    assert ids_in_test_table(connection) == [1]
    assert schema.ensure(connection) == 2


@pytest.mark.postgres
def test_dump_is_refused_on_postgresql(pg_connect):
    connection = pg_connect()
    schema = Schema([update_create_table], filesystem=MemoryFileSystem())
    schema.ensure(connection)

    with pytest.raises(SchemaError, match="dump needs a SQLite database"):
        schema.dump(connection)


@pytest.mark.postgres
def test_open_postgresql_transaction_is_refused(pg_connect):
    connection = pg_connect()
    connection.execute("SELECT 1")  # psycopg opened a transaction

    with pytest.raises(TransactionStateError):
        Schema.empty(filesystem=MemoryFileSystem()).ensure(connection)


needs_sqlite3_autocommit = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="sqlite3.connect(autocommit=...) is new in Python 3.12"
)


@needs_sqlite3_autocommit
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "pep249"])
def test_ddl_rolls_back_with_sqlite3_autocommit_attribute(tmp_path, autocommit):
    path = str(tmp_path / "ac.db")
    connection = sqlite3.connect(path, autocommit=autocommit)
    schema = Schema([update_create_table, update_boom], filesystem=MemoryFileSystem())

    with pytest.raises(SchemaError):
        schema.ensure(connection)

    observer = sqlite3.connect(path)
    assert not table_exists(observer, "test")
    assert not table_exists(observer, "schema")


@needs_sqlite3_autocommit
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "pep249"])
def test_updates_are_committed_with_sqlite3_autocommit_attribute(tmp_path, autocommit):
    path = str(tmp_path / "ac.db")
    connection = sqlite3.connect(path, autocommit=autocommit)
    schema = Schema([update_create_table, update_insert_value], filesystem=MemoryFileSystem())

    schema.ensure(connection)

    observer = sqlite3.connect(path)  # a second connection sees only committed data
    assert schema_versions(observer) == [1, 2]
    assert ids_in_test_table(observer) == [1]
