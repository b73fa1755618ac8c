"""Django ORM benchmark: run by hand, prints one table (timings here are too noisy for tests).

    python bench/orm_bench.py [--scale 1.0] [--strong-via leader|follower]

In ONE run, the same ORM workloads against five DATABASES aliases of one
settings.configure():

* ``sqlite``     Django's sqlite3 backend, a file in the temp dir (WAL, synchronous=FULL,
                 transaction_mode IMMEDIATE so concurrent atomic() blocks queue instead of
                 failing with "database is locked");
* ``postgresql`` psycopg on the local server (127.0.0.1:5432, user postgres), in a
                 throwaway database created for this run and dropped at the end;
* ``embedded``   our backend, one embedded node in this process;
* ``strong``     our backend, client mode, on a 3-node LocalCluster, consistency strong
                 (connected to the leader's client address unless --strong-via follower);
* ``none``       the same cluster and database NAME, consistency none, connected to a
                 follower's client address; its SELECTs read that follower's file
                 (local reads: the follower runs on this host), its writes go through it.

Every node of ours and the sqlite file use fsync on commit, as PostgreSQL does
(fsync=on, synchronous_commit=on). Each alias has its own model table. The
configurations take turns: each workload runs on all five before the next one
starts, so every row of the table was measured within seconds. Every
workload runs a fixed number of operations (scaled by --scale) in fresh threads,
each thread with its own Django connection, closed when the thread ends.
Targets (issue 3), 3-node vs PostgreSQL in the same run: create (1 thread) >= 40%,
get by pk with none >= 100%, get by pk with strong >= 40%, bulk_create >= 50%.
Lost updates of the select_for_update read-modify-write must be 0 everywhere.
"""

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from django_dqcluster.store.local_cluster import LocalCluster, free_ports  # noqa: E402

HOOK = "django.db.backends.sqlite3._functions:register"
CONFIGS = [
    ("sqlite", "sqlite3"),
    ("postgresql", "PostgreSQL"),
    ("embedded", "dqcluster embedded"),
    ("strong", "3-node strong"),
    ("none", "3-node none"),
]
GROUPS = 10            # rows spread over this many values of `grp` (indexed)
BULK_ROWS = 10_000     # rows per bulk_create call
UPDATE_SPAN = 10       # rows per update-by-filter (a pk range)
AGGREGATE_SPAN = 3000  # rows per aggregate (a pk range)
MAX_ERRORS = 20        # a thread gives up after this many failed operations

# Operations per workload at --scale 1 (sized for < 5 minutes on 2 cores).
WORKLOADS = [
    # key, label, threads, operations at scale 1
    ("create_1", "create (1 thread)", 1, 1500),
    ("create_8", "create (8 threads)", 8, 2400),
    ("get_pk", "get by pk", 1, 8000),
    ("filter_count", "filter and count", 1, 4000),
    ("aggregate", f"aggregate Sum/Avg ({AGGREGATE_SPAN:,} rows)", 1, 1000),
    ("bulk_create", f"bulk_create {BULK_ROWS:,} rows (rows/s)", 1, 3),
    ("rmw_1", "select_for_update read-modify-write (1 thread)", 1, 1000),
    ("rmw_4", "select_for_update read-modify-write (4 threads)", 4, 1200),
    ("update", f"update by filter ({UPDATE_SPAN} rows each)", 1, 1500),
]
TARGETS = [
    # label, workload, config, minimum ratio to PostgreSQL
    ("create (1 thread), 3-node strong", "create_1", "strong", 0.40),
    ("get by pk, 3-node none", "get_pk", "none", 1.00),
    ("get by pk, 3-node strong", "get_pk", "strong", 0.40),
    ("bulk_create, 3-node strong", "bulk_create", "strong", 0.50),
]


# -- setup -------------------------------------------------------------------------------------


def create_pg_database(args):
    import psycopg

    name = f"orm_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(args, name):
    import psycopg

    with psycopg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def databases(directory, pg_name, cluster, strong_node, none_node, args):
    raft, client = free_ports(2)
    ours = {"ENGINE": "django_dqcluster.backend", "NAME": "bench"}
    return {
        "default": {},  # unused; every query names its alias
        "sqlite": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(directory, "sqlite", "bench.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30,
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL"},
        },
        "postgresql": {
            "ENGINE": "django.db.backends.postgresql", "NAME": pg_name, "USER": args.pg_user,
            "HOST": args.pg_host, "PORT": str(args.pg_port),
        },
        "embedded": {**ours, "OPTIONS": {
            "embedded": True, "data_dir": os.path.join(directory, "embedded"),
            "bind": f"127.0.0.1:{raft}", "client": f"127.0.0.1:{client}", "timeout": 30,
        }},
        "strong": {**ours, "OPTIONS": {
            "address": strong_node.client, "secret_file": cluster.secret_file, "consistency": "strong",
            "timeout": 30,
        }},
        "none": {**ours, "OPTIONS": {
            "address": none_node.client, "secret_file": cluster.secret_file, "consistency": "none",
            "timeout": 30,
        }},
    }


def make_models():
    from django.db import models

    rows = {}
    for alias, _ in CONFIGS:
        class Meta:
            app_label = "orm_bench"
            db_table = f"orm_bench_row_{alias}"

        rows[alias] = type(f"Row_{alias}", (models.Model,), {
            "__module__": __name__,
            "Meta": Meta,
            "name": models.CharField(max_length=100),
            "value": models.IntegerField(default=0),
            "grp": models.IntegerField(db_index=True),
        })
    return rows


# -- running -----------------------------------------------------------------------------------


class Result:
    def __init__(self, ops, seconds, errors):
        self.ops = ops
        self.seconds = seconds
        self.errors = errors  # list of "Type: message"
        self.notes = []

    @property
    def rate(self):
        return self.ops / self.seconds if self.seconds > 0 and self.ops else 0.0


def run_threads(alias, threads, total, op, units=1):
    """``op(rng, thread, i)`` ``total`` times over ``threads`` threads; each its own connection.

    Returns a Result counting ``units`` per successful operation. Connections are
    opened before the clock starts and closed when each thread ends.
    """
    from django.db import connections

    per_thread = max(1, total // threads)
    barrier = threading.Barrier(threads + 1)
    done = [0] * threads
    errors = []
    lock = threading.Lock()

    def work(index):
        rng = random.Random(index * 7919 + threads)
        try:
            connections[alias].ensure_connection()
        finally:
            barrier.wait()
        try:
            failures = 0
            for i in range(per_thread):
                try:
                    op(rng, index, i)
                except Exception as exc:  # reported with the table, not hidden
                    with lock:
                        errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
                    failures += 1
                    if failures >= MAX_ERRORS:
                        with lock:
                            errors.append(f"(thread {index} stopped after {MAX_ERRORS} errors)")
                        break
                else:
                    done[index] += 1
        finally:
            connections[alias].close()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return Result(sum(done) * units, time.perf_counter() - started, errors)


class Bench:
    def __init__(self, alias, model, scale, settle):
        self.alias = alias
        self.model = model
        self.scale = scale
        self.settle = settle  # wait until a replica read sees every write ("none")
        self.results = {}
        self.checks = []  # (what, ok, detail)

    def ops(self, base):
        return max(1, round(base * self.scale))

    def manager(self):
        return self.model.objects.using(self.alias)

    def check(self, what, ok, detail):
        self.checks.append((what, ok, detail))

    def steps(self):
        """Run the workloads in order, yielding after each measured one.

        main() advances every configuration one step at a time, so the same
        workload is measured on all of them within seconds: a disk or CPU
        slowdown of this shared machine then hits the whole row, not one column.
        """
        from django.db import connections, transaction
        from django.db.models import Avg, Count, F, Sum

        alias, M = self.alias, self.model
        with connections[alias].schema_editor() as editor:
            editor.create_model(M)
        self.settle()
        spec = {key: (threads, self.ops(base)) for key, _, threads, base in WORKLOADS}

        def create(rng, thread, i):
            M.objects.using(alias).create(name=f"row {thread}-{i}", value=rng.randrange(1000),
                                          grp=rng.randrange(GROUPS))

        r1 = self.results["create_1"] = run_threads(alias, 1, spec["create_1"][1], create)
        yield "create_1"
        r8 = self.results["create_8"] = run_threads(alias, 8, spec["create_8"][1], create)
        yield "create_8"
        self.settle()
        count = self.manager().count()
        self.check("create: row count", count == r1.ops + r8.ops, f"{count} rows for {r1.ops + r8.ops} creates")

        # bulk_create before the reads, so filter/aggregate run over some 10k+ rows.
        batches = spec["bulk_create"][1]

        def bulk(rng, thread, i):
            M.objects.using(alias).bulk_create(
                [M(name=f"bulk {i}-{n}", value=rng.randrange(1000), grp=n % GROUPS) for n in range(BULK_ROWS)])

        before = count
        rb = self.results["bulk_create"] = run_threads(alias, 1, batches, bulk, units=BULK_ROWS)
        yield "bulk_create"
        self.settle()
        count = self.manager().count()
        self.check("bulk_create: row count", count == before + rb.ops, f"{count - before} rows for {rb.ops}")

        pks = list(self.manager().values_list("pk", flat=True))

        def get(rng, thread, i):
            row = M.objects.using(alias).get(pk=rng.choice(pks))
            assert row.name

        self.results["get_pk"] = run_threads(alias, 1, spec["get_pk"][1], get)
        yield "get_pk"

        def filter_count(rng, thread, i):
            M.objects.using(alias).filter(grp=rng.randrange(GROUPS), value__gte=rng.randrange(1000)).count()

        self.results["filter_count"] = run_threads(alias, 1, spec["filter_count"][1], filter_count)
        yield "filter_count"

        high = max(pks)
        # pks are dense (nothing rolled back so far): every range holds AGGREGATE_SPAN rows.
        low = high - AGGREGATE_SPAN
        span = self.manager().filter(pk__gt=low, pk__lte=low + AGGREGATE_SPAN).aggregate(n=Count("pk"))["n"]
        self.check("aggregate: rows per range", span == AGGREGATE_SPAN, f"{span} rows in a {AGGREGATE_SPAN} pk range")

        def aggregate(rng, thread, i):
            low = rng.randrange(high - AGGREGATE_SPAN)
            result = M.objects.using(alias).filter(pk__gt=low, pk__lte=low + AGGREGATE_SPAN).aggregate(
                total=Sum("value"), mean=Avg("value"))
            assert result["total"] is not None

        self.results["aggregate"] = run_threads(alias, 1, spec["aggregate"][1], aggregate)
        yield "aggregate"

        for key in ("rmw_1", "rmw_4"):
            counter = M.objects.using(alias).create(name=f"counter {key}", value=0, grp=GROUPS)

            def rmw(rng, thread, i, pk=counter.pk):
                with transaction.atomic(using=alias):
                    row = M.objects.using(alias).select_for_update().get(pk=pk)
                    row.value += 1
                    row.save(update_fields=["value"])

            threads, total = spec[key]
            result = self.results[key] = run_threads(alias, threads, total, rmw)
            yield key
            self.settle()
            final = self.manager().get(pk=counter.pk).value
            result.lost = result.ops - final
            self.check(f"{key}: lost updates", result.lost == 0,
                       f"{result.lost} lost ({final} after {result.ops} committed increments)")

        updated = [0]
        sum_before = self.manager().filter(grp__lt=GROUPS).aggregate(s=Sum("value"))["s"]

        def update(rng, thread, i):
            low = rng.randrange(high - UPDATE_SPAN)
            updated[0] += M.objects.using(alias).filter(pk__gt=low, pk__lte=low + UPDATE_SPAN).update(
                value=F("value") + 1)

        self.results["update"] = run_threads(alias, 1, spec["update"][1], update)
        yield "update"
        self.settle()
        sum_after = self.manager().filter(grp__lt=GROUPS).aggregate(s=Sum("value"))["s"]
        self.check("update by filter: sum of values", sum_after - sum_before == updated[0],
                   f"+{sum_after - sum_before} for {updated[0]} rows updated")


# -- report ------------------------------------------------------------------------------------


def ratio(a, b):
    return a / b if a and b else 0.0


def report(benches, args, strong_via, elapsed):
    print(f"\nDjango ORM operations/s (bulk_create: rows/s), one run, --scale {args.scale}, "
          f"{os.cpu_count()} CPUs, loopback; total {elapsed:.0f} s\n")
    header = [label for _, label in CONFIGS] + ["3-node strong / PostgreSQL", "3-node none / PostgreSQL"]
    print("| workload | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(header))
    for key, label, _, _ in WORKLOADS:
        cells = []
        for alias, _ in CONFIGS:
            result = benches[alias].results.get(key)
            if result is None:
                cells.append("n/a")
                continue
            cell = f"{result.rate:,.0f}"
            if result.errors:
                cell += f" ({len(result.errors)} err)"
            cells.append(cell)
        pg = rate_of(benches, "postgresql", key)
        cells.append(f"{ratio(rate_of(benches, 'strong', key), pg):.0%}")
        cells.append(f"{ratio(rate_of(benches, 'none', key), pg):.0%}")
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\nLost updates (select_for_update read-modify-write, must be 0):\n")
    print("| workload | " + " | ".join(label for _, label in CONFIGS) + " |")
    print("|---|" + "---|" * len(CONFIGS))
    for key in ("rmw_1", "rmw_4"):
        label = next(lab for k, lab, _, _ in WORKLOADS if k == key)
        cells = [str(getattr(benches[a].results.get(key), "lost", "n/a")) if key in benches[a].results else "n/a"
                 for a, _ in CONFIGS]
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\nTargets (issue 3), 3-node vs PostgreSQL in this run:\n")
    all_pass = True
    for label, key, alias, minimum in TARGETS:
        value = ratio(rate_of(benches, alias, key), rate_of(benches, "postgresql", key))
        ok = value >= minimum
        all_pass &= ok
        print(f"- {'PASS' if ok else 'FAIL'} {label} >= {minimum:.0%} of PostgreSQL: {value:.0%}")
    lost = [f"{a} {k}" for a, _ in CONFIGS for k in ("rmw_1", "rmw_4")
            if getattr(benches[a].results.get(k), "lost", 0) != 0]
    print(f"- {'PASS' if not lost else 'FAIL'} no lost updates" + (f": {', '.join(lost)}" if lost else ""))

    print(f"\nSetup: 3-node strong connects to the {strong_via}'s client address, 3-node none to a "
          "follower's (reading its file: local reads); every node and the sqlite file fsync each commit (PostgreSQL: fsync=on, "
          "synchronous_commit=on); sqlite3 with transaction_mode IMMEDIATE.")

    failed = [(alias, what, detail) for alias, b in benches.items() for what, ok, detail in b.checks if not ok]
    if failed:
        print("\nFailed checks:")
        for alias, what, detail in failed:
            print(f"- {alias}: {what}: {detail}")
    errors = [(alias, key, r.errors) for alias, b in benches.items() for key, r in b.results.items() if r.errors]
    if errors:
        print("\nErrors (operations that raised; not counted in ops/s):")
        for alias, key, messages in errors:
            distinct = sorted(set(messages), key=messages.index)
            print(f"- {alias} {key}: {len(messages)} errors; " + " | ".join(m[:300] for m in distinct[:3]))
    return all_pass and not failed and not errors


def rate_of(benches, alias, key):
    bench = benches.get(alias)
    result = bench.results.get(key) if bench else None
    return result.rate if result else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every workload's operation count")
    parser.add_argument("--strong-via", choices=("leader", "follower"), default="leader",
                        help="which node the 3-node strong alias connects to")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--dir", default=None, help="parent of the temp dir (default: the system's)")
    args = parser.parse_args()

    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="dqcluster-orm-bench-", dir=args.dir)
    os.makedirs(os.path.join(directory, "sqlite"))
    cluster = None
    pg_name = None
    configured = False
    benches = {}
    try:
        pg_name = create_pg_database(args)
        cluster = LocalCluster(os.path.join(directory, "cluster"), 3, connection_hooks=[HOOK])
        cluster.start()
        leader = cluster.leader()
        follower = next(node for node in cluster.nodes if node is not leader)
        strong_node = leader if args.strong_via == "leader" else follower
        settings.configure(
            DATABASES=databases(directory, pg_name, cluster, strong_node, follower, args),
            INSTALLED_APPS=[], USE_TZ=False, SECRET_KEY="orm-bench",
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        )
        django.setup()
        configured = True
        models = make_models()
        running = {}
        for alias, _ in CONFIGS:
            settle = (lambda: cluster.wait_converged(60)) if alias == "none" else (lambda: None)
            benches[alias] = Bench(alias, models[alias], args.scale, settle)
            running[alias] = benches[alias].steps()
        while running:
            t0 = time.perf_counter()
            measured = set()
            for alias in list(running):
                try:
                    measured.add(next(running[alias]))
                except StopIteration:
                    del running[alias]
                    continue
                except Exception as exc:  # reported with the table; the other configs still run
                    import traceback

                    traceback.print_exc()
                    benches[alias].check(
                        "run", False, f"aborted: {type(exc).__module__}.{type(exc).__name__}: {exc}")
                    del running[alias]
                    continue
            if measured:
                print(f"{'/'.join(sorted(measured))} ({time.perf_counter() - t0:.0f} s)",
                      end=" ", flush=True, file=sys.stderr)
        print(file=sys.stderr)
        ok = report(benches, args, args.strong_via, time.perf_counter() - started)
    finally:
        if configured:
            from django.db import connections

            from django_dqcluster.backend import embedded

            connections.close_all()
            embedded.stop_all()
        if cluster is not None:
            cluster.stop()
        if pg_name is not None:
            drop_pg_database(args, pg_name)
        shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
