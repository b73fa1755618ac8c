"""``manage.py ensure_cluster_schema``: pass the cluster version gate (the seed's EnsureSchema).

Writes this host's version row (creating the cluster tables on first use) and reports
what the gate decided, with every member's version:

* exit 0: ready, every member runs this host's version;
* exit 3: waiting, some members run an older version (each one is named with its
  version); nothing is applied. ``--wait`` re-checks with exponential backoff until
  ready or ``--timeout``;
* exit 2: refused, this host is behind ("this node's version is behind, please
  upgrade") or the versions are inconsistent;
* exit 1: any other error (database unreachable, corrupt nodes table, ...).

``--remove-member ADDRESS`` is the escape hatch for a dead member that everyone else
waits for: it deletes that member's row first (it refuses to remove this host's).

It never migrates: that is ``manage.py migrate``'s job, which runs the same gate.
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import Error as DBError  # DatabaseError and InterfaceError (a client the store refused)

from ... import gate
from ...cluster import ClusterError


def format_age(seconds):
    seconds = int(max(seconds, 0))
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 5400:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


class GateReporter:
    """Prints gate results and wait progress for a command, honouring verbosity.

    Shared by ``ensure_cluster_schema`` and ``migrate`` so both say the same things.
    """

    def __init__(self, command, verbosity=1, stream=None):
        self.command = command
        self.verbosity = verbosity
        self.out = stream if stream is not None else command.stdout
        self.style = command.style
        self._last_waiting = None

    def write(self, text, style=None, ending="\n"):
        self.out.write(style(text) if style else text, ending=ending)

    def heading(self, result):
        if self.verbosity >= 1:
            self.write(
                f"Cluster gate (database {result.alias!r}, this host {result.address}: {result.ours}):",
                self.style.MIGRATE_HEADING,
            )

    def members(self, result, force=False):
        if self.verbosity >= 2 or (force and self.verbosity >= 1):
            now = result.checked_at or gate.utc_now()
            for member, line in zip(result.members, result.member_lines()):
                age = f", heartbeat {format_age((now - member.heartbeat).total_seconds())} ago" if member.heartbeat else ""
                self.write(f"  {line}{age}")

    def result(self, result):
        """The full report of one decision."""
        if self.verbosity < 1:
            return
        self.heading(result)
        if result.skipped:
            self.write("  " + result.message, self.style.WARNING)
            return
        if result.bootstrapped:
            self.write("  Created the cluster tables; this host is the first member.")
        elif result.registered:
            self.write("  Registered this host as a new member.")
        if result.status is gate.GateStatus.READY:
            self.write("  " + result.message, self.style.SUCCESS)
            self.members(result)
        elif result.status is gate.GateStatus.WAITING:
            self.waiting_lines(result)
            self.members(result, force=True)
        else:
            self.write("  " + result.message, self.style.ERROR)
            if result.reason == "behind":
                self.write("  Upgrade this host's code to the members' version, then run this again.")
            else:
                self.write("  No upgrade order can reconcile these versions: check which release each member runs.")
            self.members(result, force=True)

    def waiting_lines(self, result):
        now = result.checked_at or gate.utc_now()
        for member in result.waiting_for:
            line = f"  Waiting for {member.address} ({member.version}) to upgrade to {result.ours}"
            style = self.style.WARNING
            if member.heartbeat is not None:
                age = (now - member.heartbeat).total_seconds()
                line += f"; its last heartbeat was {format_age(age)} ago"
                if gate.heartbeat_is_stale(member.heartbeat, now):
                    line += (
                        ". If that member is dead, remove it: manage.py ensure_cluster_schema "
                        f"--remove-member {member.address}"
                    )
                    style = self.style.ERROR
            self.write(line, style)

    def progress(self, progress):
        """One line per re-check while waiting (more with verbosity 2)."""
        if self.verbosity < 1:
            return
        result = progress.result
        if progress.error is not None:
            self.write(f"  Check {progress.attempt}: database unavailable ({progress.error}); retrying", self.style.WARNING)
        elif result is not None and result.status is gate.GateStatus.WAITING:
            behind = tuple((m.address, m.version) for m in result.waiting_for)
            changed = behind != self._last_waiting
            self._last_waiting = behind
            if changed or self.verbosity >= 2:
                if progress.attempt == 1:
                    self.heading(result)
                self.waiting_lines(result)
            if progress.next_check_in is not None:
                self.write(
                    f"  Check {progress.attempt} after {format_age(progress.elapsed)}: still waiting; "
                    f"next check in {progress.next_check_in:.0f}s",
                )
            else:
                self.write(f"  Gave up after {format_age(progress.elapsed)} ({progress.attempt} checks).", self.style.ERROR)
        elif result is not None:
            self.write(f"  Check {progress.attempt} after {format_age(progress.elapsed)}: {result.status.value}")


def check_alias(alias):
    if alias not in connections:
        known = ", ".join(sorted(connections)) or "(none)"
        raise CommandError(f"Unknown database alias {alias!r}; settings.DATABASES has: {known}")


def cluster_error(error):
    """A library error as a CommandError with the operator's details (exit 1)."""
    report = error.report() if isinstance(error, ClusterError) else str(error)
    return CommandError(f"cluster gate failed: {report}", returncode=1)


class Command(BaseCommand):
    help = (
        "Pass the cluster version gate: write this host's version row and report whether "
        "every member runs the same version (exit 0), some members are behind and this "
        "host waits (exit 3), or this host is refused (exit 2: behind, please upgrade; or "
        "inconsistent versions)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='Database alias whose cluster gate to run. Defaults to the "default" database.',
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="While members are behind, re-check with exponential backoff until ready or --timeout.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=300.0,
            help="Seconds --wait waits at most (default 300).",
        )
        parser.add_argument("--json", action="store_true", help="Print the result as JSON on stdout.")
        parser.add_argument(
            "--remove-member",
            action="append",
            default=[],
            metavar="ADDRESS",
            help="Remove a dead member's row before the check (repeatable). Never this host's own row.",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation before --remove-member.",
        )

    def handle(self, *args, **options):
        alias = options["database"]
        check_alias(alias)
        timeout = options["timeout"]
        if not timeout > 0:
            raise CommandError(f"--timeout must be a positive number of seconds, not {timeout}")
        verbosity = options["verbosity"]
        as_json = options["json"]
        # With --json, stdout carries only the JSON document; progress goes to stderr.
        reporter = GateReporter(self, verbosity, stream=self.stderr if as_json else self.stdout)

        try:
            for address in options["remove_member"]:
                self.remove_member(alias, address, options["interactive"], reporter)
            if options["wait"]:
                result = gate.wait_for_gate(alias, timeout=timeout, on_progress=reporter.progress)
            else:
                result = gate.run_gate(alias)
        except (ClusterError, DBError) as error:
            raise cluster_error(error) from error

        if as_json:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        else:
            reporter.result(result)
        if result.exit_code:
            raise CommandError(result.message, returncode=result.exit_code)

    def remove_member(self, alias, address, interactive, reporter):
        if interactive and sys.stdin.isatty():
            answer = input(
                f"Remove member {address!r} from the cluster's nodes table? The others stop "
                "waiting for it; it must not run this project again until re-registered. [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Member removal cancelled.")
        try:
            removed = gate.remove_member(alias, address)
        except gate.GateUsageError as error:
            raise CommandError(str(error)) from error
        if not removed:
            known = ", ".join(address for address, _, _ in gate.read_members(alias)) or "(none)"
            raise CommandError(f"No member {address!r} in the nodes table; members: {known}")
        reporter.write(f"Removed member {address}.", self.style.WARNING)
