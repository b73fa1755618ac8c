"""Transient errors: the predicate (§4.7 #64) and the retry semantics (§4.8 #65)."""

from __future__ import annotations

import sqlite3

import pytest
from cluster_fakes import MemoryFileSystem, Sleeper, schema_versions

from django_dqcluster.cluster import (
    BasicAPIExtensions,
    Cluster,
    ClusterError,
    GracefulAbort,
    NodeBehindError,
    RetryPolicy,
    SchemaProvider,
    is_transient_error,
    retry,
)

# -- #64: is_transient_error -----------------------------------------------------------------


def test_nothing_and_generic_errors_are_not_transient():
    assert is_transient_error(None) is False
    assert is_transient_error(ValueError("nope")) is False
    assert is_transient_error(sqlite3.IntegrityError("UNIQUE constraint failed: nodes.address")) is False


@pytest.fixture
def locked_error(tmp_path):
    """A real SQLITE_BUSY from sqlite3: another connection holds the write lock."""
    path = str(tmp_path / "locked.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        return error
    finally:
        holder.close()
        other.close()
    raise AssertionError("expected the database to be locked")


def test_real_sqlite_busy_error_is_transient(locked_error):
    assert locked_error.sqlite_errorcode & 0xFF == 5  # SQLITE_BUSY
    assert is_transient_error(locked_error) is True


def test_busy_or_locked_error_codes_are_transient_whatever_the_message():
    error = sqlite3.OperationalError("database table is locked")
    error.sqlite_errorcode = 6  # SQLITE_LOCKED
    assert is_transient_error(error) is True


@pytest.mark.parametrize("message", ["database is locked", "driver: bad connection", "disk I/O error"])
def test_seed_messages_are_transient(message):
    assert is_transient_error(RuntimeError(message)) is True


def test_driver_error_marked_retryable_is_transient():
    class OperationalError(Exception):
        pass

    error = OperationalError("leadership lost")
    error.retryable = True
    assert is_transient_error(error) is True


def test_wrapped_transient_cause_is_transient():
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as cause:
            raise ClusterError("failed to apply update 0: it went wrong") from cause
    except ClusterError as error:
        assert is_transient_error(error) is True


def test_postgresql_serialization_failure_and_deadlock_are_transient():
    errors = pytest.importorskip("psycopg.errors")
    assert is_transient_error(errors.SerializationFailure("could not serialize")) is True
    assert is_transient_error(errors.DeadlockDetected("deadlock detected")) is True
    assert is_transient_error(errors.UniqueViolation("duplicate key")) is False


def test_postgresql_lost_connection_is_transient():
    psycopg = pytest.importorskip("psycopg")
    assert is_transient_error(psycopg.OperationalError("server closed the connection unexpectedly")) is True


@pytest.mark.postgres
def test_real_postgresql_serialization_failure_is_transient(pg_connect):
    import psycopg

    setup = pg_connect(autocommit=True)
    setup.execute("CREATE TABLE counter (n INTEGER)")
    setup.execute("INSERT INTO counter VALUES (0)")
    first, second = pg_connect(), pg_connect()
    for connection in (first, second):
        connection.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        connection.execute("SELECT n FROM counter").fetchall()
    first.execute("UPDATE counter SET n = n + 1")
    first.commit()

    with pytest.raises(psycopg.Error) as caught:
        second.execute("UPDATE counter SET n = n + 1")
    assert is_transient_error(caught.value) is True


# -- #65: retry ---------------------------------------------------------------------------------


class Flaky:
    """Raises the given errors in turn, then returns ``result``."""

    def __init__(self, *errors, result="done"):
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def locked():
    return sqlite3.OperationalError("database is locked")


def test_transient_error_is_retried_then_succeeds():
    fn, sleeper = Flaky(locked(), locked()), Sleeper()

    assert retry(fn, policy=RetryPolicy(attempts=5, delay=0.25), sleeper=sleeper) == "done"
    assert fn.calls == 3
    assert sleeper.sleeps == [0.25, 0.25]


def test_transient_error_is_never_reported_as_success():
    fn, sleeper = Flaky(*[locked() for _ in range(10)]), Sleeper()

    with pytest.raises(sqlite3.OperationalError, match="database is locked") as caught:
        retry(fn, policy=RetryPolicy(attempts=4, delay=0.1), sleeper=sleeper)

    assert fn.calls == 4
    assert sleeper.sleeps == [0.1] * 3
    assert "still failing after 4 attempts" in caught.value.__notes__


def test_non_transient_error_is_not_retried():
    fn, sleeper = Flaky(ValueError("bad sql")), Sleeper()
    with pytest.raises(ValueError):
        retry(fn, sleeper=sleeper)
    assert fn.calls == 1
    assert sleeper.sleeps == []


@pytest.mark.parametrize(
    "error",
    [GracefulAbort("database is locked"), NodeBehindError("database is locked")],
    ids=["graceful-abort", "gate-error"],
)
def test_gate_errors_and_graceful_aborts_are_never_retried(error):
    fn, sleeper = Flaky(error), Sleeper()
    with pytest.raises(type(error)):
        retry(fn, sleeper=sleeper)
    assert fn.calls == 1


def test_before_retry_runs_before_each_sleep():
    seen = []
    retry(Flaky(locked()), sleeper=Sleeper(), before_retry=seen.append)
    assert len(seen) == 1 and "locked" in str(seen[0])


def test_retry_policy_needs_an_attempt():
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


# -- #65 through ensure_schema -------------------------------------------------------------------


def test_ensure_schema_waits_out_a_locked_database_and_then_bootstraps(sqlite_path):
    holder = sqlite3.connect(sqlite_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is writing
    sleeper = Sleeper(on_sleep=lambda attempt: holder.execute("COMMIT") if attempt == 2 else None)
    connection = sqlite3.connect(sqlite_path, timeout=0)
    cluster = Cluster(
        BasicAPIExtensions(1), SchemaProvider(MemoryFileSystem()), database=connection, sleeper=sleeper
    )

    assert cluster.ensure_schema("1", "/d") is True
    assert len(sleeper.sleeps) == 2
    assert schema_versions(connection) == [2]


def test_ensure_schema_raises_when_the_database_stays_locked(sqlite_path):
    holder = sqlite3.connect(sqlite_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    connection = sqlite3.connect(sqlite_path, timeout=0)
    sleeper = Sleeper()
    cluster = Cluster(
        BasicAPIExtensions(1),
        SchemaProvider(MemoryFileSystem()),
        database=connection,
        sleeper=sleeper,
        retry_policy=RetryPolicy(attempts=3, delay=0.01),
    )

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        cluster.ensure_schema("1", "/d")

    assert len(sleeper.sleeps) == 2
    holder.execute("ROLLBACK")
    holder.close()
