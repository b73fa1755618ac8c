"""Small fakes and database helpers shared by the cluster tests.

Fakes record what happened so that tests check outcomes (rows, files, errors); call order
is only recorded where the seed's order is itself the behaviour (§4.2 #8, §4.4 #28).
"""

from __future__ import annotations

import io
import sqlite3
from typing import Any, Callable

from django_dqcluster.cluster import FRESH_SCHEMA, Tx, transaction
from django_dqcluster.cluster.dialect import SQLITE3, Dialect

ADD_NODE = "INSERT INTO nodes(name, address, schema, api_extensions, pending) VALUES (?, ?, ?, ?, ?)"


# --------------------------------------------------------------------------------------
# Database helpers (any dialect)


def preload_fresh_schema(connection: Any) -> None:
    """The seed's integration-test database: schema table + FreshSchema (version 2)."""
    with transaction(connection) as tx:
        tx.execute(tx.dialect.create_schema_table_sql)
        tx.script(FRESH_SCHEMA)


def add_node(connection: Any, address: str, schema: int, api_extensions: int, *, pending: bool = False) -> None:
    with transaction(connection) as tx:
        tx.execute(ADD_NODE, (f"node at {address}", address, schema, api_extensions, int(pending)))


def node_version(connection: Any, address: str) -> tuple[int, int] | None:
    with transaction(connection, write=False) as tx:
        rows = tx.query("SELECT schema, api_extensions FROM nodes WHERE address = ?", (address,))
    return tuple(rows[0]) if rows else None


def node_rows(connection: Any) -> list[tuple]:
    with transaction(connection, write=False) as tx:
        return tx.query("SELECT id, name, address, schema, api_extensions FROM nodes ORDER BY id")


def schema_versions(connection: Any) -> list[int]:
    with transaction(connection, write=False) as tx:
        return [row[0] for row in tx.query("SELECT version FROM schema ORDER BY version")]


def table_exists(connection: Any, name: str) -> bool:
    with transaction(connection, write=False) as tx:
        if tx.dialect.name == "postgresql":
            rows = tx.query(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name = ?",
                (name,),
            )
        else:
            rows = tx.query("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return rows[0][0] == 1


def ids_in_test_table(connection: Any) -> list[int]:
    with transaction(connection, write=False) as tx:
        return [row[0] for row in tx.query("SELECT id FROM test ORDER BY id")]


# --------------------------------------------------------------------------------------
# Updates used by the schema engine tests (the seed's)


def update_noop(tx: Tx) -> None:
    pass


def update_create_table(tx: Tx) -> None:
    tx.execute("CREATE TABLE test (id INTEGER)")


def update_insert_value(tx: Tx) -> None:
    tx.execute("INSERT INTO test VALUES (1)")


def update_add_column(tx: Tx) -> None:
    tx.execute("ALTER TABLE test ADD COLUMN name TEXT")


class Boom(Exception):
    def __init__(self, message: str = "boom"):
        super().__init__(message)


def update_boom(tx: Tx) -> None:
    raise Boom()


# --------------------------------------------------------------------------------------
# Fakes


class MemoryFileSystem:
    """An in-memory FileSystem; ``fail[op] = exc`` makes operation ``op`` raise ``exc``."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = dict(files or {})
        self.fail: dict[str, BaseException] = {}
        self.copies: list[tuple[str, str]] = []
        self.opened: list[str] = []

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise self.fail[op]

    def exists(self, path: str) -> bool:
        return path in self.files

    def open(self, path: str):
        self._maybe_fail("open")
        self.opened.append(path)
        if "read" in self.fail:
            return _FailingReader(self.fail["read"])
        return io.BytesIO(self.files[path])

    def remove(self, path: str) -> None:
        self._maybe_fail("remove")
        del self.files[path]

    def copy_dir(self, source: str, destination: str) -> None:
        self._maybe_fail("copy_dir")
        self.copies.append((source, destination))


class _FailingReader(io.BytesIO):
    def __init__(self, error: BaseException):
        super().__init__(b"")
        self._error = error

    def read(self, *args):
        raise self._error


class Sleeper:
    """Records sleeps; ``on_sleep`` lets a test change the world between attempts."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None):
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self._on_sleep is not None:
            self._on_sleep(len(self.sleeps))


class ScriptedTx(Tx):
    """A Tx answering from a table ``{sql: answer}``; records every statement.

    An answer is the rows for ``query``, the row count for ``execute``, or an exception
    to raise. Unknown statements raise, so a test notices any query it did not expect.
    """

    def __init__(self, answers: dict[str, Any] | None = None, dialect: Dialect = SQLITE3):
        self.connection = None
        self.dialect = dialect
        self.cursor = None
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, Any]] = []

    def _answer(self, sql: str, params: Any) -> Any:
        self.calls.append((sql, params))
        for key, answer in self.answers.items():
            if key.strip() == sql.strip():
                if isinstance(answer, BaseException):
                    raise answer
                return answer
        raise AssertionError(f"unexpected statement: {sql!r}")

    def execute(self, sql: str, params: Any = None) -> int:
        return self._answer(sql, params)

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        return self._answer(sql, params)

    def script(self, sql: str) -> None:
        self._answer(sql, None)

    def close(self) -> None:
        pass


class FaultyConnection:
    """A real sqlite3 connection with chosen operations failing.

    ``fail_sql(sql) -> exception | None`` is asked before each statement; ``commit_errors``
    and ``rollback_errors`` are raised (first in, first out) instead of committing or
    rolling back. Everything else is delegated, so transactions really happen.
    """

    def __init__(
        self,
        real: sqlite3.Connection,
        *,
        fail_sql: Callable[[str], BaseException | None] | None = None,
        commit_errors: list[BaseException] | None = None,
        rollback_errors: list[BaseException] | None = None,
    ):
        self._real = real
        self._fail_sql = fail_sql or (lambda sql: None)
        self.commit_errors = list(commit_errors or [])
        self.rollback_errors = list(rollback_errors or [])
        self.commits = 0
        self.rollbacks = 0

    def cursor(self):
        return _FaultyCursor(self, self._real.cursor())

    def commit(self) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits += 1
        self._real.commit()

    def rollback(self) -> None:
        self.rollbacks += 1
        self._real.rollback()
        if self.rollback_errors:
            raise self.rollback_errors.pop(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _FaultyCursor:
    def __init__(self, owner: FaultyConnection, real: sqlite3.Cursor):
        self._owner = owner
        self._real = real

    def execute(self, sql: str, params: Any = ()) -> Any:
        error = self._owner._fail_sql(sql)
        if error is not None:
            raise error
        return self._real.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
