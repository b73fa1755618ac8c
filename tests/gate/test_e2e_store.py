"""The rolling upgrade end to end on OUR ENGINE: a 3-node store, three hosts, two code versions.

A :class:`LocalCluster` runs three store nodes (three processes). Hosts A, B and C are
each a separate ``python -m django …`` process whose ``default`` is a client of a
different node (A -> node0, B -> node1, C -> node2; same database NAME), and whose
address (``DQCLUSTER_NODE_ADDRESS``) is that node's Raft address. The code version is
chosen as in ``test_gate_upgrade.py``: ``MIGRATION_MODULES`` (v1: one migration of the
test app, v2: one more) and ``DQCLUSTER_API_EXTENSIONS``.

Issue 4, "End-to-end test": all on v1 => ready; host A on v2 => A waits (exit 3),
nothing applied, A's row says v2; a v1 host restarted now => refused "please upgrade",
its row still written; B and C on v2 => the last one applies the v2 migration once;
every host then reports ready; the data written before is intact.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.statemachine import ENTRY_FORMAT

from .conftest import Host

pytestmark = pytest.mark.slow

HOOK = "django.db.backends.sqlite3._functions:register"
NAME = "app"


class StoreDatabase:
    """The store database the hosts share, read directly through any one node."""

    kind = "dqcluster-client"

    def __init__(self, cluster: LocalCluster, name: str = NAME):
        self.cluster = cluster
        self.name = name

    def env(self) -> dict:
        # Host.env() sets DJANGO_SETTINGS_MODULE after this; the per-host part is in extra_env.
        return {"DQ_E2E_NAME": self.name, "DQ_E2E_SECRET_FILE": self.cluster.secret_file}

    def host(self, index: int, version: str = "v1", api=()) -> Host:
        node = self.cluster.nodes[index]
        return Host(self, node.raft, version, api, extra_env={
            "DJANGO_SETTINGS_MODULE": "tests.gate.e2e_settings",
            "DQ_E2E_CLIENT": node.client,
        })

    def query(self, index: int, sql: str, params=(), consistency: str = "strong") -> list[tuple]:
        conn = self.cluster.nodes[index].connect(database=self.name, consistency=consistency)
        try:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def table_exists(self, index: int, table: str, **kw) -> bool:
        sql = "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?"
        return bool(self.query(index, sql, (table,), **kw)[0][0])

    def node_rows(self, index: int, **kw) -> dict[str, tuple[int, int]]:
        rows = self.query(index, "SELECT address, schema, api_extensions FROM nodes ORDER BY id", **kw)
        return {a: (s, e) for a, s, e in rows}


@pytest.fixture
def store(tmp_path):
    cluster = LocalCluster(str(tmp_path / "cluster"), 3, connection_hooks=[HOOK], durability="process")
    cluster.start()
    try:
        yield StoreDatabase(cluster)
    finally:
        for node in cluster.nodes:
            node.kill()


def _write_item(host: Host, name: str) -> None:
    code = (
        "from tests.gate.gateapp.models import Item\n"
        f"item = Item.objects.create(name={name!r})\n"
        "assert Item.objects.filter(pk=item.pk).exists()  # read back through the same node\n"
        "print('WROTE', item.pk)\n"
    )
    assert "WROTE" in host.shell(code).stdout


def test_rolling_upgrade_on_a_three_node_store(store):
    db, cluster = store, store.cluster
    a, b, c = (db.host(i) for i in range(3))
    addresses = [node.raft for node in cluster.nodes]
    addr_a, addr_b, addr_c = addresses

    # All on v1: the first host creates the cluster tables and applies 0001, the others find it done.
    first = a.run("migrate")
    assert "Created the cluster tables; this host is the first member." in first.stdout
    assert "Applying gateapp.0001_initial... OK" in first.stdout
    for host in (b, c):
        out = host.run("migrate").stdout
        assert "Registered this host (" in out and "No migrations to apply." in out
    for host in (a, b, c):
        report = host.gate_json(expect=0)
        assert report["state"] == "ready", report
        assert sorted(m["address"] for m in report["members"]) == sorted(addresses)
        ready = host.run("ensure_cluster_schema", expect=0)
        assert f"this host {host.address}: schema {report['ours']['schema']}, api_extensions 0" in ready.stdout
        assert "ready: every one of the 3 members runs schema" in ready.stdout
    v1_schema = report["ours"]["schema"]  # every host runs the same code

    # Data written through the ORM by each host, i.e. through each node (leader and followers).
    names = [f"written by {h.address} before the upgrade" for h in (a, b, c)]
    for host, name in zip((a, b, c), names):
        _write_item(host, name)

    # Host A on v2: waits (exit 3) naming B and C with their versions; nothing is applied.
    a2 = a.upgraded()
    waiting = a2.run("migrate", expect=3)
    for behind in (addr_b, addr_c):
        assert f"Waiting for {behind} (schema {v1_schema}, api_extensions 0)" in waiting.stdout, waiting.stdout
    assert f"{addr_a}: schema {v1_schema + 1}, api_extensions 0 [this host]" in waiting.stdout
    assert "No migrations applied" in waiting.stdout
    assert "waiting for members behind this host" in waiting.stderr
    assert set(a2.gate_json(expect=3)["waiting_for"]) == {addr_b, addr_c}
    for index in (1, 2):  # read through the other nodes
        assert not db.table_exists(index, "gateapp_v2only")
        assert db.query(index, "SELECT COUNT(*) FROM django_migrations WHERE app='gateapp' AND name='0002_v2'") == [(0,)]
        assert db.query(index, "SELECT COUNT(*) FROM gateapp_applylog WHERE migration='0002'") == [(0,)]
        assert db.node_rows(index)[addr_a] == (v1_schema + 1, 0)  # A's row says v2

    # B restarted on v1 now: refused "please upgrade", every member named with its version;
    # its row is written although refused (its heartbeat, set far back here, moves on).
    db.query(0, "UPDATE nodes SET heartbeat = '2000-01-01 00:00:00' WHERE address = ?", (addr_b,))
    refused = b.run("migrate", expect=2)
    assert "this node's version is behind, please upgrade" in refused.stdout, refused.stdout
    assert f"{addr_a}: schema {v1_schema + 1}, api_extensions 0 [ahead of this host]" in refused.stdout
    assert f"{addr_c}: schema {v1_schema}, api_extensions 0 [same version]" in refused.stdout
    assert f"{addr_b}: schema {v1_schema}, api_extensions 0 [this host]" in refused.stdout
    assert "this node's version is behind, please upgrade" in refused.stderr
    assert "Applying" not in refused.stdout
    for index in (0, 2):  # read through the other nodes
        assert db.node_rows(index)[addr_b] == (v1_schema, 0)
        (heartbeat,) = db.query(index, "SELECT heartbeat FROM nodes WHERE address = ?", (addr_b,))[0]
        assert str(heartbeat) > "2000-01-01 00:00:00", heartbeat
        assert not db.table_exists(index, "gateapp_v2only")
    report = b.gate_json(expect=2)
    assert report["state"] == "refused" and report["reason"] == "behind", report
    assert report["ahead"] == [addr_a]
    assert sorted(m["address"] for m in report["members"]) == sorted(addresses)

    # B on v2 waits for C only.
    b2 = b.upgraded()
    report = b2.gate_json(expect=3)
    assert report["waiting_for"] == [addr_c], report
    b2.run("migrate", expect=3)
    assert not db.table_exists(2, "gateapp_v2only")

    # C, the last one, applies the v2 migration once.
    c2 = c.upgraded()
    last = c2.run("migrate")
    assert "Applying gateapp.0002_v2... OK" in last.stdout, last.stdout

    # Every host now reports ready; nobody applies anything again.
    for host in (a2, b2, c2):
        report = host.gate_json(expect=0)
        assert report["state"] == "ready", report
        assert {m["schema"] for m in report["members"]} == {v1_schema + 1}
        ready = host.run("ensure_cluster_schema", expect=0).stdout
        assert f"ready: every one of the 3 members runs schema {v1_schema + 1}, api_extensions 0" in ready
        assert "No migrations to apply." in host.run("migrate").stdout
    # cluster_status asks the store for each member's role: one leader, two followers.
    status = json.loads(b2.run("cluster_status", "--json").stdout)
    members = {m["address"]: m for m in status["members"]}
    assert set(members) == set(addresses)
    assert sorted(m["role"] for m in members.values()) == ["follower", "follower", "leader"], members
    assert all(m["gate"] == "ready" for m in members.values()), members

    # After convergence every replica holds the same, read locally (consistency none).
    cluster.wait_converged()
    for index in range(3):
        local = {"consistency": "none"}
        assert db.query(index, "SELECT COUNT(*) FROM django_migrations WHERE app='gateapp' AND name='0002_v2'",
                        **local) == [(1,)]
        assert db.query(index, "SELECT host FROM gateapp_applylog WHERE migration='0002'", **local) == [(addr_c,)]
        assert db.query(index, "SELECT migration, host FROM gateapp_applylog ORDER BY id", **local) == [
            ("0001", addr_a), ("0002", addr_c)]
        assert db.table_exists(index, "gateapp_v2only", **local)
        assert db.query(index, "SELECT name FROM gateapp_item ORDER BY id", **local) == [(n,) for n in names]
        assert db.node_rows(index, **local) == {addr: (v1_schema + 1, 0) for addr in addresses}



def test_a_host_with_the_wrong_cluster_secret_gets_a_clear_error_from_each_command(store, tmp_path):
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not the cluster's secret\n")
    host = store.host(0)
    host.extra_env["DQ_E2E_SECRET_FILE"] = str(wrong)
    for command in ("ensure_cluster_schema", "cluster_status", "migrate"):
        process = host.run(command, expect=1)
        assert "the store refused this client: authentication failed" in process.stderr, (command, process.stderr)
        assert "Traceback" not in process.stderr, (command, process.stderr)


def test_cluster_status_names_a_transaction_that_holds_the_write_lock(store):
    leader = store.cluster.leader()
    # A host whose node follows: it asks the leader, where transactions run.
    host = store.host(next(index for index, node in enumerate(store.cluster.nodes) if node is not leader))
    host.run("ensure_cluster_schema", expect=0)
    holder = leader.connect(database=NAME)
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM nodes").fetchall()
    address = "{}:{}".format(*holder._transport.sock.getsockname())
    time.sleep(1.2)  # held longer than cluster_status's threshold
    try:
        text = host.run("cluster_status").stdout
        report = json.loads(host.run("cluster_status", "--json").stdout)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert re.search(rf"Write lock of database '{NAME}' held by a transaction of client {address} for \d", text), text
    assert report["write_locks"][NAME]["holder"] == f"a transaction of client {address}"
    assert "Write lock" not in host.run("cluster_status").stdout  # released


def test_cluster_status_through_a_follower_shows_how_far_every_member_got(store):
    cluster = store.cluster
    leader = cluster.leader()
    hosts = [store.host(index) for index in range(3)]
    for host in hosts:
        host.run("ensure_cluster_schema", expect=0)
    cluster.wait_converged()
    follower_host = next(host for host, node in zip(hosts, cluster.nodes) if node is not leader)
    report = json.loads(follower_host.run("cluster_status", "--json").stdout)
    members = {m["address"]: m for m in report["members"]}
    assert members[leader.raft]["role"] == "leader"
    # Only the leader knows the others' progress: the follower's node asked it.
    for member in members.values():
        assert isinstance(member["applied_index"], int) and member["applied_index"] > 0, member
        assert isinstance(member["lag"], int) and member["lag"] >= 0, member
    assert "n/a" not in follower_host.run("cluster_status").stdout
    # The gate's reads through that follower: answered there or by the leader, and counted.
    assert "Follower work since the node started: strong reads" in follower_host.run("cluster_status", "-v", "2").stdout


def test_during_a_secret_rotation_cluster_status_says_when_the_old_secret_was_last_needed(store):
    cluster = store.cluster
    # Node 0's own secret file gets a fallback, as between steps 2 and 3 of a
    # rotation (the others' shared file does not: each node rereads its file
    # every 2 s, and node 1 must not have one).
    own_file = os.path.join(cluster.directory, "node0.secret")
    with open(cluster.secret_file) as shared:
        secret = shared.read()
    with open(os.open(own_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(secret.rstrip("\n") + "\nthe-old-secret\n")
    node = cluster.nodes[0]
    node.stop()
    node.start(peers=cluster.peers_of(node), extra_args=("--secret-file", own_file))
    cluster.wait_for_leader()
    node.connect(secret="the-old-secret").close()  # a client not restarted yet
    host = store.host(0)
    host.run("ensure_cluster_schema", expect=0)
    text = host.run("cluster_status", "-v", "2").stdout
    assert re.search(r"Store: node \S+ is \w+, leader \S+, term \d+, commit index \d+, quorum yes, "
                     rf"entry format {ENTRY_FORMAT}\n", text), text
    assert re.search(r"Secret rotation: this host's node accepts 1 fallback secret\(s\); one was last needed by a "
                     r"member's Raft message not since the node started, by a client session \d+s ago", text), text
    assert "Secret rotation" not in store.host(1).run("cluster_status").stdout  # node1 has no fallback
