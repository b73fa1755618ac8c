"""The Celery tasks of the gate, run by simulated hosts against a shared database.

The hand-over, with a real worker and a real broker (Redis on 127.0.0.1:6379): host-a
upgrades and runs ``migrate --queue-wait``: nothing is applied, the wait task is
queued. host-a's worker (a separate process running ``start_worker``) waits with
visible progress (task state WAITING, meta naming the lagging member) until host-c
upgrades, then migrates once and notifies the peers through their own queues; host-b's
worker consumes its notification and re-checks its gate.

Notifications are best effort (seed-behaviour.md §4.8 #71): with the broker down, the
wait task still migrates and returns, reporting the notifications it could not send,
and a waiting peer proceeds by its own timed re-check.

The periodic re-check (LXD's KeepUpdated, §4.5 #40): ``recheck_cluster_gate`` runs
``DQCLUSTER_UPDATE_COMMAND`` on a host that runs older code than another member, and
only there.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import uuid

import pytest

from tests.services import reachable_redis

from .conftest import REPO_ROOT, Host

REDIS_URL = os.environ.get("DQCLUSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_client():
    client = reachable_redis(REDIS_URL)
    yield client
    client.close()


def _wait_for_line(process, text, timeout):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return
    raise AssertionError(f"no {text!r} from the worker; output: {''.join(seen)}; stderr: {process.stderr.read() if process.poll() is not None else ''}")


def _start_worker(host, queues):
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, "tests", "gate", "celery_host.py"), queues],
        cwd=REPO_ROOT, env=host.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_queued_wait_task_migrates_once_after_the_lagging_member_upgrades(sqlite_db, redis_client):
    from celery import Celery
    from celery.result import AsyncResult

    run = uuid.uuid4().hex[:8]
    queue = f"dqgate-{run}"
    env = {"DQ_GATE_REDIS": REDIS_URL, "DQ_GATE_QUEUE": queue, "DQ_GATE_MAX_INTERVAL": "1"}
    a, b, c = (Host(sqlite_db, f"{name}-{run}", extra_env=env) for name in ("host-a", "host-b", "host-c"))
    for host in (a, b, c):
        host.run("migrate", "-v0")
    a2, b2, c2 = a.upgraded(), b.upgraded(), c.upgraded()
    b2.run("ensure_cluster_schema", expect=3)  # host-b upgraded first and waits too

    worker = _start_worker(a2, queue)
    workers = [worker]
    client = Celery("gate-test-client", broker=REDIS_URL, backend=REDIS_URL)
    notify_keys = [f"dqcluster.{host.address}" for host in (b, c)]
    try:
        _wait_for_line(worker, "WORKER READY", 40)

        handed_over = a2.run("migrate", "--queue-wait", "--timeout", "60")
        assert "Queued Celery task wait_for_cluster_upgrade" in handed_over.stdout
        assert "Nothing applied here." in handed_over.stdout
        task_id = re.search(r"wait_for_cluster_upgrade \(([0-9a-f-]+)\)", handed_over.stdout).group(1)
        result = AsyncResult(task_id, app=client)

        # Progress is visible while it waits: the lagging member and its version.
        deadline = time.monotonic() + 20
        while result.state != "WAITING" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert result.state == "WAITING"
        meta = result.info
        assert meta["waiting_for"] == [c.address]
        assert {m["address"]: m["relation"] for m in meta["members"]} == {
            a.address: "same", b.address: "same", c.address: "behind"
        }
        assert not sqlite_db.table_exists("gateapp_v2only")

        # host-c upgrades (its gate run is enough): the task migrates once, then notifies.
        c2.run("ensure_cluster_schema")
        outcome = result.get(timeout=30)
        assert result.state == "SUCCESS"
        assert outcome["applied"] == ["gateapp.0002_v2"]
        assert sorted(outcome["notified"]) == sorted([b.address, c.address]) and outcome["failed"] == {}
        assert sqlite_db.query("SELECT host FROM gateapp_applylog WHERE migration = '0002'") == [(a.address,)]
        # One notification waits in each peer's own queue for that host's worker.
        assert [redis_client.llen(key) for key in notify_keys] == [1, 1]

        # The others then find nothing to apply.
        assert "No migrations to apply." in c2.run("migrate").stdout
        assert len(sqlite_db.query("SELECT host FROM gateapp_applylog WHERE migration = '0002'")) == 1

        # host-b's worker consumes its notification: it re-checks its gate at once.
        peer = _start_worker(b2, f"{queue},{notify_keys[0]}")
        workers.append(peer)
        _wait_for_line(peer, "WORKER READY", 40)
        notified = AsyncResult(outcome["notification_ids"][b.address], app=client).get(timeout=20)
        assert notified["notified_by"] == a.address and notified["state"] == "ready"
        assert notified["address"] == b.address and notified["outdated"] is False
        assert redis_client.llen(notify_keys[0]) == 0
    finally:
        for process in workers:
            process.stdin.close()
        for process in workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        redis_client.delete(queue, *notify_keys)


def _closed_port():
    """A local port nothing listens on: a broker that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _result_of(process):
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# Runs the wait task in this host's process (Celery eager mode: apply()).
WAIT_TASK_SCRIPT = """
import json
from django_dqcluster.tasks import wait_for_cluster_upgrade

outcome = wait_for_cluster_upgrade.apply(kwargs={"timeout": 30, "max_interval": 1}).get()
print("RESULT", json.dumps({key: outcome[key] for key in ("state", "applied", "notified", "failed")}))
"""


def test_lost_upgrade_notification_is_reported_and_the_waiting_peer_proceeds_by_rechecking(sqlite_db):
    a, b, c = Host(sqlite_db, "host-a"), Host(sqlite_db, "host-b"), Host(sqlite_db, "host-c")
    for host in (a, b, c):
        host.run("migrate", "-v0")
    # host-c runs the new code and records it; host-b upgrades and waits. Neither runs
    # a worker, so no notification can reach them.
    c.upgraded().run("ensure_cluster_schema", expect=3)
    waiter = b.upgraded().start("ensure_cluster_schema", "--wait", "--timeout", "60")
    try:
        _wait_for_line(waiter, "still waiting; next check in", 30)

        # host-a upgrades last, while the broker is down: its wait task migrates, the
        # notification to host-b fails, and host-c's is not attempted against the same broker.
        broker_down = {"DQ_GATE_REDIS": f"redis://127.0.0.1:{_closed_port()}/0", "DQ_GATE_RESULT_BACKEND": "cache+memory://"}
        last = Host(sqlite_db, "host-a", "v2", extra_env=broker_down).shell(WAIT_TASK_SCRIPT)
        outcome = _result_of(last)

        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()

    # The task did its work and returned, with the failure in its result and in the log.
    assert outcome["state"] == "ready" and outcome["applied"] == ["gateapp.0002_v2"]
    assert outcome["notified"] == [] and sorted(outcome["failed"]) == ["host-b", "host-c"]
    assert outcome["failed"]["host-b"].startswith("OperationalError: ")
    assert outcome["failed"]["host-c"].startswith("not sent, the broker failed for an earlier peer: OperationalError")
    assert "cluster upgrade notification to host-b failed" in last.stderr
    # host-b saw the cluster ready at one of its timed re-checks, not at the first one.
    assert waiter.returncode == 0, (out, err)
    checks = [int(number) for number in re.findall(r"Check (\d+) after \S+: ready", out)]
    assert len(checks) == 1 and checks[0] >= 2, out


# Runs the periodic re-check task as Celery beat would, the task function called directly.
RECHECK_SCRIPT = """
import json, sys
from django.test import override_settings
from django_dqcluster.tasks import recheck_cluster_gate

# The update command leaves a trace: it appends this host's address to a file.
update = [sys.executable, "-c", "import sys; print(sys.argv[2], file=open(sys.argv[1], 'a'))", MARKER, ADDRESS]
with override_settings(DQCLUSTER_UPDATE_COMMAND=update):
    outcome = recheck_cluster_gate("default")
print("RESULT", json.dumps({key: outcome.get(key) for key in ("state", "outdated", "update_command")}))
"""


def _recheck(host, marker):
    script = RECHECK_SCRIPT.replace("MARKER", repr(str(marker))).replace("ADDRESS", repr(host.address))
    return _result_of(host.shell(script))


def test_recheck_runs_the_update_command_on_a_host_older_than_a_member(shared_db, tmp_path):
    a, b = Host(shared_db, "host-a"), Host(shared_db, "host-b")
    for host in (a, b):
        host.run("ensure_cluster_schema", "-v0")
    b.upgraded().run("ensure_cluster_schema", "-v0", expect=3)  # host-b now runs newer code
    marker = tmp_path / "updates.log"

    outcome = _recheck(a, marker)

    assert outcome["state"] == "refused" and outcome["outdated"] is True
    assert outcome["update_command"]["returncode"] == 0
    assert marker.read_text().splitlines() == ["host-a"]


def test_recheck_does_not_run_the_update_command_on_a_current_host(shared_db, tmp_path):
    a, b = Host(shared_db, "host-a"), Host(shared_db, "host-b")
    for host in (a, b):
        host.run("ensure_cluster_schema", "-v0")
    marker = tmp_path / "updates.log"

    same_version = _recheck(a, marker)
    newest = _recheck(b.upgraded(), marker)  # ahead of host-a: it waits, it is not outdated

    assert same_version == {"state": "ready", "outdated": False, "update_command": None}
    assert newest == {"state": "waiting", "outdated": False, "update_command": None}
    assert not marker.exists()
