"""A membership change pysyncobj failed: the client learns whether to retry it, in words.

Found by a chaos run: a removal that met an election ended in "failed (pysyncobj
error 2)", not retryable, where nothing had been applied and a retry through the
new leader would do.
"""

import pytest
from pysyncobj import FAIL_REASON

from django_dqcluster import dbapi, wire
from django_dqcluster.store.node import _membership_failure


def test_a_change_that_met_no_leader_is_retryable_and_says_why():
    error = _membership_failure("127.0.0.1:7004", FAIL_REASON.MISSING_LEADER)

    assert error.kind == wire.OPERATIONAL and error.retryable and not error.unknown_outcome
    assert error.message == ("membership change for 127.0.0.1:7004 was not applied: the cluster has no leader "
                             "right now; retry it")


def test_a_change_in_flight_when_the_leader_changed_has_an_unknown_outcome():
    error = _membership_failure("127.0.0.1:7004", FAIL_REASON.LEADER_CHANGED)

    assert error.unknown_outcome and not error.retryable
    assert "the leader changed while the entry was in flight" in error.message


def test_a_change_the_leader_kept_refusing_is_not_retried_and_says_what_to_check():
    error = _membership_failure("127.0.0.1:7004", FAIL_REASON.REQUEST_DENIED)

    assert not error.retryable and not error.unknown_outcome
    assert "refused by the leader" in error.message and "dqcluster_members" in error.message


def test_the_leader_cannot_remove_itself_and_says_so_at_once(embedded_node):
    """pysyncobj's leader refuses its own removal: the request was retried for 30 s and ended
    "refused by the leader until the timeout (is it a member already, or not one any more?)"."""
    conn = dbapi.connect(node=embedded_node, isolation_level=None)
    with pytest.raises(dbapi.ProgrammingError, match=rf"^{embedded_node.config.bind} is the leader: stop its node "
                                                     r"first \(another member takes over\), then remove it$"):
        conn.remove_member(embedded_node.config.bind)
    assert [server["raft"] for server in conn.servers()] == [embedded_node.config.bind]
    conn.close()
