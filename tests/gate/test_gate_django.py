"""The Django side around the gate: admin, system checks, the test runner, node addresses.

Each test runs Django in a subprocess (a simulated host, or a small script with
``settings.configure``), so the pytest process itself never configures Django.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from django_dqcluster.store.local_cluster import free_ports

from .conftest import REPO_ROOT, Host

ADMIN_SCRIPT = """
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django_dqcluster.models import ClusterNode

user = User.objects.create_superuser("admin", "admin@example.com", "pw")
client = Client()
client.force_login(user)
opts = ClusterNode._meta
changelist = client.get(reverse(f"admin:{opts.app_label}_clusternode_changelist"))
body = changelist.content.decode()
node = ClusterNode.objects.get(address="host-b")
change = client.get(reverse(f"admin:{opts.app_label}_clusternode_change", args=[node.pk]))
print("RESULT", {
    "changelist": changelist.status_code,
    "addresses": [a for a in ("host-a", "host-b") if a in body],
    "state_header": "gate state" in body.lower(),
    "states": [s for s in ("newer than host-b: waiting for them", "behind: upgrade") if s in body],
    "add_link": reverse(f"admin:{opts.app_label}_clusternode_add") in body,
    "add": client.get(reverse(f"admin:{opts.app_label}_clusternode_add")).status_code,
    "change": change.status_code,
    "save_button": 'name="_save"' in change.content.decode(),
    "delete_get": client.get(reverse(f"admin:{opts.app_label}_clusternode_delete", args=[node.pk])).status_code,
    "delete_post": client.post(reverse(f"admin:{opts.app_label}_clusternode_delete", args=[node.pk]), {"post": "yes"}).status_code,
    "rows_after": ClusterNode.objects.count(),
})
"""


def _result(process):
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    return eval(line[len("RESULT "):])  # noqa: S307 - our own script's repr of plain values


def test_admin_lists_members_read_only(sqlite_db):
    a, b = Host(sqlite_db, "host-a"), Host(sqlite_db, "host-b")
    a.run("migrate", "-v0")
    b.run("migrate", "-v0")
    a.upgraded().run("ensure_cluster_schema", expect=3)
    result = _result(a.upgraded().shell(ADMIN_SCRIPT))
    assert result == {
        "changelist": 200,
        "addresses": ["host-a", "host-b"],
        "state_header": True,
        "states": ["newer than host-b: waiting for them", "behind: upgrade"],
        "add_link": False,
        "add": 403,
        "change": 200,  # view-only page
        "save_button": False,
        "delete_get": 403,
        "delete_post": 403,
        "rows_after": 2,
    }


def test_admin_without_cluster_tables_explains_instead_of_failing(sqlite_db):
    host = Host(sqlite_db, "host-a")
    host.run("migrate", "--skip-cluster-gate", "-v0")  # Django's tables only
    script = (
        "from django.contrib.auth.models import User\n"
        "from django.test import Client\n"
        "client = Client()\n"
        "client.force_login(User.objects.create_superuser('admin', 'a@example.com', 'pw'))\n"
        "response = client.get('/admin/dqcluster/clusternode/', follow=True)\n"
        "print('RESULT', {'status': response.status_code, 'hint': 'has no cluster tables yet' in response.content.decode()})\n"
    )
    assert _result(host.shell(script)) == {"status": 200, "hint": True}


def test_system_checks_flag_missing_secret_hidden_migrate_and_bad_settings(sqlite_db, tmp_path):
    open_secret = tmp_path / "cluster.secret"
    open_secret.write_text("s3cret\n")
    open_secret.chmod(0o644)
    open_token = tmp_path / "cluster.token"
    open_token.write_text("a3" * 32 + "\n")
    open_token.chmod(0o644)
    host = Host(sqlite_db, "host-a", extra_env={"DQ_GATE_CHECKS": "1", "DQ_GATE_OPEN_SECRET": str(open_secret),
                                                "DQ_GATE_OPEN_TOKEN": str(open_token)})
    process = host.run("check", expect=1)
    output = process.stderr + process.stdout
    assert "dqcluster.W001" in output and "DATABASES['cluster'] is a multi-node dqcluster setup without a cluster secret" in output
    assert "DATABASES['open_token'] is a multi-node" not in output  # a client with the token is authenticated
    assert "dqcluster.W003" in output and f"({open_secret}) is readable by users other than its owner" in output
    assert f"chmod 600 {open_secret}" in output
    assert f"['token_file'] ({open_token}) is readable by users other than its owner" in output
    assert "Whoever reads the client token can read and write every database of the store." in output
    open_secret.chmod(0o600)
    open_token.chmod(0o600)
    output = host.run("check", expect=1).stderr
    assert "dqcluster.W003" not in output and "dqcluster.W001" in output
    assert "dqcluster.W002" in output and "'tests.gate.shadowapp' is listed before 'django_dqcluster'" in output
    assert "dqcluster.E001" in output and "DQCLUSTER_API_EXTENSIONS must be a list" in output

    clean = Host(sqlite_db, "host-a").run("check")
    assert "dqcluster." not in clean.stdout + clean.stderr


def test_test_runner_builds_its_database_without_the_gate(sqlite_db):
    """``create_test_db`` calls our migrate; the gate stays out of the way (and fast)."""
    script = textwrap.dedent(
        """
        import time
        from django.db import connection
        from django.test.utils import setup_test_environment
        setup_test_environment()
        started = time.monotonic()
        connection.creation.create_test_db(verbosity=2, autoclobber=True)
        elapsed = time.monotonic() - started
        tables = connection.introspection.table_names()
        print("RESULT", {"nodes": "nodes" in tables, "gateapp": "gateapp_item" in tables, "fast": elapsed < 20})
        """
    )
    host = Host(sqlite_db, "host-a")
    process = host.shell(script)
    assert _result(process) == {"nodes": False, "gateapp": True, "fast": True}
    assert "Cluster gate" not in process.stdout
    # Forcing the gate on runs it there too (DQCLUSTER_GATE_ENABLED=True).
    forced = host.shell(
        "from django.test import override_settings\n"
        "with override_settings(DQCLUSTER_GATE_ENABLED=True):\n"
        + textwrap.indent(script, "    ")
    )
    assert _result(forced)["nodes"] is True
    assert "Cluster gate: ready: the only member runs" in forced.stdout


NODE_ADDRESS_SCRIPT = """
import json, socket, django
from django.conf import settings
engine = "django_dqcluster.backend"
settings.configure(
    DATABASES={
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "embedded": {"ENGINE": engine, "NAME": "app", "OPTIONS": {"embedded": True, "bind": "10.0.0.1:7000", "data_dir": "/srv/dq"}},
        "client": {"ENGINE": engine, "NAME": "app", "OPTIONS": {"address": "10.0.0.2:7001,10.0.0.3:7001"}},
        "hostport": {"ENGINE": engine, "NAME": "app", "HOST": "10.0.0.4", "PORT": "7001"},
        "loopback": {"ENGINE": engine, "NAME": "app", "OPTIONS": {"address": "127.0.0.1:7001"}},
        "unix": {"ENGINE": engine, "NAME": "app", "OPTIONS": {"address": "unix:/run/dq.sock"}},
    },
    INSTALLED_APPS=[],
    **dict(OVERRIDES),
)
django.setup()
from django_dqcluster import gate
out = {alias: gate.node_address(alias) for alias in ("default", "embedded", "client", "hostport", "loopback", "unix")}
out["patch_dir"] = [gate.patch_dir("embedded"), gate.patch_dir("client")]
out["hostname"] = socket.gethostname()
print(json.dumps(out))
"""


def _json_from_script(script: str) -> dict:
    """Run ``script`` in a fresh interpreter (it configures Django itself); return the JSON it prints."""
    process = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)


def _node_addresses(overrides: str) -> dict:
    return _json_from_script(NODE_ADDRESS_SCRIPT.replace("OVERRIDES", overrides))


def test_node_address_from_our_engine_options_then_the_setting_then_the_hostname():
    result = _node_addresses("{}")
    hostname = result["hostname"]
    assert result["default"] == hostname  # another ENGINE, no setting: the host name
    assert result["embedded"] == "10.0.0.1:7000"  # the node's Raft address
    assert result["client"] == "10.0.0.2:7001"  # this host's node: the first client address
    assert result["hostport"] == "10.0.0.4:7001"
    assert result["loopback"] == hostname  # loopback is the same text on every host
    assert result["unix"] == hostname
    assert result["patch_dir"] == ["/srv/dq", None]

    explicit = _node_addresses('{"DQCLUSTER_NODE_ADDRESS": {"default": "web-1", "embedded": "dq-1"}}')
    assert explicit["default"] == "web-1" and explicit["embedded"] == "dq-1"
    assert explicit["client"] == "web-1"  # the dict's "default" entry covers the other aliases
    partial = _node_addresses('{"DQCLUSTER_NODE_ADDRESS": {"embedded": "dq-1"}}')
    assert partial["client"] == "10.0.0.2:7001" and partial["default"] == partial["hostname"]


STORE_ADMIN_SCRIPT = """
import re
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django_dqcluster.models import ClusterNode

client = Client()
client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
opts = ClusterNode._meta
response = client.get(reverse(f"admin:{opts.app_label}_clusternode_changelist"))
body = response.content.decode()
cells = lambda name: re.findall(r'<td class="field-' + name + r'[^"]*">([^<]*)</td>', body)

from django.contrib import messages
from django_dqcluster.admin import node_notices

healthy = {"role": "leader", "leader": "127.0.0.1:1", "has_quorum": True, "commit_index": 5, "applied_index": 5}
levels = {messages.WARNING: "warning", messages.INFO: "info"}
notices = lambda status, error=None: [(levels[level], text) for level, text in node_notices(status, error)]
print("RESULT", {
    "status": response.status_code,
    "role_column": 'class="sortable column-role' in body or 'class="column-role' in body,
    "applied_column": 'column-applied' in body,
    "rows": [list(pair) for pair in zip(cells("address"), cells("role"))],
    "messages_shown": re.findall(r'<li class="(?:warning|info)">', body),
    "healthy": notices(healthy),
    "catching_up": notices({**healthy, "role": "follower", "catching_up": True}),
    "rotating": notices({**healthy, "secret_fallbacks": {"count": 1, "raft_seconds_ago": None,
                                                         "clients_seconds_ago": 3.0},
                         "secret_file": {"path": "/etc/dq/secret", "error": "/etc/dq/secret holds no secret"}}),
    "unreachable": notices(None, "OperationalError: no store node reachable"),
    "mixed_releases": notices({**healthy, "entry_format": 3, "members": [{"raft": "127.0.0.1:1", "applies": 4},
                                                                         {"raft": "127.0.0.1:2", "applies": 3}]}),
})
"""


def test_gate_on_our_engine_with_one_embedded_node(tmp_path):
    """The same commands on ENGINE django_dqcluster.backend (one embedded node).

    The node's Raft address is the member's address; cluster_status and the admin ask
    the store for its role and applied index. The 3-node rolling upgrade on the store
    is the backend's end-to-end test.
    """
    from .conftest import SharedDatabase

    port, client_port = free_ports(2)
    db = SharedDatabase("dqcluster", f"{tmp_path / 'node'}:{port}:{client_port}")
    host = Host(db, "ignored")
    first = host.run("migrate")
    assert "Cluster gate: ready: the only member runs" in first.stdout
    assert "Applying gateapp.0001_initial... OK" in first.stdout
    status = json.loads(host.run("cluster_status", "--json").stdout)
    (member,) = status["members"]
    assert member["address"] == f"127.0.0.1:{port}" and member["is_self"]
    assert member["role"] == "leader" and member["gate"] == "ready"
    assert isinstance(member["applied_index"], int) and member["lag"] == 0
    admin = _result(host.shell(STORE_ADMIN_SCRIPT))
    assert admin["status"] == 200 and admin["role_column"] and admin["applied_column"], admin
    assert admin["rows"] == [[f"127.0.0.1:{port}", "leader"]], admin
    # Above the list, what the operator should know about this host's node: nothing, for a healthy one.
    assert admin["messages_shown"] == [] and admin["healthy"] == [], admin
    assert admin["catching_up"] == [("warning", "This host's node is not fit to serve: the node lost entries it had "
                                                "acknowledged (its data directory was emptied, or restored from an "
                                                "older copy) and is catching up with the leader; it does not vote "
                                                "until it holds what the leader had committed.")]
    assert [level for level, _ in admin["rotating"]] == ["info", "warning"]
    assert admin["rotating"][0][1].startswith("Secret rotation: this host's node accepts 1 fallback secret(s)")
    assert admin["rotating"][1][1].startswith("Secret file: /etc/dq/secret holds no secret; this host's node keeps")
    assert admin["unreachable"] == [("warning", "Store status unavailable: OperationalError: no store node reachable")]
    assert admin["mixed_releases"] == [("info", "Store entries: written in format 3, which every member applies; "
                                                "format 4 once 127.0.0.1:2 (format 3) run(s) the newer django-dqcluster")]
    upgraded = host.upgraded().run("migrate")
    assert "Applying gateapp.0002_v2... OK" in upgraded.stdout
    assert host.upgraded().gate_json(expect=0)["members"][0]["schema"] == member["schema"] + 1


WAIT_SCRIPT = """
import sqlite3
from django_dqcluster import gate
from django_dqcluster.cluster import Version

def result(status):
    return gate.GateResult("default", "host-a", Version(2, 0), status)

answers = iter([result(gate.GateStatus.WAITING), sqlite3.OperationalError("database is locked"),
                result(gate.GateStatus.WAITING), result(gate.GateStatus.WAITING), result(gate.GateStatus.READY)])
def check(alias):
    answer = next(answers)
    if isinstance(answer, Exception):
        raise answer
    return answer
now = [0.0]
sleeps = []
def sleep(seconds):
    sleeps.append(seconds)
    now[0] += seconds
seen = []
final = gate.wait_for_gate(timeout=100, check=check, sleeper=sleep, clock=lambda: now[0],
                           on_progress=lambda p: seen.append((p.attempt, p.error is not None, p.next_check_in)))
# A timeout ends the wait on the last "waiting" answer; a non-transient error is raised.
now[0] = 0.0
late = gate.wait_for_gate(timeout=2.5, check=lambda a: result(gate.GateStatus.WAITING), sleeper=sleep, clock=lambda: now[0])
def broken(alias):
    raise ValueError("nodes table is corrupt")
try:
    gate.wait_for_gate(timeout=10, check=broken, sleeper=sleep, clock=lambda: now[0])
    raised = None
except ValueError as error:
    raised = str(error)
print("RESULT", {"final": final.status.value, "sleeps": sleeps[:4], "seen": seen, "late": late.status.value,
                 "late_sleeps": sleeps[4:], "raised": raised})
"""


def test_wait_for_gate_backs_off_waits_out_transient_errors_and_stops_on_time(sqlite_db):
    # DQ_GATE_MAX_INTERVAL=2 (tests/gate/settings.py): the backoff is 1, 2, 2, ...
    result = _result(Host(sqlite_db, "host-a").shell(WAIT_SCRIPT))
    assert result == {
        "final": "ready",
        "sleeps": [1.0, 2.0, 2.0, 2.0],
        "seen": [(1, False, 1.0), (2, True, 2.0), (3, False, 2.0), (4, False, 2.0), (5, False, None)],
        "late": "waiting",
        "late_sleeps": [1.0, 1.5],
        "raised": "nodes table is corrupt",
    }


SCHEMA_LEVEL_SCRIPT = """
import json, django
from django.conf import settings


class GateappLivesInReports:
    # The usual router for an app kept in a database of its own.
    def allow_migrate(self, db, app_label, **hints):
        if app_label == "gateapp":
            return db == "reports"
        return None


settings.configure(
    DATABASES={
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "reports": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    },
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "tests.gate.gateapp"],
    MIGRATION_MODULES={"gateapp": "tests.gate.gateapp.migrations_v2"},
    DATABASE_ROUTERS=ROUTER_LIST,
)
django.setup()
from django_dqcluster import gate
print(json.dumps({alias: gate.schema_level(alias) for alias in ("default", "reports")}))
"""


def _schema_levels(routers: str) -> dict:
    return _json_from_script(SCHEMA_LEVEL_SCRIPT.replace("ROUTER_LIST", routers))


def test_schema_level_counts_only_the_migrations_routers_allow_on_the_alias():
    unrouted = _schema_levels("[]")
    routed = _schema_levels("[GateappLivesInReports()]")

    assert unrouted["default"] == unrouted["reports"]  # one graph, nothing routed away
    assert routed["reports"] == unrouted["reports"]
    # gateapp's migrations_v2 holds two migrations (0001_initial, 0002_v2), none for default.
    assert routed["default"] == unrouted["default"] - 2
