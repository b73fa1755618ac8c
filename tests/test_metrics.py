"""What Prometheus is told about a host's node and the version gate (metrics.py).

Plain data in, text out; tests/backend's metrics_endpoint scenario scrapes a
real 3-node store through the view, token and all.
"""

import datetime as dt

from django_dqcluster.cluster import Version
from django_dqcluster.metrics import FAMILIES, gate_samples, node_samples, render

LEADER = {
    "node": "10.0.0.1:7001", "role": "leader", "leader": "10.0.0.1:7001", "term": 3,
    "commit_index": 120, "applied_index": 120, "log_length": 40, "has_quorum": True, "diverged": None,
    "fatal": None, "write_locks": {"app": "session 7"}, "uptime": 12.5,
    "members": [
        {"raft": "10.0.0.2:7001", "role": "follower", "connected": True, "match_index": 118},
        {"raft": "10.0.0.3:7001", "role": "follower", "connected": False, "match_index": 90},
        {"raft": "10.0.0.1:7001", "role": "leader", "connected": True},
    ],
}
FOLLOWER = {
    **LEADER, "node": "10.0.0.2:7001", "role": "follower", "commit_index": 119, "applied_index": 117,
    "write_locks": {}, "members": [{**m, "match_index": None} for m in LEADER["members"]],
}


def by_key(samples):
    return {(name, labels.get("member")): value for name, labels, value in samples}


def test_a_leader_tells_its_own_state_and_how_far_each_member_has_replicated():
    values = by_key(node_samples("default", LEADER))
    assert values[("dqcluster_node_up", None)] == 1 and values[("dqcluster_node_is_leader", None)] == 1
    assert values[("dqcluster_raft_term", None)] == 3 and values[("dqcluster_raft_apply_lag_entries", None)] == 0
    assert values[("dqcluster_write_locks", None)] == 1 and values[("dqcluster_members", None)] == 3
    assert values[("dqcluster_member_connected", "10.0.0.3:7001")] == 0
    assert values[("dqcluster_member_match_index", "10.0.0.2:7001")] == 118
    assert values[("dqcluster_member_match_index", "10.0.0.3:7001")] == 90
    assert values[("dqcluster_member_match_index", "10.0.0.1:7001")] == 120  # the leader holds what it committed


def test_a_follower_tells_the_members_progress_it_asked_its_leader_for():
    values = by_key(node_samples("default", {**FOLLOWER, "leader_status": LEADER}))
    assert values[("dqcluster_node_is_leader", None)] == 0
    assert values[("dqcluster_raft_apply_lag_entries", None)] == 2
    assert values[("dqcluster_member_match_index", "10.0.0.3:7001")] == 90
    assert ("dqcluster_write_locks", None) not in values  # only the leader's count means anything
    # With no leader to ask, the progress is left out rather than guessed.
    alone = by_key(node_samples("default", FOLLOWER))
    assert not [key for key in alone if key[0] == "dqcluster_member_match_index"]


def test_a_rolling_upgrade_of_django_dqcluster_shows_in_the_entry_formats():
    members = [{**LEADER["members"][0], "applies": 4}, {**LEADER["members"][1], "applies": None},
               {**LEADER["members"][2], "applies": 3}]
    values = by_key(node_samples("default", {**LEADER, "entry_format": 3, "members": members}))
    assert values[("dqcluster_store_entry_format", None)] == 3
    assert values[("dqcluster_member_entry_format", "10.0.0.2:7001")] == 4
    assert values[("dqcluster_member_entry_format", "10.0.0.1:7001")] == 3
    assert ("dqcluster_member_entry_format", "10.0.0.3:7001") not in values  # it has not said


def test_a_follower_tells_how_many_reads_it_answered_itself_and_how_many_the_leader_ran():
    follower_reads = {"strong": {"answered_here": 950, "sent_to_leader": 50},
                      "weak": {"answered_here": 7, "sent_to_leader": 3}}
    samples = node_samples("default", {**FOLLOWER, "follower_reads": follower_reads})
    assert [(labels, value) for name, labels, value in samples if name == "dqcluster_follower_reads"] == [
        ({"database": "default", "consistency": "strong", "answered_by": "follower"}, 950),
        ({"database": "default", "consistency": "strong", "answered_by": "leader"}, 50),
        ({"database": "default", "consistency": "weak", "answered_by": "follower"}, 7),
        ({"database": "default", "consistency": "weak", "answered_by": "leader"}, 3),
    ]


def test_a_follower_tells_what_became_of_the_transactions_begun_on_it():
    counts = {"begun_here": 40, "moved_to_leader": 7, "run_by_leader": 3}
    samples = node_samples("default", {**FOLLOWER, "follower_transactions": counts})
    assert [(labels, value) for name, labels, value in samples if name == "dqcluster_follower_transactions"] == [
        ({"database": "default", "count": "begun_here"}, 40),
        ({"database": "default", "count": "moved_to_leader"}, 7),
        ({"database": "default", "count": "run_by_leader"}, 3),
    ]


def test_a_node_that_does_not_answer_is_down_and_nothing_else_is_said_of_it():
    assert node_samples("default", None) == [("dqcluster_node_up", {"database": "default"}, 0)]


def test_unhealthy_is_what_the_health_check_calls_unhealthy():
    catching_up = by_key(node_samples("default", {**FOLLOWER, "catching_up": True}))
    assert catching_up[("dqcluster_node_catching_up", None)] == 1 and catching_up[("dqcluster_node_healthy", None)] == 0
    installing = by_key(node_samples("default", {**FOLLOWER, "installing_snapshot": True}))
    assert installing[("dqcluster_node_installing_snapshot", None)] == 1
    assert installing[("dqcluster_node_healthy", None)] == 0
    values = by_key(node_samples("default", {**FOLLOWER, "has_quorum": False}))
    assert values[("dqcluster_node_up", None)] == 1
    assert values[("dqcluster_node_healthy", None)] == 0 and values[("dqcluster_node_has_quorum", None)] == 0
    lagging = by_key(node_samples("default", {**FOLLOWER, "applied_index": 10}, max_lag=100))
    assert lagging[("dqcluster_node_healthy", None)] == 0


def test_while_the_secret_rotates_the_node_tells_when_the_old_one_was_last_needed_and_by_whom():
    rotating = {**LEADER, "secret_fallbacks": {"count": 1, "raft_seconds_ago": 2.5, "clients_seconds_ago": None}}
    samples = [(name, labels, value) for name, labels, value in node_samples("default", rotating)
               if name.startswith("dqcluster_node_secret_fallback")]
    assert samples == [
        ("dqcluster_node_secret_fallbacks", {"database": "default"}, 1),
        ("dqcluster_node_secret_fallback_used_seconds_ago", {"database": "default", "by": "raft"}, 2.5),
    ]
    assert not [name for name, _, _ in node_samples("default", LEADER) if "secret_fallback" in name]


def test_a_secret_file_the_node_cannot_use_is_a_metric_to_alert_on():
    def unusable(secret_file):
        return [value for name, _, value in node_samples("default", {**LEADER, "secret_file": secret_file})
                if name == "dqcluster_node_secret_file_unusable"]

    fine = {"path": "/etc/dq/secret", "error": None, "changes": 2, "changed_seconds_ago": 8.0}
    assert unusable(fine) == [0]
    assert unusable({**fine, "error": "/etc/dq/secret holds no secret"}) == [1]
    assert unusable(None) == []  # a node given its secret otherwise


def test_the_gate_tells_each_members_version_and_how_many_run_other_code():
    now = dt.datetime(2026, 12, 5, 12, 0, 0, tzinfo=dt.timezone.utc)
    members = [("10.0.0.1:7001", Version(14, 3), now - dt.timedelta(seconds=20)),
               ("10.0.0.2:7001", Version(13, 3), now - dt.timedelta(minutes=10)),
               ("10.0.0.3:7001", Version(14, 3), None)]
    values = by_key(gate_samples("default", Version(14, 3), members, now))
    assert values[("dqcluster_gate_local_schema", None)] == 14
    assert values[("dqcluster_gate_members_other_version", None)] == 1
    assert values[("dqcluster_gate_member_schema", "10.0.0.2:7001")] == 13
    assert values[("dqcluster_gate_member_heartbeat_age_seconds", "10.0.0.2:7001")] == 600
    assert ("dqcluster_gate_member_heartbeat_age_seconds", "10.0.0.3:7001") not in values  # never checked in


def test_the_text_is_prometheus_exposition_format_with_help_and_type_once_per_family():
    samples = node_samples("default", LEADER) + [("dqcluster_gate_member_schema", {"database": 'we"ird\\', "member": "a\nb"}, 2)]
    text = render(samples)
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[:3] == [
        "# HELP dqcluster_node_up " + FAMILIES["dqcluster_node_up"],
        "# TYPE dqcluster_node_up gauge",
        'dqcluster_node_up{database="default"} 1',
    ]
    assert 'dqcluster_node_uptime_seconds{database="default"} 12.5' in lines
    assert 'dqcluster_member_connected{database="default",member="10.0.0.3:7001"} 0' in lines
    assert 'dqcluster_gate_member_schema{database="we\\"ird\\\\",member="a\\nb"} 2' in lines  # escaped
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(families) == len(set(families)) == len({name for name, _, _ in samples})
