"""How cluster_status names a member's role from the store's status of the node this host talks to.

``member_role`` is plain data in, plain data out: no store, no Django database.
"""

from datetime import datetime, timedelta, timezone

from django_dqcluster.member_status import member_role

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
FRESH = NOW - timedelta(seconds=5)

# The status a follower node reports: itself and the two other members.
FOLLOWER_STATUS = {
    "node": "127.0.0.1:7001", "client": "127.0.0.1:7101", "role": "follower",
    "commit_index": 40, "applied_index": 38,
    "members": [
        {"raft": "127.0.0.1:7001", "client": "127.0.0.1:7101", "role": "follower", "connected": True},
        {"raft": "127.0.0.1:7002", "client": "127.0.0.1:7102", "role": "leader", "connected": True},
        {"raft": "127.0.0.1:7003", "client": "127.0.0.1:7103", "role": "follower", "connected": False},
    ],
}


def test_this_host_recorded_by_its_nodes_client_address_gets_the_nodes_role_and_lag():
    assert member_role(FOLLOWER_STATUS, "127.0.0.1:7101", FRESH, NOW, is_self=True) == ("follower", 38, 2)


def test_this_host_recorded_by_host_name_gets_the_role_of_the_node_it_talks_to():
    # A node listening on loopback only: the host is recorded by its host name.
    assert member_role(FOLLOWER_STATUS, "web-1", FRESH, NOW, is_self=True) == ("follower", 38, 2)


def test_another_member_the_store_does_not_know_stays_unknown_while_its_heartbeat_is_fresh():
    assert member_role(FOLLOWER_STATUS, "web-2", FRESH, NOW, is_self=False) == ("unknown", None, None)


def test_a_member_the_store_reports_disconnected_is_offline():
    assert member_role(FOLLOWER_STATUS, "127.0.0.1:7103", FRESH, NOW, is_self=False) == ("offline", None, None)


def test_the_leader_is_named_by_the_store():
    assert member_role(FOLLOWER_STATUS, "127.0.0.1:7102", FRESH, NOW, is_self=False)[0] == "leader"


# What the same follower's node brings along from the leader (status(of="leader")):
# only the leader knows how far each member got.
LEADER_STATUS = {
    "node": "127.0.0.1:7002", "client": "127.0.0.1:7102", "role": "leader",
    "commit_index": 41, "applied_index": 41,
    "members": [
        {"raft": "127.0.0.1:7001", "client": "127.0.0.1:7101", "role": "follower", "connected": True,
         "match_index": 41},
        {"raft": "127.0.0.1:7002", "client": "127.0.0.1:7102", "role": "leader", "connected": True},
        {"raft": "127.0.0.1:7003", "client": "127.0.0.1:7103", "role": "follower", "connected": True,
         "match_index": 35},
    ],
}
FOLLOWER_WITH_LEADER = {**FOLLOWER_STATUS, "leader_status": LEADER_STATUS}


def test_through_a_follower_the_leaders_progress_comes_from_the_leaders_own_status():
    assert member_role(FOLLOWER_WITH_LEADER, "127.0.0.1:7102", FRESH, NOW, is_self=False) == ("leader", 41, 0)


def test_through_a_follower_another_followers_progress_is_what_the_leader_matched():
    other = {**FOLLOWER_WITH_LEADER, "members": [
        {**member, "connected": True} for member in FOLLOWER_STATUS["members"]]}
    assert member_role(other, "127.0.0.1:7103", FRESH, NOW, is_self=False) == ("follower", 35, 6)


def test_this_host_keeps_its_own_nodes_applied_index_when_the_leader_is_asked_too():
    assert member_role(FOLLOWER_WITH_LEADER, "127.0.0.1:7101", FRESH, NOW, is_self=True) == ("follower", 38, 2)


def test_without_the_leaders_status_a_follower_cannot_tell_the_others_progress():
    assert member_role(FOLLOWER_STATUS, "127.0.0.1:7102", FRESH, NOW, is_self=False) == ("leader", None, None)


def test_while_the_secret_rotates_cluster_status_says_whether_the_old_one_is_still_needed():
    from django_dqcluster.management.commands.cluster_status import describe_fallbacks

    line = describe_fallbacks({"count": 1, "raft_seconds_ago": 4.2, "clients_seconds_ago": None})
    assert line == ("Secret rotation: this host's node accepts 1 fallback secret(s); one was last needed by a "
                    "member's Raft message 4s ago, by a client session not since the node started")


def test_a_secret_file_the_node_cannot_use_is_named_with_what_is_wrong():
    from django_dqcluster.management.commands.cluster_status import describe_secret_file

    assert describe_secret_file(None) is None
    assert describe_secret_file({"path": "/etc/dq/secret", "error": None, "changes": 0}) is None
    line = describe_secret_file({"path": "/etc/dq/secret", "error": "/etc/dq/secret holds no secret", "changes": 1})
    assert line.startswith("Secret file: /etc/dq/secret holds no secret; this host's node keeps the secrets it had")


def test_a_node_serving_older_data_for_now_says_why():
    from django_dqcluster.management.commands.cluster_status import describe_node_state

    assert describe_node_state(None) is None
    assert describe_node_state({"installing_snapshot": False, "catching_up": False}) is None
    assert describe_node_state({"installing_snapshot": True}).startswith(
        "This host's node fell behind the leader's log and is installing the leader's snapshot")
    assert describe_node_state({"catching_up": True, "catching_up_to": 80}) == (
        "This host's node lost entries it had acknowledged (its data directory was emptied, or restored from an "
        "older copy) and is catching up with the leader; it does not vote until it holds entry 80")


def test_members_of_two_releases_are_named_with_the_store_entry_format_each_applies():
    from django_dqcluster.management.commands.cluster_status import describe_entry_formats

    def status(written, *applies):
        return {"entry_format": written,
                "members": [{"raft": f"127.0.0.1:700{i}", "applies": a} for i, a in enumerate(applies, 1)]}

    assert describe_entry_formats(None) is None
    assert describe_entry_formats(status(3, 3, 3, 3)) is None  # one release
    assert describe_entry_formats(status(3, 3, 3, None)) is None  # one has not said yet: nothing newer either
    assert describe_entry_formats(status(3, 4, 4, 3)) == (
        "Store entries: written in format 3, which every member applies; format 4 once "
        "127.0.0.1:7003 (format 3) run(s) the newer django-dqcluster")
    assert describe_entry_formats(status(3, 4, None, 3)) == (
        "Store entries: written in format 3, which every member applies; format 4 once "
        "127.0.0.1:7002 (has not said), 127.0.0.1:7003 (format 3) run(s) the newer django-dqcluster")


def test_at_verbosity_2_a_follower_says_which_reads_and_transactions_it_ran_itself():
    from django_dqcluster.management.commands.cluster_status import describe_follower_work

    assert describe_follower_work(None) is None
    quiet = {"role": "follower", "follower_reads": {"strong": {"answered_here": 0, "sent_to_leader": 0}},
             "follower_transactions": {"begun_here": 0, "moved_to_leader": 0, "run_by_leader": 0}}
    assert describe_follower_work(quiet) is None
    busy = {"role": "follower",
            "follower_reads": {"strong": {"answered_here": 1200, "sent_to_leader": 30},
                               "weak": {"answered_here": 0, "sent_to_leader": 0}},
            "follower_transactions": {"begun_here": 40, "moved_to_leader": 7, "run_by_leader": 3}}
    assert describe_follower_work(busy) == (
        "Follower work since the node started: strong reads 1,200 here, 30 by the leader; deferred transactions "
        "40 begun here (7 moved to the leader at their first write, 3 run by the leader from their first read)")
    assert describe_follower_work({**busy, "role": "leader"}) is None  # (its counts are from when it followed)

