"""Snapshots of a large store on a 3-node cluster: what a compaction and a wiped follower cost.

    python bench/snapshot_bench.py [--mb 300] [--rounds 3] [--keep DIR]

Loads ``--mb`` MB into a local 3-node cluster (256 KiB rows, 4 MiB transactions;
about 85 s for 300 MB here; ``--keep DIR`` keeps the loaded cluster there and
reuses it next time), then, while one client inserts small rows without a pause:

* ``--rounds`` log compactions on the leader (each writes a snapshot of every
  database): the slowest of the client's writes around each, and the elections;
* ``--rounds`` wiped followers (killed, data directory removed, started again,
  after a compaction, so it must be sent the snapshot): seconds until it has
  caught up, how long it took to install the snapshot and the longest its
  Raft thread stood still (from its log: "n/a" for a release that does not
  say), and the elections meanwhile.

Timings on a 2-core VM vary: compare the lines of one run. To compare two
checkouts, run the script of each from outside the repository (``python -m``
starts the nodes with the current directory first on ``sys.path``).
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from django_dqcluster import dbapi  # noqa: E402
from django_dqcluster.store.local_cluster import LocalCluster  # noqa: E402

ROW = 256 * 1024
ROWS_PER_TRANSACTION = 16
SETTLE = 8.0  # seconds after a compaction: the snapshot written and the log cut


def load(directory, megabytes):
    started = time.monotonic()
    with LocalCluster(directory, 3) as cluster:
        conn = cluster.leader().connect()
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        row = os.urandom(ROW)
        for _ in range(megabytes * 2 ** 20 // (ROW * ROWS_PER_TRANSACTION)):
            conn.executemany("INSERT INTO big (payload) VALUES (?)", [(row,)] * ROWS_PER_TRANSACTION)
        conn.close()
        cluster.wait_converged(timeout=300)
    return time.monotonic() - started


class Writer(threading.Thread):
    """One client inserting small rows through the leader; remembers when each began and how long it took."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.writes = []  # (began, seconds); seconds is None for a failed write
        self.stop = threading.Event()

    def run(self):
        conn = self.cluster.leader().connect()
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                conn.execute("INSERT INTO big (payload) VALUES (?)", (b"x" * 1000,))
                self.writes.append((began, time.monotonic() - began))
            except dbapi.Error:
                self.writes.append((began, None))
                conn.close()
                time.sleep(0.2)
                conn = self.cluster.leader().connect()
        conn.close()

    def finish(self):
        self.stop.set()
        self.join(30)

    def during(self, start, end):
        """(slowest write in seconds, failed writes) among those that overlapped [start, end)."""
        overlapping = [(began, took) for began, took in self.writes
                       if began < end and (took is None or began + took > start)]
        slowest = max((took for _, took in overlapping if took is not None), default=0.0)
        return slowest, sum(1 for _, took in overlapping if took is None)


def elections(cluster):
    return sum(node.log().count("calls an election") for node in cluster.nodes)


def leaders_lost(cluster):
    return sum(node.log().count("lost leadership") for node in cluster.nodes)


def caught_up(node):
    try:
        return node.status(timeout=2.0)["catching_up"] is False
    except dbapi.Error:
        return False


def said(text, pattern):
    """The largest number of seconds the node's log gives in ``pattern``'s group, "n/a" if none."""
    seconds = [float(found) for found in re.findall(pattern, text)]
    return f"{max(seconds):.1f}" if seconds else "n/a"


def run(directory, rounds, log=print):
    # INFO: a node says how long a snapshot took to install.
    with LocalCluster(directory, 3, log_level="INFO") as cluster:
        writer = Writer(cluster)
        writer.start()
        time.sleep(3)
        rows = []
        for round_ in range(rounds):
            before = elections(cluster), leaders_lost(cluster)
            started = time.monotonic()
            conn = cluster.leader().connect()
            conn.compact()
            conn.close()
            time.sleep(SETTLE)
            slowest, failed = writer.during(started, started + SETTLE)
            rows.append(("compaction", round_ + 1, "", "", "", slowest, failed,
                         elections(cluster) - before[0], leaders_lost(cluster) - before[1]))
            log(rows[-1])
        for round_ in range(rounds):
            leader = cluster.leader()
            conn = leader.connect()
            conn.compact()
            conn.close()
            time.sleep(SETTLE)
            follower = [node for node in cluster.nodes if node is not leader][round_ % 2]
            before = elections(cluster), leaders_lost(cluster)
            logged = len(follower.log())
            started = time.monotonic()
            follower.kill()
            follower.wipe()
            follower.start(peers=cluster.peers_of(follower))
            cluster.wait_for(lambda: caught_up(follower), 300, f"node{follower.index} to catch up")
            took = time.monotonic() - started
            slowest, failed = writer.during(started, started + took)
            text = follower.log()[logged:]
            rows.append(("wiped follower", round_ + 1, f"{took:.1f}",
                         said(text, r"installed the leader's snapshot of entry \d+ in ([\d.]+) s"),
                         said(text, r"stood still for ([\d.]+) s"), slowest, failed,
                         elections(cluster) - before[0], leaders_lost(cluster) - before[1]))
            log(rows[-1])
        writer.finish()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="keep the loaded cluster here, and reuse it if it is there")
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="dqcluster-snapshot-bench-")
    try:
        loaded = args.keep or os.path.join(scratch, "loaded")
        if not os.path.exists(os.path.join(loaded, "addresses.json")):
            print(f"loaded {args.mb} MB in {load(loaded, args.mb):.0f} s", flush=True)
        directory = os.path.join(scratch, "cluster")
        shutil.copytree(loaded, directory)
        for name in os.listdir(directory):
            if name.endswith(".log"):
                os.remove(os.path.join(directory, name))
        rows = run(directory, args.rounds, log=lambda row: print(" ", row, flush=True))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{args.mb} MB, one client writing throughout\n")
    print("| event | # | caught up (s) | install (s) | stood still (s) | slowest write (s) | failed writes "
          "| elections | leaders deposed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for event, number, took, install, still, slowest, failed, called, lost in rows:
        print(f"| {event} | {number} | {took} | {install} | {still} | {slowest:.2f} | {failed} | {called} "
              f"| {lost} |")


if __name__ == "__main__":
    main()
