"""The example project's own tests pass under ``manage.py test``, as a user runs them."""

import os
import subprocess
import sys

from django_dqcluster.store.local_cluster import free_ports

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_example_projects_tests_pass_with_their_test_database_in_an_embedded_store(tmp_path):
    raft, client = free_ports(2)
    env = dict(os.environ, DQCLUSTER_DATA_DIR=str(tmp_path / "store"),
               DQCLUSTER_BIND=f"127.0.0.1:{raft}", DQCLUSTER_CLIENT=f"127.0.0.1:{client}")
    for name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "manage.py", "test", "example_project.notes", "-v", "2"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "Ran 4 tests" in result.stderr and "Destroying test database" in result.stderr, result.stderr[-3000:]
    assert os.path.isdir(tmp_path / "store")  # the store the settings named, not the repo's var/
