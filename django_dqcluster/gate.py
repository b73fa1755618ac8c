"""The cluster version gate, mapped onto Django.

One job: work out this host's version for a database alias and run the version gate of
``django_dqcluster.cluster`` on that alias's database. The commands (``migrate``,
``ensure_cluster_schema``, ``cluster_status``) and the Celery tasks only present what
this module decides.

This host's version for an alias
    ``(schema level, API count)``: the schema level is the number of migrations in this
    code's migration graph that the database routers allow on the alias
    (:func:`schema_level`), the API count is
    ``len(settings.DQCLUSTER_API_EXTENSIONS)`` (default ``[]``). Every host writes its
    version into its row of the ``nodes`` table; migrations run only when every row
    reports the same version, so new migrations never run under old code.

This host's address
    The key of its row in ``nodes`` (:func:`node_address`).

The gate
    :func:`run_gate` runs the library's schema engine (the ``nodes``, ``schema``, …
    tables of the seed, created in the alias's own database, on PostgreSQL too) with a
    check that registers this host if needed, writes its version row and heartbeat, and
    asks ``cluster.decide``. Unlike the seed, our row is committed whatever the decision
    (canonical/lxd#15313: a refused member must still show its real version). The result
    is a :class:`GateResult`: ready, waiting (members behind, named with their versions)
    or refused (this host is behind, or versions are inconsistent).

Settings (all optional)
    ``DQCLUSTER_API_EXTENSIONS``  list of API extension names (only its length counts).
    ``DQCLUSTER_NODE_ADDRESS``    this host's address: a string, or ``{alias: address}``.
    ``DQCLUSTER_GATE_ENABLED``    ``True`` always run the gate; ``False`` never (every
                                  gate call answers "ready" without touching the
                                  database); unset: run it, except while Django's test
                                  runner builds test databases.
    ``DQCLUSTER_WAIT_MAX_INTERVAL``  longest pause between two re-checks while waiting
                                  (seconds, default 30; the backoff starts at 1).
    ``DQCLUSTER_PATCH_DIR``       directory searched for the operator's repair SQL,
                                  ``patch.global.sql`` (default: our ENGINE's
                                  ``OPTIONS["data_dir"]``, else none).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import ipaddress
import logging
import socket
import sys
import time
from typing import Any, Callable, Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, router

from .cluster import (
    ClusterError,
    Database,
    GateState,
    GracefulAbort,
    Member,
    RetryPolicy,
    SchemaProvider,
    Version,
    VersionGate,
    compare_versions,
    decide,
    dialect_for,
    is_transient_error,
    retry,
    transaction,
    update_node_version,
)
from .cluster.errors import MSG_INCONSISTENT, MSG_NODE_BEHIND, InconsistentVersionsError, wrap
from .cluster.sql import UNCLUSTERED_ADDRESS  # the seed's never-clustered sentinel
from .cluster.tx import Tx, select_count

logger = logging.getLogger("django_dqcluster.gate")

DQCLUSTER_ENGINE = "django_dqcluster.backend"


class GateUsageError(ClusterError):
    """The gate was called in a state where it cannot run (e.g. inside atomic())."""


# --------------------------------------------------------------------------------------
# Settings


def api_extensions() -> list[str]:
    """``settings.DQCLUSTER_API_EXTENSIONS``, validated (a list or tuple; default empty)."""
    value = getattr(settings, "DQCLUSTER_API_EXTENSIONS", [])
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(
            "settings.DQCLUSTER_API_EXTENSIONS must be a list of extension names, "
            f"not {type(value).__name__}"
        )
    return list(value)


def _split(value: Any) -> list[str]:
    """'a,b' / ['a', 'b'] / None -> ['a', 'b'] (django-environ hands over comma strings)."""
    if not value:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item).strip() for item in value if str(item).strip()]


def _is_local_only(address: str) -> bool:
    """True for a unix socket or a loopback/wildcard host: the same text on every host."""
    if address.startswith(("/", "unix:")):
        return True
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    host = host.strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _configured_address(alias: str) -> str | None:
    """``DQCLUSTER_NODE_ADDRESS`` for ``alias`` (a dict may name some aliases only)."""
    value = getattr(settings, "DQCLUSTER_NODE_ADDRESS", None)
    if isinstance(value, dict):
        value = value.get(alias, value.get("default"))
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ImproperlyConfigured(
            "settings.DQCLUSTER_NODE_ADDRESS must be a non-empty string or a dict "
            f"{{alias: address}}, not {value!r}"
        )
    if value.strip() == UNCLUSTERED_ADDRESS:
        raise ImproperlyConfigured(
            f"settings.DQCLUSTER_NODE_ADDRESS cannot be {UNCLUSTERED_ADDRESS!r}: that address "
            "marks the row of a never-clustered database"
        )
    return value.strip()


def _settings_dict(alias: str) -> dict:
    """The alias's DATABASES entry, without instantiating (importing) its backend."""
    try:
        return connections.settings[alias]
    except KeyError:
        raise ImproperlyConfigured(f"settings.DATABASES has no alias {alias!r}") from None


def is_dqcluster_alias(alias: str) -> bool:
    return _settings_dict(alias).get("ENGINE") == DQCLUSTER_ENGINE


def node_address(alias: str = DEFAULT_DB_ALIAS) -> str:
    """This host's address in the ``nodes`` table of ``alias``.

    ``settings.DQCLUSTER_NODE_ADDRESS`` (a string, or a dict ``{alias: address}``) wins
    when it is set. Otherwise, for our ENGINE (``django_dqcluster.backend``) it is this
    host's node, read from the DATABASES entry: ``OPTIONS["bind"]`` (the node's Raft
    address, which the store itself uses as the member's identity) if the entry runs
    the node (embedded mode), else the client address (``OPTIONS["address"]`` or
    ``HOST:PORT``, first one). A client address that is a unix socket or a loopback
    address is the same text on every host and cannot tell hosts apart, so then, as
    for every other ENGINE, the host name is used.

    Only the alias's settings dict is read: nothing here depends on the backend's
    internals, imports it, or opens a connection.
    """
    configured = _configured_address(alias)
    if configured:
        return configured
    settings_dict = _settings_dict(alias)
    if settings_dict.get("ENGINE") == DQCLUSTER_ENGINE:
        options = settings_dict.get("OPTIONS") or {}
        if options.get("bind"):
            return str(options["bind"])
        addresses = _split(options.get("address"))
        if not addresses and settings_dict.get("HOST"):
            hosts = _split(settings_dict.get("HOST"))
            ports = _split(str(settings_dict.get("PORT") or ""))
            first = hosts[0]
            addresses = [first if (":" in first or not ports) else f"{first}:{ports[0]}"]
        if addresses and not _is_local_only(addresses[0]):
            return addresses[0]
    return socket.gethostname()


def patch_dir(alias: str) -> str | None:
    """Where the operator's ``patch.global.sql`` is looked for (None: nowhere)."""
    configured = getattr(settings, "DQCLUSTER_PATCH_DIR", None)
    if configured:
        return str(configured)
    settings_dict = _settings_dict(alias)
    if settings_dict.get("ENGINE") == DQCLUSTER_ENGINE:
        data_dir = (settings_dict.get("OPTIONS") or {}).get("data_dir")
        if data_dir:
            return str(data_dir)
    return None


def building_test_database() -> bool:
    """True when called (at any depth) from Django's ``create_test_db``.

    The test runner calls ``migrate`` to build each test database; that database is
    private to the run, so there is no cluster to wait for. Looking for the frame is
    exact (no guessing from database names) and costs a walk up one stack.
    """
    from django.db.backends.base.creation import BaseDatabaseCreation

    code = BaseDatabaseCreation.create_test_db.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def gate_enabled(alias: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether the gate runs for ``alias`` now (see ``DQCLUSTER_GATE_ENABLED``)."""
    value = getattr(settings, "DQCLUSTER_GATE_ENABLED", None)
    if value is None or value == "auto":
        return not building_test_database()
    if isinstance(value, bool):
        return value
    raise ImproperlyConfigured(
        f"settings.DQCLUSTER_GATE_ENABLED must be True, False or None (auto), not {value!r}"
    )


# --------------------------------------------------------------------------------------
# This host's version


def schema_level(alias: str = DEFAULT_DB_ALIAS) -> int:
    """The number of migrations in this code's migration graph that ``alias`` receives.

    A migration counts when the database routers allow its app on ``alias``
    (``router.allow_migrate(alias, app_label)``, asked without a model hint: a router
    that decides per model and answers None for the app as a whole lets it count). A
    release that only adds migrations of an app routed elsewhere thus leaves this
    alias's version alone, and its members do not wait for each other for nothing.

    A squashed migration counts as the migrations it replaces, so that a release that
    adds a squash does not look like a downgrade, and the count does not depend on which
    of the replaced migrations a database has applied (Django picks the squashed node or
    the originals by that state). The graph is loaded from the code alone
    (``MigrationLoader(None)``): a version is a property of the code, not of the
    database.
    """
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    total = 0
    for migration in loader.graph.nodes.values():
        if not router.allow_migrate(alias, migration.app_label):
            continue
        replaces = getattr(migration, "replaces", None) or []
        total += len(replaces) if replaces else 1
    return total


def local_version(alias: str = DEFAULT_DB_ALIAS) -> Version:
    """This host's version for ``alias``: (schema level, number of API extensions)."""
    return Version(schema_level(alias), len(api_extensions()))


# --------------------------------------------------------------------------------------
# Results


class GateStatus(str, enum.Enum):
    READY = "ready"
    WAITING = "waiting"
    REFUSED = "refused"


EXIT_READY = 0
EXIT_REFUSED = 2
EXIT_WAITING = 3

_EXIT_CODES = {GateStatus.READY: EXIT_READY, GateStatus.WAITING: EXIT_WAITING, GateStatus.REFUSED: EXIT_REFUSED}


class Relation(str, enum.Enum):
    """How a member's version stands against this host's."""

    SAME = "same"
    BEHIND = "behind"  # the member runs an older version: we wait for it
    AHEAD = "ahead"  # the member runs a newer version: this host must be upgraded
    INCONSISTENT = "inconsistent"


def relation(ours: Iterable[int], theirs: Iterable[int]) -> Relation:
    try:
        order = compare_versions(tuple(ours), tuple(theirs))
    except InconsistentVersionsError:
        return Relation.INCONSISTENT
    return {0: Relation.SAME, 1: Relation.BEHIND, 2: Relation.AHEAD}[order]


def utc_now() -> dt.datetime:
    """This host's clock (heartbeats are the database's: see :func:`database_now`)."""
    return dt.datetime.fromtimestamp(int(time.time()), dt.timezone.utc)


def heartbeat_text(moment: dt.datetime) -> str:
    """``moment`` as SQLite's CURRENT_TIMESTAMP writes it (UTC, no zone).

    The text form is accepted by SQLite and by PostgreSQL's TIMESTAMP column alike.
    """
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _now_in(tx: Tx) -> dt.datetime | None:
    """The database's clock, as an aware UTC datetime (None if it gave nothing we read)."""
    return as_utc(tx.query(f"SELECT {tx.dialect.now_utc_sql}")[0][0])


def database_now(alias: str = DEFAULT_DB_ALIAS, raw: Any = None) -> dt.datetime:
    """The clock heartbeats are written by: the database's (this host's if it gave none).

    Every host writes its heartbeat as the database's time and measures its
    age against the same clock, so a host whose own clock is wrong neither
    shows live members offline nor a dead one alive. On the dqcluster store,
    the clock of the node that answers (the leader, for a ``strong`` read).
    ``raw``: a DB-API connection to ask instead of the alias's own; either way
    one SELECT, fine inside a transaction.
    """
    if raw is None:
        connection = connections[alias]
        connection.ensure_connection()
        raw = connection.connection
    cursor = raw.cursor()
    try:
        cursor.execute(f"SELECT {dialect_for(raw).now_utc_sql}")
        value = cursor.fetchone()[0]
    finally:
        cursor.close()
    return as_utc(value) or utc_now()


def as_utc(value: Any) -> dt.datetime | None:
    """A heartbeat read back (text, naive or aware datetime) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


# A member whose last heartbeat is older than this counts as offline (the seed's member
# list: "no heartbeat within the offline threshold"). Every gate run writes the heartbeat:
# each migrate and ensure_cluster_schema, each re-check while waiting (at most
# DQCLUSTER_WAIT_MAX_INTERVAL apart) and the periodic recheck_cluster_gate task (every
# 300 s in the documented beat schedule), so a live host goes past it only after missing
# two periodic re-checks.
HEARTBEAT_OFFLINE_AFTER_SECONDS = 600


def heartbeat_is_stale(heartbeat: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """True if ``heartbeat`` (aware, see :func:`as_utc`) is older than the offline threshold.

    A member with no heartbeat at all is not called stale: nothing says when it was last
    seen.
    """
    if heartbeat is None:
        return False
    return ((now or utc_now()) - heartbeat).total_seconds() > HEARTBEAT_OFFLINE_AFTER_SECONDS


@dataclasses.dataclass(frozen=True)
class MemberInfo:
    """One row of ``nodes`` as the gate saw it."""

    address: str
    schema: int
    api_extensions: int
    relation: Relation
    is_self: bool = False
    heartbeat: dt.datetime | None = None  # the database's time of this member's last gate run

    @property
    def version(self) -> Version:
        return Version(self.schema, self.api_extensions)

    def describe(self) -> str:
        """``10.0.0.2:8001 (schema 31, api_extensions 2)``."""
        return f"{self.address} ({self.version})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "schema": self.schema,
            "api_extensions": self.api_extensions,
            "relation": self.relation.value,
            "is_self": self.is_self,
            "heartbeat": self.heartbeat.isoformat() if self.heartbeat else None,
        }


@dataclasses.dataclass(frozen=True)
class GateResult:
    """What the gate decided for this host, with every member's version."""

    alias: str
    address: str
    ours: Version
    status: GateStatus
    reason: str | None = None  # for REFUSED: "behind" or "inconsistent"
    members: tuple[MemberInfo, ...] = ()
    registered: bool = False  # this run added our row to ``nodes``
    bootstrapped: bool = False  # this run created the cluster tables
    skipped: bool = False  # the gate is disabled here (DQCLUSTER_GATE_ENABLED / test DB)
    #: The database's time as the members were read: what their heartbeats' ages count from.
    checked_at: dt.datetime | None = None

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self.status]

    @property
    def ready(self) -> bool:
        return self.status is GateStatus.READY

    def _with(self, rel: Relation) -> list[MemberInfo]:
        return [m for m in self.members if m.relation is rel and not m.is_self]

    @property
    def waiting_for(self) -> list[MemberInfo]:
        """Members that run an older version: the ones we wait for."""
        return self._with(Relation.BEHIND)

    @property
    def ahead(self) -> list[MemberInfo]:
        return self._with(Relation.AHEAD)

    @property
    def inconsistent(self) -> list[MemberInfo]:
        return self._with(Relation.INCONSISTENT)

    @property
    def message(self) -> str:
        """One line; for a refusal it starts with the seed's own words.

        A refusal names every member with its version: it is often the only text an
        operator sees (the CommandError on stderr, a deployment log at -v0), and what to
        upgrade to depends on all of them, not only on the ones that differ
        (canonical/lxd#5045).
        """
        if self.skipped:
            return "ready: cluster gate disabled here (test database or DQCLUSTER_GATE_ENABLED=False)"
        if self.status is GateStatus.READY:
            count = len(self.members)
            return f"ready: {'every one of the ' + str(count) + ' members' if count > 1 else 'the only member'} runs {self.ours}"
        if self.status is GateStatus.WAITING:
            names = ", ".join(m.describe() for m in self.waiting_for)
            return f"waiting for members behind this host ({self.ours}) to upgrade: {names}"
        seed_words = MSG_NODE_BEHIND if self.reason == "behind" else MSG_INCONSISTENT
        members = ", ".join(
            f"{m.address} ({m.version}; {'this host' if m.is_self else m.relation.value})" for m in self.members
        )
        return f"{seed_words}: this host ({self.address}) runs {self.ours}; members: {members}"

    def member_lines(self) -> list[str]:
        """One line per member: address, version, and how it stands against us."""
        lines = []
        for member in self.members:
            if member.is_self:
                note = "this host"
            else:
                note = {
                    Relation.SAME: "same version",
                    Relation.BEHIND: "behind: waiting for it to upgrade",
                    Relation.AHEAD: "ahead of this host",
                    Relation.INCONSISTENT: "inconsistent with this host",
                }[member.relation]
            lines.append(f"{member.address}: {member.version} [{note}]")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "address": self.address,
            "state": self.status.value,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "message": self.message,
            "ours": {"schema": self.ours.schema, "api_extensions": self.ours.api_extensions},
            "members": [m.as_dict() for m in self.members],
            "waiting_for": [m.address for m in self.waiting_for],
            "ahead": [m.address for m in self.ahead],
            "inconsistent": [m.address for m in self.inconsistent],
            "registered": self.registered,
            "bootstrapped": self.bootstrapped,
            "skipped": self.skipped,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


def _member_infos(ours: Version, address: str, rows: Iterable[tuple]) -> tuple[MemberInfo, ...]:
    infos = []
    for row_address, schema, api, heartbeat in rows:
        version = Version(int(schema), int(api))
        infos.append(
            MemberInfo(
                address=str(row_address),
                schema=version.schema,
                api_extensions=version.api_extensions,
                relation=relation(ours, version),
                is_self=str(row_address) == address,
                heartbeat=as_utc(heartbeat),
            )
        )
    return tuple(infos)


_STATUS_OF_STATE = {
    GateState.READY: (GateStatus.READY, None),
    GateState.PEERS_BEHIND: (GateStatus.WAITING, None),
    GateState.WE_ARE_BEHIND: (GateStatus.REFUSED, "behind"),
    GateState.INCONSISTENT: (GateStatus.REFUSED, "inconsistent"),
}


# --------------------------------------------------------------------------------------
# The gate


STMT_SELECT_MEMBERS_WITH_HEARTBEAT = "SELECT address, schema, api_extensions, heartbeat FROM nodes ORDER BY id"


def _select_members(tx: Tx) -> list[tuple]:
    return tx.query(STMT_SELECT_MEMBERS_WITH_HEARTBEAT)


def register_node(tx: Tx, address: str, version: Version) -> bool:
    """Make sure ``address`` has a row; True if this call created (or claimed) it.

    A host that was never seen gets a new row with its version (that is how hosts join:
    a v2 host appearing in a v1 cluster makes the others see a member ahead). The single
    ``0.0.0.0`` row of a database bootstrapped by a non-clustered tool is claimed
    instead, so the first host does not leave a phantom member behind.
    """
    if select_count(tx, "SELECT COUNT(*) FROM nodes WHERE address = ?", (address,)):
        return False
    total = select_count(tx, "SELECT COUNT(*) FROM nodes")
    unclustered = select_count(tx, "SELECT COUNT(*) FROM nodes WHERE address = ?", (UNCLUSTERED_ADDRESS,))
    if total == 1 and unclustered == 1:
        tx.execute(
            "UPDATE nodes SET name = ?, address = ? WHERE address = ?",
            (address, address, UNCLUSTERED_ADDRESS),
        )
    else:
        tx.execute(
            "INSERT INTO nodes (name, address, schema, api_extensions, heartbeat) "
            f"VALUES (?, ?, ?, ?, {tx.dialect.now_utc_sql})",
            (address, address, version.schema, version.api_extensions),
        )
    logger.info("cluster gate: registered this host as member %s", address)
    return True


def touch_heartbeat(tx: Tx, address: str) -> None:
    tx.execute(f"UPDATE nodes SET heartbeat = {tx.dialect.now_utc_sql} WHERE address = ?", (address,))


class DjangoVersionGate(VersionGate):
    """The library's gate with the Django mapping's two differences.

    * Hosts are always identified by address: the bootstrap row is given our address,
      and unknown hosts register themselves (``register_node``).
    * Our version row is committed whatever the decision: every non-ready decision is a
      graceful abort (commit, apply nothing); the caller reads ``decision`` to tell
      waiting from refused. The seed rolled the row back on "please upgrade", which hid
      the real version of a refused member (canonical/lxd#15313).
    """

    def __init__(self, address: str, dir: str | None, ours: Version):
        super().__init__(address, dir or "", ours, backup_dir=None, wait_when_behind=True)
        self.registered = False
        self.bootstrapped = False

    def install(self, schema) -> None:
        if self.dir:  # no patch file unless a directory was configured (never the cwd)
            schema.file(f"{self.dir.rstrip('/')}/patch.global.sql")
        schema.check(self.check)
        schema.hook(self.hook)
        schema.bootstrap(self.bootstrap)

    def start_attempt(self) -> None:
        super().start_attempt()
        self.registered = False
        self.bootstrapped = False

    def check(self, current: int, tx: Tx) -> None:
        if current == 0:
            return  # an empty database: bootstrap() below makes our row
        self.registered = register_node(tx, self.address, self.ours)
        try:
            update_node_version(tx, self.address, self.ours)
        except Exception as error:
            raise wrap("failed to update node version info", error) from error
        touch_heartbeat(tx, self.address)
        self.decision = decide(self.ours, [Member(a, s, e) for a, s, e, _ in _select_members(tx)])
        if self.decision.state is not GateState.READY:
            raise GracefulAbort()

    def bootstrap(self, tx: Tx) -> None:
        super().bootstrap(tx)  # node 1 with our version, in the bootstrap transaction
        tx.execute(
            f"UPDATE nodes SET name = ?, address = ?, heartbeat = {tx.dialect.now_utc_sql} WHERE id = 1",
            (self.address, self.address),
        )
        self.bootstrapped = True
        self.registered = True


def raw_connection(alias: str) -> Any:
    """The DB-API connection under Django's connection for ``alias``, ready for the gate.

    The gate commits its own transaction (our version row must stick even when the
    caller later rolls back), so it refuses to run inside ``transaction.atomic()``.
    """
    connection = connections[alias]
    if connection.in_atomic_block or not connection.get_autocommit():
        raise GateUsageError(
            f"the cluster gate cannot run inside a transaction on database {alias!r}: "
            "it commits its own (call it outside transaction.atomic())"
        )
    connection.ensure_connection()
    return connection.connection


def run_gate(
    alias: str = DEFAULT_DB_ALIAS,
    *,
    address: str | None = None,
    ours: Version | None = None,
    retry_policy: RetryPolicy | None = None,
    sleeper: Callable[[float], None] = time.sleep,
) -> GateResult:
    """Register this host, write its version row and heartbeat, and decide.

    Creates the cluster tables on first use (one transaction with our row). Transient
    errors (locked, busy, lost leader, serialization failures) are retried a bounded
    number of times and then raised, never reported as "ready". Gate decisions are not
    errors: they come back as a ``GateResult``.
    """
    address = address or node_address(alias)
    ours = Version(*ours) if ours is not None else local_version(alias)
    if not gate_enabled(alias):
        return GateResult(alias, address, ours, GateStatus.READY, skipped=True)

    raw = raw_connection(alias)
    schema = SchemaProvider().schema()
    gate = DjangoVersionGate(address, patch_dir(alias), ours)
    gate.install(schema)
    database = Database.of(raw)

    def attempt() -> int:
        gate.start_attempt()
        return schema.ensure(database.connection())

    try:
        retry(attempt, policy=retry_policy or RetryPolicy(), sleeper=sleeper)
    except GracefulAbort:
        if gate.decision is None:  # not our check's abort: do not hide it
            raise

    # Read the rows again after the commit: the heartbeats and, after a bootstrap
    # (no check ran), the only row there is.
    with transaction(raw, write=False) as tx:
        rows = _select_members(tx)
        checked_at = _now_in(tx)
    decision = gate.decision or decide(ours, [Member(a, s, e) for a, s, e, _ in rows])
    status, reason = _STATUS_OF_STATE[decision.state]
    result = GateResult(
        alias=alias,
        address=address,
        ours=ours,
        status=status,
        reason=reason,
        members=_member_infos(ours, address, rows),
        registered=gate.registered,
        bootstrapped=gate.bootstrapped,
        checked_at=checked_at,
    )
    logger.info("cluster gate (%s, %s): %s", alias, address, result.message)
    return result


def record_node_version(alias: str = DEFAULT_DB_ALIAS, *, address: str | None = None) -> Version:
    """Write this host's version and heartbeat into its row (after a migrate)."""
    address = address or node_address(alias)
    ours = local_version(alias)
    if not gate_enabled(alias):
        return ours
    raw = raw_connection(alias)

    def attempt() -> None:
        with transaction(raw) as tx:
            register_node(tx, address, ours)
            update_node_version(tx, address, ours)
            touch_heartbeat(tx, address)

    retry(attempt)
    return ours


def cluster_tables_exist(alias: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether the ``nodes`` table exists in ``alias``'s database (read-only)."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        return "nodes" in connection.introspection.table_names(cursor)


def read_members(alias: str = DEFAULT_DB_ALIAS, raw: Any = None) -> list[tuple[str, Version, dt.datetime | None]]:
    """Every row of ``nodes`` as (address, version, heartbeat), read-only (no gate run).

    ``raw``: a DB-API connection to read through instead of the alias's own.
    """
    raw = raw if raw is not None else raw_connection(alias)
    with transaction(raw, write=False) as tx:
        rows = _select_members(tx)
    return [(str(a), Version(int(s), int(e)), as_utc(h)) for a, s, e, h in rows]


def remove_member(alias: str, address: str, *, our_address: str | None = None) -> int:
    """Delete the row of a dead member so the others stop waiting for it.

    The documented escape hatch for "one dead member blocks everyone"
    (canonical/lxd#6757, #8388). Refuses to remove this host's own row. Returns the
    number of rows removed (0: no such member).
    """
    our_address = our_address or node_address(alias)
    if address == our_address:
        raise GateUsageError(f"refusing to remove this host's own row ({address})")
    raw = raw_connection(alias)

    def attempt() -> int:
        with transaction(raw) as tx:
            return tx.execute("DELETE FROM nodes WHERE address = ?", (address,))

    removed = retry(attempt)
    if removed:
        logger.warning("cluster gate: removed member %s from the nodes table of %r", address, alias)
    return int(removed or 0)


# --------------------------------------------------------------------------------------
# Waiting


def wait_max_interval() -> float:
    value = getattr(settings, "DQCLUSTER_WAIT_MAX_INTERVAL", 30.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise ImproperlyConfigured(
            f"settings.DQCLUSTER_WAIT_MAX_INTERVAL must be a positive number of seconds, not {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class WaitProgress:
    """What a waiting caller is told after each check."""

    attempt: int
    elapsed: float
    result: GateResult | None
    error: BaseException | None = None
    next_check_in: float | None = None  # None: this was the last check


def wait_for_gate(
    alias: str = DEFAULT_DB_ALIAS,
    *,
    timeout: float,
    on_progress: Callable[[WaitProgress], None] | None = None,
    initial_delay: float = 1.0,
    max_delay: float | None = None,
    sleeper: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    check: Callable[[str], GateResult] | None = None,
) -> GateResult:
    """Re-run the gate with exponential backoff until it is not "waiting" or time is up.

    Each check re-writes our row and heartbeat, so a member that has meanwhile
    upgraded is seen at the next check (no push notification needed: seed-behaviour §5,
    "the gate must not depend on push notifications"). A refusal ends the wait at once:
    only upgrading this host cures it. A transient database error (no leader, locked) is
    reported and waited out like "waiting"; if the wait ends on one, it is raised.
    Returns the last result: READY, REFUSED, or WAITING when the timeout passed.
    """
    check = check or (lambda a: run_gate(a))
    if max_delay is None:
        max_delay = wait_max_interval()
    start = clock()
    delay = max(initial_delay, 0.01)
    attempt = 0
    while True:
        attempt += 1
        result: GateResult | None = None
        error: BaseException | None = None
        try:
            result = check(alias)
        except Exception as exc:  # noqa: BLE001 - only transient ones are waited out
            if not is_transient_error(exc):
                raise
            error = exc
            connections[alias].close()  # reconnect at the next check
        elapsed = clock() - start
        finished = result is not None and result.status is not GateStatus.WAITING
        remaining = timeout - elapsed
        if finished or remaining <= 0:
            if on_progress:
                on_progress(WaitProgress(attempt, elapsed, result, error, None))
            if result is None:
                raise error  # type: ignore[misc]
            return result
        pause = min(delay, max_delay, remaining)
        if on_progress:
            on_progress(WaitProgress(attempt, elapsed, result, error, pause))
        sleeper(pause)
        delay = min(delay * 2, max_delay)
