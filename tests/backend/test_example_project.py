"""The example project as a user runs it: its own tests, and commands beside a running server."""

import os
import subprocess
import sys
import time
import urllib.request

from django_dqcluster.store.local_cluster import free_ports

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def example_env(tmp_path):
    """The example's embedded one-node store, in ``tmp_path`` on free ports."""
    raft, client = free_ports(2)
    env = dict(os.environ, DQCLUSTER_DATA_DIR=str(tmp_path / "store"),
               DQCLUSTER_BIND=f"127.0.0.1:{raft}", DQCLUSTER_CLIENT=f"127.0.0.1:{client}")
    for name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    return env


def manage(env, *args, stdin=None):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=180)


def test_the_example_projects_tests_pass_with_their_test_database_in_an_embedded_store(tmp_path):
    result = manage(example_env(tmp_path), "test", "example_project.notes", "-v", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "Ran 4 tests" in result.stderr and "Destroying test database" in result.stderr, result.stderr[-3000:]
    assert os.path.isdir(tmp_path / "store")  # the store the settings named, not the repo's var/


def test_commands_run_beside_the_server_use_the_node_it_runs(tmp_path):
    """runserver runs the embedded node; shell and dbshell in other processes are its clients."""
    env = example_env(tmp_path)
    assert manage(env, "migrate", "-v0").returncode == 0
    (port,) = free_ports(1)
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        page = None
        deadline = time.monotonic() + 60
        while page is None and time.monotonic() < deadline and server.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        assert page is not None, server.stderr.read() if server.poll() is not None else "runserver did not answer"

        shell = manage(env, "shell", "-c", "from example_project.notes.models import Note; "
                                           "Note.objects.create(text='written by the shell')")
        assert shell.returncode == 0, shell.stderr[-3000:]
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "written by the shell" in page
        dbshell = manage(env, "dbshell", stdin="SELECT count(*) AS n FROM notes_note;\n")
        assert dbshell.returncode == 0 and "(1 row)" in dbshell.stdout, dbshell.stdout + dbshell.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
