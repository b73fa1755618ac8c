"""``Cluster``: open the cluster database and pass the version gate before migrating.

A node's version is ``(number of schema updates, number of API extensions)``. Every member
writes its version into its row of ``nodes``; schema updates run only when every member
reports the same version, so new migrations never run under old code. During a rolling
upgrade the first upgraded members wait (``ensure_schema`` returns False), and the last
one to upgrade applies the updates.

``ensure_schema(address, dir)`` runs ``Schema.ensure`` with:

* the patch file ``<dir>/patch.global.sql`` (operator repair SQL);
* a *check* that, unless the database is empty, writes our version into our row (or the
  single ``0.0.0.0`` row of a never-clustered node) and asks the gate
  (``versions.decide``): peers behind → graceful abort: our row is committed, nothing is
  applied, return False; a peer ahead → ``NodeBehindError``; mixed →
  ``InconsistentVersionsError`` (both roll back, as in the seed);
* a *hook* that backs up ``<dir>/global`` to ``<dir>/global.bak`` once before the first
  update of a never-clustered node;
* a *bootstrap* that inserts the initial node row in the same transaction as the fresh
  schema.

Fixes relative to the seed (seed-behaviour.md §4.8): transient errors are retried and
never reported as success (#65); the "peers are behind" outcome belongs to one attempt
(#66); bootstrap is one transaction (#67); the gate ignores row order (#69); with
``wait_when_behind=True`` (LXD 2025, #70) a node that is behind also waits, with its
version row committed, which makes same-schema downgrades recoverable.

#71 (re-check on a timer, best-effort notifications) is not here: it belongs to the
Celery task / management command that calls ``ensure_schema`` again.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Protocol

from .database import (
    CLUSTER_DSN,
    Database,
    DatabaseIO,
    DBAPIDatabaseIO,
    DQClusterNameProvider,
    NameProvider,
)
from .dialect import is_transient_error
from .errors import (
    ClusterError,
    ClusterOpenError,
    GracefulAbort,
    SomeNodesAreBehind,
    UnclusteredNodesError,
    Version,
    wrap,
)
from .fs import FileSystem, RealFileSystem
from .nodes import count_unclustered_nodes, gate_decision, local_node_id, update_node_version
from .retry import RetryPolicy, retry
from .schema import Schema, Update, schema_table_exists
from .sql import FRESH_SCHEMA, STMT_INITIAL_NODE, UNCLUSTERED_ADDRESS, UPDATE_FROM_V0, UPDATE_FROM_V1
from .tx import Tx, ping
from .versions import GateDecision, GateState

logger = logging.getLogger("django_dqcluster.cluster")

PATCH_FILE_NAME = "patch.global.sql"
BACKUP_DIR = "global"


class APIExtensions(Protocol):
    def count(self) -> int: ...


class BasicAPIExtensions:
    """A fixed number of API extensions (Django: ``len(settings.DQCLUSTER_API_EXTENSIONS)``)."""

    def __init__(self, count: int):
        self._count = count

    def count(self) -> int:
        return self._count


# --------------------------------------------------------------------------------------
# The cluster database's own schema


def update_from_v0(tx: Tx) -> None:
    """v0 -> v1, "the dawn of clustering": config, nodes, operations, tasks."""
    tx.script(UPDATE_FROM_V0)


def update_from_v1(tx: Tx) -> None:
    """v1 -> v2, "the dawn of discovery": services."""
    tx.script(UPDATE_FROM_V1)


def fresh_schema() -> str:
    """The flattened schema used to bootstrap an empty cluster database (version 2)."""
    return FRESH_SCHEMA


class SchemaProviderProtocol(Protocol):
    def updates(self) -> list[Update]: ...

    def schema(self) -> Schema: ...


class SchemaProvider:
    """The cluster database's schema: two updates and their flattened fresh form."""

    def __init__(self, filesystem: FileSystem | None = None):
        self._filesystem = filesystem if filesystem is not None else RealFileSystem()

    def updates(self) -> list[Update]:
        return [update_from_v0, update_from_v1]

    def schema(self) -> Schema:
        schema = Schema(self.updates(), filesystem=self._filesystem)
        schema.fresh(FRESH_SCHEMA)
        return schema


# --------------------------------------------------------------------------------------
# Cluster


class VersionGate:
    """The check, hook and bootstrap ``ensure_schema`` installs on its Schema.

    One per ``ensure_schema`` call: ``backup_done`` lasts for the call (the seed backs up
    at most once per call), ``decision`` for one attempt (``start_attempt`` clears it, so
    a "peers are behind" seen by a failed attempt cannot outlive it: §4.8 #66).
    """

    def __init__(
        self,
        address: str,
        dir: str,
        ours: Version,
        *,
        filesystem: FileSystem | None = None,
        backup_dir: str | None = BACKUP_DIR,
        wait_when_behind: bool = False,
    ):
        self.address = address
        self.dir = dir
        self.ours = Version(*ours)
        self.filesystem = filesystem if filesystem is not None else RealFileSystem()
        self.backup_dir = backup_dir
        self.wait_when_behind = wait_when_behind
        self.backup_done = False
        self.decision: GateDecision | None = None

    def install(self, schema: Schema) -> None:
        """Set the patch file, check, hook and bootstrap, in the seed's order."""
        schema.file(os.path.join(self.dir, PATCH_FILE_NAME))
        schema.check(self.check)
        schema.hook(self.hook)
        schema.bootstrap(self.bootstrap)

    def start_attempt(self) -> None:
        self.decision = None

    def _unclustered(self, tx: Tx) -> bool:
        try:
            count = count_unclustered_nodes(tx)
        except Exception as error:
            raise wrap("failed to fetch unclustered nodes count", error) from error
        if count > 1:
            raise UnclusteredNodesError()
        return count == 1

    def check(self, current: int, tx: Tx) -> None:
        """Write our version row, then let the gate decide (inside the ensure transaction).

        Peers behind (or we behind, in ``wait_when_behind`` mode) → ``GracefulAbort``, so
        the row is committed and nothing applied; a peer ahead or inconsistent versions →
        the gate's error, which rolls the row back as in the seed.
        """
        if current == 0:
            return  # bootstrapping: we are the only node, and there is no row yet
        address = UNCLUSTERED_ADDRESS if self._unclustered(tx) else self.address
        try:
            update_node_version(tx, address, self.ours)
        except Exception as error:
            raise wrap("failed to update node version info", error) from error
        self.decision = gate_decision(tx, self.ours)
        state = self.decision.state
        if state is GateState.READY:
            return
        if state is GateState.PEERS_BEHIND:
            raise GracefulAbort()
        if state is GateState.WE_ARE_BEHIND and self.wait_when_behind:
            raise GracefulAbort()
        raise self.decision.error()

    def hook(self, version: int, tx: Tx) -> None:
        """Back up a never-clustered node's data once before its first schema change."""
        try:
            exists = schema_table_exists(tx)
        except Exception as error:
            raise wrap("failed to check if schema table exists", error) from error
        if not exists:
            return  # fresh database: nothing to back up
        unclustered = self._unclustered(tx)
        # Clustered nodes are not backed up: replication would repopulate the directory.
        if not unclustered or self.backup_done or self.backup_dir is None:
            return
        source = os.path.join(self.dir, self.backup_dir)
        try:
            self.filesystem.copy_dir(source, source + ".bak")
        except Exception as error:
            raise wrap("failed to backup global database", error) from error
        self.backup_done = True

    def bootstrap(self, tx: Tx) -> None:
        """Insert node 1 (``0.0.0.0``) with our version, in the bootstrap transaction."""
        tx.execute(STMT_INITIAL_NODE, (self.ours.schema, self.ours.api_extensions))
        sync = tx.dialect.sync_identity_sql("nodes")
        if sync:
            tx.query(sync)


class Cluster:
    """The cluster database of this node and its version gate.

    Options (all keyword, all with real defaults):

    * ``database``: a DB-API connection or a ``Database`` to use instead of ``open()``;
    * ``database_io``: how ``open()`` creates, registers and opens drivers
      (default ``DBAPIDatabaseIO()``, i.e. ``django_dqcluster.dbapi.connect``);
    * ``filesystem``: for the ``global`` backup (default: the real one);
    * ``name_provider``: unique driver names (default ``DQClusterNameProvider()``);
    * ``sleeper``: ``sleep(seconds)`` between retries (default ``time.sleep``);
    * ``retry_policy``: attempts and delay for transient errors (default 5 × 0.25 s);
    * ``wait_when_behind``: LXD-2025 mode, wait instead of failing when a peer is ahead;
    * ``backup_dir``: directory under ``dir`` backed up before updating a never-clustered
      node (default ``"global"``, as the seed); None disables it, e.g. on PostgreSQL
      where the data is not in ``dir``.
    """

    def __init__(
        self,
        api_extensions: APIExtensions,
        schema_provider: SchemaProviderProtocol,
        *,
        database: Any = None,
        database_io: DatabaseIO | None = None,
        filesystem: FileSystem | None = None,
        name_provider: NameProvider | None = None,
        sleeper: Callable[[float], None] | None = None,
        retry_policy: RetryPolicy | None = None,
        wait_when_behind: bool = False,
        backup_dir: str | None = BACKUP_DIR,
    ):
        self._api_extensions = api_extensions
        self._schema_provider = schema_provider
        self._database = database
        self._database_io = database_io if database_io is not None else DBAPIDatabaseIO()
        self._filesystem = filesystem if filesystem is not None else RealFileSystem()
        self._name_provider = name_provider if name_provider is not None else DQClusterNameProvider()
        self._sleeper = sleeper if sleeper is not None else time.sleep
        self._retry_policy = retry_policy if retry_policy is not None else RetryPolicy()
        self._wait_when_behind = wait_when_behind
        self._backup_dir = backup_dir
        self._last_gate: GateDecision | None = None

    # -- opening ------------------------------------------------------------------------

    def open(self, server_store: Any, **driver_options: Any) -> None:
        """Create a driver for ``server_store``, register it under a fresh name, open it.

        No connection is made yet: the first transaction makes it. Every call registers
        its own new name, so a second ``open`` on the same Cluster works (the seed
        registered only once per Cluster and then failed with an unknown driver).
        """
        driver = self._database_io.create(server_store, **driver_options)
        name = self._name_provider.driver_name()
        if name not in self._database_io.drivers():
            self._database_io.register(name, driver)
        try:
            database = self._database_io.open(name, CLUSTER_DSN)
        except Exception as error:
            self._database = None
            raise wrap("cannot open cluster database", error, ClusterOpenError) from error
        self._database = database

    def db(self) -> Any:
        """The cluster database: what ``open()`` made, or the ``database`` option."""
        return self._database

    def schema_version(self) -> int:
        """This code's schema version: the number of updates."""
        return len(self._schema_provider.updates())

    @property
    def last_gate(self) -> GateDecision | None:
        """The gate's decision in the last ``ensure_schema`` (None: none was needed)."""
        return self._last_gate

    def _require_database(self) -> Database:
        if self._database is None:
            raise ClusterError("the cluster database is not open: call open() first")
        return Database.of(self._database)

    # -- ensure -------------------------------------------------------------------------

    def ensure_schema(self, address: str, dir: str) -> bool:
        """Pass the version gate and apply pending schema updates.

        ``address`` is this node's cluster address (its row in ``nodes``); ``dir`` the
        node's data directory (patch file, ``global`` backup).

        Returns True when the schema is up to date and every member runs our version;
        False when this node must wait (peers behind, or we are behind in
        ``wait_when_behind`` mode) — our version row is committed either way. Raises the
        gate's errors (``NodeBehindError``, ``InconsistentVersionsError``) and any
        database error that survived the retries.
        """
        database = self._require_database()
        api_count = self._api_extensions.count()
        ours = Version(len(self._schema_provider.updates()), api_count)
        schema = self._schema_provider.schema()
        gate = VersionGate(
            address,
            dir,
            ours,
            filesystem=self._filesystem,
            backup_dir=self._backup_dir,
            wait_when_behind=self._wait_when_behind,
        )
        gate.install(schema)

        def attempt() -> int:
            gate.start_attempt()
            return schema.ensure(database.connection())

        try:
            retry(
                attempt,
                policy=self._retry_policy,
                sleeper=self._sleeper,
                before_retry=lambda error: database.discard_if_broken(),
            )
        except GracefulAbort:
            if gate.decision is None:  # not our check's abort: do not hide it
                raise
            self._last_gate = gate.decision
            logger.info("cluster gate: %s", gate.decision.state.value)
            return False
        self._last_gate = gate.decision
        return True


# --------------------------------------------------------------------------------------
# Start-up sequence (the seed's db.Cluster.Open wrapper)


def _log_connect_attempt(attempt: int, error: BaseException) -> None:
    """Debug for the first 5 attempts, then warnings, and past 15 only every 5th."""
    message = "Failed connecting to global database (attempt %d): %s"
    if attempt <= 5:
        logger.debug(message, attempt, error)
    elif attempt <= 15 or attempt % 5 == 0:
        logger.warning(message, attempt, error)


def wait_for_database(
    database: Database,
    *,
    timeout: float = 60.0,
    interval: float = 2.0,
    sleeper: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Ping until the database answers (e.g. a leader is elected) or ``timeout`` passes.

    Only transient errors (no leader, lost connection, …) are waited out; anything else
    is raised at once. As in the seed, the sleep comes before the deadline check.
    """
    deadline = clock() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            ping(database.connection())
            return
        except Exception as error:
            if not is_transient_error(error):
                raise
            database.discard_if_broken()
            _log_connect_attempt(attempt, error)
        sleeper(interval)
        if clock() >= deadline:
            raise ClusterError("failed to connect to cluster database")


def open_and_ensure(
    cluster: Cluster,
    server_store: Any,
    address: str,
    dir: str,
    *,
    timeout: float = 60.0,
    interval: float = 2.0,
    sleeper: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **driver_options: Any,
) -> int:
    """Open, wait for the database, ensure the schema; return this node's id.

    Raises ``SomeNodesAreBehind`` (with ``node_id`` set, and the members' versions) when
    the node must wait: the id is resolved first so the caller can keep heartbeating.
    """
    cluster.open(server_store, **driver_options)
    database = Database.of(cluster.db())
    wait_for_database(database, timeout=timeout, interval=interval, sleeper=sleeper, clock=clock)
    try:
        ready = cluster.ensure_schema(address, dir)
    except Exception as error:
        raise wrap("failed to ensure schema", error) from error
    node_id = local_node_id(database.connection(), address)
    if not ready:
        gate = cluster.last_gate
        raise SomeNodesAreBehind(
            node_id=node_id,
            ours=gate.ours if gate else None,
            members=gate.members if gate else (),
        )
    return node_id
