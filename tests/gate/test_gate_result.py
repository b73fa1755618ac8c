"""The gate's one-line message, which is what an operator reads on stderr at any verbosity.

``GateResult`` is plain data: these tests build it directly, without Django settings.
"""

from __future__ import annotations

from django_dqcluster.cluster import Version
from django_dqcluster.gate import GateResult, GateStatus, MemberInfo, relation


def refusal(reason, ours, rows, address):
    """A refused GateResult for this host at ``address`` running ``ours``; rows: (address, schema, api)."""
    members = tuple(
        MemberInfo(row_address, schema, api, relation(ours, (schema, api)), is_self=row_address == address)
        for row_address, schema, api in rows
    )
    return GateResult("default", address, ours, GateStatus.REFUSED, reason=reason, members=members)


def test_refusal_of_a_host_behind_names_every_member_and_its_version():
    result = refusal("behind", Version(1, 0), [("host-a", 2, 0), ("host-b", 1, 0), ("host-c", 1, 0)], "host-b")

    assert result.message == (
        "this node's version is behind, please upgrade: this host (host-b) runs schema 1, api_extensions 0; "
        "members: host-a (schema 2, api_extensions 0; ahead), host-b (schema 1, api_extensions 0; this host), "
        "host-c (schema 1, api_extensions 0; same)"
    )


def test_refusal_for_inconsistent_versions_names_every_member_and_its_version():
    result = refusal("inconsistent", Version(3, 0), [("host-a", 2, 1), ("host-b", 3, 0), ("host-c", 2, 0)], "host-b")

    assert result.message == (
        "nodes have inconsistent versions: this host (host-b) runs schema 3, api_extensions 0; "
        "members: host-a (schema 2, api_extensions 1; inconsistent), host-b (schema 3, api_extensions 0; this host), "
        "host-c (schema 2, api_extensions 0; behind)"
    )
