"""Faults at random while clients work: a small Jepsen-style run on three local node processes.

    python -m tests.store.chaos [--seconds 300] [--seed N] [--dir DIR]

A *nemesis* injects one fault at a time, chosen by a seeded random generator:
kill -9 of the leader or of a follower, SIGSTOP of the leader (longer than an
election timeout) or of a follower, a graceful stop (SIGTERM) of the leader, a
follower that loses its data directory, a fourth member that joins and is
removed again, and (not a fault) a snapshot taken on any node; each is healed
(restart, SIGCONT) before the next. Meanwhile, through
connections that name every node:

* *transfers*: threads move money between accounts, each move one transaction
  (BEGIN, read the balance, two UPDATEs, COMMIT), never below zero; one thread
  begins DEFERRED and rolls back a savepoint in each transaction;
* *batches*: 200 rows (100 KB; ``--batch-row-bytes`` for larger ones, which
  travel in chunks: 25000 makes 5 MB, which the leader announces) in one
  transaction, again and again: each must be on every node whole or not at all;
* an *appender* inserts 1, 2, 3... one autocommit INSERT each, and remembers
  which inserts were acknowledged and which had an unknown outcome;
* *auditors* read the accounts in one statement (every other time inside a
  read-only BEGIN DEFERRED transaction): every read, `strong`, `weak` or `none`, must
  see the total and no negative balance (a snapshot, never half a transfer); a
  `strong` read must also see every insert acknowledged before it started
  (linearizable reads, the leader lease included);
* a `none` client writes and reads back at once: it must see its own write,
  on whichever node it reads after a failover.

At the end every fault is healed and every node must have applied the same
history: the same SQLite contents on every node, every acknowledged insert
present once, nothing that was never attempted, the total intact, and no
node process that exited by itself or logged a traceback. ``run()`` returns what it saw and the
list of violations; the seed names the run (the faults' timing is real, so a
seed makes a run similar, not identical).
"""

import argparse
import os
import random
import signal
import sqlite3
import tempfile
import threading
import time

from django_dqcluster import dbapi
from django_dqcluster.store.local_cluster import LocalCluster

ACCOUNTS = 8
OPENING_BALANCE = 1000
TOTAL = ACCOUNTS * OPENING_BALANCE
BATCH_ROWS = 200
BATCH_ROW_BYTES = 500
BATCH_PAUSE = 0.1  # seconds between batches: the final comparison reads every node's whole file
CLIENT_TIMEOUT = 5.0  # a client stuck on a paused node gives up after this
# Once every fault is healed, each client must get a step through within this:
# one stuck on a node that was paused may first wait out CLIENT_TIMEOUT, then
# reconnect and find the leader.
RESUME_WITHIN = 30.0


def _outcome(error):
    if error.unknown_outcome:
        return "unknown"
    if error.retryable:
        return "retried"
    return "error"


class Client(threading.Thread):
    """A worker thread on its own connection; counts its outcomes, keeps unexpected errors."""

    def __init__(self, cluster, name, consistency="strong"):
        super().__init__(name=name, daemon=True)
        # Each client starts on a different node, so that some go through a
        # follower (forwarding to the leader) and see the leader change under it.
        nodes = list(cluster.nodes)
        random.Random(name).shuffle(nodes)
        self.addresses = ",".join(node.client for node in nodes)
        self.secret = cluster.secret
        self.consistency = consistency
        self.stop = threading.Event()
        self.counts = {"ok": 0, "retried": 0, "unknown": 0}
        self.errors = []  # neither retryable nor of unknown outcome: a bug, or a violation
        self.last_failure = None  # (monotonic time, error) of the last retryable or unknown outcome

    def connect(self):
        return dbapi.connect(self.addresses, secret=self.secret, isolation_level=None,
                             consistency=self.consistency, timeout=CLIENT_TIMEOUT, retry_timeout=30.0)

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.connect()
                self.step(conn)
                self.counts["ok"] += 1
            except dbapi.OperationalError as error:
                outcome = _outcome(error)
                if outcome == "error":
                    self.errors.append(f"{self.name}: {error}")
                    return
                self.counts[outcome] += 1
                self.last_failure = (time.monotonic(), error)
                self.failed(error)
                if conn is not None and conn.in_transaction:
                    try:
                        conn.rollback()
                    except dbapi.Error:
                        conn = None
                time.sleep(0.02)
            except dbapi.Error as error:
                self.errors.append(f"{self.name}: {type(error).__name__}: {error}")
                return
        if conn is not None:
            conn.close()

    def step(self, conn):
        raise NotImplementedError

    def failed(self, error):
        """A retryable or unknown outcome of the last step."""


class Transfers(Client):
    """Moves money in transactions. A ``deferred`` one begins without the write lock,
    and takes it at once with a savepoint it rolls back (a fee charged, then waived):
    one that read first would fail whenever another client committed in between."""

    def __init__(self, cluster, name, rng, deferred=False):
        super().__init__(cluster, name)
        self.rng = rng
        self.deferred = deferred

    def step(self, conn):
        source, target = self.rng.sample(range(1, ACCOUNTS + 1), 2)
        amount = self.rng.randint(1, 300)
        if self.deferred:
            conn.execute("BEGIN DEFERRED")
            conn.execute("SAVEPOINT fee")
            conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = ?", (source,))
            conn.execute("ROLLBACK TO fee")
            conn.execute("RELEASE fee")
        else:
            conn.execute("BEGIN")
        balance = conn.execute("SELECT balance FROM accounts WHERE id = ?", (source,)).fetchone()[0]
        if balance >= amount:
            conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, source))
            conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, target))
        conn.commit()


class Appender(Client):
    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.value = 0
        self.acked = []  # (monotonic time of the acknowledgement, value), in order
        self.unknown = []
        self.lock = threading.Lock()

    def step(self, conn):
        self.value += 1
        conn.execute("INSERT INTO log (value) VALUES (?)", (self.value,))
        with self.lock:
            self.acked.append((time.monotonic(), self.value))

    def failed(self, error):
        if error.unknown_outcome:
            self.unknown.append(self.value)

    def acknowledged_by(self, moment):
        """The largest value acknowledged before ``moment`` (0 if none)."""
        with self.lock:
            for acked_at, value in reversed(self.acked):
                if acked_at < moment:
                    return value
        return 0


class Batches(Client):
    """Inserts ``BATCH_ROWS`` rows (about 100 KB) in one transaction, again and again.

    A batch is one log entry: on every node it must be there whole or not at
    all, and there if its COMMIT was acknowledged.
    """

    def __init__(self, cluster, name, row_bytes=BATCH_ROW_BYTES):
        super().__init__(cluster, name)
        self.batch = 0
        self.acked = []
        self.unknown = []
        self.row_bytes = row_bytes
        # The same bytes per second whatever the batch's size.
        self.pause = BATCH_PAUSE * row_bytes / BATCH_ROW_BYTES

    def step(self, conn):
        self.batch += 1
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO batches (batch, payload) VALUES (?, ?)",
                         [(self.batch, os.urandom(self.row_bytes)) for _ in range(BATCH_ROWS)])
        conn.commit()
        self.acked.append(self.batch)
        time.sleep(self.pause)

    def failed(self, error):
        if error.unknown_outcome:
            self.unknown.append(self.batch)


class OwnWrites(Client):
    """Writes with consistency ``none`` and reads straight back: it must see its own write,
    whichever node it reads from after a failover."""

    def __init__(self, cluster, name):
        super().__init__(cluster, name, consistency="none")
        self.value = 0
        self.acked = 0
        self.violations = []

    def step(self, conn):
        self.value += 1
        conn.execute("INSERT INTO own (value) VALUES (?)", (self.value,))
        self.acked = self.value
        (seen,) = conn.execute("SELECT coalesce(max(value), 0) FROM own").fetchone()
        if seen < self.acked and len(self.violations) < 10:
            self.violations.append(f"{self.name} wrote {self.acked} and then read back only up to {seen}")


class Auditor(Client):
    def __init__(self, cluster, name, consistency, appender):
        super().__init__(cluster, name, consistency)
        self.appender = appender
        self.violations = []
        self.violations_seen = 0
        self.reads = 0

    def violation(self, text):
        self.violations_seen += 1
        if len(self.violations) < 10:
            self.violations.append(text)
        elif len(self.violations) == 10:
            self.violations.append(f"{self.name}: more violations follow (counted at the end)")

    def step(self, conn):
        started = time.monotonic()
        must_see = self.appender.acknowledged_by(started) if self.consistency == "strong" else 0
        self.reads += 1
        in_transaction = self.reads % 2 == 0  # a read-only deferred transaction: one snapshot
        if in_transaction:
            conn.execute("BEGIN DEFERRED")
        total, lowest = conn.execute("SELECT sum(balance), min(balance) FROM accounts").fetchone()
        (count,) = conn.execute("SELECT coalesce(max(value), 0) FROM log").fetchone()
        if in_transaction:
            conn.commit()
        if total != TOTAL or lowest < 0:
            self.violation(f"{self.name} read a total of {total} (lowest balance {lowest}), not {TOTAL}")
        if count < must_see:
            self.violation(
                f"{self.name} read the log up to {count}, but {must_see} was acknowledged before the read began"
            )


class Nemesis:
    """One fault at a time, each healed before the next; logs what it did."""

    FAULTS = ("kill_leader", "kill_follower", "pause_leader", "pause_follower", "stop_leader",
              "wipe_follower", "compact_any", "grow_and_shrink")

    def __init__(self, cluster, rng, log):
        self.cluster = cluster
        self.rng = rng
        self.log = log
        self.done = []
        self.exited = []  # nodes found dead that the nemesis did not kill

    def _leader_and_follower(self):
        leader = self.cluster.leader()
        followers = [node for node in self.cluster.nodes if node is not leader and node.alive]
        return leader, self.rng.choice(followers)

    def strike(self):
        """One fault, healed; returns once a leader serves again."""
        self.check_alive()
        fault = self.rng.choice(self.FAULTS)
        leader, follower = self._leader_and_follower()
        role = fault.rsplit("_", 1)[1]
        victim = leader if role == "leader" else follower if role == "follower" else self.rng.choice([leader, follower])
        if fault == "grow_and_shrink":
            self.log("nemesis: grow_and_shrink: a fourth node joins, then leaves")
            victim = self.grow_and_shrink()
        else:
            self.log(f"nemesis: {fault} node{victim.index}")
            getattr(self, fault.rsplit("_", 1)[0])(victim)
        self.done.append((fault, victim.index))
        self.cluster.wait_for_leader(timeout=30)

    def kill(self, victim):
        victim.kill()
        time.sleep(self.rng.uniform(0.2, 2.0))
        victim.start(peers=self.cluster.peers_of(victim))

    def pause(self, victim):
        victim.pause()
        # A leader paused past the election timeout (1.4 s at most) is
        # deposed, and wakes up believing it still leads; a shorter pause
        # is a stall (a slow disk, a long GC) it must ride out.
        time.sleep(self.rng.uniform(0.3, 3.0))
        victim.resume()

    def stop(self, victim):
        victim.stop()
        time.sleep(self.rng.uniform(0.2, 1.0))
        victim.start(peers=self.cluster.peers_of(victim))

    def wipe(self, victim):
        # A replaced disk: the node comes back empty and must be sent a snapshot.
        # Healed once it holds what was committed again: until then it does not
        # vote (raft.SafeSyncObj, catching up), so a second node losing its disk,
        # or the leader, meanwhile would be two faults at once.
        victim.kill()
        victim.wipe()
        victim.start(peers=self.cluster.peers_of(victim))
        self.cluster.wait_for(lambda: _caught_up(victim), 60, f"node{victim.index} to catch up after its wipe")

    def compact(self, victim):
        # Not a fault: a snapshot taken (and the log cut) while clients write.
        conn = victim.connect(timeout=CLIENT_TIMEOUT)
        try:
            conn.compact()
        finally:
            conn.close()

    def grow_and_shrink(self):
        # Membership changes under load: a fourth member joins, catches up,
        # and is removed again (then stopped, as an operator would).
        newcomer = self.cluster.add_node()
        time.sleep(self.rng.uniform(0.3, 2.0))
        self._remove(newcomer)
        newcomer.stop()
        self.cluster.nodes.remove(newcomer)
        return newcomer

    def _remove(self, member, attempts=5):
        # As an operator would: an election in the middle (the leader was
        # just stopped) leaves the outcome unknown; look, and try again.
        for attempt in range(attempts):
            conn = self.cluster.leader().connect(timeout=CLIENT_TIMEOUT)
            try:
                if not any(m["raft"] == member.raft for m in conn.status()["members"]):
                    return
                conn.remove_member(member.raft)
                return
            except dbapi.OperationalError as error:
                if not (error.retryable or error.unknown_outcome) or attempt == attempts - 1:
                    raise
                self.log(f"removing {member.raft}: {error}; again")
            finally:
                conn.close()

    def check_alive(self):
        for node in self.cluster.nodes:
            if not node.alive and node.index not in self.exited:
                self.exited.append(node.index)
                self.log(f"node{node.index} exited by itself (code {node.process.returncode}); restarting it")
                node.start(peers=self.cluster.peers_of(node))


def _caught_up(node):
    try:
        return node.status(timeout=2.0)["catching_up"] is False
    except dbapi.Error:
        return False


def sqlite_dump(node, database="default"):
    """Everything in a node's SQLite file, read straight from disk."""
    path = os.path.join(node.data_dir, "db", f"{database}.sqlite3")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


class Report:
    def __init__(self, seed):
        self.seed = seed
        self.faults = []
        self.violations = []
        self.counts = {}
        self.resumed_after = {}  # client name: seconds it took to go on once the faults were healed

    def __str__(self):
        lines = [f"chaos run, seed {self.seed}: {len(self.faults)} faults"]
        lines += [f"  {name}: {counts}" for name, counts in self.counts.items()]
        if self.resumed_after:
            slowest = max(self.resumed_after, key=self.resumed_after.get)
            lines.append(f"  once healed, every client that went on did so within "
                         f"{self.resumed_after[slowest]:.2f} s ({slowest} the slowest)")
        lines += [f"  VIOLATION: {violation}" for violation in self.violations] or ["  no violations"]
        return "\n".join(lines)


def run(directory, seconds, seed, log=print, pause_between=(0.5, 2.0), batch_row_bytes=BATCH_ROW_BYTES):
    rng = random.Random(seed)
    report = Report(seed)
    with LocalCluster(directory, 3) as cluster:
        conn = cluster.leader().connect()
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        conn.executemany("INSERT INTO accounts (id, balance) VALUES (?, ?)",
                         [(i, OPENING_BALANCE) for i in range(1, ACCOUNTS + 1)])
        # No unique constraint: an insert applied twice must show as a duplicate.
        conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, payload BLOB NOT NULL)")
        conn.execute("CREATE TABLE own (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
        conn.close()

        appender = Appender(cluster, "appender")
        batches = Batches(cluster, "batches", batch_row_bytes)
        clients = [
            batches,
            Transfers(cluster, "transfers-1", random.Random(rng.random())),
            Transfers(cluster, "transfers-deferred", random.Random(rng.random()), deferred=True),
            appender,
            Auditor(cluster, "auditor-strong", "strong", appender),
            Auditor(cluster, "auditor-weak", "weak", appender),
            Auditor(cluster, "auditor-none", "none", appender),
            OwnWrites(cluster, "own-writes-none"),
        ]
        for client in clients:
            client.start()

        nemesis = Nemesis(cluster, rng, log)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(*pause_between))
            nemesis.strike()
        nemesis.check_alive()
        # Healed: every client must go on.
        cluster.wait_for_leader(timeout=30)
        report.resumed_after = _wait_for_every_client_to_resume(clients)
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(60)
            if client.is_alive():
                report.violations.append(f"{client.name} did not stop within 60 s")
        report.faults = nemesis.done
        report.counts = {client.name: dict(client.counts) for client in clients}
        report.violations += [f"node{index} exited by itself" for index in nemesis.exited]
        for node in cluster.nodes:
            if "Traceback" in node.log():
                report.violations.append(f"node{node.index}'s log holds a traceback: {node.log_path}")
        for client in clients:
            report.violations += client.errors
            report.violations += getattr(client, "violations", [])
            if getattr(client, "violations_seen", 0) > 10:
                report.violations.append(f"{client.name}: {client.violations_seen} violations in all")
            if client.name not in report.resumed_after:
                report.violations.append(f"{client.name} made no progress within {RESUME_WITHIN:.0f} s of the "
                                         f"faults being healed; {_last_failure(client)}")
        _check_final_state(cluster, appender, batches, report)
    return report


def _wait_for_every_client_to_resume(clients):
    """How long each client took to get a step through once the faults were healed."""
    healed_at = time.monotonic()
    before = {client.name: client.counts["ok"] for client in clients}
    resumed_after = {}
    while len(resumed_after) < len(clients) and time.monotonic() < healed_at + RESUME_WITHIN:
        for client in clients:
            if client.name not in resumed_after and client.counts["ok"] > before[client.name]:
                resumed_after[client.name] = time.monotonic() - healed_at
        time.sleep(0.01)
    return resumed_after


def _last_failure(client):
    if client.last_failure is None:
        return "it never failed"
    failed_at, error = client.last_failure
    return f"its last failure, {time.monotonic() - failed_at:.1f} s before the end: {error}"


def _check_final_state(cluster, appender, batches, report):
    cluster.wait_converged(timeout=60)
    dumps = {node.index: sqlite_dump(node) for node in cluster.nodes}
    first = dumps[cluster.nodes[0].index]
    for index, dump in dumps.items():
        if dump != first:
            report.violations.append(f"node{index}'s SQLite file differs from node{cluster.nodes[0].index}'s")
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for statement in first:  # one by one: a long run's dump is more than one string SQLite takes (1 GB)
        conn.execute(statement)
    total, lowest = conn.execute("SELECT sum(balance), min(balance) FROM accounts").fetchone()
    if total != TOTAL or lowest < 0:
        report.violations.append(f"the accounts hold {total} in all (lowest {lowest}), not {TOTAL}")
    values = [row[0] for row in conn.execute("SELECT value FROM log")]
    sizes = dict(conn.execute("SELECT batch, count(*) FROM batches GROUP BY batch"))
    conn.close()
    torn = {batch: size for batch, size in sizes.items() if size != BATCH_ROWS}
    if torn:
        report.violations.append(f"batches applied in part (batch: rows of {BATCH_ROWS}): {torn}")
    if set(batches.acked) - set(sizes):
        report.violations.append(f"acknowledged batches lost: {sorted(set(batches.acked) - set(sizes))}")
    if set(sizes) - set(batches.acked) - set(batches.unknown):
        report.violations.append(f"batches present that were never acknowledged nor of unknown outcome: "
                                 f"{sorted(set(sizes) - set(batches.acked) - set(batches.unknown))}")
    acked = {value for _, value in appender.acked}
    present = set(values)
    if len(values) != len(present):
        report.violations.append(f"{len(values) - len(present)} inserts were applied twice")
    if acked - present:
        report.violations.append(f"acknowledged inserts lost: {sorted(acked - present)[:20]}")
    if present - acked - set(appender.unknown):
        report.violations.append(f"inserts present that were never acknowledged nor of unknown outcome: "
                                 f"{sorted(present - acked - set(appender.unknown))[:20]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where the nodes' data and logs go (default: a temp dir)")
    parser.add_argument("--batch-row-bytes", type=int, default=BATCH_ROW_BYTES,
                        help=f"bytes of each of a batch's {BATCH_ROWS} rows (default {BATCH_ROW_BYTES})")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    directory = args.dir or tempfile.mkdtemp(prefix="dqcluster-chaos-")
    started = time.monotonic()
    report = run(directory, args.seconds, seed, log=lambda line: print(f"[{time.monotonic() - started:7.1f}] {line}",
                                                                         flush=True),
                 batch_row_bytes=args.batch_row_bytes)
    print(report)
    print(f"node logs: {directory}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
