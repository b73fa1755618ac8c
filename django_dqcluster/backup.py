"""Copy a database to a plain SQLite file, and a SQLite file into an empty database.

Replication is not a backup: a ``DROP TABLE`` or a bad migration reaches every
replica at once. :func:`backup` copies one database of the store, as of one
moment, into a new SQLite file on this host, which Django's sqlite3 backend
or the ``sqlite3`` shell can open as it is; :func:`restore` loads such a file
(or any SQLite database) into a database that has no tables yet, through the
store's ordinary write path, so every node gets it.

Both speak DB-API to a SQLite-dialect connection in autocommit mode (the
store's driver, or :mod:`sqlite3` with ``isolation_level=None``), with no
conversion of values by declared type: rows travel as SQLite stores them.
The store's own bookkeeping tables (``_dqcluster_*``) are neither copied nor
restored.

``backup`` reads inside one ``BEGIN DEFERRED`` transaction: on the store, as
in SQLite, its first read takes a snapshot that every later read sees, and it
takes no lock, so writers go on while a large database is copied (results come
a page at a time). The copy is written beside ``path`` and renamed once
complete: ``path`` holds a whole copy or is left as it was.

``restore`` creates the tables, loads their rows in transactions of about
``batch_bytes`` (each one log entry on the store), then the AUTOINCREMENT
counters (``sqlite_sequence``), indexes, triggers and views. Foreign keys are
off while it loads (tables come in creation order, not in dependency order) and
checked once at the end: what ``PRAGMA foreign_key_check`` finds is returned.
A restore that fails part way drops the tables (and views) it made, and the
database is empty as it was; where it cannot (the connection is gone), it says
which tables are left, and the next restore refuses until they are dropped.

A virtual table (FTS5, R*Tree) keeps its contents in ordinary "shadow" tables
that its module creates and reads (``docs_data``, ``docs_idx``... for an FTS5
table ``docs``). Both copies create the virtual table from its own SQL, empty
the shadow tables that made, and copy the shadow tables' rows as they are: a
full-text index comes across as it was, not rebuilt. Shadow tables are told
apart by ``PRAGMA table_list`` (SQLite 3.37 and later).
"""

import dataclasses
import os
import sqlite3

from .store.databases import INTERNAL_TABLE_PREFIX

DEFAULT_BATCH_BYTES = 1 << 20
FETCH_ROWS = 1000


class BackupError(Exception):
    """A backup or restore that cannot be done, or did not finish; the message says why, and what was left."""


class RestoreInterrupted(BackupError):
    """A restore failed part way; ``created`` names the tables it made and left (none once it dropped them)."""

    def __init__(self, message, created):
        super().__init__(message)
        self.created = created


@dataclasses.dataclass
class CopyReport:
    """What was copied: rows per table (shadow tables included), and the schema objects besides tables."""

    tables: dict = dataclasses.field(default_factory=dict)
    virtual_tables: int = 0
    indexes: int = 0
    triggers: int = 0
    views: int = 0
    foreign_key_violations: list = dataclasses.field(default_factory=list)

    @property
    def rows(self):
        return sum(self.tables.values())


def _quote(name):
    return '"' + name.replace('"', '""') + '"'


def _is_internal(name):
    return name.startswith("sqlite_") or name.startswith(INTERNAL_TABLE_PREFIX)


def _fetch_all(conn, sql, params=()):
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _is_virtual(sql):
    return sql.lstrip()[:14].upper().startswith("CREATE VIRTUAL")


def read_schema(conn):
    """[(kind, name, table, sql)] of the user's objects, in creation order.

    ``kind`` is sqlite_master's type ("table", "index", "trigger", "view"), except
    for a virtual table ("virtual") and the tables its module keeps its contents
    in ("shadow").
    """
    rows = _fetch_all(
        conn, "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
    )
    schema = [tuple(row) for row in rows if not _is_internal(row[1]) and not _is_internal(row[2])]
    virtual = [name for kind, name, _, sql in schema if kind == "table" and _is_virtual(sql)]
    if not virtual:
        return schema
    kinds = _table_kinds(conn, virtual[0])
    return [(kinds.get(name, kind) if kind == "table" else kind, name, table, sql)
            for kind, name, table, sql in schema]


def _table_kinds(conn, virtual):
    """{table: "table" | "virtual" | "shadow"} of the main database, from ``PRAGMA table_list``.

    ``virtual`` names a virtual table, for the error on a SQLite too old to tell.
    """
    needs = (f"table {virtual!r} is a virtual table; copying one needs SQLite 3.37 or later "
             "(PRAGMA table_list, to tell its shadow tables apart)")
    try:
        listed = _fetch_all(conn, "PRAGMA table_list")
    except Exception as error:  # noqa: BLE001 - any driver's error: the pragma is what is missing
        raise BackupError(f"{needs}, and this SQLite refused it ({error})") from None
    if not listed:  # SQLite ignores a pragma it does not know
        raise BackupError(f"{needs}, and this SQLite is older")
    return {name: kind for schema, name, kind, *_ in listed if schema == "main"}


def stored_columns(conn, table):
    """The columns a row of ``table`` stores (generated columns are computed, not copied)."""
    # table_xinfo's "hidden": 0 an ordinary column, 2 and 3 generated ones.
    return [row[1] for row in _fetch_all(conn, f"PRAGMA table_xinfo({_quote(table)})") if row[6] == 0]


def _copy_rows(source, table, columns, write_batch, batch_bytes):
    """Read ``table`` from ``source`` a page at a time; hand batches of about ``batch_bytes`` on.

    ``write_batch(rows, first)`` is called at least once, with ``first`` true
    the first time (with no rows for an empty table).
    """
    column_list = ", ".join(_quote(column) for column in columns)
    cursor = source.cursor()
    copied = 0
    try:
        cursor.execute(f"SELECT {column_list} FROM {_quote(table)}")
        batch, size = [], 0
        while True:
            rows = cursor.fetchmany(FETCH_ROWS)
            for row in rows:
                batch.append(tuple(row))
                size += sum(len(value) if isinstance(value, (str, bytes)) else 8 for value in row)
                if size >= batch_bytes:
                    write_batch(batch, copied == 0)
                    copied += len(batch)
                    batch, size = [], 0
            if len(rows) < FETCH_ROWS:
                break
        if batch or copied == 0:
            write_batch(batch, copied == 0)
            copied += len(batch)
    finally:
        cursor.close()
    return copied


def _insert_sql(table, columns):
    placeholders = ", ".join("?" for _ in columns)
    return f"INSERT INTO {_quote(table)} ({', '.join(_quote(c) for c in columns)}) VALUES ({placeholders})"


def _sequences(conn):
    """The AUTOINCREMENT counters (rows of sqlite_sequence, which exists once such a table does)."""
    if not _fetch_all(conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"):
        return []
    return [tuple(row) for row in _fetch_all(conn, "SELECT name, seq FROM sqlite_sequence") if not _is_internal(row[0])]


def _write_sequences(write_batch, sequences):
    """Replace the counters that creating and filling the tables left with the source's."""
    if sequences:
        write_batch("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", sequences, "DELETE FROM sqlite_sequence")


def backup(source, path, *, progress=None):
    """Copy ``source``'s database, as of one moment, into a new SQLite file at ``path``.

    ``progress(table, rows, done)`` is called after each batch of rows (``done``
    false, ``rows`` so far) and once each table is copied. Returns a :class:`CopyReport`.
    """
    partial = f"{path}.partial"
    if os.path.exists(partial):
        os.remove(partial)
    target = sqlite3.connect(partial, isolation_level=None)
    report = CopyReport()

    def write_batch(sql, batch, before):  # one transaction on the new file: its batches need no more
        if before is not None:
            target.execute(before)
        target.executemany(sql, batch)

    try:
        target.execute("PRAGMA journal_mode = OFF")  # a new file nobody else reads until it is renamed
        target.execute("BEGIN")
        source.execute("BEGIN DEFERRED")
        try:
            schema = read_schema(source)
            _copy_tables(source, target, schema, write_batch, DEFAULT_BATCH_BYTES, report, progress, [])
            sequences = _sequences(source)
        finally:
            source.execute("ROLLBACK")  # it only read
        _write_sequences(write_batch, sequences)
        _create_others(target, schema, report)
        target.execute("COMMIT")
    except BaseException:
        target.close()
        os.remove(partial)
        raise
    target.close()
    os.replace(partial, path)
    return report


def _copy_tables(source, target, schema, write_batch, batch_bytes, report, progress, created):
    """Create the tables of ``schema`` in ``target`` (appending each to ``created``), then copy their rows.

    ``write_batch(sql, rows, before)`` runs ``before`` (if not None), then
    ``sql`` once per row in ``rows``, about ``batch_bytes`` at a time.
    """
    for kind, name, _, sql in schema:
        if kind in ("table", "virtual"):  # a virtual table creates its shadow tables itself
            target.execute(sql)
            created.append(name)
    report.virtual_tables = sum(1 for kind, *_ in schema if kind == "virtual")
    shadows = [name for kind, name, _, _ in schema if kind == "shadow"]
    if shadows:
        _check_shadow_tables(target, next(name for kind, name, _, _ in schema if kind == "virtual"), shadows)
    for kind, name, _, _ in schema:
        if kind not in ("table", "shadow"):
            continue
        columns = stored_columns(source, name)
        insert = _insert_sql(name, columns)
        # What creating the virtual table wrote into a shadow table (an FTS5
        # table's version row, say) goes in the same transaction as the first
        # rows copied in: a restore that stops in between leaves a virtual
        # table whose module can still open it, so that it can be dropped.
        empty = f"DELETE FROM {_quote(name)}" if kind == "shadow" else None

        written = [0]

        def write(batch, first, insert=insert, empty=empty, name=name, written=written):
            before = empty if first else None
            if batch or before:
                write_batch(insert, batch, before)
            written[0] += len(batch)
            if progress is not None and batch:
                progress(name, written[0], False)

        report.tables[name] = _copy_rows(source, name, columns, write, batch_bytes)
        if progress is not None:
            progress(name, report.tables[name], True)


def _check_shadow_tables(target, virtual, shadows):
    """The shadow tables creating the virtual tables made here must be the source's.

    Another SQLite could lay a module's contents out differently, and rows
    copied into that would be garbage to it.
    """
    made = sorted(name for name, kind in _table_kinds(target, virtual).items() if kind == "shadow")
    if made != sorted(shadows):
        raise BackupError(
            f"the virtual tables' modules here made the shadow tables {', '.join(made) or 'none'}, but the "
            f"source has {', '.join(sorted(shadows))}: the two SQLite libraries store them differently"
        )


def _create_others(conn, schema, report, views=None):
    """Indexes, triggers and views, once the rows are in (faster, and triggers must not fire on them).

    The name of each view made is appended to ``views`` (indexes and triggers go with their tables).
    """
    counters = {"index": "indexes", "trigger": "triggers", "view": "views"}
    for kind, name, _, sql in schema:
        if kind in counters:
            conn.execute(sql)
            setattr(report, counters[kind], getattr(report, counters[kind]) + 1)
            if kind == "view" and views is not None:
                views.append(name)


def user_tables(conn):
    """The tables a user made: ordinary and virtual (a virtual table's shadow tables go with it)."""
    return [name for kind, name, _, _ in read_schema(conn) if kind in ("table", "virtual")]


def restore(target, path, *, batch_bytes=DEFAULT_BATCH_BYTES, progress=None, keep_partial=False):
    """Load the SQLite file at ``path`` into ``target``'s database, which must have no tables.

    ``progress(table, rows, done)`` is called after each batch of rows (``done``
    false, ``rows`` so far) and once each table is loaded. Returns a :class:`CopyReport`
    whose ``foreign_key_violations`` lists what ``PRAGMA foreign_key_check`` found.
    A restore that fails part way drops what it made, leaving the database empty
    as it found it, unless ``keep_partial``; it raises :class:`RestoreInterrupted`.
    """
    if not os.path.isfile(path):
        raise BackupError(f"{path} is not a file")
    source = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True, isolation_level=None)
    try:
        try:
            schema = read_schema(source)
        except sqlite3.DatabaseError as error:
            raise BackupError(f"{path} is not a SQLite database ({error})") from None
        existing = user_tables(target)
        if existing:
            shown = ", ".join(existing[:10]) + (f" and {len(existing) - 10} more" if len(existing) > 10 else "")
            raise BackupError(
                f"the database already has {len(existing)} table(s) ({shown}); restore only into an empty "
                "database (drop those tables first, or restore under another NAME)"
            )
        return _load(source, target, schema, batch_bytes, progress, keep_partial)
    finally:
        source.close()


def _load(source, target, schema, batch_bytes, progress, keep_partial):
    report = CopyReport()
    created, views = [], []
    (foreign_keys,) = _fetch_all(target, "PRAGMA foreign_keys")[0]
    target.execute("PRAGMA foreign_keys = OFF")

    def write_batch(sql, batch, before):  # one transaction, one log entry on the store
        target.execute("BEGIN")
        try:
            if before is not None:
                target.execute(before)
            target.executemany(sql, batch)
        except BaseException:
            try:
                target.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - a lost connection rolled it back; report the first error
                pass
            raise
        target.execute("COMMIT")

    try:
        _copy_tables(source, target, schema, write_batch, batch_bytes, report, progress, created)
        _write_sequences(write_batch, _sequences(source))
        _create_others(target, schema, report, views)
        report.foreign_key_violations = [tuple(row) for row in _fetch_all(target, "PRAGMA foreign_key_check")]
    except Exception as error:
        raise _interrupted(target, error, created, views, keep_partial) from error
    finally:
        try:
            target.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        except Exception:  # noqa: BLE001 - the connection may be the reason we stopped
            pass
    return report


def _interrupted(target, error, created, views, keep_partial):
    """The error of a restore that stopped, once what it made is dropped (foreign keys still off)."""
    stopped = f"the restore stopped ({type(error).__name__}: {error})"
    if keep_partial or not (created or views):
        return RestoreInterrupted(
            f"{stopped}; it had created {len(created)} table(s): {', '.join(created) or 'none'}. "
            "Drop them before restoring again.", created,
        )
    left = list(created)
    try:
        for view in reversed(views):
            target.execute(f"DROP VIEW IF EXISTS {_quote(view)}")
        while left:
            target.execute(f"DROP TABLE IF EXISTS {_quote(left[-1])}")
            left.pop()
    except Exception as drop_error:  # noqa: BLE001 - the connection is likely what stopped the restore
        return RestoreInterrupted(
            f"{stopped}; dropping the tables it had created failed too ({type(drop_error).__name__}: "
            f"{drop_error}): drop {', '.join(left)} before restoring again.", left,
        )
    return RestoreInterrupted(
        f"{stopped}; the {len(created)} table(s) it had created were dropped again: the database is empty, "
        "as it was.", [],
    )
