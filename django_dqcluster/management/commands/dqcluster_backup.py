"""``manage.py dqcluster_backup PATH``: copy a database, as of one moment, into a SQLite file.

Online: the copy reads one snapshot (a ``BEGIN DEFERRED`` transaction that
takes no lock), so the site keeps writing meanwhile. The file is a plain
SQLite database (Django's sqlite3 backend and the ``sqlite3`` shell open it)
and ``dqcluster_restore`` loads it into an empty database, on this cluster or
another. Works for Django's sqlite3 backend too; PostgreSQL has pg_dump.
"""

import os
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from ...backup import BackupError, backup
from ...gate import DQCLUSTER_ENGINE
from .ensure_cluster_schema import check_alias


def copy_connection(alias):
    """A new DB-API connection of ``alias`` for copying: autocommit, values as stored, strong reads."""
    check_alias(alias)
    connection = connections[alias]
    if connection.vendor != "sqlite":
        raise CommandError(
            f"database {alias!r} is {connection.vendor}, not SQLite or the dqcluster store: use its own "
            "tools (pg_dump and pg_restore for PostgreSQL)"
        )
    params = connection.get_connection_params()
    params["detect_types"] = 0  # rows travel as SQLite stores them, not converted to Python dates
    if connection.settings_dict.get("ENGINE") == DQCLUSTER_ENGINE:
        params["consistency"] = "strong"  # a backup misses no acknowledged write
        params.pop("local_reads", None)
    raw = connection.get_new_connection(params)
    raw.isolation_level = None
    return raw


PROGRESS_EVERY = 5.0  # seconds between two "so far" lines of a large table


def table_progress(command, verbosity, clock=time.monotonic):
    """What the copy calls after each batch and table.

    Verbosity 2: a line per table. Verbosity 1 and up: a line every few seconds
    while a large table is copied, so that a long copy is seen to move.
    """
    last = [clock()]

    def progress(table, rows, done):
        now = clock()
        if done:
            if verbosity >= 2:
                command.stdout.write(f"  {table}: {rows:,} row(s)")
        elif verbosity >= 1 and now - last[0] >= PROGRESS_EVERY:
            command.stdout.write(f"  {table}: {rows:,} row(s) so far...")
        else:
            return
        last[0] = now

    return progress


def describe(report):
    # A virtual table's rows are counted in its shadow tables, which count as tables here.
    virtual = f"{report.virtual_tables} virtual table(s), " if report.virtual_tables else ""
    return (f"{len(report.tables)} table(s), {virtual}{report.rows:,} row(s), {report.indexes} index(es), "
            f"{report.triggers} trigger(s), {report.views} view(s)")


class Command(BaseCommand):
    help = "Copy a database, as of one moment and without stopping writers, into a new SQLite file."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", help="The SQLite file to write (replaced only once the copy is whole).")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help='The database alias to copy (default: "default").')

    def handle(self, *args, **options):
        alias, path, verbosity = options["database"], options["path"], options["verbosity"]
        if os.path.isdir(path):
            raise CommandError(f"{path} is a directory; name the file to write")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise CommandError(f"cannot write {path}: no directory {directory}")
        raw = copy_connection(alias)
        name = connections[alias].settings_dict.get("NAME")
        if verbosity >= 1:
            self.stdout.write(f"Copying database {name!r} (alias {alias!r}) to {path}, as of one moment...")

        started = time.monotonic()
        try:
            report = backup(raw, path, progress=table_progress(self, verbosity))
        except BackupError as error:
            raise CommandError(f"backup of {alias!r} failed: {error}; {path} was not written") from None
        finally:
            raw.close()
        if verbosity >= 1:
            size = os.path.getsize(path)
            self.stdout.write(self.style.SUCCESS(
                f"Wrote {path}: {describe(report)}, {size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s."
            ))
