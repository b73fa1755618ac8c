"""The backend against real nodes; each scenario runs in its own interpreter (see scenarios.py)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_scenario(name, tmp_path, timeout=240):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-m", "tests.backend.scenarios", name, str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"scenario {name} failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    return result.stdout


def test_embedded_single_node(tmp_path):
    assert "embedded OK" in run_scenario("embedded", tmp_path)


def test_embedded_node_whose_client_port_is_taken_fails_clearly_and_leaves_nothing_running(tmp_path):
    assert "embedded_client_port_taken OK" in run_scenario("embedded_client_port_taken", tmp_path)


@pytest.mark.cluster
def test_three_nodes_follower_reads_its_own_writes(tmp_path):
    assert "three_nodes OK" in run_scenario("three_nodes", tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_leader_killed_between_two_requests(tmp_path):
    assert "failover_between_requests OK" in run_scenario("failover_between_requests", tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_transaction_interrupted_by_failover(tmp_path):
    assert "transaction_interrupted OK" in run_scenario("transaction_interrupted", tmp_path)


@pytest.mark.slow
def test_consistency_none_reads_stale_strong_never(tmp_path):
    assert "consistency OK" in run_scenario("consistency", tmp_path)


def test_deferred_transactions_let_read_only_atomic_blocks_run_side_by_side(tmp_path):
    assert "deferred_transactions OK" in run_scenario("deferred_transactions", tmp_path)


def test_retry_transaction_runs_again_only_what_failed_retryably(tmp_path):
    assert "retried_transactions OK" in run_scenario("retried_transactions", tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_retry_transaction_runs_a_transaction_cut_by_failover_again_on_the_new_leader(tmp_path):
    assert "retry_after_failover OK" in run_scenario("retry_after_failover", tmp_path)


@pytest.mark.postgres
def test_retry_transaction_retries_postgresql_serialization_failures(tmp_path):
    assert "retry_on_postgresql OK" in run_scenario("retry_on_postgresql", tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_orm_transfers_under_random_faults_keep_every_total(tmp_path):
    assert "orm_under_faults OK" in run_scenario("orm_under_faults", tmp_path)


def test_dqcluster_backup_and_restore_commands_copy_a_database_under_another_name(tmp_path):
    assert "backup_and_restore OK" in run_scenario("backup_and_restore", tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_dqcluster_members_removes_a_dead_host_refuses_a_live_one_and_adds_a_new_one(tmp_path):
    assert "member_removal OK" in run_scenario("member_removal", tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_the_health_endpoint_answers_503_naming_why_once_the_node_cannot_serve(tmp_path):
    assert "health_endpoint OK" in run_scenario("health_endpoint", tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_the_metrics_endpoint_gives_prometheus_the_nodes_state_and_the_gates_members_behind_a_token(tmp_path):
    assert "metrics_endpoint OK" in run_scenario("metrics_endpoint", tmp_path)


@pytest.mark.cluster
def test_a_process_with_only_the_client_token_uses_the_store_and_a_wrong_token_is_refused(tmp_path):
    assert "client_token OK" in run_scenario("client_token", tmp_path)


def test_a_process_with_a_read_only_token_reads_through_the_orm_and_cannot_write(tmp_path):
    assert "read_only_token OK" in run_scenario("read_only_token", tmp_path)
