"""Reads and writes of the ``nodes`` table: our version row, the gate's input, status.

Every function takes either a running ``Tx`` (to join the ensure transaction) or a DB-API
connection (then it opens its own short transaction).
"""

from __future__ import annotations

import datetime as _dt
import enum
from typing import Any, NamedTuple, Sequence

from .errors import (
    ClusterError,
    Member,
    NodeNotFoundError,
    NodeVersionUpdateError,
    UnclusteredNodesError,
    Version,
    wrap,
)
from .sql import (
    STMT_COUNT_UNCLUSTERED_NODES,
    STMT_SELECT_NODES_MEMBERS,
    STMT_SELECT_NODES_STATUS,
    STMT_UPDATE_NODE_VERSION,
    UNCLUSTERED_ADDRESS,
)
from .tx import Tx, select_count, using
from .versions import GateDecision, GateState, compare_versions, decide


def count_unclustered_nodes(tx: Tx) -> int:
    """Rows with the ``0.0.0.0`` sentinel address: 1 means "not clustered"."""
    return select_count(tx, STMT_COUNT_UNCLUSTERED_NODES)


def is_unclustered(tx: Tx) -> bool:
    """True if this database belongs to a single, never clustered node.

    Raises ``UnclusteredNodesError`` for more than one sentinel row (a corrupt table).
    """
    count = count_unclustered_nodes(tx)
    if count > 1:
        raise UnclusteredNodesError()
    return count == 1


def update_node_version(tx: Tx, address: str, version: Sequence[int]) -> None:
    """Write ``version`` into the row of ``address``; exactly one row must change."""
    schema, api_extensions = version
    rows = tx.execute(STMT_UPDATE_NODE_VERSION, (schema, api_extensions, address))
    if rows == 1:
        return
    if rows is None or rows < 0:
        raise ClusterError("the driver did not report how many rows were updated")
    known = [row[0] for row in tx.query("SELECT address FROM nodes ORDER BY id")]
    raise NodeVersionUpdateError(rows, address, known)


def select_members(tx: Tx) -> list[Member]:
    """Every row of ``nodes``, pending ones included (the gate counts them, as the seed)."""
    return [Member(str(a), int(s), int(e)) for a, s, e in tx.query(STMT_SELECT_NODES_MEMBERS)]


def gate_decision(tx: Tx, ours: Sequence[int]) -> GateDecision:
    """Compare ``ours`` with every member (the seed's checkClusterIsUpgradable)."""
    try:
        members = select_members(tx)
    except Exception as error:
        raise wrap("failed to fetch current nodes versions", error) from error
    return decide(ours, members)


# --------------------------------------------------------------------------------------
# Status and identity


class MemberStatus(str, enum.Enum):
    """How one member stands against all the others."""

    READY = "ready"  # same version as every other member
    WAITING = "waiting"  # this node: newer than some peers, waits for them to upgrade
    BLOCKED_NEWER = "blocked-newer"  # another member that is newer than some peers
    BEHIND_UPGRADE = "behind-upgrade"  # some member is newer: this one must be upgraded
    INCONSISTENT = "inconsistent"  # schema and API count disagree with some member


class MemberState(NamedTuple):
    address: str
    schema: int
    api_extensions: int
    heartbeat: Any
    state: MemberStatus


class _Row(NamedTuple):
    id: int
    address: str
    schema: int
    api_extensions: int
    heartbeat: Any
    pending: bool


def _parse_heartbeat(value: Any) -> Any:
    """SQLite hands back CURRENT_TIMESTAMP as text; make it a datetime like PostgreSQL's."""
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _select_rows(tx: Tx) -> list[_Row]:
    return [
        _Row(int(i), str(a), int(s), int(e), _parse_heartbeat(h), bool(p))
        for i, a, s, e, h, p in tx.query(STMT_SELECT_NODES_STATUS)
    ]


def _is_local(row: _Row, address: str, rows: list[_Row]) -> bool:
    if row.address == address:
        return True
    sentinel_rows = [r for r in rows if r.address == UNCLUSTERED_ADDRESS]
    return row.address == UNCLUSTERED_ADDRESS and len(sentinel_rows) == 1


_STATUS_OF_STATE = {
    GateState.READY: MemberStatus.READY,
    GateState.WE_ARE_BEHIND: MemberStatus.BEHIND_UPGRADE,
    GateState.INCONSISTENT: MemberStatus.INCONSISTENT,
}


def member_states(connection_or_tx: Any, address: str) -> list[MemberState]:
    """For every row of ``nodes``: (address, schema, api_extensions, heartbeat, state).

    Each member's state is the gate's decision with that member in our place; a member
    that would wait is ``waiting`` if it is this node (``address``, or the single
    ``0.0.0.0`` row) and ``blocked-newer`` otherwise. Read-only: usable while blocked.
    """
    with using(connection_or_tx) as tx:
        rows = _select_rows(tx)
    members = [Member(r.address, r.schema, r.api_extensions) for r in rows]
    states = []
    for row in rows:
        decision = decide(Version(row.schema, row.api_extensions), members)
        if decision.state is GateState.PEERS_BEHIND:
            status = MemberStatus.WAITING if _is_local(row, address, rows) else MemberStatus.BLOCKED_NEWER
        else:
            status = _STATUS_OF_STATE[decision.state]
        states.append(MemberState(row.address, row.schema, row.api_extensions, row.heartbeat, status))
    return states


def _local_row(rows: list[_Row], address: str) -> _Row | None:
    if len(rows) == 1 and rows[0].address == UNCLUSTERED_ADDRESS:
        return rows[0]
    for row in rows:
        if row.address == address:
            return row
    return None


def local_node_id(connection_or_tx: Any, address: str) -> int:
    """This node's id: the single ``0.0.0.0`` row, else the non-pending row of ``address``.

    Independent of the gate, so a node that waits still knows who it is (LXD#8834).
    """
    with using(connection_or_tx) as tx:
        rows = [r for r in _select_rows(tx) if not r.pending]
    row = _local_row(rows, address)
    if row is None:
        raise NodeNotFoundError(address)
    return row.id


def node_is_outdated(connection_or_tx: Any, address: str) -> bool:
    """True if another non-pending member runs a strictly newer version than this node.

    What a periodic re-check uses to decide whether this node should upgrade itself. The
    seed found "this node" by looking for a row with a non-zero version, so an app with no
    API extensions always failed; here the row is found by address.
    """
    with using(connection_or_tx) as tx:
        rows = [r for r in _select_rows(tx) if not r.pending]
    local = _local_row(rows, address)
    if local is None:
        raise ClusterError("inconsistency: local node not found")
    ours = Version(local.schema, local.api_extensions)
    return any(
        compare_versions(Version(r.schema, r.api_extensions), ours) == 1
        for r in rows
        if r.id != local.id
    )
