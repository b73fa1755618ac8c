"""The schema engine: a database schema as an ordered list of updates.

Port of the seed's ``internal/db/schema`` (itself LXD's ``lxd/db/schema``). Update N
(1-based) moves the database from version N-1 to N; the versions applied so far are rows
of a ``schema`` table that the engine creates. ``Schema.ensure`` brings a database up to
``len(updates)`` in ONE transaction:

1. the patch file, if one exists (``hook(-1)`` first);
2. create the ``schema`` table if missing;
3. read the current version (versions must have no holes);
4. the check callback (it may raise ``GracefulAbort``: commit what was done, apply nothing);
5. the fresh schema when the database is empty and one is set, otherwise every pending
   update (``hook(version)`` before each, a version row after each);
6. the bootstrap callback if the database was empty.

Any other error rolls everything back, including the schema table's creation.

Deliberate differences from the seed (seed-behaviour.md §4.8):

* #68: the patch file is removed only after the transaction commits. The seed removed it
  before, so a rolled-back run lost the operator's repair SQL.
* #67: ``bootstrap(fn)`` runs inside the same transaction as the fresh schema, so a crash
  can no longer leave a schema with no initial node row (canonical/lxd#4808).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterable, Mapping

from .dialect import Dialect, dialect_for
from .errors import GracefulAbort, SchemaError, wrap
from .fs import FileSystem, RealFileSystem
from .sql import STMT_DUMP, STMT_INSERT_SCHEMA_VERSION, STMT_SELECT_SCHEMA_VERSIONS, STMT_SELECT_TABLE_SQL
from .tx import Tx, transaction

Update = Callable[[Tx], None]
Hook = Callable[[int, Tx], None]
Check = Callable[[int, Tx], None]
Bootstrap = Callable[[Tx], None]


# --------------------------------------------------------------------------------------
# Queries on the schema table


def schema_table_exists(tx: Tx) -> bool:
    """Is there a ``schema`` table? Exactly one match means yes (the seed's rule)."""
    rows = tx.query(tx.dialect.schema_table_exists_sql)
    if not rows:
        raise SchemaError("schema table query returned no rows")
    try:
        count = int(rows[0][0])
    except (TypeError, ValueError, IndexError) as error:
        raise wrap("failed to scan schema table count", error, SchemaError) from error
    return count == 1


def ensure_schema_table_exists(tx: Tx) -> None:
    try:
        exists = schema_table_exists(tx)
    except Exception as error:
        raise wrap("failed to check if schema table is there", error, SchemaError) from error
    if exists:
        return
    try:
        tx.execute(tx.dialect.create_schema_table_sql)
    except Exception as error:
        raise wrap("failed to create schema table", error, SchemaError) from error


def select_schema_versions(tx: Tx) -> list[int]:
    return [int(row[0]) for row in tx.query(STMT_SELECT_SCHEMA_VERSIONS)]


def check_versions_have_no_holes(versions: list[int]) -> None:
    """Each recorded version must be the previous one plus one."""
    for previous, following in zip(versions, versions[1:]):
        if following != previous + 1:
            raise SchemaError(f"missing updates: {previous} -> {following}")


def query_current_version(tx: Tx) -> int:
    """The highest version applied, 0 for none. Errors on holes."""
    try:
        versions = select_schema_versions(tx)
    except Exception as error:
        raise wrap("failed to fetch update versions", error, SchemaError) from error
    if not versions:
        return 0
    check_versions_have_no_holes(versions)
    return versions[-1]


def insert_schema_version(tx: Tx, version: int) -> None:
    tx.execute(STMT_INSERT_SCHEMA_VERSION, (version,))


def ensure_updates_are_applied(
    tx: Tx, current: int, updates: list[Update], hook: Hook | None
) -> None:
    """Apply ``updates[current:]`` in order; the numbers in errors are 0-based versions."""
    if current > len(updates):
        # A downgrade: the database knows updates this code does not.
        raise SchemaError(
            f"schema version '{current}' is more recent than expected '{len(updates)}'"
        )
    for update in updates[current:]:
        if hook is not None:
            try:
                hook(current, tx)
            except Exception as error:
                raise wrap(f"failed to execute hook (version {current})", error, SchemaError) from error
        try:
            update(tx)
        except Exception as error:
            raise wrap(f"failed to apply update {current}", error, SchemaError) from error
        current += 1
        try:
            insert_schema_version(tx, current)
        except Exception as error:
            # The seed's text has no cause in it; the cause stays chained for retries.
            raise SchemaError(f"failed to insert version {current}") from error


def check_all_updates_are_applied(tx: Tx, expected: int) -> None:
    """Dump precondition: versions 1..expected are all recorded."""
    try:
        versions = select_schema_versions(tx)
    except Exception as error:
        raise wrap("failed to fetch update versions", error, SchemaError) from error
    if not versions:
        raise SchemaError("expected schema table to contain at least one row")
    check_versions_have_no_holes(versions)
    if versions[-1] != expected:
        raise SchemaError(f"update level is {versions[-1]}, expected {expected}")


def select_tables_sql(tx: Tx) -> list[str]:
    return [row[0] for row in tx.query(STMT_SELECT_TABLE_SQL)]


def format_sql(statement: str) -> str:
    """One column definition per line; ``UNIQUE(a, b)`` lines are left alone."""
    lines = statement.split("\n")
    return "\n".join(
        line if "UNIQUE" in line else line.replace(", ", ",\n    ") for line in lines
    )


# --------------------------------------------------------------------------------------
# The engine


class Schema:
    """An ordered series of updates, plus the optional fresh dump, patch file, check,
    hook and bootstrap callbacks. Setters replace any previous value."""

    def __init__(self, updates: Iterable[Update] = (), *, filesystem: FileSystem | None = None):
        self._updates: list[Update] = list(updates)
        self._filesystem: FileSystem = filesystem if filesystem is not None else RealFileSystem()
        self._fresh = ""
        self._path = ""
        self._check: Check | None = None
        self._hook: Hook | None = None
        self._bootstrap: Bootstrap | None = None

    @classmethod
    def empty(cls, *, filesystem: FileSystem | None = None) -> "Schema":
        return cls((), filesystem=filesystem)

    @classmethod
    def from_map(cls, updates: Mapping[int, Update], *, filesystem: FileSystem | None = None) -> "Schema":
        """Build from ``{version: update}``; versions must be exactly 1..N (LXD NewFromMap)."""
        ordered = []
        for version in range(1, len(updates) + 1):
            if version not in updates:
                raise ValueError(f"updates map misses version {version}")
            ordered.append(updates[version])
        return cls(ordered, filesystem=filesystem)

    # -- configuration ------------------------------------------------------------------

    @property
    def updates(self) -> list[Update]:
        return list(self._updates)

    def add(self, update: Update) -> None:
        self._updates.append(update)

    def len(self) -> int:
        return len(self._updates)

    def __len__(self) -> int:
        return len(self._updates)

    def fresh(self, statement: str) -> None:
        """SQL that creates the whole schema at once on an empty database (see ``dump``)."""
        self._fresh = statement

    def file(self, path: str) -> None:
        """A file of extra SQL run at the very start of ``ensure`` if it exists."""
        self._path = path

    def check(self, check: Check) -> None:
        """Called with the current version before any update; may abort the ensure."""
        self._check = check

    def hook(self, hook: Hook) -> None:
        """Called before each update with the version it starts from (-1: patch file)."""
        self._hook = hook

    def bootstrap(self, bootstrap: Bootstrap) -> None:
        """Called, inside the ensure transaction, when the database had no schema yet."""
        self._bootstrap = bootstrap

    def trim(self, version: int) -> list[Update]:
        """Keep updates up to ``version``; return the rest. Clears the fresh dump."""
        trimmed = self._updates[version:]
        self._updates = self._updates[:version]
        self._fresh = ""
        return trimmed

    # -- ensure -------------------------------------------------------------------------

    def ensure(self, connection: Any, *, dialect: Dialect | None = None) -> int:
        """Bring the database up to date in one transaction; return the initial version.

        Raises ``GracefulAbort`` (with ``version``) after committing if the check asked
        for it; any other error leaves the database as it was.
        """
        abort: GracefulAbort | None = None
        with transaction(connection, dialect) as tx:
            patched = self._execute_patch_file(tx)
            ensure_schema_table_exists(tx)
            current = query_current_version(tx)
            try:
                if self._check is not None:
                    self._check(current, tx)
            except GracefulAbort as error:
                error.version = current
                abort = error
            else:
                self._apply(tx, current)
        if patched:
            self._remove_patch_file()
        if abort is not None:
            raise abort
        return current

    def _apply(self, tx: Tx, current: int) -> None:
        if current == 0 and self._fresh:
            try:
                tx.script(self._fresh)
            except Exception as error:
                raise wrap("cannot apply fresh schema", error, SchemaError) from error
        else:
            ensure_updates_are_applied(tx, current, self._updates, self._hook)
        if current == 0 and self._bootstrap is not None:
            self._bootstrap(tx)

    def _patch_error(self, error: BaseException) -> SchemaError:
        return wrap(f'failed to execute queries from "{self._path}"', error, SchemaError)

    def _execute_patch_file(self, tx: Tx) -> bool:
        """Run the patch file if there is one; True if it ran (and must be removed)."""
        if not self._path or not self._filesystem.exists(self._path):
            return False
        try:
            self._run_patch(tx)
        except Exception as error:
            raise self._patch_error(error) from error
        return True

    def _run_patch(self, tx: Tx) -> None:
        try:
            handle = self._filesystem.open(self._path)
        except Exception as error:
            raise wrap("failed to open file", error) from error
        with handle:
            try:
                content = handle.read()
            except Exception as error:
                raise wrap("failed to read file", error) from error
        if isinstance(content, bytes):
            content = content.decode("utf-8")
        if self._hook is not None:
            try:
                self._hook(-1, tx)
            except Exception as error:
                raise wrap("failed to execute hook", error) from error
        tx.script(content)

    def _remove_patch_file(self) -> None:
        try:
            self._filesystem.remove(self._path)
        except Exception as error:
            failure = self._patch_error(wrap("failed to remove file", error))
            failure.add_note(
                "the queries were committed; remove the file by hand or they run again"
            )
            raise failure from error

    # -- dump -----------------------------------------------------------------------------

    def dump(self, connection: Any, *, dialect: Dialect | None = None) -> str:
        """SQL that recreates the current schema in one go (a value for ``fresh``).

        Needs every update applied. SQLite only: it reads the tables' SQL back from
        ``sqlite_master``, which PostgreSQL does not keep.
        """
        dialect = dialect or dialect_for(connection)
        if not dialect.supports_dump:
            raise SchemaError(f"dump needs a SQLite database, not {dialect.name}")
        with transaction(connection, dialect, write=False) as tx:
            check_all_updates_are_applied(tx, len(self._updates))
            statements = select_tables_sql(tx)
        statements = [format_sql(statement) for statement in statements]
        statements.append(STMT_DUMP % len(self._updates))
        return ";\n".join(statements)

    # -- testing helper -----------------------------------------------------------------

    def exercise_update(
        self,
        version: int,
        hook: Callable[[Any], None] | None = None,
        *,
        connect: Callable[[], Any] = lambda: sqlite3.connect(":memory:"),
    ) -> tuple[Any, int]:
        """Apply updates 1..version-1 to a new database, run ``hook``, then update ``version``.

        For testing one update against data shaped like the previous version (LXD's
        ExerciseUpdate). Trims this schema to ``version``. Returns the connection and the
        initial version of the first ensure.
        """
        self.trim(version)
        update = self._updates.pop()
        connection = connect()
        initial = self.ensure(connection)
        if hook is not None:
            hook(connection)
        self.add(update)
        self.ensure(connection)
        return connection, initial


__all__ = [
    "Bootstrap",
    "Check",
    "GracefulAbort",
    "Hook",
    "Schema",
    "SchemaError",
    "Update",
    "check_all_updates_are_applied",
    "check_versions_have_no_holes",
    "ensure_schema_table_exists",
    "ensure_updates_are_applied",
    "format_sql",
    "query_current_version",
    "schema_table_exists",
]
