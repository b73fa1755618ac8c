"""The README's rolling upgrade demo runs as it says (example_project/upgrade_demo.py).

The demo checks each of its own steps (exit codes and what each host printed)
and exits 1 at the first surprise; these tests run it as a user would and
look at the parts of its story a user reads: who waited for whom, who was
told to upgrade, that the migration ran once, and by whom.
"""

import os
import re
import subprocess
import sys

import pytest

from tests.services import service_unavailable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_URL = os.environ.get("DQCLUSTER_DEMO_REDIS_URL", "redis://127.0.0.1:6379/12")

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def run_demo(tmp_path, *args):
    directory = tmp_path / "upgrade"
    result = subprocess.run(
        [sys.executable, "-m", "example_project.upgrade_demo", "--dir", str(directory), *args],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, (
        f"the demo failed (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def host_addresses(output):
    return dict(re.findall(r"host ([ABC]): node\d, raft (\S+),", output))


def test_the_last_host_to_upgrade_applies_the_new_migration_once(tmp_path):
    output = run_demo(tmp_path)
    raft = host_addresses(output)
    assert sorted(raft) == ["A", "B", "C"]
    step2 = output.split("[2]")[1].split("[3]")[0]
    assert f"Waiting for {raft['B']} (schema 19, api_extensions 1)" in step2
    assert f"Waiting for {raft['C']} (schema 19, api_extensions 1)" in step2
    assert "-> exit 3" in step2
    step3 = output.split("[3]")[1].split("[4]")[0]
    assert "this node's version is behind, please upgrade" in step3
    assert f"{raft['A']}: schema 20, api_extensions 2 [ahead of this host]" in step3
    assert "-> exit 2" in step3
    step5 = output.split("[5]")[1].split("[6]")[0]
    assert "C (v2)$ python manage.py migrate --noinput" in step5
    assert output.count("Applying notes.0002_tag... OK") == 1
    assert "notes.0002_tag is recorded 1 time(s)" in step5
    assert "2 written by B on v1, during the upgrade ['upgraded']" in output


def test_with_celery_host_as_worker_finishes_the_upgrade_and_notifies_the_others(tmp_path):
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as error:
        service_unavailable(f"Redis unreachable at {REDIS_URL}: {error}")
    output = run_demo(tmp_path, "--celery", "--broker", REDIS_URL)
    raft = host_addresses(output)
    assert "Queued Celery task wait_for_cluster_upgrade" in output.split("[2]")[1].split("[3]")[0]
    step5 = output.split("[5]")[1].split("[6]")[0]
    # Nobody ran migrate by hand after A: A's worker applied it, and only it.
    assert "Applying notes.0002_tag" not in output
    assert f"cluster upgrade on {raft['A']}: applied 1 migration(s) here" in step5
    for host in ("B", "C"):
        assert f"{host}: " in step5 and f"cluster upgrade notification from {raft['A']}: this host is ready" in step5
    assert "notes.0002_tag is recorded 1 time(s)" in step5


def test_a_directory_the_demo_did_not_make_is_left_alone(tmp_path):
    mine = tmp_path / "upgrade"
    mine.mkdir()
    (mine / "keep.txt").write_text("not the demo's")
    result = subprocess.run(
        [sys.executable, "-m", "example_project.upgrade_demo", "--dir", str(mine)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert f"Cannot run the demo: {mine} exists and was not made by this demo" in result.stderr
    assert (mine / "keep.txt").read_text() == "not the demo's"
