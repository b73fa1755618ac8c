"""``manage.py cluster_status``: every member's version and gate state, read-only.

Meant for the moment an upgrade stalls (canonical/lxd#6757: "a status command that works
while blocked"): it writes nothing, runs no system checks and never waits, so it works
whatever the gate decided. For each row of the ``nodes`` table:

* address, and role (leader / follower / offline) when the alias runs on the dqcluster
  store (asked through the driver's ``status()``), "n/a" on other databases. Where the
  store cannot tell (another database, or a member the store does not know), a member
  whose last heartbeat is older than ``gate.HEARTBEAT_OFFLINE_AFTER_SECONDS`` is
  "offline" (the seed's offline threshold); this host never is, it runs this command;
* schema level and API count that member's code reported;
* gate state: ``ready``; ``waiting for X`` (this host, newer than X); ``blocked: newer
  than members X`` (another member that waits for X); ``behind: upgrade``;
  ``inconsistent``;
* last heartbeat (the last time that member ran the gate) and its age;
* applied Raft index and lag, where the store reports them.

It also says what the gate would decide for this host's *code* (which may differ from
its row until it runs the gate again), which migrations this code has not applied, and
who holds the migration lock. ``--json`` prints all of it as one document.
"""

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db import Error as DBError  # DatabaseError and InterfaceError (a client the store refused)

from ... import gate
from ...cluster import ClusterError, Member, decide
from ...cluster.versions import GateState
from ...health import lost_entries_state
from ...member_status import member_role, store_status
from .ensure_cluster_schema import check_alias, format_age


#: A write lock held this long is shown (and waited for by every other writer).
LONG_HELD_SECONDS = 1.0


def member_gate_state(address, version, members, our_address):
    """The gate state of one member against all (``members``: list of Member)."""
    decision = decide(version, members)
    behind = ", ".join(m.address for m in decision.behind)
    if decision.state is GateState.READY:
        return "ready", "ready"
    if decision.state is GateState.PEERS_BEHIND:
        if address == our_address:
            return "waiting", f"waiting for {behind}"
        return "blocked", f"blocked: newer than members {behind}"
    if decision.state is GateState.WE_ARE_BEHIND:
        return "behind", "behind: upgrade"
    return "inconsistent", "inconsistent: with " + ", ".join(m.address for m in decision.inconsistent)


def unapplied_migrations(alias):
    """Migrations of this code not yet recorded in ``alias`` (a read-only plan)."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    targets = executor.loader.graph.leaf_nodes()
    return [f"{migration.app_label}.{migration.name}" for migration, backwards in executor.migration_plan(targets) if not backwards]


def describe_fallbacks(fallbacks):
    """Is the old secret still needed? (README, "Rotating the cluster secret")."""
    def last(seconds):
        return "not since the node started" if seconds is None else f"{format_age(seconds)} ago"

    return (f"Secret rotation: this host's node accepts {fallbacks['count']} fallback secret(s); one was last "
            f"needed by a member's Raft message {last(fallbacks['raft_seconds_ago'])}, by a client session "
            f"{last(fallbacks['clients_seconds_ago'])}")


def describe_secret_file(secret_file):
    """Why the node's secret file is not in use (it keeps the secrets it had), or None when it is."""
    if not secret_file or not secret_file.get("error"):
        return None
    return (f"Secret file: {secret_file['error']}; this host's node keeps the secrets it had "
            "(fix the file: it is read again every few seconds)")


def describe_node_state(store):
    """Why this host's node serves older data than the cluster's for now, or None."""
    store = store or {}
    if store.get("installing_snapshot"):
        return ("This host's node fell behind the leader's log and is installing the leader's snapshot: "
                "it reads as of its older state until that is in")
    if store.get("catching_up"):
        return f"This host's node {lost_entries_state(store)}"
    return None


def describe_entry_formats(store):
    """Members whose django-dqcluster applies older store entry formats than another member's, or None.

    The leader writes the newest format every member applies (a rolling
    upgrade of django-dqcluster itself): the newer one follows by itself once
    the last of them runs the newer release.
    """
    store = store or {}
    written, members = store.get("entry_format"), store.get("members") or []
    newest = max((member.get("applies") or 0 for member in members), default=0)
    if written is None or newest <= written:
        return None
    older = ", ".join(
        f"{member['raft']} ({'format ' + str(member['applies']) if member.get('applies') else 'has not said'})"
        for member in members if (member.get("applies") or 0) < newest)
    return (f"Store entries: written in format {written}, which every member applies; format {newest} once "
            f"{older} run(s) the newer django-dqcluster")


def describe_follower_work(store):
    """What this host's node, as a follower, answered itself and what it left to the leader; None if nothing.

    Reads and deferred transactions a follower may run on its own replica
    (README, "Strong and weak reads on a follower"); under steady writes it is
    often one commit behind, and the leader runs them.
    """
    store = store or {}
    if store.get("role") == "leader":
        return None
    parts = [f"{level} reads {counts['answered_here']:,} here, {counts['sent_to_leader']:,} by the leader"
             for level, counts in (store.get("follower_reads") or {}).items()
             if counts.get("answered_here") or counts.get("sent_to_leader")]
    transactions = store.get("follower_transactions") or {}
    if transactions.get("begun_here"):
        parts.append(f"deferred transactions {transactions['begun_here']:,} begun here "
                     f"({transactions['moved_to_leader']:,} moved to the leader at their first write, "
                     f"{transactions['run_by_leader']:,} run by the leader from their first read)")
    return "Follower work since the node started: " + "; ".join(parts) if parts else None


def leader_write_locks(status):
    """{database: {"holder", "seconds"}} of the write locks the store's leader holds now (best effort)."""
    if not status:
        return {}
    if status.get("role") != "leader":
        # Asked through this host's node by store_status; None: no leader right now.
        status = status.get("leader_status") or {}
    return status.get("write_locks") or {}


def lock_holder(alias):
    """Who holds the cluster migration lock, or None."""
    from .migrate import LOCK_NAME, MigrationLock

    connection = connections[alias]
    if connection.vendor == "postgresql":
        text = MigrationLock(alias, "status").describe_holder()
        return None if text.startswith("nobody") else text
    if "dqcluster_lock" not in connection.introspection.table_names():
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT holder, expires_at FROM dqcluster_lock WHERE name = %s", [LOCK_NAME])
        row = cursor.fetchone()
    if row is None:
        return None
    return MigrationLock(alias, "status").describe_holder()


class Command(BaseCommand):
    help = (
        "Show every cluster member's address, role, version (schema, API extensions), gate "
        "state, last heartbeat, applied index and lag. Read-only; works while the gate blocks."
    )
    # Diagnostics must work when something is wrong, including failing system checks.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='Database alias to report on. Defaults to the "default" database.',
        )
        parser.add_argument("--json", action="store_true", help="Print the status as JSON.")

    def handle(self, *args, **options):
        alias = options["database"]
        check_alias(alias)
        try:
            report = self.collect(alias)
        except (ClusterError, DBError) as error:
            raise CommandError(f"cannot read the cluster status of database {alias!r}: {error}", returncode=1) from error
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            self.print_report(report, options["verbosity"])

    def collect(self, alias):
        connection = connections[alias]
        address = gate.node_address(alias)
        ours = gate.local_version(alias)
        if not gate.cluster_tables_exist(alias):
            raise CommandError(
                f"database {alias!r} has no cluster tables yet: run `manage.py ensure_cluster_schema "
                f"--database {alias}` (or migrate) on a host first",
                returncode=1,
            )
        rows = gate.read_members(alias)
        status, status_error = store_status(alias)
        members = [Member(a, v.schema, v.api_extensions) for a, v, _ in rows]
        now = gate.database_now(alias)  # the clock the heartbeats were written by
        entries = []
        for row_address, version, heartbeat in rows:
            state, detail = member_gate_state(row_address, version, members, address)
            role, applied, lag = member_role(status, row_address, heartbeat, now, row_address == address)
            entries.append(
                {
                    "address": row_address,
                    "is_self": row_address == address,
                    "role": role,
                    "schema": version.schema,
                    "api_extensions": version.api_extensions,
                    "gate": state,
                    "gate_detail": detail,
                    "heartbeat": heartbeat.isoformat() if heartbeat else None,
                    "heartbeat_age_seconds": int((now - heartbeat).total_seconds()) if heartbeat else None,
                    "applied_index": applied,
                    "lag": lag,
                }
            )
        # What the gate would say for this host's code right now (its row may be older).
        code_members = [m for m in members if m.address != address] + [Member(address, *ours)]
        state, detail = member_gate_state(address, ours, code_members, address)
        row_version = next(((v.schema, v.api_extensions) for a, v, _ in rows if a == address), None)
        try:
            pending = unapplied_migrations(alias)
        except DatabaseError as error:
            pending = [f"(unknown: {error})"]
        return {
            "alias": alias,
            "engine": connection.settings_dict.get("ENGINE"),
            "this_host": {
                "address": address,
                "code": {"schema": ours.schema, "api_extensions": ours.api_extensions},
                "row": {"schema": row_version[0], "api_extensions": row_version[1]} if row_version else None,
                "registered": row_version is not None,
                "gate": state,
                "gate_detail": detail,
            },
            "members": entries,
            "store": status,
            "store_error": status_error,
            "unapplied_migrations": pending,
            "migration_lock": lock_holder(alias),
            "write_locks": leader_write_locks(status),
        }

    def print_report(self, report, verbosity):
        write = self.stdout.write
        style = self.style
        this = report["this_host"]
        code = this["code"]
        write(
            style.MIGRATE_HEADING(
                f"Cluster of database {report['alias']!r} ({report['engine']}), "
                f"{len(report['members'])} member(s)"
            )
        )
        headers = ("", "ADDRESS", "ROLE", "SCHEMA", "API", "GATE", "HEARTBEAT", "APPLIED", "LAG")
        table = []
        for member in report["members"]:
            age = member["heartbeat_age_seconds"]
            heartbeat = f"{member['heartbeat'][:19].replace('T', ' ')} ({format_age(age)} ago)" if member["heartbeat"] else "never"
            table.append(
                (
                    "*" if member["is_self"] else "",
                    member["address"],
                    member["role"],
                    str(member["schema"]),
                    str(member["api_extensions"]),
                    member["gate_detail"],
                    heartbeat,
                    "n/a" if member["applied_index"] is None else str(member["applied_index"]),
                    "n/a" if member["lag"] is None else str(member["lag"]),
                )
            )
        widths = [max(len(row[i]) for row in [headers, *table]) for i in range(len(headers))]
        write("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
        gate_styles = {"ready": style.SUCCESS, "waiting": style.WARNING, "blocked": style.WARNING}
        for member, row in zip(report["members"], table):
            line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            write(gate_styles.get(member["gate"], style.ERROR)(line))
        write("")
        registered = "" if this["registered"] else " (not registered yet: run ensure_cluster_schema or migrate)"
        write(
            f"This host: {this['address']}, code at schema {code['schema']}, api_extensions "
            f"{code['api_extensions']}{registered}: {this['gate_detail']}",
            gate_styles.get(this["gate"], style.ERROR),
        )
        if this["row"] and (this["row"]["schema"], this["row"]["api_extensions"]) != (code["schema"], code["api_extensions"]):
            write(
                f"  Its row still says schema {this['row']['schema']}, api_extensions "
                f"{this['row']['api_extensions']}: run ensure_cluster_schema or migrate to update it.",
                style.WARNING,
            )
        pending = report["unapplied_migrations"]
        if pending:
            shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
            write(f"Unapplied migrations of this code: {len(pending)} ({shown})")
        else:
            write("Unapplied migrations of this code: none")
        if report["migration_lock"]:
            write(f"Migration lock held by {report['migration_lock']}", style.WARNING)
        for name, lock in sorted(report["write_locks"].items()):
            if lock["seconds"] >= LONG_HELD_SECONDS or verbosity >= 2:
                write(f"Write lock of database {name!r} held by {lock['holder']} for {lock['seconds']:g} s",
                      style.WARNING if lock["seconds"] >= LONG_HELD_SECONDS else None)
        if report["store_error"]:
            write(f"Store status unavailable: {report['store_error']}", style.WARNING)
        elif report["store"] and verbosity >= 2:
            store = report["store"]
            write(
                f"Store: node {store.get('node')} is {store.get('role')}, leader {store.get('leader')}, "
                f"term {store.get('term')}, commit index {store.get('commit_index')}, "
                f"quorum {'yes' if store.get('has_quorum') else 'no'}"
                + (f", entry format {store['entry_format']}" if store.get("entry_format") else "")
            )
            work = describe_follower_work(store)
            if work:
                write(work)
        state = describe_node_state(report["store"])
        if state:
            write(state, style.WARNING)
        formats = describe_entry_formats(report["store"])
        if formats:
            write(formats, style.WARNING)
        fallbacks = (report["store"] or {}).get("secret_fallbacks")
        if fallbacks:
            write(describe_fallbacks(fallbacks))
        problem = describe_secret_file((report["store"] or {}).get("secret_file"))
        if problem:
            write(problem, style.WARNING)
