"""Fixtures for the cluster gate tests: sqlite3 and PostgreSQL connections.

PostgreSQL: one throwaway database per test session (uniquely named, dropped at the end)
and, per test, a throwaway schema namespace selected through ``search_path`` — creating a
database per test would cost more than the whole suite's budget. The server is
``DQCLUSTER_TEST_PG_DSN`` (default: 127.0.0.1:5432, user postgres, database ``test``);
the tests that need it are skipped, with the reason, only if it cannot be reached.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import uuid

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
# cluster_fakes lives next to the tests; the package itself is not installed in the venv,
# so make the repository root importable too (harmless if it already is).
for _path in (_HERE, os.path.dirname(os.path.dirname(_HERE))):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tests.services import service_unavailable  # noqa: E402 (needs the path above)

PG_ADMIN_DSN = os.environ.get(
    "DQCLUSTER_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


def _pg_dsn(dbname: str) -> str:
    parts = [p for p in PG_ADMIN_DSN.split() if not p.startswith("dbname=")]
    return " ".join(parts + [f"dbname={dbname}"])


@pytest.fixture(scope="session")
def pg_database():
    """Name of a PostgreSQL database created for this session and dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        service_unavailable(f"PostgreSQL unreachable at {PG_ADMIN_DSN!r}: {error}")
    name = f"dqcluster_cluster_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_connect(pg_database):
    """``connect(**kwargs)`` to a fresh, empty namespace of the session database."""
    import psycopg

    namespace = f"t_{uuid.uuid4().hex[:12]}"
    dsn = _pg_dsn(pg_database)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{namespace}"')
    connections = []

    def connect(**kwargs):
        connection = psycopg.connect(dsn, options=f"-c search_path={namespace}", **kwargs)
        connections.append(connection)
        return connection

    yield connect
    for connection in connections:
        connection.close()
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA "{namespace}" CASCADE')


@pytest.fixture
def sqlite_path(tmp_path):
    return str(tmp_path / "cluster.db")


@pytest.fixture
def sqlite_conn():
    """In-memory sqlite3 in its default (legacy) transaction mode."""
    connection = sqlite3.connect(":memory:")
    yield connection
    connection.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def connect(request, tmp_path):
    """``connect()`` to one test database, on sqlite3 (a file) and on PostgreSQL."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_connect")
    path = str(tmp_path / "gate.db")
    connections = []

    def connect_sqlite(**kwargs):
        # Concurrency tests use connections from worker threads; teardown closes here.
        kwargs.setdefault("check_same_thread", False)
        connection = sqlite3.connect(path, **kwargs)
        connections.append(connection)
        return connection

    request.addfinalizer(lambda: [c.close() for c in connections])
    return connect_sqlite


@pytest.fixture
def conn(connect):
    """A connection to the parametrized database (sqlite3 and PostgreSQL)."""
    return connect()
