"""The version gate's decision, as pure functions over (schema, api_extensions) pairs.

A version is the pair (number of schema updates, number of API extensions). Two versions
are ordered only when both components agree on the direction; schema going up while the
API count goes down (or the reverse) is "inconsistent": no upgrade order can reconcile it.

The seed walked the rows in table order and stopped at the first non-equal one, so a
cluster with one peer ahead and one behind gave a different answer depending on which
row came first (seed-behaviour.md §3.4 #4). ``decide`` looks at every member first
(§4.8 #69), in this order of precedence:

1. any member ahead of us         → WE_ARE_BEHIND ("this node's version is behind, please upgrade")
2. any member inconsistent with us → INCONSISTENT ("nodes have inconsistent versions")
3. any member behind us            → PEERS_BEHIND (wait; "some nodes are behind this node's version")
4. otherwise                       → READY

Ahead wins over inconsistent because upgrading this node is the operator's next step in
both cases; inconsistent wins over behind because waiting cannot cure it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .errors import (
    GateError,
    InconsistentVersionsError,
    Member,
    NodeBehindError,
    SomeNodesAreBehind,
    Version,
)

EQUAL = 0
FIRST_IS_NEWER = 1
SECOND_IS_NEWER = 2


def compare_versions(first: Sequence[int], second: Sequence[int]) -> int:
    """0 if equal, 1 if ``first`` is newer, 2 if ``second`` is newer.

    Raises ``InconsistentVersionsError`` when the two components disagree on the direction.
    """
    (schema1, api1), (schema2, api2) = first, second
    if schema1 == schema2 and api1 == api2:
        return EQUAL
    if schema1 >= schema2 and api1 >= api2:
        return FIRST_IS_NEWER
    if schema1 <= schema2 and api1 <= api2:
        return SECOND_IS_NEWER
    raise InconsistentVersionsError()


class GateState(str, enum.Enum):
    READY = "ready"
    PEERS_BEHIND = "waiting"
    WE_ARE_BEHIND = "behind-upgrade"
    INCONSISTENT = "inconsistent"


@dataclass(frozen=True)
class GateDecision:
    """What the gate concluded, with everything needed to explain it."""

    state: GateState
    ours: Version
    members: tuple[Member, ...] = field(default_factory=tuple)

    @property
    def ahead(self) -> list[Member]:
        return [m for m in self.members if _relation(self.ours, m) == SECOND_IS_NEWER]

    @property
    def behind(self) -> list[Member]:
        return [m for m in self.members if _relation(self.ours, m) == FIRST_IS_NEWER]

    @property
    def inconsistent(self) -> list[Member]:
        return [m for m in self.members if _relation(self.ours, m) is None]

    def error(self) -> GateError | None:
        """The error the seed would raise for this decision (None when ready)."""
        error_class = _ERRORS.get(self.state)
        if error_class is None:
            return None
        return error_class(ours=self.ours, members=self.members)


_ERRORS: dict[GateState, type[GateError]] = {
    GateState.PEERS_BEHIND: SomeNodesAreBehind,
    GateState.WE_ARE_BEHIND: NodeBehindError,
    GateState.INCONSISTENT: InconsistentVersionsError,
}


def _relation(ours: Sequence[int], member: Member) -> int | None:
    """``compare_versions(ours, member)``, with None for inconsistent."""
    try:
        return compare_versions(ours, member.version)
    except InconsistentVersionsError:
        return None


def decide(ours: Sequence[int], members: Iterable[Member]) -> GateDecision:
    """Order-independent gate decision for ``ours`` against every member (ours included)."""
    ours = Version(*ours)
    members = tuple(Member(*member) for member in members)
    relations = {_relation(ours, member) for member in members}
    if SECOND_IS_NEWER in relations:
        state = GateState.WE_ARE_BEHIND
    elif None in relations:
        state = GateState.INCONSISTENT
    elif FIRST_IS_NEWER in relations:
        state = GateState.PEERS_BEHIND
    else:
        state = GateState.READY
    return GateDecision(state, ours, members)
