"""A rolling upgrade of three hosts, on this machine: the version gate at work.

    python -m example_project.upgrade_demo [--dir var/upgrade] [--celery]

Three "hosts" (A, B, C) each run their own copy of the example project
(``<dir>/hosts/A`` ...) against their own node of a 3-node store on 127.0.0.1.
Every host starts on v1, the example as it is. v2 is what a developer would
ship: a new model (``Tag``), its migration made by ``makemigrations``, and an
API extension (``"tags"``). The demo deploys v2 host by host and runs on each
what a deploy runs, printing every command and its output:

1. all three on v1: ``migrate`` applies the example's migrations once;
2. A on v2: ``migrate`` waits (exit 3), naming B and C and their versions;
   nothing is applied, and B, still on v1, keeps serving;
3. B restarted on v1 now: told to upgrade (exit 2), every member named;
4. B on v2: still waiting, for C only;
5. C on v2, the last one: its ``migrate`` applies ``notes.0002_tag``, once;
6. every host ready; the notes written during the upgrade are all there.

With ``--celery`` host A hands its wait to a Celery worker (``migrate
--queue-wait``; Redis at ``CELERY_BROKER_URL``), B and C only register their
new version when they start (``ensure_cluster_schema``), and A's worker
applies the migration once it sees every host on v2.

Each step checks what it printed; the demo exits 1 at the first surprise.
``<dir>`` is emptied first (only if an earlier demo made it).
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from django_dqcluster.store.local_cluster import LocalCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = ".dqcluster-upgrade-demo"
# Nodes register Django's SQL functions, so the ORM works on them as on SQLite.
SQLITE_FUNCTIONS_HOOK = "django.db.backends.sqlite3._functions:register"
DATABASE = "example"
COMMAND_TIMEOUT = 120

V2_MODEL = '''

class Tag(models.Model):
    """New in v2 (the upgrade demo): a label for notes."""

    name = models.CharField(max_length=50, unique=True)
    notes = models.ManyToManyField(Note, related_name="tags", blank=True)

    def __str__(self):
        return self.name
'''
V2_SETTINGS = '''
# v2 (the upgrade demo): tags, an addition to what the cluster's hosts offer.
DQCLUSTER_API_EXTENSIONS = [*DQCLUSTER_API_EXTENSIONS, "tags"]
'''


class DemoFailed(Exception):
    """A step did not go as the version gate promises."""


class CannotStart(DemoFailed):
    """Something the demo needs is missing (a broker, a directory of its own)."""


class Host:
    """One host: its copy of the project, the node it talks to, the code version it runs."""

    def __init__(self, name, node, directory, secret_file, broker):
        self.name = name
        self.node = node
        self.directory = directory
        self.version = None
        self.env = dict(os.environ)
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env.update(
            # The host's node, and its identity in the cluster's nodes table:
            # on one machine every client address is a loopback one, which
            # cannot tell hosts apart, so each host names its node's Raft address.
            DATABASE_URL=f"dqcluster://{node.client}/{DATABASE}?secret_file={secret_file}",
            DQCLUSTER_NODE_ADDRESS=node.raft,
            DQCLUSTER_WAIT_MAX_INTERVAL="2",  # the worker re-checks every 2 s at most
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=broker,
            PYTHONUNBUFFERED="1",
        )

    @property
    def label(self):
        return f"{self.name} ({self.version})"

    def deploy(self, code_dir, version):
        """Replace this host's code with ``code_dir`` (what a deploy does)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
        shutil.copytree(code_dir, self.directory)
        self.version = version

    def manage(self, *args, expect=0):
        """Run ``manage.py args`` as this host, printing the command and its output; check its exit status."""
        command = shlex.join(("python", "manage.py", *args))
        print(f"\n  {self.label}$ {command}")
        process = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=self.directory, env=self.env,
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        )
        _print_output(process.stdout + process.stderr)
        print(f"  -> exit {process.returncode}")
        if expect is not None and process.returncode != expect:
            raise DemoFailed(f"host {self.label}: `{command}` exited {process.returncode}, expected {expect}")
        return process.stdout + process.stderr

    def shell(self, code):
        return self.manage("shell", "--no-imports", "-c", code)

    def start_worker(self, log_path, default_queue=True):
        """This host's Celery worker: its own notification queue, and the default queue if asked."""
        queues = f"dqcluster.{self.node.raft}"
        if default_queue:
            queues = "celery," + queues
        with open(log_path, "w") as log:  # the worker keeps its own copy of the descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "example_project", "worker", "--pool", "solo",
                 "-Q", queues, "--without-mingle", "--without-gossip",
                 "--without-heartbeat", "--loglevel", "INFO", "--hostname", f"demo-{self.name}@%h"],
                cwd=self.directory, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )


def _print_output(text, max_applying=3):
    """A command's output, indented; a long run of "Applying ..." lines shortened."""
    lines = [line for line in text.splitlines() if line.strip()]
    applying = [line for line in lines if line.strip().startswith("Applying ")]
    skipped = 0
    for line in lines:
        if line.strip().startswith("Applying ") and len(applying) > max_applying + 1:
            if applying.index(line) >= max_applying:
                skipped += 1
                continue
        print(f"    {line}")
    if skipped:
        print(f"    ... and {skipped} more migrations applied")


def step(number, text):
    print(f"\n[{number}] {text}")


def expect_in(output, *phrases):
    for phrase in phrases:
        if phrase not in output:
            raise DemoFailed(f"expected {phrase!r} in the output above")


def write_note(host, text):
    """Save a note through ``host``'s ORM (what its users do)."""
    code = f"from example_project.notes.models import Note; print(Note.objects.create(text={json.dumps(text)}))"
    expect_in(host.shell(code), text)


def prepare_directory(directory):
    if directory.exists():
        if not (directory / MARKER).exists():
            raise CannotStart(f"{directory} exists and was not made by this demo: choose another --dir")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by python -m example_project.upgrade_demo; safe to delete\n")


def copy_project(destination):
    """The example project as it is in this checkout: v1."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "var")
    destination.mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "manage.py", destination / "manage.py")
    shutil.copytree(REPO_ROOT / "example_project", destination / "example_project", ignore=ignore)


def make_v2(v1_dir, v2_dir, host):
    """v1 plus a Tag model, its migration (by makemigrations) and the API extension "tags"."""
    shutil.copytree(v1_dir, v2_dir)
    with open(v2_dir / "example_project" / "notes" / "models.py", "a") as models:
        models.write(V2_MODEL)
    with open(v2_dir / "example_project" / "settings.py", "a") as settings:
        settings.write(V2_SETTINGS)
    # makemigrations runs in v2's copy, as host A's environment (it checks the
    # migration history against the database, which is the cluster's).
    process = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "notes", "--name", "tag"], cwd=v2_dir, env=host.env,
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
    )
    _print_output(process.stdout + process.stderr)
    if process.returncode != 0 or not (v2_dir / "example_project/notes/migrations/0002_tag.py").exists():
        raise DemoFailed(f"makemigrations for v2 failed (exit {process.returncode})")


def count_applied(cluster, name):
    """How many times migration ``notes.<name>`` is recorded, read through node 0."""
    conn = cluster.nodes[0].connect(database=DATABASE)
    try:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM django_migrations WHERE app = 'notes' AND name = ?", (name,)
        ).fetchone()
        return count
    finally:
        conn.close()


def wait_for_log_line(log_path, text, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path(log_path).read_text().splitlines():
            if text in line:
                return line.strip()
        time.sleep(0.3)
    raise DemoFailed(f"{text!r} did not appear in {log_path} within {timeout:.0f}s")


def show_worker_log(worker_log, words=("cluster gate on", "cluster upgrade on", "ERROR")):
    for line in Path(worker_log).read_text().splitlines():
        if any(word in line for word in words):
            print(f"    {line.strip()[:300]}")


def check_broker(broker):
    """Fail at once, and clearly, when --celery has no broker to talk to."""
    from kombu import Connection

    try:
        with Connection(broker, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # noqa: BLE001 - kombu's errors depend on the transport
        raise CannotStart(f"--celery needs a Celery broker at {broker} ({type(error).__name__}: {error}); "
                         "start Redis (README, 'Set up and run') or pass --broker") from None


def run(directory, use_celery, broker):
    if use_celery:
        check_broker(broker)
    prepare_directory(directory)
    print(f"Rolling upgrade demo in {directory}: three hosts, a 3-node store on 127.0.0.1")
    cluster = LocalCluster(str(directory / "cluster"), 3, connection_hooks=[SQLITE_FUNCTIONS_HOOK])
    workers = []
    try:
        cluster.start()
        for node, name in zip(cluster.nodes, "ABC"):
            print(f"  host {name}: node{node.index}, raft {node.raft}, client {node.client}")

        v1_dir, v2_dir = directory / "code" / "v1", directory / "code" / "v2"
        copy_project(v1_dir)
        hosts = [Host(name, node, directory / "hosts" / name, cluster.secret_file, broker)
                 for name, node in zip("ABC", cluster.nodes)]
        a, b, c = hosts
        for host in hosts:
            host.deploy(v1_dir, "v1")

        step(1, "Every host runs v1 and migrates: the first one applies the migrations, the others find them done")
        expect_in(a.manage("migrate", "--noinput"), "Created the cluster tables")
        for host in (b, c):
            expect_in(host.manage("migrate", "--noinput"), "No migrations to apply")
        write_note(a, "written by A on v1")

        print("\n    v2 = v1 + a Tag model, its migration, and the API extension 'tags':")
        make_v2(v1_dir, v2_dir, a)

        step(2, "Host A is upgraded to v2 first")
        a.deploy(v2_dir, "v2")
        if use_celery:
            print(f"\n  starting host A's Celery worker (broker {broker}; log {directory / 'worker-A.log'})")
            workers.append(a.start_worker(directory / "worker-A.log"))
            output = a.manage("migrate", "--noinput", "--queue-wait")
            expect_in(output, f"Waiting for {b.node.raft}", f"Waiting for {c.node.raft}", "Queued Celery task")
        else:
            output = a.manage("migrate", "--noinput", expect=3)
            expect_in(output, f"Waiting for {b.node.raft}", f"Waiting for {c.node.raft}", "No migrations applied")
        print("\n    Nothing was applied: B and C still run v1, which does not know the new table.")
        print("    B keeps serving its users on v1 meanwhile:")
        write_note(b, "written by B on v1, during the upgrade")

        step(3, "Host B restarts on v1 (say, a reboot before its deploy): it is told to upgrade")
        expect_in(b.manage("ensure_cluster_schema", expect=2), "please upgrade", f"{a.node.raft}: schema")

        # With Celery, B and C only start on v2 (registering their version); A's worker migrates.
        register = ("ensure_cluster_schema",) if use_celery else ("migrate", "--noinput")
        step(4, "Host B is upgraded to v2: the cluster still waits, for C only")
        b.deploy(v2_dir, "v2")
        if use_celery:
            print(f"\n  restarting host B's Celery worker on v2 (its notification queue only; "
                  f"log {directory / 'worker-B.log'})")
            workers.append(b.start_worker(directory / "worker-B.log", default_queue=False))
        output = b.manage(*register, expect=3)
        expect_in(output, f"Waiting for {c.node.raft}")
        if f"Waiting for {a.node.raft}" in output:
            raise DemoFailed("B waits for A, which runs v2 already")

        step(5, "Host C, the last one, is upgraded to v2")
        c.deploy(v2_dir, "v2")
        if use_celery:
            print(f"\n  restarting host C's Celery worker on v2 (log {directory / 'worker-C.log'})")
            workers.append(c.start_worker(directory / "worker-C.log", default_queue=False))
            expect_in(c.manage(*register), "ready")
            print("\n  host A's worker sees every host on v2 and migrates (its log):")
            # Its task logs this once it migrated and notified the others.
            wait_for_log_line(directory / "worker-A.log", "cluster upgrade on", timeout=90)
            show_worker_log(directory / "worker-A.log")
            print("\n  and notifies the others, whose workers re-check their gate (their logs):")
            for host in (b, c):
                line = wait_for_log_line(directory / f"worker-{host.name}.log", "cluster upgrade notification from")
                print(f"    {host.name}: {line[:300]}")
        else:
            expect_in(c.manage(*register), "Applying notes.0002_tag... OK")
        applied = count_applied(cluster, "0002_tag")
        print(f"\n    notes.0002_tag is recorded {applied} time(s) in django_migrations")
        if applied != 1:
            raise DemoFailed(f"notes.0002_tag was applied {applied} times, expected once")

        step(6, "Every host runs v2 and is ready; nothing is applied twice; the data is all there")
        for host in hosts:
            expect_in(host.manage("migrate", "--noinput"), "No migrations to apply")
        expect_in(c.shell(
            'from example_project.notes.models import Note, Tag; '
            'Tag.objects.create(name="upgraded").notes.set(Note.objects.all()); '
            '[print(n.pk, n.text, [t.name for t in n.tags.all()]) for n in Note.objects.order_by("pk")]'
        ), "written by A on v1", "written by B on v1, during the upgrade", "['upgraded']")
        b.manage("cluster_status")
        print("\nThe upgrade is done: every host on v2, each migration applied once, no host ran new "
              "migrations under old code.")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
        print("\nstopping the nodes")
        cluster.stop()
        cluster.kill()  # whatever did not stop


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO_ROOT / "var" / "upgrade"),
                        help="where the demo keeps its store and hosts (emptied first; default var/upgrade)")
    parser.add_argument("--celery", action="store_true",
                        help="host A hands its wait to a Celery worker (needs Redis at CELERY_BROKER_URL)")
    parser.add_argument("--broker", default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
                        help="the Celery broker for --celery (default CELERY_BROKER_URL or redis://127.0.0.1:6379/0)")
    args = parser.parse_args(argv)
    try:
        run(Path(args.dir).resolve(), args.celery, args.broker)
    except CannotStart as problem:
        print(f"Cannot run the demo: {problem}", file=sys.stderr)
        return 1
    except DemoFailed as failure:
        print(f"\nThe demo did not go as expected: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
