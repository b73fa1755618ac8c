"""A follower catching up a long log on a 3-node cluster: the leader's memory, and the writes meanwhile.

    python bench/catchup_bench.py [--mb 200] [--rounds 3]

Each round stops one follower (SIGKILL), writes ``--mb`` MB through the
leader in 4 MiB transactions (far fewer entries than a log compaction waits
for, so the follower is sent these entries, not a snapshot), and starts the
follower again while one client inserts small rows without a pause.
Reported: seconds until the follower has applied the leader's last entry, the
leader's peak resident memory above what it held when the follower came
back, and the slowest of the client's writes meanwhile.

Timings on a 2-core VM vary: compare the lines of one run. To compare two
checkouts, run the script of each from outside the repository (``python -m``
starts the nodes with the current directory first on ``sys.path``).
"""

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from django_dqcluster import dbapi  # noqa: E402
from django_dqcluster.store.local_cluster import LocalCluster  # noqa: E402
from snapshot_bench import ROW, ROWS_PER_TRANSACTION, Writer  # noqa: E402


def resident_mb(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory(threading.Thread):
    """The largest resident size of a process, sampled every 20 ms until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = resident_mb(pid)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, resident_mb(self.pid))


def applied_index(node):
    try:
        return node.status(timeout=2.0)["applied_index"]
    except dbapi.Error:
        return -1


def run(directory, megabytes, rounds, log=print):
    rows = []
    with LocalCluster(directory, 3) as cluster:
        conn = cluster.leader().connect()
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        conn.close()
        cluster.wait_converged(timeout=60)
        writer = Writer(cluster)
        writer.start()
        payload = os.urandom(ROW)
        for round_ in range(rounds):
            leader = cluster.leader()
            follower = [node for node in cluster.nodes if node is not leader][round_ % 2]
            follower.kill()
            conn = leader.connect()
            for _ in range(megabytes * 2 ** 20 // (ROW * ROWS_PER_TRANSACTION)):
                conn.executemany("INSERT INTO big (payload) VALUES (?)", [(payload,)] * ROWS_PER_TRANSACTION)
            conn.close()
            target = applied_index(leader)
            before = resident_mb(leader.process.pid)
            peak = PeakMemory(leader.process.pid)
            peak.start()
            started = time.monotonic()
            follower.start(peers=cluster.peers_of(follower))
            cluster.wait_for(lambda: applied_index(follower) >= target, 300, f"node{follower.index} to catch up")
            took = time.monotonic() - started
            peak.stop.set()
            peak.join()
            slowest, failed = writer.during(started, started + took)
            rows.append((round_ + 1, took, before, peak.peak - before, slowest, failed))
            log(rows[-1])
        writer.finish()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dqcluster-catchup-bench-") as directory:
        rows = run(directory, args.mb, args.rounds, log=lambda row: print(" ", row, flush=True))
    print(f"\n{args.mb} MB written while a follower was down, one client writing throughout\n")
    print("| # | caught up (s) | leader before (MB) | leader's peak above that (MB) | slowest write (s) "
          "| failed writes |")
    print("|---|---|---|---|---|---|")
    for number, took, before, above, slowest, failed in rows:
        print(f"| {number} | {took:.1f} | {before:.0f} | {above:.0f} | {slowest:.2f} | {failed} |")


if __name__ == "__main__":
    main()
