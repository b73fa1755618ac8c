"""Fixtures for the Django gate tests: simulated hosts sharing one database.

A *host* is a process running ``python -m django …`` with the settings of
``tests/gate/settings.py`` and its own environment (code version, address, API
extensions). Nothing here configures Django in the pytest process, so these tests run
next to the other test directories (which do not use Django, or configure it their own
way) under one plain ``python -m pytest``.

Databases: a SQLite file per test, and for PostgreSQL a uniquely named database per test
(created from the ``test`` database on 127.0.0.1:5432, dropped afterwards; tests are
skipped, with the reason, if the server cannot be reached).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid

import pytest

from tests.services import service_unavailable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG_ADMIN_DSN = os.environ.get("DQCLUSTER_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
HOST_TIMEOUT = 60


def _pg_params():
    params = dict(part.split("=", 1) for part in PG_ADMIN_DSN.split())
    return params


class SharedDatabase:
    """The database every simulated host of one test uses, plus direct SQL on it."""

    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.name}"

    def env(self) -> dict:
        env = {"DQ_GATE_DB": self.spec}
        if self.kind == "postgres":
            params = _pg_params()
            env.update(
                DQ_GATE_PG_HOST=params.get("host", "127.0.0.1"),
                DQ_GATE_PG_PORT=params.get("port", "5432"),
                DQ_GATE_PG_USER=params.get("user", "postgres"),
            )
        return env

    def query(self, sql: str, params=()) -> list[tuple]:
        """Run one statement (``?`` placeholders) and return its rows; commits."""
        if self.kind == "sqlite":
            connection = sqlite3.connect(self.name, timeout=20)
            try:
                cursor = connection.execute(sql, params)
                rows = cursor.fetchall()
                connection.commit()
                return rows
            finally:
                connection.close()
        import psycopg

        dsn = " ".join(p for p in PG_ADMIN_DSN.split() if not p.startswith("dbname=")) + f" dbname={self.name}"
        with psycopg.connect(dsn, autocommit=True) as connection:
            cursor = connection.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def table_exists(self, table: str) -> bool:
        if self.kind == "sqlite":
            return bool(self.query("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?", (table,))[0][0])
        return bool(
            self.query(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='public' AND table_name=?",
                (table,),
            )[0][0]
        )

    def node_rows(self) -> dict[str, tuple[int, int]]:
        return {a: (s, e) for a, s, e in self.query("SELECT address, schema, api_extensions FROM nodes ORDER BY id")}


class Host:
    """One simulated host: a code version, an address and API extensions."""

    def __init__(self, db: SharedDatabase, address: str, version: str = "v1", api=(), extra_env=None):
        self.db = db
        self.address = address
        self.version = version
        self.api = list(api)
        self.extra_env = dict(extra_env or {})

    def upgraded(self, version: str = "v2", api=None) -> "Host":
        """The same host after a code upgrade."""
        return Host(self.db, self.address, version, self.api if api is None else api, self.extra_env)

    def env(self) -> dict:
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(self.db.env())
        env.update(
            DJANGO_SETTINGS_MODULE="tests.gate.settings",
            PYTHONPATH=REPO_ROOT + os.pathsep + env.get("PYTHONPATH", ""),
            DQ_GATE_VERSION=self.version,
            DQ_GATE_NODE=self.address,
            DQ_GATE_API=",".join(self.api),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "django", *args]

    def run(self, *args: str, expect: int | None = 0, timeout: float = HOST_TIMEOUT) -> subprocess.CompletedProcess:
        """Run a management command as this host; check the exit code unless ``expect`` is None."""
        process = subprocess.run(
            self.argv(*args), cwd=REPO_ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if expect is not None and process.returncode != expect:
            raise AssertionError(
                f"{self.address} ({self.version}) {' '.join(args)}: exit {process.returncode}, expected {expect}\n"
                f"--- stdout\n{process.stdout}\n--- stderr\n{process.stderr}"
            )
        return process

    def start(self, *args: str, extra_env=None) -> subprocess.Popen:
        env = self.env()
        env.update(extra_env or {})
        return subprocess.Popen(
            self.argv(*args), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def gate_json(self, *extra: str, expect: int | None = None) -> dict:
        process = self.run("ensure_cluster_schema", "--json", *extra, expect=expect)
        return json.loads(process.stdout)

    def shell(self, code: str, expect: int | None = 0) -> subprocess.CompletedProcess:
        return self.run("shell", "-c", code, expect=expect)


@pytest.fixture
def sqlite_db(tmp_path):
    return SharedDatabase("sqlite", str(tmp_path / "shared.sqlite3"))


@pytest.fixture(scope="session")
def pg_admin():
    psycopg = pytest.importorskip("psycopg")
    try:
        connection = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        service_unavailable(f"PostgreSQL unreachable at {PG_ADMIN_DSN!r}: {error}")
    yield connection
    connection.close()


@pytest.fixture
def pg_db(pg_admin):
    name = f"dqgate_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield SharedDatabase("postgres", name)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def shared_db(request):
    """The shared database of the simulated hosts, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_db")
    return request.getfixturevalue("pg_db")
