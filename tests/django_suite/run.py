#!/usr/bin/env python
"""Run Django's own test suite against django_dqcluster.backend on a 3-node cluster.

    python tests/django_suite/run.py [APPS_FILE] [--parallel N] [-- more runtests.py args]

1. Fetches the sdist of exactly the installed Django version
   (``pip download --no-binary :all: --no-deps django==X``) into a cache dir
   (``$DQCLUSTER_DJANGO_CACHE``, default ``<repo>/var/django-suite``) and
   unpacks it; both are reused by later runs.
2. Installs ``tblib`` if missing (readable tracebacks from parallel workers).
3. Starts a 3-node LocalCluster on free 127.0.0.1 ports, with Django's SQLite
   functions registered on every node's SQLite connections.
4. Runs ``runtests.py --settings=dqcluster_settings --noinput --parallel=N``
   with the apps listed in APPS_FILE (default: apps.txt next to this script).
5. Stops the cluster. Exits with runtests.py's status (non-zero on failures).
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

# Registered by each node process on every SQLite connection it opens.
CONNECTION_HOOK = "django.db.backends.sqlite3._functions:register"


def log(message):
    print(f"[django-suite] {message}", flush=True)


def django_tests_dir(cache):
    import django

    version = django.__version__
    os.makedirs(cache, exist_ok=True)
    source = os.path.join(cache, f"django-{version}")
    tests = os.path.join(source, "tests")
    if os.path.exists(os.path.join(tests, "runtests.py")):
        return tests, version
    tarball = os.path.join(cache, f"django-{version}.tar.gz")
    if not os.path.exists(tarball):
        log(f"downloading the Django {version} sdist into {cache}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             f"django=={version}", "-d", cache],
            check=True,
        )
    log(f"unpacking {tarball}")
    with tarfile.open(tarball) as archive:
        archive.extractall(cache, filter="data")
    return tests, version


def ensure_tblib():
    if importlib.util.find_spec("tblib") is None:
        log("installing tblib")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "tblib"], check=True)


def read_apps(path):
    with open(path) as handle:
        return [line.split("#", 1)[0].strip() for line in handle if line.split("#", 1)[0].strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apps_file", nargs="?", default=os.path.join(HERE, "apps.txt"))
    parser.add_argument("--parallel", type=int, default=int(os.environ.get("DQCLUSTER_SUITE_PARALLEL", "2")))
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--durability", default="fsync", choices=("fsync", "process"))
    parser.add_argument(
        "--consistency", default=os.environ.get("DQCLUSTER_CONSISTENCY", "strong"), choices=("strong", "weak", "none"),
        help="the aliases' consistency (with none, every SELECT outside a transaction is a local read of "
             "the node's file)",
    )
    parser.add_argument(
        "--via", default=None, choices=("leader", "follower"),
        help="the node the aliases connect to first (default: the leader with none, else the first node). "
             "With none and a follower, writes are forwarded to the leader and reads come from the "
             "follower's file: Django's tests read their own writes there",
    )
    parser.add_argument(
        "--transaction-mode", default=None, choices=("DEFERRED", "IMMEDIATE", "EXCLUSIVE"),
        help="the aliases' OPTIONS transaction_mode (default: none, a plain BEGIN)",
    )
    parser.add_argument("--seal", action="store_true",
                        help="the aliases' OPTIONS seal: every client session encrypted, loopback included")
    parser.add_argument("--cache", default=os.environ.get("DQCLUSTER_DJANGO_CACHE", os.path.join(REPO, "var", "django-suite")))
    parser.add_argument("--keep-cluster-dir", action="store_true", help="keep node logs and data after the run")
    # Anything else (after "--" or not) goes to runtests.py: -v 2, --failfast, --start-at ...
    args, extra = parser.parse_known_args(argv)
    extra = [item for item in extra if item != "--"]

    apps = read_apps(args.apps_file)
    tests_dir, version = django_tests_dir(args.cache)
    ensure_tblib()

    from django_dqcluster.store.local_cluster import LocalCluster

    cluster_dir = tempfile.mkdtemp(prefix="dqcluster-suite-")
    cluster = LocalCluster(cluster_dir, args.nodes, connection_hooks=[CONNECTION_HOOK], durability=args.durability)
    started = time.monotonic()
    log(f"starting a {args.nodes}-node cluster in {cluster_dir}")
    cluster.start()
    log("cluster up: " + ", ".join(cluster.clients) + f" (leader {cluster.leader().client})")
    env = dict(os.environ)
    leader = cluster.leader().client
    via = args.via or ("leader" if args.consistency == "none" else None)
    if via == "leader":
        first = leader
    elif via == "follower":
        first = next((client for client in cluster.clients if client != leader), leader)
    else:
        first = cluster.clients[0]
    addresses = [first] + [client for client in cluster.clients if client != first]
    env.update({
        "DQCLUSTER_ADDRESSES": ",".join(addresses),
        "DQCLUSTER_CONSISTENCY": args.consistency,
        "DQCLUSTER_SECRET_FILE": cluster.secret_file,
        "DQCLUSTER_RUN_ID": uuid.uuid4().hex[:8],
        "DQCLUSTER_TRANSACTION_MODE": args.transaction_mode or "",
        "DQCLUSTER_SEAL": "1" if args.seal else "",
        "PYTHONPATH": os.pathsep.join(filter(None, [HERE, REPO, env.get("PYTHONPATH")])),
    })
    command = [
        sys.executable, "runtests.py", "--settings=dqcluster_settings", "--noinput",
        f"--parallel={args.parallel}", *extra, *apps,
    ]
    log(f"Django {version}: {len(apps)} apps from {os.path.basename(args.apps_file)}, --parallel={args.parallel}, "
        f"consistency {args.consistency}" + (f", through the {via}" if via else "") + (f", transaction_mode {args.transaction_mode}" if args.transaction_mode else "")
        + (", sealed sessions" if args.seal else ""))
    result = None
    try:
        result = subprocess.run(command, cwd=tests_dir, env=env)
    finally:
        dead = [node.index for node in cluster.nodes if not node.alive]
        if via == "follower":
            log_follower_work(next(node for node in cluster.nodes if node.client == first))
        cluster.stop()
        failed = result is None or result.returncode != 0
        if failed:
            # What the nodes said (a lost leadership, an error) explains most failures.
            for node in cluster.nodes:
                lines = [line for line in node.log().splitlines() if "serving clients" not in line]
                log(f"node{node.index} log, last lines: " + ("\n  ".join([""] + lines[-15:]) if lines else "(empty)"))
        if dead or failed:
            log(f"nodes that exited during the run: {dead}; logs in {cluster_dir}")
        elif not args.keep_cluster_dir:
            import shutil

            shutil.rmtree(cluster_dir, ignore_errors=True)
        else:
            log(f"cluster data and logs kept in {cluster_dir}")
    log(f"runtests.py exited with {result.returncode}; wall time {time.monotonic() - started:.1f}s")
    return result.returncode


def log_follower_work(node):
    """What the follower the tests went through did itself, and what it left to the leader."""
    try:
        status = node.status()
    except Exception as exc:  # a node that went away: the run's result says what matters
        log(f"the follower's status is unavailable ({exc})")
        return
    reads = status.get("follower_reads") or {}
    parts = [f"{level} reads answered there {counts['answered_here']}, run by the leader {counts['sent_to_leader']}"
             for level, counts in reads.items() if counts["answered_here"] or counts["sent_to_leader"]]
    transactions = status.get("follower_transactions") or {}
    if transactions.get("begun_here"):
        parts.append(f"deferred transactions begun there {transactions['begun_here']}, moved to the leader at "
                     f"their first write {transactions['moved_to_leader']}, run by the leader from their first "
                     f"read {transactions['run_by_leader']}")
    log(f"through the follower {node.client}: " + ("; ".join(parts) or "nothing it answered itself"))


if __name__ == "__main__":
    sys.exit(main())
