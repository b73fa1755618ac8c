"""The Celery hand-over with a real worker and a real broker (Redis on 127.0.0.1:6379).

host-a upgrades and runs ``migrate --queue-wait``: nothing is applied, the wait task is
queued. host-a's worker (a separate process running ``start_worker``) waits with
visible progress (task state WAITING, meta naming the lagging member) until host-c
upgrades, then migrates once and notifies the peers through their own queues; host-b's
worker consumes its notification and re-checks its gate.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
import uuid

import pytest

from .conftest import REPO_ROOT, Host

REDIS_URL = os.environ.get("DQCLUSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_client():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {error}")
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
