"""What Prometheus scrapes from a host: its node's Raft state and the version gate (views.metrics).

For each database alias (``DQCLUSTER_HEALTH_DATABASES``, or all of them):

- on our ENGINE, the host's node as it answers ``status()`` on a connection of
  its own (as the health check asks it): up, healthy, leader, majority, term,
  commit and applied index, each member's connection and (from the leader)
  how far it has replicated;
- where the version gate's ``nodes`` table exists (any ENGINE), each member's
  (schema, api_extensions), how long ago it checked in, and this host's own
  version, so that "a host runs other code" and "a host stopped checking in"
  are alerts and not log searches. On our ENGINE the table is read from the
  node's own replica: a scrape answers even while the node is cut off.

Everything is a gauge, labelled ``database`` (the alias) and ``member`` (an
address). Samples are (name, labels, value) until :func:`render` writes them
in Prometheus' text format (0.0.4). Reading the gate runs no gate and writes
nothing.
"""

import math

from django.db import connections

from . import gate, health

# name: help text (every family is a gauge)
FAMILIES = {
    "dqcluster_node_up": "1 when this host's node answered its status, 0 when it did not.",
    "dqcluster_node_healthy": "1 when the node is fit to serve, as /dqcluster/health judges it.",
    "dqcluster_node_is_leader": "1 when this host's node leads the cluster.",
    "dqcluster_node_has_quorum": "1 when the node reaches a majority of the members.",
    "dqcluster_node_diverged": "1 when the node's replica diverged from the others (it then serves nothing).",
    "dqcluster_node_catching_up": "1 while a node that lost entries it had acknowledged (an emptied or restored data "
                                  "directory) catches up (it does not vote yet).",
    "dqcluster_node_installing_snapshot": "1 while a node that fell behind the leader's log installs its snapshot.",
    "dqcluster_node_uptime_seconds": "Seconds since the node started.",
    "dqcluster_node_secret_fallbacks": "Fallback secrets the node accepts besides its secret (a rotation under way).",
    "dqcluster_node_secret_fallback_used_seconds_ago": "Seconds since a member's Raft message (by=raft) or a "
                                                       "client session (by=clients) last needed a fallback secret.",
    "dqcluster_node_secret_file_unusable": "1 when the node cannot use its secret file (unreadable, empty, or "
                                           "without the secret in use); it keeps its secrets, see cluster_status.",
    "dqcluster_raft_term": "The Raft term the node is in.",
    "dqcluster_raft_commit_index": "The last log index the node knows to be committed.",
    "dqcluster_raft_applied_index": "The last log index the node applied to its SQLite files.",
    "dqcluster_raft_apply_lag_entries": "Committed entries the node has not applied yet.",
    "dqcluster_raft_log_entries": "Entries in the node's log (since its last snapshot).",
    "dqcluster_write_locks": "Transactions holding a database's write lock on the leader.",
    "dqcluster_follower_reads": "Strong and weak reads (consistency=...) this node answered as a follower since it "
                                "started: from its own replica (answered_by=follower) or run by the leader "
                                "(answered_by=leader, the replica had not applied every answered write yet).",
    "dqcluster_follower_transactions": "Deferred transactions clients began on this node as a follower since it "
                                       "started (count=begun_here), and of them those moved to the leader at their "
                                       "first write (count=moved_to_leader) and those the leader ran from their "
                                       "first read (count=run_by_leader).",
    "dqcluster_members": "Members of the store, as this node knows them.",
    "dqcluster_member_connected": "1 when this node has a connection to the member.",
    "dqcluster_member_match_index": "The last log index the leader knows the member holds.",
    "dqcluster_member_entry_format": "The newest store entry format the member's django-dqcluster applies, as it "
                                     "announced it.",
    "dqcluster_store_entry_format": "The store entry format the node writes as leader: the newest every member "
                                    "applies (lower than a member's while a rolling upgrade is under way).",
    "dqcluster_gate_up": "1 when the version gate's members were read, 0 when reading them failed.",
    "dqcluster_gate_local_schema": "The schema level (applied migrations) of the code this host runs.",
    "dqcluster_gate_local_api_extensions": "The API extensions of the code this host runs.",
    "dqcluster_gate_member_schema": "A member's schema level, as recorded in the version gate.",
    "dqcluster_gate_member_api_extensions": "A member's API extensions, as recorded in the version gate.",
    "dqcluster_gate_member_heartbeat_age_seconds": "Seconds since the member last checked in with the gate.",
    "dqcluster_gate_members_other_version": "Members recorded with another version than this host's code.",
}


def _flag(value):
    return 1 if value else 0


def node_samples(alias, status, max_lag=health.DEFAULT_MAX_LAG):
    """Samples of one alias's node from its ``status()`` (``None``: it did not answer)."""
    database = {"database": alias}
    if status is None:
        return [("dqcluster_node_up", database, 0)]
    healthy, _ = health.judge(status, max_lag)
    samples = [
        ("dqcluster_node_up", database, 1),
        ("dqcluster_node_healthy", database, _flag(healthy)),
        ("dqcluster_node_is_leader", database, _flag(status.get("role") == "leader")),
        ("dqcluster_node_has_quorum", database, _flag(status.get("has_quorum"))),
        ("dqcluster_node_diverged", database, _flag(status.get("diverged"))),
        ("dqcluster_node_catching_up", database, _flag(status.get("catching_up"))),
        ("dqcluster_node_installing_snapshot", database, _flag(status.get("installing_snapshot"))),
    ]
    numbers = {
        "dqcluster_node_uptime_seconds": status.get("uptime"),
        "dqcluster_raft_term": status.get("term"),
        "dqcluster_raft_commit_index": status.get("commit_index"),
        "dqcluster_raft_applied_index": status.get("applied_index"),
        "dqcluster_raft_log_entries": status.get("log_length"),
    }
    commit, applied = status.get("commit_index"), status.get("applied_index")
    if isinstance(commit, int) and isinstance(applied, int):
        numbers["dqcluster_raft_apply_lag_entries"] = max(0, commit - applied)
    numbers["dqcluster_store_entry_format"] = status.get("entry_format")
    if status.get("role") == "leader":  # only the leader's count means anything
        numbers["dqcluster_write_locks"] = len(status.get("write_locks") or {})
    samples += [(name, database, value) for name, value in numbers.items() if isinstance(value, (int, float))]

    for consistency, reads in (status.get("follower_reads") or {}).items():
        for by, key in (("follower", "answered_here"), ("leader", "sent_to_leader")):
            labels = {**database, "consistency": consistency, "answered_by": by}
            samples.append(("dqcluster_follower_reads", labels, reads[key]))

    for counted, count in (status.get("follower_transactions") or {}).items():
        samples.append(("dqcluster_follower_transactions", {**database, "count": counted}, count))

    fallbacks = status.get("secret_fallbacks")
    if fallbacks:
        samples.append(("dqcluster_node_secret_fallbacks", database, fallbacks.get("count", 0)))
        for by in ("raft", "clients"):
            seconds = fallbacks.get(f"{by}_seconds_ago")
            if isinstance(seconds, (int, float)):
                samples.append(("dqcluster_node_secret_fallback_used_seconds_ago", {**database, "by": by}, seconds))
    secret_file = status.get("secret_file")
    if secret_file:
        samples.append(("dqcluster_node_secret_file_unusable", database, 1 if secret_file.get("error") else 0))

    members = status.get("members") or []
    samples.append(("dqcluster_members", database, len(members)))
    # Only the leader knows how far each member got; a follower asked it for us.
    progress = status if status.get("role") == "leader" else status.get("leader_status") or {}
    match = {entry.get("raft"): entry.get("match_index") for entry in progress.get("members") or []}
    for entry in members:
        member = {**database, "member": entry.get("raft") or "?"}
        if entry.get("connected") is not None:
            samples.append(("dqcluster_member_connected", member, _flag(entry["connected"])))
        if entry.get("raft") == progress.get("node"):
            index = progress.get("commit_index")  # the leader holds what it committed, at least
        else:
            index = match.get(entry.get("raft"))
        if isinstance(index, int):
            samples.append(("dqcluster_member_match_index", member, index))
        if isinstance(entry.get("applies"), int):
            samples.append(("dqcluster_member_entry_format", member, entry["applies"]))
    return samples


def gate_samples(alias, ours, members, now):
    """Samples of the version gate: ``ours`` this code's Version, ``members`` [(address, Version, heartbeat)]."""
    database = {"database": alias}
    samples = [
        ("dqcluster_gate_local_schema", database, ours.schema),
        ("dqcluster_gate_local_api_extensions", database, ours.api_extensions),
        ("dqcluster_gate_members_other_version", database, sum(1 for _, version, _ in members if version != ours)),
    ]
    for address, version, heartbeat in members:
        member = {**database, "member": address}
        samples.append(("dqcluster_gate_member_schema", member, version.schema))
        samples.append(("dqcluster_gate_member_api_extensions", member, version.api_extensions))
        if heartbeat is not None:
            samples.append(("dqcluster_gate_member_heartbeat_age_seconds", member,
                            max(0.0, (now - heartbeat).total_seconds())))
    return samples


def _open(alias, timeout):
    """A connection of its own to this host's node: the short timeout, and reads from the node's own replica.

    A scrape must answer quickly, even from a node cut off from its leader,
    when it has the most to tell; a gate table a few entries stale does not
    matter to it. None when the node does not answer.
    """
    connection = connections[alias]
    params = connection.get_connection_params()
    params.update(timeout=timeout, consistency="none")
    try:
        return connection.get_new_connection(params)
    except Exception:  # noqa: BLE001 - a node that cannot be reached is what node_up says
        return None


def _node_status(raw):
    """The node's status, with the leader's for a follower (None: no answer)."""
    try:
        status = raw.status()
    except Exception:  # noqa: BLE001
        return None
    if status.get("role") != "leader":
        try:
            status = {**status, "leader_status": raw.status(of="leader")}
        except Exception:  # noqa: BLE001 - no leader now: the members' progress is unknown
            pass
    return status


def _node_gate_members(raw):
    """The gate's members from the node's own replica (None: the cluster's tables are not there yet)."""
    cursor = raw.cursor()
    try:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nodes'")
        if not cursor.fetchall():
            return None
    finally:
        cursor.close()
    return gate.read_members(raw=raw)


def _django_gate_members(alias):
    return gate.read_members(alias) if gate.cluster_tables_exist(alias) else None


def collect(aliases=None):
    """Every sample of ``aliases`` (default: the health check's, with its timeout and lag limit)."""
    configured_aliases, timeout, max_lag = health.configured()
    if aliases is None:
        aliases = configured_aliases
    samples = []
    for alias in aliases:
        database = {"database": alias}
        raw = None
        if connections.settings[alias].get("ENGINE") == gate.DQCLUSTER_ENGINE:
            raw = _open(alias, timeout)
            status = _node_status(raw) if raw is not None else None
            samples += node_samples(alias, status, max_lag)
            if status is None:
                samples.append(("dqcluster_gate_up", database, 0))
                if raw is not None:
                    raw.close()
                continue
        try:
            members = _node_gate_members(raw) if raw is not None else _django_gate_members(alias)
            if members is not None:
                now = gate.database_now(alias, raw)  # the clock the heartbeats were written by
                samples += gate_samples(alias, gate.local_version(alias), members, now)
                samples.append(("dqcluster_gate_up", database, 1))
        except Exception:  # noqa: BLE001 - what could not be read is what gate_up says
            samples.append(("dqcluster_gate_up", database, 0))
        finally:
            if raw is not None:
                raw.close()
    return samples


def _label_value(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


def render(samples):
    """Prometheus' text exposition format: each family's HELP and TYPE, then its samples."""
    by_family = {}
    for name, labels, value in samples:
        by_family.setdefault(name, []).append((labels, value))
    lines = []
    for name, rows in by_family.items():
        lines.append(f"# HELP {name} {FAMILIES[name]}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in rows:
            text = ",".join(f'{key}="{_label_value(item)}"' for key, item in labels.items())
            lines.append(f"{name}{{{text}}} {_number(value)}")
    return "\n".join(lines) + "\n"
