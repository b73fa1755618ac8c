"""Is this host fit to serve? What a load balancer's health check asks (see views.health).

For each database alias on our ENGINE, the host's node is asked for its
status on a connection of its own, with a short timeout (a health check must
answer quickly, and the request's own connection may be the broken one).
The node is healthy when it answers, has not stopped serving (a diverged
replica, a fatal error), is not still catching up after starting with an
empty data directory, reaches a majority of the members and its leader
(no election under way), and has applied all but ``max_lag`` of the entries
committed.
Other ENGINEs: ``SELECT 1`` answers. Nothing here writes, or runs the version
gate.
"""

from django.conf import settings
from django.db import connections

from .gate import DQCLUSTER_ENGINE

DEFAULT_MAX_LAG = 1000  # entries: a follower that far behind serves stale `none` reads
DEFAULT_TIMEOUT = 2.0  # seconds to reach the node


def lost_entries_state(status):
    """What a node catching up (its status says ``catching_up``) is doing, and until when."""
    until = status.get("catching_up_to")
    return ("lost entries it had acknowledged (its data directory was emptied, or restored from an older copy) "
            "and is catching up with the leader; it does not vote until it holds "
            + (f"entry {until:,}" if isinstance(until, int) else "what the leader had committed"))


def judge(status, max_lag=DEFAULT_MAX_LAG):
    """(healthy, what a load balancer and its operator should know) from a node's status."""
    report = {"role": status.get("role")}
    commit, applied = status.get("commit_index"), status.get("applied_index")
    if isinstance(commit, int) and isinstance(applied, int):
        report["lag"] = max(0, commit - applied)
    if status.get("fatal"):
        return False, {**report, "problem": f"the node stopped serving: {status['fatal']}"}
    if status.get("diverged"):
        return False, {**report, "problem": "the node's replica diverged from the others; it serves nothing"}
    if status.get("catching_up"):
        return False, {**report, "problem": f"the node {lost_entries_state(status)}"}
    if status.get("installing_snapshot"):
        return False, {**report, "problem": "the node fell behind the leader's log and is installing the leader's "
                                            "snapshot; its reads are of its older state meanwhile"}
    if status.get("has_quorum") is False:
        # pysyncobj keeps a follower cut off from everyone loyal to its old
        # leader (it only calls elections when it reaches someone), so the
        # leader's address alone does not tell.
        return False, {**report, "problem": "the node reaches no majority of the members"}
    leader = status.get("leader")
    if not leader:
        return False, {**report, "problem": "no leader is known (an election is under way)"}
    if status.get("role") != "leader":
        entry = next((m for m in status.get("members") or [] if m.get("raft") == leader), None)
        if entry is not None and entry.get("connected") is False:
            return False, {**report, "problem": "the node does not reach its leader"}
    if report.get("lag", 0) > max_lag:
        return False, {**report, "problem": f"the node is {report['lag']} entries behind the commit index (more than {max_lag})"}
    return True, report


def _node_status(alias, timeout):
    connection = connections[alias]
    params = connection.get_connection_params()
    params["timeout"] = timeout
    raw = connection.get_new_connection(params)
    try:
        return raw.status()
    finally:
        raw.close()


def _answers(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def configured():
    """(aliases, timeout, max_lag) as the DQCLUSTER_HEALTH_* settings give them (the metrics use them too)."""
    return (
        getattr(settings, "DQCLUSTER_HEALTH_DATABASES", None) or list(connections.settings),
        getattr(settings, "DQCLUSTER_HEALTH_TIMEOUT", DEFAULT_TIMEOUT),
        getattr(settings, "DQCLUSTER_HEALTH_MAX_LAG", DEFAULT_MAX_LAG),
    )


def check(aliases=None):
    """{"healthy": bool, "databases": {alias: {"healthy", "role", "lag", "problem"}}}."""
    configured_aliases, timeout, max_lag = configured()
    if aliases is None:
        aliases = configured_aliases
    databases = {}
    for alias in aliases:
        try:
            if connections.settings[alias].get("ENGINE") == DQCLUSTER_ENGINE:
                healthy, report = judge(_node_status(alias, timeout), max_lag)
            else:
                _answers(alias)
                healthy, report = True, {}
        except Exception as error:  # noqa: BLE001 - any failure to answer is the answer
            healthy, report = False, {"problem": f"cannot reach the database: {type(error).__name__}: {error}"}
        databases[alias] = {"healthy": healthy, **report}
    return {"healthy": all(entry["healthy"] for entry in databases.values()), "databases": databases}
