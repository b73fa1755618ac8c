"""A rolling upgrade through the management commands, hosts as separate processes.

Three hosts share one database (a SQLite file, or a PostgreSQL database). Code version v1
has one migration of the test app, v2 a second one; each host process picks its version
with MIGRATION_MODULES, so the gate sees the real migration counts of two code versions.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import os
import select
import time

import pytest

from django_dqcluster.gate import HEARTBEAT_OFFLINE_AFTER_SECONDS, heartbeat_text, utc_now

from .conftest import Host

pytestmark = pytest.mark.slow


def applied_0002(db):
    return db.query("SELECT host FROM gateapp_applylog WHERE migration = '0002'")


def read_until(process, text, timeout):
    """What ``process`` printed on stdout up to ``text`` (its line may go on); fail if not within ``timeout`` s."""
    fd, decoder = process.stdout.fileno(), codecs.getincrementaldecoder("utf-8")()
    deadline = time.monotonic() + timeout
    printed = ""
    while text not in printed:
        remaining = deadline - time.monotonic()
        chunk = os.read(fd, 65536) if remaining > 0 and select.select([fd], [], [], remaining)[0] else None
        if not chunk:  # the deadline passed, or the process closed its stdout
            raise AssertionError(f"no {text!r} within {timeout} s; stdout so far:\n{printed}")
        printed += decoder.decode(chunk)
    return printed


def test_rolling_upgrade_waits_refuses_and_the_last_host_migrates_once(shared_db):
    db = shared_db
    a, b, c = (Host(db, name) for name in ("host-a", "host-b", "host-c"))

    # All on v1: every host migrates (the first one applies, the others find it done).
    first = a.run("migrate")
    assert "Created the cluster tables; this host is the first member." in first.stdout
    assert "Applying gateapp.0001_initial... OK" in first.stdout
    for host in (b, c):
        out = host.run("migrate").stdout
        assert "Registered this host (" in out and "No migrations to apply." in out
    v1 = a.gate_json(expect=0)
    assert v1["state"] == "ready" and [m["address"] for m in v1["members"]] == ["host-a", "host-b", "host-c"]
    v1_schema = v1["ours"]["schema"]
    db.query("INSERT INTO gateapp_item (name) VALUES ('written before the upgrade')")

    # host-a on v2: waits (exit 3), names both members behind with their versions, applies nothing.
    a2 = a.upgraded()
    waiting = a2.run("migrate", expect=3)
    assert f"Waiting for host-b (schema {v1_schema}, api_extensions 0) to upgrade to schema {v1_schema + 1}" in waiting.stdout
    assert f"Waiting for host-c (schema {v1_schema}, api_extensions 0)" in waiting.stdout
    assert "No migrations applied" in waiting.stdout
    assert "waiting for members behind this host" in waiting.stderr
    assert not db.table_exists("gateapp_v2only") and applied_0002(db) == []
    assert db.node_rows()["host-a"] == (v1_schema + 1, 0)

    # A v1 host (re)started now is refused, with every member's version; its row is written.
    refused = b.run("migrate", expect=2)
    assert "this node's version is behind, please upgrade" in refused.stdout
    assert f"host-a: schema {v1_schema + 1}, api_extensions 0 [ahead of this host]" in refused.stdout
    assert f"host-c: schema {v1_schema}, api_extensions 0 [same version]" in refused.stdout
    # Quiet (-v0), the refusal itself still names every member and its version.
    quiet = b.run("migrate", "-v0", expect=2)
    assert quiet.stdout == ""
    assert "this node's version is behind, please upgrade: this host (host-b)" in quiet.stderr
    for address, (schema, api) in db.node_rows().items():
        assert f"{address} (schema {schema}, api_extensions {api};" in quiet.stderr
    assert sorted(db.node_rows()) == ["host-a", "host-b", "host-c"]
    newcomer = Host(db, "host-d")  # never seen before, on v1
    report = newcomer.gate_json(expect=2)
    assert report["state"] == "refused" and report["reason"] == "behind" and report["registered"]
    assert report["ahead"] == ["host-a"]
    assert db.node_rows()["host-d"] == (v1_schema, 0)  # persisted although refused
    # host-d was a one-off: the escape hatch removes it so nobody waits for it.
    removed = a2.run("ensure_cluster_schema", "--remove-member", "host-d", "--noinput", expect=3)
    assert "Removed member host-d." in removed.stdout
    assert "host-d" not in db.node_rows()

    # host-b on v2 waits for host-c only.
    b2 = b.upgraded()
    report = b2.gate_json(expect=3)
    assert report["waiting_for"] == ["host-c"]
    assert report["members"][2] == {**report["members"][2], "address": "host-c", "schema": v1_schema, "relation": "behind"}

    # host-c, the last one, applies the v2 migration once.
    c2 = c.upgraded()
    last = c2.run("migrate")
    assert "Applying gateapp.0002_v2... OK" in last.stdout
    assert applied_0002(db) == [("host-c",)]

    # Everyone is ready now; nobody applies anything again; the data is intact.
    for host in (a2, b2, c2):
        report = host.gate_json(expect=0)
        assert report["state"] == "ready" and {m["schema"] for m in report["members"]} == {v1_schema + 1}
        assert "No migrations to apply." in host.run("migrate").stdout
    assert applied_0002(db) == [("host-c",)]
    assert db.table_exists("gateapp_v2only")
    assert db.query("SELECT name FROM gateapp_item") == [("written before the upgrade",)]
    assert db.query("SELECT migration, host FROM gateapp_applylog ORDER BY id") == [("0001", "host-a"), ("0002", "host-c")]


def test_concurrent_migrate_applies_each_migration_exactly_once(shared_db):
    db = shared_db
    a, b = Host(db, "host-a"), Host(db, "host-b")
    a.run("migrate", "-v0")
    b.run("migrate", "-v0")
    a2, b2 = a.upgraded(), b.upgraded()
    a2.run("ensure_cluster_schema", expect=3)
    b2.run("ensure_cluster_schema", expect=0)

    # Both start together; the migration takes 1.5 s so the runs overlap.
    slow = {"DQ_GATE_MIGRATION_SLEEP": "1.5"}
    processes = [host.start("migrate", extra_env=slow) for host in (a2, b2)]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    stdouts = [out for out, _ in outputs]
    assert sum("Applying gateapp.0002_v2... OK" in out for out in stdouts) == 1, stdouts
    assert sum("No migrations to apply." in out for out in stdouts) == 1, stdouts
    waits = [line for out in stdouts for line in out.splitlines() if "Waiting for the cluster migration lock" in line]
    # The holder is named, unless it let go between the waiter's try and its look at who
    # holds the lock ("held by nobody (just released)": a second line, the holder changed).
    named = [line for line in waits if "held by nobody (just released)" not in line]
    assert all("host-" in line for line in named), stdouts
    if db.kind == "postgres":
        # On SQLite the second host may instead block on the database's write lock (held
        # by the migration's transaction) and find the work done once it gets through.
        assert named, stdouts
    assert len(applied_0002(db)) == 1
    assert db.query("SELECT COUNT(*) FROM django_migrations WHERE app = 'gateapp' AND name = '0002_v2'") == [(1,)]


def test_a_host_whose_clock_runs_ahead_does_not_take_the_migration_lock_another_holds(sqlite_db):
    db = sqlite_db
    a, b = Host(db, "host-a"), Host(db, "host-b")
    a.run("migrate", "-v0")
    b.run("migrate", "-v0")
    a.upgraded().run("ensure_cluster_schema", expect=3)
    # host-a's migration holds the lock, for ten more minutes by the database's clock.
    now_ms = int(time.time() * 1000)
    db.query("INSERT INTO dqcluster_lock (name, holder, acquired_at, expires_at) VALUES ('migrate', ?, ?, ?)",
             ("host-a (pid 1, 0123abcd)", now_ms, now_ms + 600_000))

    ahead = Host(db, "host-b", "v2", extra_env={"DQ_GATE_CLOCK_AHEAD": "3600"})  # an hour fast
    process = ahead.run("migrate", "--lock-timeout", "2", expect=1)

    assert "waiting for the cluster migration lock" in process.stderr
    assert "held by host-a (pid 1, 0123abcd), lease expires in" in process.stderr
    assert applied_0002(db) == []


def test_migrate_wait_rechecks_until_the_lagging_member_upgrades(sqlite_db):
    db = sqlite_db
    a, b = Host(db, "host-a"), Host(db, "host-b")
    a.run("migrate", "-v0")
    b.run("migrate", "-v0")
    waiter = a.upgraded().start("migrate", "--wait", "--timeout", "30")
    before = read_until(waiter, "Check 2 after", timeout=25)  # it checked (and waited) twice
    assert waiter.poll() is None, (before, waiter.communicate())
    b.upgraded().run("ensure_cluster_schema")  # host-b upgraded, but does not migrate
    after, err = waiter.communicate(timeout=30)
    out = before + after
    assert waiter.returncode == 0, (out, err)
    assert "Waiting for host-b (schema" in out
    assert "still waiting; next check in" in out
    assert "Applying gateapp.0002_v2... OK" in out
    assert applied_0002(db) == [("host-a",)]


def test_wait_gives_up_after_the_timeout_with_exit_3(sqlite_db):
    a, b = Host(sqlite_db, "host-a"), Host(sqlite_db, "host-b")
    a.run("ensure_cluster_schema", "-v0")
    b.run("ensure_cluster_schema", "-v0")
    started = time.monotonic()
    process = a.upgraded().run("ensure_cluster_schema", "--wait", "--timeout", "1.5", expect=3)
    assert time.monotonic() - started < 15
    assert "Gave up after" in process.stdout and "Waiting for host-b" in process.stdout


def test_api_extensions_alone_gate_and_inconsistent_versions_are_refused(sqlite_db):
    db = sqlite_db
    a, b = Host(db, "host-a"), Host(db, "host-b")
    a.run("ensure_cluster_schema", "-v0")
    b.run("ensure_cluster_schema", "-v0")
    # Same schema, one more API extension: that host waits.
    report = a.upgraded("v1", api=["feature-x"]).gate_json(expect=3)
    assert report["waiting_for"] == ["host-b"] and report["ours"] == {"schema": report["ours"]["schema"], "api_extensions": 1}
    # Schema up but API count down against host-a: no upgrade order fixes that.
    inconsistent = b.upgraded("v2", api=[]).run("ensure_cluster_schema", expect=2)
    assert "nodes have inconsistent versions" in inconsistent.stdout
    assert "host-a: schema" in inconsistent.stdout and "api_extensions 1 [inconsistent with this host]" in inconsistent.stdout
    assert db.node_rows()["host-b"][0] == db.node_rows()["host-a"][0] + 1  # its row is written anyway
    # Quiet (-v0), the refusal itself still names every member and its version.
    quiet = b.upgraded("v2", api=[]).run("ensure_cluster_schema", "-v0", expect=2)
    assert quiet.stdout == ""
    (a_schema, a_api), (b_schema, b_api) = db.node_rows()["host-a"], db.node_rows()["host-b"]
    assert f"host-a (schema {a_schema}, api_extensions {a_api}; inconsistent)" in quiet.stderr
    assert f"host-b (schema {b_schema}, api_extensions {b_api}; this host)" in quiet.stderr


def test_bad_input_gives_clear_errors(sqlite_db):
    a = Host(sqlite_db, "host-a")
    process = a.run("ensure_cluster_schema", "--database", "nope", expect=1)
    assert "Unknown database alias 'nope'; settings.DATABASES has: default" in process.stderr
    process = a.run("migrate", "--wait", "--queue-wait", expect=1)
    assert "--wait and --queue-wait exclude each other" in process.stderr
    process = a.run("ensure_cluster_schema", "--timeout", "0", expect=1)
    assert "--timeout must be a positive number of seconds" in process.stderr
    a.run("ensure_cluster_schema", "-v0")
    Host(sqlite_db, "host-b").run("ensure_cluster_schema", "-v0")
    process = a.upgraded().run("migrate", "--queue-wait", expect=1)  # no Celery app/broker here
    assert "--queue-wait: no Celery broker is configured" in process.stderr
    process = a.run("ensure_cluster_schema", "--remove-member", "host-a", "--noinput", expect=1)
    assert "refusing to remove this host's own row (host-a)" in process.stderr
    process = a.run("ensure_cluster_schema", "--remove-member", "ghost", "--noinput", expect=1)
    assert "No member 'ghost' in the nodes table; members: host-a, host-b" in process.stderr


def test_cluster_status_reports_every_member_while_the_gate_blocks(shared_db):
    db = shared_db
    a, b, c = (Host(db, name) for name in ("host-a", "host-b", "host-c"))
    for host in (a, b, c):
        host.run("migrate", "-v0")
    a.upgraded().run("migrate", expect=3)
    b.upgraded().run("ensure_cluster_schema", expect=3)

    text = a.upgraded().run("cluster_status").stdout
    lines = text.splitlines()
    assert lines[1].split() == ["ADDRESS", "ROLE", "SCHEMA", "API", "GATE", "HEARTBEAT", "APPLIED", "LAG"]
    rows = {line.lstrip("* ").split()[0]: line for line in lines[2:5]}
    row_a, row_b, row_c = rows["host-a"], rows["host-b"], rows["host-c"]
    assert row_a.startswith("*") and "waiting for host-c" in row_a and " n/a " in row_a
    assert "blocked: newer than members host-c" in row_b
    assert "behind: upgrade" in row_c
    assert "This host: host-a, code at schema" in text and "waiting for host-c" in text
    assert "Unapplied migrations of this code: 1 (gateapp.0002_v2)" in text

    # From host-c's side (still on v1): its own code is behind.
    report = json.loads(c.run("cluster_status", "--json").stdout)
    assert report["this_host"]["gate"] == "behind"
    states = {m["address"]: (m["gate"], m["role"], m["lag"]) for m in report["members"]}
    assert states == {"host-a": ("blocked", "n/a", None), "host-b": ("blocked", "n/a", None), "host-c": ("behind", "n/a", None)}
    assert all(m["heartbeat_age_seconds"] is not None for m in report["members"])
    assert report["unapplied_migrations"] == [] and report["migration_lock"] is None

    # It writes nothing: the rows are as the gate left them.
    assert db.node_rows()["host-c"][0] < db.node_rows()["host-a"][0]


def test_cluster_status_shows_a_member_with_a_stale_heartbeat_as_offline(shared_db):
    db = shared_db
    a, b, c = (Host(db, name) for name in ("host-a", "host-b", "host-c"))
    for host in (a, b, c):
        host.run("ensure_cluster_schema", "-v0")
    now = utc_now()
    threshold = dt.timedelta(seconds=HEARTBEAT_OFFLINE_AFTER_SECONDS)
    last_seen = {
        "host-a": now - threshold * 2,  # this host: it runs cluster_status, so it is not offline
        "host-b": now - threshold + dt.timedelta(minutes=1),  # just inside the threshold
        "host-c": now - threshold - dt.timedelta(minutes=1),  # just past it
    }
    for address, moment in last_seen.items():
        db.query("UPDATE nodes SET heartbeat = ? WHERE address = ?", (heartbeat_text(moment), address))

    report = json.loads(a.run("cluster_status", "--json").stdout)
    text = a.run("cluster_status").stdout

    assert report["store"] is None  # no store to ask: the heartbeat alone decides
    assert {m["address"]: m["role"] for m in report["members"]} == {
        "host-a": "n/a",
        "host-b": "n/a",
        "host-c": "offline",
    }
    row_c = next(line for line in text.splitlines() if line.lstrip("* ").startswith("host-c "))
    assert row_c.split()[1] == "offline"


def test_a_host_whose_clock_is_wrong_neither_looks_offline_nor_sees_the_others_offline(shared_db):
    """Heartbeats are the database's time, and their ages count from it. Each host's own clock
    used to write and read them: one an hour slow looked offline to every other member (no
    heartbeat for an hour), and one an hour fast saw every other member offline, and told the
    operator waiting on them to remove them if dead."""
    db = shared_db
    hosts = [Host(db, "host-a"),
             Host(db, "host-b", extra_env={"DQ_GATE_CLOCK_AHEAD": "-3600"}),  # an hour slow
             Host(db, "host-c", extra_env={"DQ_GATE_CLOCK_AHEAD": "3600"})]  # an hour fast
    for host in hosts:
        host.run("ensure_cluster_schema", "-v0")

    for host in hosts:
        report = json.loads(host.run("cluster_status", "--json").stdout)
        seen = {m["address"]: (m["role"], m["heartbeat_age_seconds"]) for m in report["members"]}
        assert {address: role for address, (role, _) in seen.items()} == dict.fromkeys(
            ("host-a", "host-b", "host-c"), "n/a"), (host.address, seen)
        assert all(0 <= age < 300 for _, age in seen.values()), (host.address, seen)

    # The fast host, upgraded, waits for the other two: their heartbeats are minutes old at most.
    waiting = hosts[2].upgraded().run("ensure_cluster_schema", "-v2", expect=3).stdout
    assert "Waiting for host-a (schema" in waiting and "Waiting for host-b (schema" in waiting
    assert "--remove-member" not in waiting
    # Its JSON report says when, by the database's clock, not its own an hour ahead.
    checked_at = dt.datetime.fromisoformat(hosts[2].upgraded().gate_json(expect=3)["checked_at"])
    assert abs((checked_at - utc_now()).total_seconds()) < 300


def test_cluster_status_before_any_gate_run_says_what_to_do(sqlite_db):
    process = Host(sqlite_db, "host-a").run("cluster_status", expect=1)
    assert "has no cluster tables yet: run `manage.py ensure_cluster_schema --database default`" in process.stderr


def test_a_migration_that_fails_after_the_gate_passed_is_reported_as_plain_migrate_does(sqlite_db):
    a = Host(sqlite_db, "host-a")
    a.run("migrate", "-v0")
    # v2's migration creates this table: with it already there, the migration itself fails.
    sqlite_db.query("CREATE TABLE gateapp_v2only (id INTEGER PRIMARY KEY)")
    process = a.upgraded().run("migrate", expect=1)
    assert "table gateapp_v2only already exists" in process.stderr, process.stderr
    assert "OperationalError" in process.stderr and "cluster gate failed" not in process.stderr, process.stderr
    # Nothing half-done stays behind: once the database is fixed, the same command migrates.
    sqlite_db.query("DROP TABLE gateapp_v2only")
    a.upgraded().run("migrate", "-v0")
    assert [host for (host,) in applied_0002(sqlite_db)] == ["host-a"]

