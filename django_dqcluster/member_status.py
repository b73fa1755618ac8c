"""A member's live role in the store, next to its row in the gate's ``nodes`` table.

The ``nodes`` table says which code each host runs; only the store knows who
leads, who is connected and how far each member has applied the log. Both the
``cluster_status`` command and the admin show the two side by side.
"""

from django.db import connections

from . import gate


def store_status(alias):
    """The store's ``status()`` through the alias's DB-API connection, if it has one.

    Returns (status dict or None, error text or None). When this host's node
    follows, the leader's status (asked through it) comes along as
    ``"leader_status"``: only the leader knows how far every member got.
    """
    connection = connections[alias]
    connection.ensure_connection()
    status = getattr(connection.connection, "status", None)
    if not callable(status):
        return None, None
    try:
        value = status()
    except Exception as error:  # noqa: BLE001 - status is best effort, the table is not
        return None, f"{type(error).__name__}: {error}"
    if not isinstance(value, dict):
        return None, None
    if value.get("role") != "leader":
        try:
            leader = status(of="leader")
        except Exception:  # noqa: BLE001 - no leader right now: the others' progress is unknown
            leader = None
        if isinstance(leader, dict):
            value = {**value, "leader_status": leader}
    return value, None


def _store_member(status, address):
    """The store's entry for a nodes-table address (matched on Raft or client address)."""
    if not status:
        return None
    for entry in status.get("members") or []:
        if address in (entry.get("raft"), entry.get("client")):
            return entry
    return None


def role_and_lag(status, address):
    """(role, applied index, lag) of one member as far as the store tells."""
    if status is None:
        return "n/a", None, None
    entry = _store_member(status, address)
    if entry is None:
        return "unknown", None, None
    commit_index = status.get("commit_index")
    is_local = address in (status.get("node"), status.get("client"))
    if is_local:
        applied = status.get("applied_index")
        lag = commit_index - applied if isinstance(commit_index, int) and isinstance(applied, int) else None
        return status.get("role") or entry.get("role") or "unknown", applied, lag
    if entry.get("connected") is False:
        return "offline", None, None
    role = entry.get("role") or "unknown"
    leader = status.get("leader_status")
    if leader:
        # This node follows: how far the others got is the leader's to say.
        _, applied, lag = role_and_lag(leader, address)
        return role, applied, lag
    match_index = entry.get("match_index")  # only known when we ask the leader
    lag = commit_index - match_index if isinstance(commit_index, int) and isinstance(match_index, int) else None
    return role, match_index, lag


def member_role(status, address, heartbeat, now, is_self):
    """(role, applied index, lag) of one member: the store's answer, else its heartbeat's.

    The store's role is live and wins over a heartbeat, which is only as recent as that
    member's last gate run.
    """
    role, applied, lag = role_and_lag(status, address)
    if role == "unknown" and is_self:
        # This host's address is not a store member's (a host name, when its node
        # listens on loopback only): its node is the one this connection talks to.
        role, applied, lag = role_and_lag(status, status.get("node"))
    if role in ("n/a", "unknown") and not is_self and gate.heartbeat_is_stale(heartbeat, now):
        role = "offline"
    return role, applied, lag
