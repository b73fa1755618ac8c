"""dqcluster.W004: a node whose peers live on other hosts must listen where they can reach it.

``reachability_problems`` is the check's judgement on one alias's OPTIONS
(plain data); Django's check framework only wraps it in a Warning.
"""

from django_dqcluster.checks import reachability_problems

ON_THE_NETWORK = {"bind": "10.0.0.1:7001", "address": ["10.0.0.1:7002"], "peers": ["10.0.0.2:7001", "10.0.0.3:7001"]}


def test_a_node_on_its_network_address_with_remote_peers_is_fine():
    assert reachability_problems(ON_THE_NETWORK) == []


def test_a_raft_address_on_loopback_is_unreachable_for_peers_on_other_hosts():
    problems = reachability_problems({**ON_THE_NETWORK, "bind": "127.0.0.1:7001"})
    assert problems == [("bind", "this node's Raft address 127.0.0.1:7001 is on loopback: its peers on other "
                                 "hosts (10.0.0.2:7001, 10.0.0.3:7001) cannot reach it")]


def test_a_client_address_on_loopback_or_a_socket_breaks_writes_passed_on_by_followers():
    for client in ("127.0.0.1:7002", "localhost:7002", "unix:/run/dq.sock", "[::1]:7002"):
        problems = reachability_problems({**ON_THE_NETWORK, "address": [client]})
        assert [key for key, _ in problems] == ["client"], client
        assert "followers on other hosts pass writes on to the leader's client address" in problems[0][1]
    # OPTIONS["client"] (where a node listens) wins over the address clients use.
    assert reachability_problems({**ON_THE_NETWORK, "address": ["127.0.0.1:7002"], "client": "10.0.0.1:7002"}) == []


def test_a_cluster_on_one_machine_and_a_client_only_alias_are_not_judged():
    local_cluster = {"bind": "127.0.0.1:7001", "address": "127.0.0.1:7002", "peers": "127.0.0.1:7011,127.0.0.1:7021"}
    assert reachability_problems(local_cluster) == []
    assert reachability_problems({"address": ["127.0.0.1:7002"], "peers": ["10.0.0.2:7001"]}) == []  # runs no node
    assert reachability_problems({**ON_THE_NETWORK, "peers": ["node2.internal:7001"], "bind": "localhost:7001"})[0][0] == "bind"
