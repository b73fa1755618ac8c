"""compare_versions, the order-independent decision (§4.8 #69), member status (§5) and
node_is_outdated (§4.5 #38)."""

from __future__ import annotations

import itertools

import pytest
from cluster_fakes import add_node, preload_fresh_schema

from django_dqcluster.cluster import (
    ClusterError,
    GateState,
    InconsistentVersionsError,
    Member,
    MemberStatus,
    NodeBehindError,
    SomeNodesAreBehind,
    compare_versions,
    decide,
    member_states,
    node_is_outdated,
)

# -- compare_versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first, second, expected",
    [
        ((2, 1), (2, 1), 0),
        ((2, 1), (1, 1), 1),
        ((2, 1), (2, 0), 1),
        ((3, 4), (2, 1), 1),
        ((1, 1), (2, 1), 2),
        ((2, 0), (2, 1), 2),
    ],
)
def test_compare_versions(first, second, expected):
    assert compare_versions(first, second) == expected


def test_compare_versions_moving_in_opposite_directions_is_inconsistent():
    with pytest.raises(InconsistentVersionsError, match="^nodes have inconsistent versions$"):
        compare_versions((3, 0), (2, 1))


# -- decide: every permutation of the rows gives the same answer ----------------------------------

OURS = (2, 1)
US = Member("us", 2, 1)
AHEAD = Member("ahead", 3, 1)
BEHIND = Member("behind", 2, 0)
MIXED = Member("mixed", 3, 0)


@pytest.mark.parametrize(
    "members, state",
    [
        ([US], GateState.READY),
        ([US, Member("twin", 2, 1)], GateState.READY),
        ([US, BEHIND], GateState.PEERS_BEHIND),
        ([US, AHEAD], GateState.WE_ARE_BEHIND),
        ([US, MIXED], GateState.INCONSISTENT),
        ([US, AHEAD, BEHIND], GateState.WE_ARE_BEHIND),
        ([US, MIXED, BEHIND], GateState.INCONSISTENT),
        ([US, AHEAD, MIXED, BEHIND], GateState.WE_ARE_BEHIND),
    ],
    ids=["alone", "all-equal", "behind", "ahead", "mixed", "ahead+behind", "mixed+behind", "all"],
)
def test_decision_is_the_same_for_every_row_order(members, state):
    decisions = {decide(OURS, order).state for order in itertools.permutations(members)}
    assert decisions == {state}


def test_decision_lists_who_is_ahead_behind_and_inconsistent():
    decision = decide(OURS, [US, AHEAD, BEHIND, MIXED])
    assert (decision.ahead, decision.behind, decision.inconsistent) == ([AHEAD], [BEHIND], [MIXED])


def test_decision_error_matches_the_state_and_carries_the_members():
    assert decide(OURS, [US]).error() is None
    assert isinstance(decide(OURS, [US, BEHIND]).error(), SomeNodesAreBehind)
    error = decide(OURS, [US, AHEAD]).error()
    assert isinstance(error, NodeBehindError)
    assert error.members == [US, AHEAD]
    assert str(error) == "this node's version is behind, please upgrade"


# -- member_states, on sqlite3 and PostgreSQL ------------------------------------------------------


@pytest.fixture
def nodes(conn):
    preload_fresh_schema(conn)
    return conn


def test_member_states_reports_every_row_with_its_state(nodes):
    add_node(nodes, "10.0.0.1", 3, 1)
    add_node(nodes, "10.0.0.2", 3, 1)
    add_node(nodes, "10.0.0.3", 2, 1)  # not upgraded yet: someone is ahead of it
    add_node(nodes, "10.0.0.4", 4, 0)  # schema up, API count down: fits nobody

    states = member_states(nodes, "10.0.0.1")

    assert [(s.address, s.schema, s.api_extensions, s.state) for s in states] == [
        ("10.0.0.1", 3, 1, MemberStatus.INCONSISTENT),
        ("10.0.0.2", 3, 1, MemberStatus.INCONSISTENT),
        ("10.0.0.3", 2, 1, MemberStatus.BEHIND_UPGRADE),
        ("10.0.0.4", 4, 0, MemberStatus.INCONSISTENT),
    ]


def test_member_states_during_a_rolling_upgrade(nodes):
    add_node(nodes, "10.0.0.1", 3, 1)
    add_node(nodes, "10.0.0.2", 3, 1)
    add_node(nodes, "10.0.0.3", 2, 1)

    states = {s.address: s.state for s in member_states(nodes, "10.0.0.1")}

    assert states == {
        "10.0.0.1": MemberStatus.WAITING,
        "10.0.0.2": MemberStatus.BLOCKED_NEWER,
        "10.0.0.3": MemberStatus.BEHIND_UPGRADE,
    }


def test_member_states_all_ready_with_heartbeats(nodes):
    add_node(nodes, "10.0.0.1", 2, 1)
    add_node(nodes, "10.0.0.2", 2, 1)

    states = member_states(nodes, "10.0.0.2")

    assert {s.state for s in states} == {MemberStatus.READY}
    assert all(s.heartbeat is not None and hasattr(s.heartbeat, "year") for s in states)


def test_unclustered_node_is_the_local_member(nodes):
    add_node(nodes, "0.0.0.0", 2, 1)
    [state] = member_states(nodes, "10.0.0.1")
    assert (state.address, state.state) == ("0.0.0.0", MemberStatus.READY)


# -- node_is_outdated ------------------------------------------------------------------------------


def test_single_node_is_not_outdated(nodes):
    add_node(nodes, "0.0.0.0", 2, 1)
    assert node_is_outdated(nodes, "10.0.0.1") is False


def test_node_is_not_outdated_when_all_are_equal(nodes):
    add_node(nodes, "10.0.0.1", 2, 1)
    add_node(nodes, "10.0.0.2", 2, 1)
    assert node_is_outdated(nodes, "10.0.0.1") is False


def test_node_is_outdated_when_a_peer_has_a_higher_schema(nodes):
    add_node(nodes, "10.0.0.1", 2, 1)
    add_node(nodes, "10.0.0.2", 3, 1)
    assert node_is_outdated(nodes, "10.0.0.1") is True


def test_node_is_not_outdated_when_a_peer_is_lower(nodes):
    add_node(nodes, "10.0.0.1", 2, 1)
    add_node(nodes, "10.0.0.2", 1, 1)
    assert node_is_outdated(nodes, "10.0.0.1") is False


def test_pending_peer_does_not_make_a_node_outdated(nodes):
    add_node(nodes, "10.0.0.1", 2, 1)
    add_node(nodes, "10.0.0.2", 3, 1, pending=True)
    assert node_is_outdated(nodes, "10.0.0.1") is False


def test_node_with_zero_api_extensions_can_be_checked(nodes):
    # The seed required a non-zero version to find "this node", so this always failed.
    add_node(nodes, "10.0.0.1", 2, 0)
    add_node(nodes, "10.0.0.2", 2, 1)
    assert node_is_outdated(nodes, "10.0.0.1") is True


def test_outdated_check_without_our_row_is_an_error(nodes):
    add_node(nodes, "10.0.0.1", 2, 1)
    add_node(nodes, "10.0.0.2", 2, 1)
    with pytest.raises(ClusterError, match="inconsistency: local node not found"):
        node_is_outdated(nodes, "10.0.0.9")
