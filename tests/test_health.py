"""When a host's node is fit to serve, as a load balancer's health check is told (health.judge).

Plain data in, plain data out; tests/backend's health_endpoint scenario asks a
real 3-node store through the view.
"""

from django_dqcluster.health import judge

FOLLOWER = {"role": "follower", "leader": "10.0.0.2:7001", "commit_index": 120, "applied_index": 118,
            "diverged": False, "fatal": None, "has_quorum": True,
            "members": [{"raft": "10.0.0.1:7001", "connected": True}, {"raft": "10.0.0.2:7001", "connected": True},
                        {"raft": "10.0.0.3:7001", "connected": False}]}


def test_a_follower_that_knows_its_leader_and_keeps_up_is_healthy():
    assert judge(FOLLOWER) == (True, {"role": "follower", "lag": 2})


def test_a_node_that_knows_no_leader_is_unhealthy():
    healthy, report = judge({**FOLLOWER, "leader": None, "role": "candidate"})
    assert not healthy
    assert report["problem"] == "no leader is known (an election is under way)"


def test_a_node_cut_off_from_the_majority_is_unhealthy_though_it_still_names_its_old_leader():
    # pysyncobj calls no election while it reaches nobody: the old leader stays in its status.
    cut_off = {**FOLLOWER, "has_quorum": False, "members": [{**m, "connected": m["raft"] == "10.0.0.1:7001"}
                                                            for m in FOLLOWER["members"]]}
    assert judge(cut_off) == (False, {"role": "follower", "lag": 2,
                                      "problem": "the node reaches no majority of the members"})


def test_a_follower_that_does_not_reach_its_leader_is_unhealthy():
    members = [{**m, "connected": m["raft"] != "10.0.0.2:7001"} for m in FOLLOWER["members"]]
    healthy, report = judge({**FOLLOWER, "members": members})
    assert not healthy and report["problem"] == "the node does not reach its leader"


def test_a_leader_with_a_majority_is_healthy():
    assert judge({**FOLLOWER, "role": "leader", "leader": "10.0.0.1:7001", "applied_index": 120}) == (
        True, {"role": "leader", "lag": 0})


def test_a_node_far_behind_the_commit_index_is_unhealthy():
    healthy, report = judge({**FOLLOWER, "applied_index": 10}, max_lag=100)
    assert not healthy and report["problem"] == "the node is 110 entries behind the commit index (more than 100)"
    assert judge({**FOLLOWER, "applied_index": 20}, max_lag=100)[0]


def test_a_diverged_or_failed_node_is_unhealthy_whatever_else_it_says():
    assert judge({**FOLLOWER, "diverged": True}) == (
        False, {"role": "follower", "lag": 2, "problem": "the node's replica diverged from the others; it serves nothing"})
    healthy, report = judge({**FOLLOWER, "fatal": "disk full"})
    assert not healthy and report["problem"] == "the node stopped serving: disk full"


def test_a_node_catching_up_after_losing_entries_is_unhealthy_until_it_holds_what_was_committed():
    healthy, report = judge({**FOLLOWER, "catching_up": True, "catching_up_to": 12345})
    assert not healthy
    assert report["problem"] == ("the node lost entries it had acknowledged (its data directory was emptied, or "
                                 "restored from an older copy) and is catching up with the leader; it does not vote "
                                 "until it holds entry 12,345")
    assert judge({**FOLLOWER, "catching_up": True, "catching_up_to": None})[1]["problem"].endswith(
        "until it holds what the leader had committed")  # no leader heard from yet
    assert judge({**FOLLOWER, "catching_up": False})[0]


def test_a_node_installing_the_leaders_snapshot_is_unhealthy_until_it_is_in():
    healthy, report = judge({**FOLLOWER, "installing_snapshot": True})
    assert not healthy
    assert report["problem"].startswith("the node fell behind the leader's log and is installing the leader's snapshot")
    assert judge({**FOLLOWER, "installing_snapshot": False})[0]
