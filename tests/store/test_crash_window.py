"""The crash window of design/pysyncobj-safety.md §2.3, with three real node processes.

One follower (B) is paused. The leader sends the other follower (A) a
shortening re-send, holds back everything after it, and is killed. B comes
back. Every write the leader acknowledged before the crash was held by A, so
Raft requires every survivor to end up with all of them. Stock pysyncobj
0.3.17 loses them; the store's engine must not.
"""

import os
import subprocess
import sys
import time

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.local_cluster import LocalCluster

from .conftest import rows_on_every_node

FAULT_NODE = os.path.join(os.path.dirname(__file__), "fault_node.py")
WRITES = 60

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


class LeaderChanged(Exception):
    """The set-up needs one leader throughout; an election (a stalled disk or CPU) broke it."""


def run_crash_window(directory, stock, attempts=3):
    for attempt in range(1, attempts + 1):
        try:
            return crash_window(os.path.join(directory, f"attempt{attempt}"), stock)
        except LeaderChanged as exc:
            reason = exc
    pytest.fail(f"could not set up the crash window in {attempts} attempts: {reason}")


def crash_window(directory, stock):
    os.makedirs(directory)
    trigger = os.path.join(directory, "trigger")
    extra = ["--trigger", trigger] + (["--stock-append-entries"] if stock else [])
    # Longer election timeouts than the default: the scenario needs the same
    # leader from the first write to the injected re-send.
    cluster = LocalCluster(os.path.join(directory, "cluster"), 3, command=[FAULT_NODE], extra_args=extra,
                           election_timeout=(1.0, 2.0))
    with cluster:
        leader = cluster.leader()
        a, b = [node for node in cluster.nodes if node is not leader]
        conn = leader.connect()
        conn.execute("CREATE TABLE acked (id INTEGER PRIMARY KEY)")
        cluster.wait_converged()

        b.pause()
        acknowledged = []
        for i in range(1, WRITES + 1):
            conn.execute("INSERT INTO acked (id) VALUES (?)", (i,))
            acknowledged.append(i)  # the leader answered: a majority (itself + A) holds it
        conn.close()

        if leader.status()["role"] != "leader":
            b.resume()
            raise LeaderChanged(f"node{leader.index} lost leadership during the writes")
        with open(trigger, "w") as handle:
            handle.write(a.raft)
        try:
            leader.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            b.resume()
            role = leader.status()["role"]
            if role != "leader":
                raise LeaderChanged(f"node{leader.index} lost leadership before the injection ({role})") from None
            raise
        assert os.path.exists(trigger + ".fired"), "the injection never fired"
        b.resume()

        survivor = cluster.wait_for_leader(timeout=30)
        writer = survivor.connect()
        try:
            writer.execute("INSERT INTO acked (id) VALUES (?)", (10_000,))  # lets B catch up
        except dbapi.OperationalError:
            if not stock:
                raise
            # Stock pysyncobj: the truncated leader never applies entries at
            # indexes it had already applied, so this write can hang.
            time.sleep(3)
        writer.close()
        try:
            rows = rows_on_every_node(cluster, "SELECT id FROM acked", converge=not stock)
        except dbapi.OperationalError as error:
            if stock and "replica diverged" in str(error):
                # The stock follower's truncated log made a replica's history
                # differ from the leader's, and the checkpoint hash caught it:
                # the node stopped serving instead of answering from it.
                return {"diverged": str(error)}
            raise
        return {index: sorted(set(acknowledged) - {row[0] for row in result}) for index, result in rows.items()}


def test_no_acknowledged_write_is_lost_when_the_leader_dies_after_a_shortening_resend(tmp_path):
    missing = run_crash_window(str(tmp_path), stock=False)
    assert missing == {index: [] for index in missing}, f"acknowledged writes lost: {missing}"


@pytest.mark.skipif(sys.platform != "linux", reason="uses SIGSTOP/SIGKILL timing tuned on Linux")
def test_stock_pysyncobj_loses_acknowledged_writes_in_the_same_window(tmp_path):
    """Control: the same scenario on pysyncobj's own follower code loses writes.

    Either a survivor lacks acknowledged writes, or a replica's history
    diverged and its checkpoint hash made it stop serving (seen once in CI).
    This proves the test above exercises the window; if it starts passing,
    the library changed and the safety subclass needs a fresh look.
    """
    missing = run_crash_window(str(tmp_path), stock=True)
    assert any(missing.values()), "stock pysyncobj kept every acknowledged write"
