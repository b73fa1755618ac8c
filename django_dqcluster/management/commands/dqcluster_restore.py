"""``manage.py dqcluster_restore PATH``: load a SQLite file into an empty database.

The file is what ``dqcluster_backup`` wrote, or any SQLite database (a project
moving from Django's sqlite3 backend onto the store restores its ``db.sqlite3``).
Its rows go through the store's ordinary write path, in transactions of about
a megabyte, so every node gets them. The target database must have no tables;
a restore that stops part way drops what it made (``--keep-partial`` keeps it).
"""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from ... import gate
from ...backup import DEFAULT_BATCH_BYTES, BackupError, restore
from .dqcluster_backup import copy_connection, describe, table_progress


class Command(BaseCommand):
    help = "Load a SQLite file (a dqcluster_backup, or any SQLite database) into an empty database."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", help="The SQLite file to load.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help='The database alias to load it into (default: "default"); it must have no tables.')
        parser.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES,
                            help="About how many bytes of rows each transaction carries (default 1 MiB).")
        parser.add_argument("--keep-partial", action="store_true",
                            help="If the restore stops part way, keep the tables it made instead of dropping them.")

    def handle(self, *args, **options):
        alias, path, verbosity = options["database"], options["path"], options["verbosity"]
        if options["batch_bytes"] < 1:
            raise CommandError(f"--batch-bytes must be positive, not {options['batch_bytes']}")
        raw = copy_connection(alias)
        name = connections[alias].settings_dict.get("NAME")
        if verbosity >= 1:
            self.stdout.write(f"Loading {path} into database {name!r} (alias {alias!r})...")

        started = time.monotonic()
        try:
            report = restore(raw, path, batch_bytes=options["batch_bytes"], progress=table_progress(self, verbosity),
                             keep_partial=options["keep_partial"])
        except BackupError as error:
            raise CommandError(f"restore into {alias!r} failed: {error}") from None
        finally:
            raw.close()
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(
                f"Restored {describe(report)} in {time.monotonic() - started:.1f}s."
            ))
        for violation in report.foreign_key_violations:
            table, rowid, parent, _ = violation
            self.stderr.write(self.style.WARNING(
                f"  foreign key violation (the file had it too): {table} row {rowid} refers to a missing {parent} row"
            ))
        self.report_members(alias)

    def report_members(self, alias):
        """The file's version-gate members: hosts of wherever it came from, maybe not of this deployment."""
        if not gate.cluster_tables_exist(alias):
            return
        members = gate.read_members(alias)
        if not members:
            return
        self.stdout.write(
            f"The restored database lists {len(members)} cluster member(s) in its version-gate table: "
            + ", ".join(f"{address} ({version.schema}, {version.api_extensions})" for address, version, _ in members)
        )
        self.stdout.write(
            "  If some are not hosts of this deployment, the gate waits for them: remove each with "
            "`manage.py ensure_cluster_schema --remove-member ADDRESS`."
        )
