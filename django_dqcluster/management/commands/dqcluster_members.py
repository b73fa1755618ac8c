"""``manage.py dqcluster_members``: the store's Raft members; add a host, or remove one gone for good.

``--add RAFT_ADDRESS [--client CLIENT_ADDRESS]`` makes a new host a member,
through the leader, before its node first starts (with ``peers`` naming the
current members): the way in when the members' client addresses are on
loopback, out of the new host's reach (``dqcluster_node --join`` needs one it
can reach). Until that node runs, the cluster counts a member that does not
answer, so start it next.

A host that died and will not come back stays a member of the store until it
is removed: the cluster keeps needing a majority that counts it, and the
version gate keeps waiting for its row. ``--remove ADDRESS`` (its Raft or
client address) takes it out of both, through the leader. It refuses this
host's own node, and a member the leader still hears from (stop its node
first, or pass ``--force``).
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import Error as DBError

from ... import gate
from ...wire import parse_address, parse_host_port
from .ensure_cluster_schema import check_alias


def store_connection(alias):
    check_alias(alias)
    if not gate.is_dqcluster_alias(alias):
        engine = connections[alias].settings_dict.get("ENGINE")
        raise CommandError(f"database {alias!r} uses {engine}, not {gate.DQCLUSTER_ENGINE}: it has no store members")
    connection = connections[alias]
    connection.ensure_connection()
    return connection.connection


def leader_view(raw, status):
    """The leader's status (it alone knows who it hears from), or this node's when there is none."""
    if status.get("role") == "leader":
        return status
    try:
        return raw.status(of="leader")
    except DBError:
        return status


class Command(BaseCommand):
    help = "List the store's Raft members, or remove one that is gone for good (--remove ADDRESS)."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help='The database alias whose store to ask (default: "default").')
        change = parser.add_mutually_exclusive_group()
        change.add_argument("--add", metavar="RAFT_ADDRESS",
                            help="Make a new host's node a member (start that node next, with peers).")
        parser.add_argument("--client", metavar="CLIENT_ADDRESS",
                            help="With --add: where the new node listens for clients (default: Raft port + 1).")
        change.add_argument("--remove", metavar="ADDRESS",
                            help="Remove this member (its Raft or client address) from the store and the version gate.")
        parser.add_argument("--force", action="store_true",
                            help="Remove the member even though the leader still hears from it.")
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="Do not ask for confirmation.")
        parser.add_argument("--json", action="store_true", help="Print the members as JSON.")

    def handle(self, *args, **options):
        alias = options["database"]
        if options["client"] and not options["add"]:
            raise CommandError("--client goes with --add")
        raw = store_connection(alias)
        try:
            status = raw.status()
            view = leader_view(raw, status)
            if options["add"]:
                self.add(raw, status, options)
            elif options["remove"]:
                self.remove(alias, raw, status, view, options)
            if options["add"] or options["remove"]:
                status = raw.status()
                view = leader_view(raw, status)
        except DBError as error:
            raise CommandError(f"the store of database {alias!r}: {error}") from None
        self.show(status, view, options["json"])

    def show(self, status, view, as_json):
        connected = {member["raft"]: member.get("connected") for member in view.get("members", [])}
        members = [{**member, "connected": connected.get(member["raft"], member.get("connected")),
                    "this_host": member["raft"] == status.get("node")} for member in status.get("members", [])]
        if as_json:
            self.stdout.write(json.dumps({"leader": status.get("leader"), "members": members}, indent=2))
            return
        majority = len(members) // 2 + 1
        self.stdout.write(f"{len(members)} member(s); a majority is {majority}; leader {status.get('leader') or 'none'}")
        for member in members:
            state = "connected" if member["connected"] else "not heard from"
            mark = " [this host's node]" if member["this_host"] else ""
            self.stdout.write(f"  {member['raft']}  client {member['client']}  {member['role']}, {state}{mark}")

    def add(self, raw, status, options):
        raft = options["add"]
        try:
            host, port = parse_host_port(raft)
            client = options["client"] or f"{raft.rsplit(':', 1)[0]}:{port + 1}"
            parse_address(client)
        except ValueError as error:
            raise CommandError(str(error)) from None
        for member in status.get("members", []):
            if raft in (member["raft"], member["client"]) or client == member["client"]:
                raise CommandError(f"{member['raft']} (client {member['client']}) is already a member")
        raw.add_member(raft, client)
        peers = ",".join(m["raft"] for m in status.get("members", []))
        self.stdout.write(self.style.WARNING(
            f"Added {raft} (client {client}). Start its node now, with peers {peers} (and bind {raft}): "
            "until it runs, the cluster counts a member that does not answer."
        ))

    def remove(self, alias, raw, status, view, options):
        address = options["remove"]
        members = status.get("members", [])
        member = next((m for m in members if address in (m["raft"], m["client"])), None)
        if member is None:
            known = ", ".join(m["raft"] for m in members) or "(none)"
            raise CommandError(f"{address} is not a member of the store; members: {known}")
        raft = member["raft"]
        if raft == status.get("node"):
            raise CommandError(f"{raft} is this host's own node: remove it from another host")
        if member.get("role") == "leader":
            raise CommandError(f"{raft} is the leader: stop its node first (another member takes over), then remove it")
        heard = next((m.get("connected") for m in view.get("members", []) if m["raft"] == raft), False)
        if heard and not options["force"]:
            raise CommandError(
                f"the leader still hears from {raft}: stop its node first (a running node taken out of the "
                "cluster goes on serving stale reads to its clients), or pass --force"
            )
        if options["interactive"] and sys.stdin.isatty():
            answer = input(f"Remove {raft} from the store and the version gate? It cannot rejoin with its "
                           "old data; a new node on that host joins with dqcluster_node --join. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Member removal cancelled.")
        if options["verbosity"] >= 1:
            self.stdout.write(f"Removing {raft} through the leader (needs a majority of the current members)...")
        raw.remove_member(raft)
        self.stdout.write(self.style.WARNING(f"Removed {raft} from the store."))
        self.remove_gate_row(alias, {raft, member["client"]})

    def remove_gate_row(self, alias, addresses):
        if not gate.cluster_tables_exist(alias):
            return
        for address, _, _ in gate.read_members(alias):
            if address in addresses:
                gate.remove_member(alias, address)
                self.stdout.write(self.style.WARNING(f"Removed {address} from the version gate's members."))
