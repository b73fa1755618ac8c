"""A Celery task's soft time limit in the middle of a query, with a real prefork worker.

Celery raises ``SoftTimeLimitExceeded`` from a signal handler while the task
waits for the node's answer. A task that catches it and goes on with the
database (to record that it timed out, as tasks do) gets its own answers, and
so does the next task on the worker's persistent connection; a transaction the
task was in is rolled back, and the node stops the statement nobody waits for,
so the write lock is free for the task's next write. The worker is a
``celery worker --pool=prefork`` process (time limits need it) on a one-node
store without a step limit, so that only the node's cancellation ends the
tasks' endless read; Redis (127.0.0.1:6379) is broker and result backend.
"""

import os
import subprocess
import sys
import uuid

import pytest

from django_dqcluster.store.local_cluster import LocalCluster
from tests.services import reachable_redis
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REDIS_URL = os.environ.get("DQCLUSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
HOOK = "django.db.backends.sqlite3._functions:register"
TASKS = "tests.backend.celery_worker"
#: A task's wait for its result: starting the worker's pool, and a one-second limit, take far less.
RESULT_WAIT = 60


@pytest.fixture(scope="module")
def redis_url():
    reachable_redis(REDIS_URL).close()
    return REDIS_URL


@pytest.fixture(scope="module")
def run_task(tmp_path_factory, redis_url):
    """``run_task(name, *args)``: the result of task ``name`` run by the worker, which keeps one child process."""
    from celery import Celery

    queue = f"celery-time-limits-{uuid.uuid4().hex[:8]}"
    with LocalCluster(str(tmp_path_factory.mktemp("celery") / "cluster"), 1,
                      connection_hooks=[HOOK], durability="process", log_level="INFO",
                      extra_args=("--max-statement-steps", "0")) as cluster:
        node = cluster.nodes[0]
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.backend.celery_settings",
                   PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   DQ_CELERY_CLIENT=node.client, DQ_CELERY_SECRET_FILE=cluster.secret_file,
                   DQ_CELERY_BROKER=redis_url)
        log = open(tmp_path_factory.mktemp("celery-log") / "worker.log", "w+")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", TASKS, "worker", "--pool=prefork", "--concurrency=1",
             "--queues", queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        client = Celery("celery_time_limits_client", broker=redis_url, backend=redis_url)

        def run(name, *args):
            result = client.send_task(f"{TASKS}.{name}", args=args, queue=queue)
            try:
                return result.get(timeout=RESULT_WAIT)
            except Exception as error:
                log.seek(0)
                raise AssertionError(f"task {name}{args}: {error!r}; worker log:\n{log.read()}") from error

        run.node = node
        try:
            assert run("create_table") == "ready"
            yield run
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            log.close()
            client.close()


CANCELLED = "closed its connection while its request ran: cancelling it"


def test_a_task_past_its_time_limit_reads_its_own_answers_and_so_does_the_next_task(run_task):
    cancelled_before = run_task.node.log().count(CANCELLED)
    assert run_task("read_past_the_time_limit", 42) == [[42]]
    assert run_task("answer", 43) == [[43]]
    assert run_task("answer", 44) == [[44]]
    # The node noticed the closed connection and cancelled the read (else it would run for ever).
    wait_for(lambda: run_task.node.log().count(CANCELLED) == cancelled_before + 1, 20,
             "the node cancelled the endless read of the task's first session")


def test_a_transaction_past_the_time_limit_leaves_nothing_and_frees_the_database_for_the_next_write(run_task):
    """Only the row the task wrote after the limit is there; without the node stopping the
    abandoned read, that write would wait for the write lock and fail "database is locked"."""
    assert run_task("transaction_past_the_time_limit", "timed out") == [2]
    assert run_task("answer", 45) == [[45]]
