"""Backend scenarios, each run in a fresh interpreter by test_backend.py.

    python -m tests.backend.scenarios NAME WORKDIR

Each scenario configures Django for itself (settings.configure with its own
DATABASES: embedded nodes, or a 3-process LocalCluster), so the pytest
process never has its Django settings fixed by these tests and the other
suites keep theirs. A failed assertion exits non-zero with a traceback.
"""

import contextlib
import os
import subprocess
import sys
import threading
import time

import django
from django.conf import settings

from django_dqcluster.store.local_cluster import LocalCluster, free_ports
from tests.waiting import wait_for

HOOK = "django.db.backends.sqlite3._functions:register"


def configure(databases, **extra):
    settings.configure(
        DATABASES=databases,
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.backend.bapp", "django_dqcluster"],
        ROOT_URLCONF="tests.backend.urls",
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="backend-tests",
        USE_TZ=False,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        **extra,
    )
    django.setup()


def create_tables(alias="default"):
    from django.db import connections

    from tests.backend.bapp.models import Item

    with connections[alias].schema_editor() as editor:
        editor.create_model(Item)


def start_cluster(workdir):
    cluster = LocalCluster(os.path.join(workdir, "cluster"), 3, connection_hooks=[HOOK], durability="process")
    cluster.start()
    return cluster


@contextlib.contextmanager
def cluster_seen_from_a_follower(workdir):
    """A 3-node cluster (killed at the end), its leader, and the follower this "host" runs."""
    cluster = start_cluster(workdir)
    try:
        leader = cluster.leader()
        yield cluster, leader, next(node for node in cluster.nodes if node is not leader)
    finally:
        cluster.kill()


def client_entry(cluster, node, name="app", **options):
    return {
        "ENGINE": "django_dqcluster.backend",
        "NAME": name,
        "OPTIONS": {"address": node.client, "secret_file": cluster.secret_file, "timeout": 30, **options},
    }


def token_entry(cluster, node, token_path, name="app"):
    """A client entry holding a client token (OPTIONS token_file) instead of the secret."""
    entry = client_entry(cluster, node, name)
    del entry["OPTIONS"]["secret_file"]
    entry["OPTIONS"]["token_file"] = token_path
    return entry


def embedded_options(workdir, raft, client, **options):
    """OPTIONS of an alias whose node runs in this process (data in ``workdir/node``)."""
    return {"embedded": True, "data_dir": os.path.join(workdir, "node"), "bind": f"127.0.0.1:{raft}",
            "client": f"127.0.0.1:{client}", **options}


# -- scenarios ------------------------------------------------------------------------------


def embedded(workdir):
    """One embedded node, shared by two aliases; the ORM, transactions, introspection, inspectdb, fixtures."""
    raft, client = free_ports(2)
    node_options = embedded_options(workdir, raft, client)
    configure({
        "default": {"ENGINE": "django_dqcluster.backend", "NAME": "app", "OPTIONS": dict(node_options)},
        "other": {"ENGINE": "django_dqcluster.backend", "NAME": "app", "OPTIONS": dict(node_options)},
    })
    import datetime

    from django.db import connection, connections, transaction
    from django.db.models import F, Sum
    from django.db.models.functions import ExtractYear

    from django_dqcluster.backend import embedded as embedded_nodes
    from tests.backend.bapp.models import Item

    create_tables()
    Item.objects.create(name="a", value=1, created=datetime.date(2021, 5, 1))
    Item.objects.bulk_create([Item(name=f"b{i}", value=i) for i in range(100)])
    assert Item.objects.count() == 101
    assert Item.objects.using("other").count() == 101  # same node, same database
    assert connections["default"].connection._node is connections["other"].connection._node
    assert len(embedded_nodes._nodes) == 1
    # Django's SQL functions run on the node (django_date_extract).
    assert Item.objects.annotate(y=ExtractYear("created")).filter(y=2021).count() == 1
    with transaction.atomic():
        item = Item.objects.select_for_update().get(name="a")
        item.value = F("value") + 10
        item.save()
        with transaction.atomic():  # a savepoint, rolled back
            Item.objects.filter(name="a").update(value=0)
            transaction.set_rollback(True)
    assert Item.objects.get(name="a").value == 11
    try:
        with transaction.atomic():
            Item.objects.create(name="gone")
            raise RuntimeError
    except RuntimeError:
        pass
    assert not Item.objects.filter(name="gone").exists()
    assert Item.objects.aggregate(total=Sum("value"))["total"] == 11 + sum(range(100))
    # A raw cursor gets a date column as a date, as with Django's sqlite3 backend
    # (converted by declared type with the converters Django registers).
    with connection.cursor() as cursor:
        cursor.execute("SELECT created, name FROM bapp_item WHERE name = %s", ["a"])
        assert cursor.fetchone() == (datetime.date(2021, 5, 1), "a")
    tables = connection.introspection.table_names()
    assert "bapp_item" in tables and not [t for t in tables if t.startswith("_dqcluster_")], tables
    # inspectdb reads the schema back through the store.
    import io
    import json

    from django.core.management import call_command

    inspected = io.StringIO()
    call_command("inspectdb", "bapp_item", stdout=inspected)
    assert "class BappItem(models.Model):" in inspected.getvalue(), inspected.getvalue()
    assert "name = models.CharField(max_length=100)" in inspected.getvalue(), inspected.getvalue()
    # dumpdata and loaddata round-trip every row.
    fixture = os.path.join(workdir, "items.json")
    call_command("dumpdata", "bapp.item", output=fixture, verbosity=0)
    with open(fixture) as handle:
        assert len(json.load(handle)) == 101
    Item.objects.all().delete()
    call_command("loaddata", fixture, verbosity=0)
    assert Item.objects.count() == 101 and Item.objects.get(name="a").value == 11
    assert connection.get_database_version() >= (3, 31)
    assert connection.is_usable()
    print("embedded OK")


def three_nodes(workdir):
    """A client on a follower writes and reads its own writes; dbshell; Django's functions on every node."""
    cluster = start_cluster(workdir)
    try:
        leader = cluster.leader()
        follower = next(node for node in cluster.nodes if node is not leader)
        configure({"default": client_entry(cluster, follower), "none": client_entry(cluster, follower, consistency="none")})
        import datetime

        from django.db import connection, connections, transaction
        from django.db.models.functions import ExtractYear

        from tests.backend.bapp.models import Item

        create_tables()
        for i in range(20):
            item = Item.objects.create(name=f"n{i}", value=i, created=datetime.date(2020 + i % 3, 1, 1))
            assert Item.objects.get(pk=item.pk).value == i  # its own write, read right away
        with transaction.atomic():
            Item.objects.filter(value__lt=5).update(value=-1)
            assert Item.objects.filter(value=-1).count() == 5  # inside the transaction, too
        assert Item.objects.filter(value=-1).count() == 5
        assert connection.connection.node_address == follower.client
        assert Item.objects.annotate(y=ExtractYear("created")).filter(y=2021).count() == 7
        # Every replica holds the same rows (Django's functions ran on each).
        cluster.wait_converged()
        # 'none' reads the follower's file on this host with our own SQLite
        # connection: Django's functions are registered there too.
        replica = Item.objects.using("none")
        assert replica.annotate(y=ExtractYear("created")).filter(y=2021).count() == 7
        assert replica.filter(name__regex=r"^n1[0-9]$").count() == 10
        assert connections["none"].connection.replica_reads == 2
        for node in cluster.nodes:
            conn = node.connect(database="app", consistency="none")
            assert conn.execute("SELECT count(*) FROM bapp_item WHERE value = -1").fetchone()[0] == 5
            conn.close()
        # dbshell's program, non-interactively.
        from django_dqcluster.backend.client import DatabaseClient

        args, env = DatabaseClient.settings_to_cmd_args_env(connection.settings_dict, ["-c", "SELECT count(*) AS n FROM bapp_item"])
        output = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert output.returncode == 0, output.stderr
        assert "20" in output.stdout and "(1 row)" in output.stdout, output.stdout
        large_results_come_in_pages(Item, connection)
        print("three_nodes OK")
    finally:
        cluster.stop()


def large_results_come_in_pages(Item, connection):
    """iterator() over more rows than one answer holds, saving rows as it goes (a data migration's loop)."""
    Item.objects.all().delete()
    Item.objects.bulk_create([Item(name=f"{n:06d}".ljust(100, "p"), value=n) for n in range(12_000)])
    fetches = []
    driver = connection.connection
    fetch = driver._fetch
    driver._fetch = lambda result_id: fetches.append(result_id) or fetch(result_id)
    seen = 0
    for item in Item.objects.order_by("value").iterator(chunk_size=500):
        assert item.value == seen, (item.value, seen)
        seen += 1
        if item.value % 1000 == 0:
            Item.objects.filter(pk=item.pk).update(name="updated")  # while the result is open
            assert Item.objects.get(pk=item.pk).name == "updated"  # its own write, seen at once
    assert seen == 12_000 and len(fetches) >= 1, (seen, len(fetches))  # ~1.3 MB: two pages of 1 MiB
    from django.db import transaction

    with transaction.atomic():  # the same inside a transaction: its pages read its own writes
        Item.objects.filter(value__gte=11_990).update(value=-1)
        values = [item.value for item in Item.objects.order_by("pk").iterator(chunk_size=500)]
        Item.objects.filter(value=-1).update(value=-2)
    driver._fetch = fetch
    assert values == list(range(11_990)) + [-1] * 10 and len(fetches) >= 2
    assert Item.objects.filter(value=-2).count() == 10
    assert Item.objects.filter(name="updated").count() == 12
    assert len(list(Item.objects.all())) == 12_000  # without iterator() too


def failover_between_requests(workdir):
    """The leader is killed between two requests of one test-client session."""
    cluster = start_cluster(workdir)
    try:
        leader = cluster.leader()
        # A persistent connection to the leader itself: the second request
        # finds it dead and must fail over to the new leader.
        # CONN_HEALTH_CHECKS, as for any server that can go away under a
        # persistent connection: a dead connection is replaced before the
        # request's first query (here: one to the new leader).
        entry = client_entry(cluster, leader)
        # This host's node first, the other members as fallbacks (the driver
        # also learns them from the node, once they have announced themselves).
        entry["OPTIONS"]["address"] = [leader.client] + [n.client for n in cluster.nodes if n is not leader]
        configure({"default": {**entry, "CONN_MAX_AGE": None, "CONN_HEALTH_CHECKS": True}})
        from django.test import Client

        create_tables()
        client = Client()
        response = client.get("/add/before/")
        assert response.status_code == 200, response.content
        leader.kill()
        started = time.monotonic()
        response = client.get("/add/after/")
        assert response.status_code == 200, response.content
        response = client.get("/names/")
        assert response.json() == {"names": ["before", "after"]}, response.content
        print(f"failover_between_requests OK (second request took {time.monotonic() - started:.1f}s)")
    finally:
        cluster.stop()


def transaction_interrupted(workdir):
    """Failover in the middle of atomic(): OperationalError, and nothing of it applied.

    Twice: a client on a follower (its node forwards the transaction to the
    leader, which dies), then a client on the leader itself (which dies).
    """
    cluster = start_cluster(workdir)
    try:
        first_leader = cluster.leader()
        follower = next(node for node in cluster.nodes if node is not first_leader)
        configure({
            "default": client_entry(cluster, follower),
            "on_follower": client_entry(cluster, follower),
            "on_leader": client_entry(cluster, first_leader),  # re-pointed below
        })
        from django.db import OperationalError, connections, transaction

        from tests.backend.bapp.models import Item

        create_tables()
        Item.objects.create(name="kept")
        outcomes = {}
        for alias in ("on_follower", "on_leader"):
            leader = cluster.leader()
            if alias == "on_leader":
                connections[alias].settings_dict["OPTIONS"]["address"] = leader.client
            try:
                with transaction.atomic(using=alias):
                    Item.objects.using(alias).create(name=f"{alias}-1")
                    Item.objects.using(alias).create(name=f"{alias}-2")
                    leader.kill()
                    Item.objects.using(alias).create(name=f"{alias}-3")
            except OperationalError as exc:
                outcomes[alias] = exc
                assert getattr(exc.__cause__, "retryable", False), f"{alias}: {exc!r} should be retryable"
            else:
                raise AssertionError(f"{alias}: the transaction survived the loss of its leader")
            # Once a new leader is elected the same connection works again,
            # and none of the transaction's rows exist.
            names = set(Item.objects.using(alias).values_list("name", flat=True))
            assert names == {"kept"}, names
            leader.start(peers=[n.raft for n in cluster.nodes if n is not leader])
            cluster.wait_for_leader()
        cluster.wait_converged()
        for node in cluster.nodes:
            conn = node.connect(database="app", consistency="none")
            assert conn.execute("SELECT name FROM bapp_item").fetchall() == [("kept",)]
            conn.close()
        for alias in connections:
            connections[alias].close()
        print("transaction_interrupted OK:", {k: str(v)[:100] for k, v in outcomes.items()})
    finally:
        cluster.stop()


def consistency(workdir):
    """A replica that lags: 'none' may read its stale copy, 'strong' never does.

    Caught up, the follower answers strong and weak reads, and transactions that
    only read (transaction_mode DEFERRED), itself.
    """
    ports = free_ports(6)
    rafts = [f"127.0.0.1:{ports[i]}" for i in range(3)]
    secret = "consistency-test-secret"

    def entry(index, level):
        return {
            "ENGINE": "django_dqcluster.backend",
            "NAME": "app",
            "OPTIONS": {
                "embedded": True, "data_dir": os.path.join(workdir, f"n{index}"), "bind": rafts[index],
                "client": f"127.0.0.1:{ports[3 + index]}", "peers": ",".join(r for r in rafts if r != rafts[index]),
                "secret": secret, "consistency": level, "timeout": 30,
            },
        }

    databases = {"default": entry(0, "strong")}
    for index in range(3):
        for level in ("strong", "weak", "none"):
            databases[f"n{index}_{level}"] = entry(index, level)
        # ATOMIC_REQUESTS with transaction_mode DEFERRED: a view that only reads.
        databases[f"n{index}_deferred"] = entry(index, "strong")
        databases[f"n{index}_deferred"]["OPTIONS"]["transaction_mode"] = "DEFERRED"
        databases[f"n{index}_deferred"]["ATOMIC_REQUESTS"] = True
    configure(databases)
    from django.db import connections

    from django_dqcluster.backend import embedded as embedded_nodes
    from tests.backend.bapp.models import Item

    from django_dqcluster.backend.options import parse

    # Start the three embedded members, then connect; every alias on a data
    # dir shares that dir's node.
    for i in range(3):
        embedded_nodes.get_node(parse(f"n{i}_strong", databases[f"n{i}_strong"]), wait=False)
    for alias in databases:
        connections[alias].ensure_connection()
    nodes = {i: connections[f"n{i}_strong"].connection._node for i in range(3)}
    wait_for(lambda: any(node.is_leader() for node in nodes.values()), what="a leader")
    leader_index = next(i for i, node in nodes.items() if node.is_leader())
    lagging_index = next(i for i in nodes if i != leader_index)
    lagging = nodes[lagging_index]
    create_tables(f"n{leader_index}_strong")
    Item.objects.using(f"n{leader_index}_strong").create(name="x", value=1)
    wait_for(lambda: lagging.engine.raftLastApplied >= nodes[leader_index].engine.raftLastApplied, what="catch-up")
    none_alias = f"n{lagging_index}_none"
    assert Item.objects.using(none_alias).get(name="x").value == 1

    # Hold the lagging node's apply: its Raft thread stalls, its clients are still served.
    gate = threading.Event()
    original_apply = lagging.state_machine.apply

    def held_apply(payload, index):
        gate.wait()
        return original_apply(payload, index)

    lagging.state_machine.apply = held_apply
    try:
        Item.objects.using(f"n{leader_index}_strong").filter(name="x").update(value=2)
        # 'none' answers from the lagging replica: the old value.
        assert Item.objects.using(none_alias).get(name="x").value == 1, "expected a stale read with 'none'"
        # 'strong' and 'weak' through the same lagging node go to the leader.
        for level in ("strong", "weak"):
            for index in nodes:
                value = Item.objects.using(f"n{index}_{level}").get(name="x").value
                assert value == 2, f"{level} read through node {index} saw {value}"
    finally:
        gate.set()
        lagging.state_machine.apply = original_apply
    wait_for(lambda: Item.objects.using(none_alias).get(name="x").value == 2, what="the replica to catch up")

    # Caught up, the follower answers strong and weak reads itself (the leader
    # says it holds every answered write).
    def read_by_the_follower(level):
        before = lagging.status()["follower_reads"][level]["answered_here"]
        assert Item.objects.using(f"n{lagging_index}_{level}").get(name="x").value == 2
        return lagging.status()["follower_reads"][level]["answered_here"] == before + 1

    for level in ("strong", "weak"):
        wait_for(lambda: read_by_the_follower(level), what=f"a {level} read answered by the follower")

    # And a deferred transaction that only reads runs on the follower, after one question to the leader.
    from django.db import transaction

    deferred = f"n{lagging_index}_deferred"

    def transaction_on_the_follower():
        before = lagging.status()["follower_transactions"]
        with transaction.atomic(using=deferred):
            assert Item.objects.using(deferred).get(name="x").value == 2
            with transaction.atomic(using=deferred):  # a savepoint, kept by name
                assert Item.objects.using(deferred).count() == 1
        after = lagging.status()["follower_transactions"]
        assert after["begun_here"] == before["begun_here"] + 1
        return after["moved_to_leader"] == before["moved_to_leader"] and after["run_by_leader"] == before["run_by_leader"]

    wait_for(transaction_on_the_follower, what="a read-only transaction run by the follower")
    with transaction.atomic(using=deferred):  # and one that writes, moved to the leader at its write
        item = Item.objects.using(deferred).get(name="x")
        item.value = 3
        item.save(using=deferred)
    assert Item.objects.using(f"n{leader_index}_strong").get(name="x").value == 3
    for alias in connections:
        connections[alias].close()
    embedded_nodes.stop_all()
    print("consistency OK")


def embedded_client_port_taken(workdir):
    """An embedded node whose client port is taken: a clear OperationalError, and nothing left running."""
    import socket

    raft, client = free_ports(2)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", client))
    squatter.listen(1)
    configure({"default": {"ENGINE": "django_dqcluster.backend", "NAME": "app",
                           "OPTIONS": embedded_options(workdir, raft, client)}})
    from django.db import connection
    from django.db.utils import OperationalError

    from django_dqcluster.backend import embedded as embedded_nodes
    from tests.backend.bapp.models import Item

    try:
        connection.ensure_connection()
    except OperationalError as exc:
        message = str(exc)
    else:
        raise AssertionError("the node started although its client port was taken")
    assert message.startswith("settings.DATABASES['default']: the embedded node could not start:"), message
    assert f"cannot listen for clients on 127.0.0.1:{client}" in message, message
    assert "OPTIONS 'client'" in message, message
    assert not embedded_nodes._nodes
    # The failed start released the Raft port and the data dir: once the client
    # port is free, the same settings start the node (one node, not two).
    squatter.close()
    connection.ensure_connection()
    create_tables()
    Item.objects.create(name="a", value=1)
    assert Item.objects.count() == 1
    assert len(embedded_nodes._nodes) == 1
    connection.close()
    embedded_nodes.stop_all()
    print("embedded_client_port_taken OK")


def deferred_transactions(workdir):
    """OPTIONS transaction_mode DEFERRED: atomic() blocks that only read hold no lock (ATOMIC_REQUESTS views)."""
    raft, client = free_ports(2)
    configure({"default": {"ENGINE": "django_dqcluster.backend", "NAME": "app",
                           "OPTIONS": embedded_options(workdir, raft, client, transaction_mode="DEFERRED")}})
    from django.db import OperationalError, connection, transaction

    from django_dqcluster.backend import embedded as embedded_nodes
    from tests.backend.bapp.models import Item

    create_tables()
    Item.objects.create(name="a", value=1)
    reading, may_finish, outcome = threading.Event(), threading.Event(), {}

    def a_view_that_reads():
        try:
            with transaction.atomic():
                outcome["seen"] = Item.objects.count()
                reading.set()
                may_finish.wait(30)
                outcome["seen again"] = Item.objects.count()
        finally:
            connection.close()

    view = threading.Thread(target=a_view_that_reads)
    view.start()
    assert reading.wait(30)
    started = time.monotonic()
    with transaction.atomic():  # another request writes meanwhile, without waiting
        Item.objects.create(name="b", value=2)
    assert time.monotonic() - started < 4.5  # kept waiting, it would fail after the 5 s busy timeout
    may_finish.set()
    view.join(30)
    assert outcome == {"seen": 1, "seen again": 1}, outcome  # its snapshot
    # A read-modify-write whose read went stale before its write fails, whole.
    try:
        with transaction.atomic():
            count = Item.objects.count()
            done = threading.Thread(target=lambda: (Item.objects.create(name="c", value=3), connection.close()))
            done.start()
            done.join(30)
            Item.objects.create(name=f"d{count}", value=4)
    except OperationalError as exc:
        assert "database is locked" in str(exc), exc
    else:
        raise AssertionError("a write on a stale snapshot committed")
    assert sorted(Item.objects.values_list("name", flat=True)) == ["a", "b", "c"]
    connection.close()
    embedded_nodes.stop_all()
    print("deferred_transactions OK")


def retried_transactions(workdir):
    """retry_transaction: a transaction that failed retryably runs again; nothing else does."""
    raft, client = free_ports(2)
    configure({"default": {"ENGINE": "django_dqcluster.backend", "NAME": "app",
                           "OPTIONS": embedded_options(workdir, raft, client, transaction_mode="DEFERRED")}})
    from django.db import IntegrityError, OperationalError, connection, transaction

    from django_dqcluster import dbapi
    from django_dqcluster.backend import embedded as embedded_nodes
    from django_dqcluster.retry import is_retryable, retry_transaction, run_in_transaction
    from tests.backend.bapp.models import Item

    create_tables()
    Item.objects.create(name="a", value=1)
    calls = []

    @retry_transaction
    def read_then_write():
        calls.append(len(calls) + 1)
        count = Item.objects.count()
        if len(calls) == 1:
            # Another request commits between this one's read and its write:
            # the deferred transaction's snapshot is stale (SQLITE_BUSY_SNAPSHOT).
            other = threading.Thread(target=lambda: (Item.objects.create(name="other"), connection.close()))
            other.start()
            other.join(30)
        Item.objects.create(name=f"after {count}")
        return count

    assert read_then_write() == 2 and calls == [1, 2], calls
    assert sorted(Item.objects.values_list("name", flat=True)) == ["a", "after 2", "other"]

    # A real error of the transaction itself is not retried.
    calls.clear()

    def duplicate_key():
        calls.append(1)
        Item.objects.create(pk=1, name="again")

    try:
        run_in_transaction(duplicate_key)
    except IntegrityError:
        pass
    else:
        raise AssertionError("a duplicate key committed")
    assert calls == [1], calls

    def failing(**marks):
        def fail():
            calls.append(1)
            Item.objects.create(name="never")
            raise OperationalError("from the store") from dbapi.exceptions.operational("lost", **marks)
        return fail

    # Retryable failures, every time: `attempts` runs, then the last error.
    calls.clear()
    try:
        run_in_transaction(failing(retryable=True), attempts=3, backoff=0.01)
    except OperationalError as exc:
        assert is_retryable(exc)
    assert calls == [1, 1, 1], calls
    # An unknown outcome (it may have been applied) is never run again.
    calls.clear()
    try:
        run_in_transaction(failing(retryable=True, unknown_outcome=True))
    except OperationalError as exc:
        assert not is_retryable(exc)
    assert calls == [1], calls
    # Inside a transaction someone else opened, it runs once: theirs to retry.
    calls.clear()
    try:
        with transaction.atomic():
            run_in_transaction(failing(retryable=True))
    except OperationalError:
        pass
    assert calls == [1], calls
    assert "never" not in set(Item.objects.values_list("name", flat=True))
    connection.close()
    embedded_nodes.stop_all()
    print("retried_transactions OK")


def retry_after_failover(workdir):
    """The leader dies in the middle of a retry_transaction function: it runs again on the new leader, once."""
    cluster = start_cluster(workdir)
    try:
        leader = cluster.leader()
        follower = next(node for node in cluster.nodes if node is not leader)
        configure({"default": client_entry(cluster, follower)})
        from django.db import connection

        from django_dqcluster.retry import retry_transaction
        from tests.backend.bapp.models import Item

        create_tables()
        attempts = []

        @retry_transaction(attempts=10)
        def order():
            attempts.append(len(attempts) + 1)
            Item.objects.create(name="order")
            if len(attempts) == 1:
                leader.kill()
            Item.objects.create(name="order line")

        order()
        assert len(attempts) >= 2, attempts
        cluster.wait_converged()
        assert sorted(Item.objects.values_list("name", flat=True)) == ["order", "order line"]
        connection.close()
        print("retry_after_failover OK:", len(attempts), "attempts")
    finally:
        cluster.kill()


def retry_on_postgresql(workdir):
    """The same decorator retries PostgreSQL's serialization failures (SQLSTATE 40001)."""
    import psycopg

    name = f"dqcluster_retry_{os.getpid()}"
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        configure({"default": {"ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": "postgres",
                               "HOST": "127.0.0.1", "PORT": "5432",
                               "OPTIONS": {"isolation_level": psycopg.IsolationLevel.SERIALIZABLE}}})
        from django.db import connection

        from django_dqcluster.retry import retry_transaction
        from tests.backend.bapp.models import Item

        create_tables()
        Item.objects.create(name="counter", value=0)
        both_read = threading.Barrier(2, timeout=30)
        attempts = []

        @retry_transaction
        def increment():
            attempts.append(1)
            item = Item.objects.get(name="counter")
            if len(attempts) <= 2:
                both_read.wait()  # the first two attempts read the same value
            item.value += 1
            item.save()

        def worker():
            try:
                increment()
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert Item.objects.get(name="counter").value == 2
        assert len(attempts) == 3, attempts  # one of the two was retried
        connection.close()
        print("retry_on_postgresql OK")
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def orm_under_faults(workdir):
    """Django transfers under random faults (tests/store/chaos.py's nemesis), with retry_transaction.

    Three threads move money between accounts with select_for_update() and
    save(), through every node. Whatever the faults, money is neither made nor
    lost, and no thread sees an error other than an unknown outcome (a COMMIT
    whose answer was lost, which retry_transaction rightly does not run again).
    """
    import random

    from tests.store.chaos import Nemesis

    seconds = float(os.environ.get("DQCLUSTER_CHAOS_SECONDS", "30"))
    seed = int(os.environ.get("DQCLUSTER_CHAOS_SEED") or random.randrange(2**32))
    cluster = LocalCluster(os.path.join(workdir, "cluster"), 3, connection_hooks=[HOOK])
    cluster.start()
    try:
        entry = client_entry(cluster, cluster.leader())
        entry["OPTIONS"]["address"] = ",".join(node.client for node in cluster.nodes)
        configure({"default": entry})
        from django.db import DatabaseError, connection

        from django_dqcluster.retry import retry_transaction
        from tests.backend.bapp.models import Item

        create_tables()
        Item.objects.bulk_create([Item(name=f"account {i}", value=1000) for i in range(8)])
        ids = list(Item.objects.values_list("pk", flat=True))
        stop, lock = threading.Event(), threading.Lock()
        outcomes = {"committed": 0, "unknown": 0, "errors": []}

        def transfers(rng):
            @retry_transaction(attempts=20)
            def transfer():
                source_id, target_id = rng.sample(ids, 2)
                source = Item.objects.select_for_update().get(pk=source_id)
                amount = rng.randint(1, 200)
                if source.value >= amount:
                    source.value -= amount
                    source.save(update_fields=["value"])
                    target = Item.objects.get(pk=target_id)
                    target.value += amount
                    target.save(update_fields=["value"])

            while not stop.is_set():
                try:
                    transfer()
                    outcome = "committed"
                except DatabaseError as exc:
                    outcome = "unknown" if getattr(exc.__cause__, "unknown_outcome", False) else repr(exc)
                finally:
                    connection.close()
                with lock:
                    if outcome in outcomes:
                        outcomes[outcome] += 1
                    else:
                        outcomes["errors"].append(outcome)

        rng = random.Random(seed)
        threads = [threading.Thread(target=transfers, args=(random.Random(rng.random()),), daemon=True)
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        nemesis = Nemesis(cluster, rng, print)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.0))
            nemesis.strike()
        nemesis.check_alive()
        cluster.wait_for_leader()
        committed_before = outcomes["committed"]
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(60)
        cluster.wait_converged(timeout=60)
        report = f"seed {seed}, {len(nemesis.done)} faults, {outcomes}"
        assert not outcomes["errors"], report
        assert not nemesis.exited, report
        assert outcomes["committed"] > committed_before, f"no transfer after the faults were healed: {report}"
        for node in cluster.nodes:
            conn = node.connect(database="app", consistency="none")
            (total,) = conn.execute("SELECT sum(value) FROM bapp_item").fetchone()
            conn.close()
            assert total == 8000, f"node{node.index} holds {total}: {report}"
            assert "Traceback" not in node.log(), f"node{node.index}'s log holds a traceback: {report}"
        print("orm_under_faults OK:", report)
    finally:
        cluster.kill()


def backup_and_restore(workdir):
    """manage.py dqcluster_backup, then dqcluster_restore of its file under another NAME."""
    raft, client = free_ports(2)
    options = embedded_options(workdir, raft, client)
    configure({
        "default": {"ENGINE": "django_dqcluster.backend", "NAME": "app", "OPTIONS": dict(options)},
        "other": {"ENGINE": "django_dqcluster.backend", "NAME": "restored", "OPTIONS": dict(options)},
        "moved": {"ENGINE": "django_dqcluster.backend", "NAME": "moved", "OPTIONS": dict(options)},
        "plain": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(workdir, "plain.sqlite3")},
    })
    import datetime
    import io
    import sqlite3

    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connections

    from django_dqcluster.backend import embedded as embedded_nodes
    from tests.backend.bapp.models import Item

    call_command("migrate", run_syncdb=True, verbosity=0)
    Item.objects.bulk_create([Item(name=f"item {i}", value=i, created=datetime.date(2026, 1, 1 + i % 28))
                              for i in range(500)])
    with connections["default"].cursor() as cursor:  # a full-text index, as a RunSQL migration would make it
        cursor.execute("CREATE VIRTUAL TABLE item_search USING fts5(name, content='bapp_item', content_rowid='id')")
        cursor.execute("INSERT INTO item_search (item_search) VALUES ('rebuild')")
    path = os.path.join(workdir, "app.sqlite3")
    out = io.StringIO()
    call_command("dqcluster_backup", path, stdout=out, verbosity=2)
    assert f"Wrote {path}:" in out.getvalue() and "bapp_item: 500 row(s)" in out.getvalue(), out.getvalue()
    assert "1 virtual table(s)" in out.getvalue() and "item_search_idx: " in out.getvalue(), out.getvalue()
    # A plain SQLite file, dates as SQLite stores them (not as the driver would convert them).
    copy = sqlite3.connect(path)
    assert copy.execute("SELECT count(*), min(created) FROM bapp_item").fetchone() == (500, "2026-01-01")
    assert not copy.execute("SELECT name FROM sqlite_master WHERE name LIKE '_dqcluster_%'").fetchall()
    copy.close()

    out = io.StringIO()
    call_command("dqcluster_restore", path, database="other", stdout=out)
    assert "Restored " in out.getvalue(), out.getvalue()
    assert "lists 1 cluster member(s) in its version-gate table" in out.getvalue(), out.getvalue()
    fields = ("id", "name", "value", "created")
    assert (list(Item.objects.using("other").order_by("id").values_list(*fields))
            == list(Item.objects.order_by("id").values_list(*fields)))
    with connections["other"].cursor() as cursor:
        cursor.execute("SELECT rowid FROM item_search WHERE item_search MATCH 'item AND 42'")
        assert cursor.fetchall() == [(43,)]
    assert Item.objects.using("other").create(name="after the restore").pk == 501
    for command, args, kwargs, expected in (
        ("dqcluster_restore", [path], {"database": "other"}, "already has"),
        ("dqcluster_backup", [workdir], {}, "is a directory"),
        ("dqcluster_backup", [path], {"database": "nope"}, "Unknown database alias 'nope'"),
    ):
        try:
            call_command(command, *args, stdout=io.StringIO(), **kwargs)
        except CommandError as error:
            assert expected in str(error), (command, error)
        else:
            raise AssertionError(f"{command} {args} {kwargs} did not fail")

    # A project on Django's sqlite3 backend moves onto the store: back up its file
    # (the command works there too), restore it into the store.
    call_command("migrate", database="plain", run_syncdb=True, verbosity=0)
    Item.objects.using("plain").create(name="from plain sqlite", created=datetime.date(2025, 5, 5))
    plain_copy = os.path.join(workdir, "plain-copy.sqlite3")
    call_command("dqcluster_backup", plain_copy, database="plain", stdout=io.StringIO())
    call_command("dqcluster_restore", plain_copy, database="moved", stdout=io.StringIO())
    assert list(Item.objects.using("moved").values_list("name", "created")) == [
        ("from plain sqlite", datetime.date(2025, 5, 5))]
    for alias in ("default", "other", "moved", "plain"):
        connections[alias].close()
    embedded_nodes.stop_all()
    print("backup_and_restore OK")


def member_removal(workdir):
    """manage.py dqcluster_members: a dead host leaves the store and the gate (a live one is refused); a new one joins."""
    cluster = start_cluster(workdir)
    try:
        leader = cluster.leader()
        here, victim = [node for node in cluster.nodes if node is not leader]
        configure({"default": client_entry(cluster, here)})
        import io
        import json

        from django.core.management import call_command
        from django.core.management.base import CommandError
        from django.test.utils import override_settings

        from django_dqcluster import gate
        from tests.backend.bapp.models import Item

        def members(*args, **kwargs):
            out = io.StringIO()
            call_command("dqcluster_members", *args, stdout=out, **kwargs)
            return out.getvalue()

        def refused(expected, *args, **kwargs):
            try:
                members(*args, **kwargs)
            except CommandError as error:
                assert expected in str(error), (expected, error)
            else:
                raise AssertionError(f"dqcluster_members {args} {kwargs} did not fail")

        create_tables()
        # Members announce their client addresses through the log once they run.
        cluster.wait_for(lambda: all(m["client"] for m in json.loads(members(json=True))["members"]), 30,
                         "every member's client address")
        for node in cluster.nodes:  # every host registered with the gate, under its node's Raft address
            with override_settings(DQCLUSTER_NODE_ADDRESS=node.raft):
                call_command("ensure_cluster_schema", stdout=io.StringIO())
        listing = members()
        assert "3 member(s); a majority is 2; leader " + leader.raft in listing, listing
        assert f"{here.raft}  client {here.client}  follower, connected [this host's node]" in listing, listing

        refused("is this host's own node", remove=here.raft, interactive=False)
        refused(f"{leader.raft} is the leader: stop its node first", remove=leader.raft, interactive=False)
        refused("the leader still hears from " + victim.raft, remove=victim.client, interactive=False)
        refused("127.0.0.9:1 is not a member of the store", remove="127.0.0.9:1", interactive=False)
        assert len(json.loads(members(json=True))["members"]) == 3  # nothing changed

        victim.kill()
        cluster.wait_for(lambda: not {m["raft"]: m["connected"] for m in json.loads(members(json=True))["members"]}[
            victim.raft], 30, "the leader to stop hearing from the dead member")
        removed = members(remove=victim.raft, interactive=False)
        assert f"Removed {victim.raft} from the store." in removed, removed
        assert f"Removed {victim.raft} from the version gate's members." in removed, removed
        assert "2 member(s); a majority is 2" in removed, removed
        assert victim.raft not in removed.split("Removed")[-1].split("\n", 1)[1], removed
        for node in (leader, here):
            cluster.wait_for(lambda: sorted(m["raft"] for m in node.status()["members"]) == sorted(
                [leader.raft, here.raft]), 10, f"node{node.index} to drop the removed member")
        # The two go on committing, and the gate no longer waits for the dead host.
        Item.objects.create(name="after the removal")
        assert Item.objects.filter(name="after the removal").count() == 1
        assert sorted(address for address, _, _ in gate.read_members("default")) == sorted([leader.raft, here.raft])

        # A new host: added first (from here), then its node starts with the members as peers.
        newcomer = cluster._new_node()
        added = members(add=newcomer.raft, client=newcomer.client)
        assert f"Added {newcomer.raft} (client {newcomer.client}). Start its node now" in added, added
        assert "3 member(s); a majority is 2" in added, added
        refused("is already a member", add=newcomer.raft)
        refused("--client goes with --add", client="127.0.0.1:1")
        newcomer.start(peers=[leader.raft, here.raft])
        cluster.wait_for(lambda: all(m["connected"] for m in json.loads(members(json=True))["members"]), 30,
                         "the leader to hear from the new member")
        Item.objects.create(name="after the addition")
        cluster.wait_converged()
        replica = newcomer.connect(database="app", consistency="none")
        assert sorted(row[0] for row in replica.execute("SELECT name FROM bapp_item").fetchall()) == [
            "after the addition", "after the removal"]
        replica.close()
        print("member_removal OK")
    finally:
        cluster.kill()


def health_endpoint(workdir):
    """GET /dqcluster/health: 200 while the host's node serves; 503 naming why once it cannot."""
    with cluster_seen_from_a_follower(workdir) as (cluster, leader, here):
        configure({"default": client_entry(cluster, here)})
        from django.test import Client

        client = Client()

        def health():
            response = client.get("/dqcluster/health")
            return response.status_code, response.json()

        status, body = health()
        assert status == 200, body
        assert body["databases"]["default"]["healthy"] and body["databases"]["default"]["role"] == "follower", body
        assert here.raft not in str(body) and leader.raft not in str(body)  # no addresses for anonymous callers
        assert client.post("/dqcluster/health").status_code == 405

        for node in cluster.nodes:
            if node is not here:
                node.kill()
        cluster.wait_for(lambda: health()[0] == 503, 30, "the node left alone to be unhealthy")
        status, body = health()
        assert body["healthy"] is False
        assert body["databases"]["default"]["problem"] == "the node reaches no majority of the members", body

        here.kill()
        started = time.monotonic()
        status, body = health()
        assert status == 503 and body["databases"]["default"]["problem"].startswith("cannot reach the database"), body
        assert time.monotonic() - started < 8, "the check waited out the ENGINE's own 30 s timeout"
        print("health_endpoint OK")


def metrics_endpoint(workdir):
    """GET /dqcluster/metrics: Prometheus' text, behind a bearer token; the node's state and the gate's members."""
    with cluster_seen_from_a_follower(workdir) as (cluster, leader, here):
        configure({"default": client_entry(cluster, here)}, DQCLUSTER_METRICS_TOKEN="scrape-me")
        import io
        import re

        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.test.utils import override_settings

        client = Client()
        sample = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (-?[0-9.e+]+|NaN|[+-]Inf)$')

        def scrape():
            response = client.get("/dqcluster/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
            assert response.status_code == 200, response.content
            assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            values = {}
            for line in response.content.decode().splitlines():
                if line.startswith("# "):
                    assert re.match(r"^# (HELP [a-z_]+ .+|TYPE [a-z_]+ gauge)$", line), line
                    continue
                found = sample.match(line)
                assert found, f"not Prometheus' text format: {line!r}"
                name, labels, value = found.groups()
                member = re.search(r'member="([^"]*)"', labels)
                values[(name, member.group(1) if member else None)] = float(value)
            return values

        def scrape_showing(condition, what):
            # A scrape reads the gate from this node's own replica (consistency none),
            # which applies the writes just made a moment after the leader answered them.
            seen = {}

            def shows():
                seen["values"] = scrape()
                return condition(seen["values"])

            wait_for(shows, timeout=10, what=what)
            return seen["values"]

        assert client.get("/dqcluster/metrics").status_code == 401
        assert client.get("/dqcluster/metrics", HTTP_AUTHORIZATION="Bearer scrape-you").status_code == 401
        with override_settings(DQCLUSTER_METRICS_TOKEN=None):
            off = client.get("/dqcluster/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
            assert off.status_code == 403 and b"set DQCLUSTER_METRICS_TOKEN" in off.content, off.content

        for node in cluster.nodes:  # every host registered with the gate, under its node's Raft address
            with override_settings(DQCLUSTER_NODE_ADDRESS=node.raft):
                call_command("ensure_cluster_schema", stdout=io.StringIO())
        values = scrape_showing(lambda values: all(("dqcluster_gate_member_schema", node.raft) in values
                                                   for node in cluster.nodes), "every member in the scrape")
        assert values[("dqcluster_node_up", None)] == 1 and values[("dqcluster_node_healthy", None)] == 1, values
        assert values[("dqcluster_node_is_leader", None)] == 0 and values[("dqcluster_members", None)] == 3, values
        assert values[("dqcluster_raft_commit_index", None)] >= values[("dqcluster_raft_applied_index", None)] > 0
        for node in cluster.nodes:
            assert values[("dqcluster_member_connected", node.raft)] == 1, values
            assert values[("dqcluster_member_match_index", node.raft)] > 0, values  # the leader's view, via it
            assert values[("dqcluster_gate_member_schema", node.raft)] == values[("dqcluster_gate_local_schema", None)]
            assert 0 <= values[("dqcluster_gate_member_heartbeat_age_seconds", node.raft)] < 120, values
        assert values[("dqcluster_gate_members_other_version", None)] == 0 and values[("dqcluster_gate_up", None)] == 1

        with connection.cursor() as cursor:  # a host that has not been upgraded yet
            cursor.execute("INSERT INTO nodes (name, address, schema, api_extensions) VALUES ('old', '10.9.9.9:7001', 1, 0)")
        values = scrape_showing(lambda values: ("dqcluster_gate_member_schema", "10.9.9.9:7001") in values,
                                "the old host in the scrape")
        assert values[("dqcluster_gate_members_other_version", None)] == 1, values
        assert values[("dqcluster_gate_member_schema", "10.9.9.9:7001")] == 1, values

        for node in cluster.nodes:
            if node is not here:
                node.kill()
        cluster.wait_for(lambda: scrape()[("dqcluster_node_has_quorum", None)] == 0, 30, "the lone node to lose its majority")
        values = scrape()
        assert values[("dqcluster_node_up", None)] == 1 and values[("dqcluster_node_healthy", None)] == 0, values

        here.kill()
        started = time.monotonic()
        values = scrape()
        assert values == {("dqcluster_node_up", None): 0, ("dqcluster_gate_up", None): 0}, values
        assert time.monotonic() - started < 8, "the scrape waited out the ENGINE's own 30 s timeout"
        print("metrics_endpoint OK")


def client_token(workdir):
    """A web process that holds only the client token (OPTIONS token_file) uses the store, dbshell included."""
    with cluster_seen_from_a_follower(workdir) as (cluster, leader, here):
        token_path = os.path.join(workdir, "client.token")
        configure({"default": client_entry(cluster, here), "app": token_entry(cluster, here, token_path)})
        import io
        import stat
        import subprocess

        from django.core.management import call_command
        from django.core.management.base import CommandError
        from django.db import connections

        from django_dqcluster import wire
        from tests.backend.bapp.models import Item

        # Where the node's settings are (the secret), the token is written for the web workers.
        out = io.StringIO()
        call_command("dqcluster_client_token", write=token_path, stdout=out)
        assert f"Wrote the client token to {token_path} (mode 600)" in out.getvalue(), out.getvalue()
        assert stat.S_IMODE(os.stat(token_path).st_mode) == 0o600
        with open(cluster.secret_file) as handle:
            secret = handle.read().strip()
        with open(token_path) as handle:
            token = handle.read().strip()
        assert token == wire.client_token(secret) and secret not in token
        out = io.StringIO()
        call_command("dqcluster_client_token", stdout=out)
        assert out.getvalue().strip() == token

        create_tables("app")
        Item.objects.using("app").create(name="written with the token", value=1)
        assert list(Item.objects.using("default").values_list("name", flat=True)) == ["written with the token"]
        args, env = connections["app"].client.settings_to_cmd_args_env(connections["app"].settings_dict,
                                                                        ["-c", "SELECT count(*) FROM bapp_item"])
        shell = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert shell.returncode == 0 and "1" in shell.stdout.split(), (shell.stdout, shell.stderr)
        assert secret not in str(env)  # dbshell's process is handed the token only

        try:
            call_command("dqcluster_client_token", database="app", stdout=io.StringIO())
        except CommandError as error:
            assert "holds no cluster secret" in str(error), error
        else:
            raise AssertionError("a token was derived from no secret")

        # Another cluster's token (or a stale one) is refused by the node, naming why.
        with open(token_path, "w") as handle:
            handle.write(wire.client_token("another cluster's secret"))
        connections["app"].close()
        try:
            Item.objects.using("app").count()
        except Exception as error:
            assert "the store refused this client" in str(error), error
        else:
            raise AssertionError("a wrong token was let in")
        print("client_token OK")


def read_only_token(workdir):
    """A reporting process with a read-only token reads through the ORM, and every write is refused."""
    with cluster_seen_from_a_follower(workdir) as (cluster, leader, here):
        token_path = os.path.join(workdir, "reports.token")
        configure({"default": client_entry(cluster, here), "reports": token_entry(cluster, here, token_path)})
        import io

        from django.core.management import call_command
        from django.db import OperationalError, connections, transaction

        from django_dqcluster import wire
        from tests.backend.bapp.models import Item

        out = io.StringIO()
        call_command("dqcluster_client_token", read_only=True, write=token_path, stdout=out)
        assert "Wrote the read-only client token" in out.getvalue(), out.getvalue()
        with open(token_path) as handle:
            token = handle.read().strip()
        with open(cluster.secret_file) as handle:
            assert token == wire.client_token(handle.read().strip(), read_only=True)

        create_tables("default")
        Item.objects.create(name="written by the web process", value=1)
        assert Item.objects.using("reports").count() == 1
        assert list(Item.objects.using("reports").values_list("name", flat=True)) == ["written by the web process"]

        # A transaction of reads takes no write lock: the web process writes meanwhile, and
        # the report's reads keep the state they began with.
        with transaction.atomic(using="reports"):
            assert Item.objects.using("reports").count() == 1
            started = time.monotonic()
            Item.objects.create(name="written during the report", value=2)
            assert time.monotonic() - started < 5, "the read-only transaction held the write lock"
            assert Item.objects.using("reports").count() == 1
            with transaction.atomic(using="reports"):  # a savepoint
                assert Item.objects.using("reports").count() == 1
        assert Item.objects.using("reports").count() == 2

        attempts = {
            "create": lambda: Item.objects.using("reports").create(name="from the report", value=3),
            "update": lambda: Item.objects.using("reports").update(value=99),
            "delete": lambda: Item.objects.using("reports").all().delete(),
            "bulk_create": lambda: Item.objects.using("reports").bulk_create([Item(name="a", value=4)]),
            "raw DDL": lambda: connections["reports"].cursor().execute("DROP TABLE bapp_item"),
        }
        for what, attempt in attempts.items():
            try:
                with transaction.atomic(using="reports"):
                    attempt()
            except OperationalError as error:
                assert "attempt to write a readonly database: this client's token is read-only" in str(error), \
                    (what, error)
            else:
                raise AssertionError(f"{what} through a read-only token was let through")
        assert sorted(Item.objects.values_list("value", flat=True)) == [1, 2], "a refused write changed something"
        print("read_only_token OK")


SCENARIOS = {f.__name__: f for f in (embedded, embedded_client_port_taken, three_nodes, failover_between_requests,
                                     transaction_interrupted, consistency, deferred_transactions,
                                     retried_transactions, retry_after_failover, retry_on_postgresql,
                                     orm_under_faults, backup_and_restore, member_removal,
                                     health_endpoint, metrics_endpoint, client_token, read_only_token)}

if __name__ == "__main__":
    name, workdir = sys.argv[1], sys.argv[2]
    SCENARIOS[name](workdir)
