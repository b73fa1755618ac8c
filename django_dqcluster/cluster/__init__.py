"""The cluster version gate: Python port of the seed's ``internal/db/cluster`` + ``schema``.

No Django here: everything works on a plain DB-API connection (sqlite3, psycopg, or
``django_dqcluster.dbapi``). The caller provides three things: a way to get a DB-API
connection, this node's cluster address, and its data directory::

    cluster = Cluster(
        BasicAPIExtensions(len(settings.DQCLUSTER_API_EXTENSIONS)),
        SchemaProvider(),
        database=Database(lambda: dbapi.connect(...)),  # or an open connection
    )
    if cluster.ensure_schema(address, data_dir):
        ...  # every member runs our version and the schema is up to date
    else:
        ...  # cluster.last_gate says why we wait; call ensure_schema again later

or, through the seed's driver registry: ``Cluster(..., database_io=DBAPIDatabaseIO(connect))``
then ``cluster.open(server_store)``; ``open_and_ensure`` adds the leader wait and the node
id lookup. The connection must not be inside a transaction (see ``tx.py``).

See ``cluster.py`` for the flow and ``seed-behaviour.md`` for the behaviour it ports.
"""

from .cluster import (
    PATCH_FILE_NAME,
    APIExtensions,
    BasicAPIExtensions,
    Cluster,
    SchemaProvider,
    SchemaProviderProtocol,
    VersionGate,
    fresh_schema,
    open_and_ensure,
    update_from_v0,
    update_from_v1,
    wait_for_database,
)
from .database import (
    CLUSTER_DSN,
    Database,
    DatabaseIO,
    DBAPIDatabaseIO,
    DQClusterNameProvider,
    Driver,
    MemoryServerStore,
    NameProvider,
    ServerInfo,
    ServerStore,
    sqlite_connect,
)
from .dialect import Dialect, dialect_for, is_transient_error, register_dialect, split_sqlite_script
from .errors import (
    ClusterError,
    ClusterOpenError,
    GateError,
    GracefulAbort,
    InconsistentVersionsError,
    Member,
    NodeBehindError,
    NodeNotFoundError,
    NodeVersionUpdateError,
    SchemaError,
    SomeNodesAreBehind,
    TransactionStateError,
    UnclusteredNodesError,
    Version,
)
from .fs import FileSystem, RealFileSystem
from .nodes import (
    MemberState,
    MemberStatus,
    gate_decision,
    local_node_id,
    member_states,
    node_is_outdated,
    update_node_version,
)
from .retry import RetryPolicy, retry
from .schema import Schema, schema_table_exists
from .sql import (
    FRESH_SCHEMA,
    STMT_INITIAL_NODE,
    STMT_INSERT_SCHEMA_VERSION,
    STMT_SELECT_NODES_VERSIONS,
    STMT_UPDATE_NODE_VERSION,
)
from .tx import Tx, transaction
from .versions import GateDecision, GateState, compare_versions, decide

__all__ = [
    "APIExtensions",
    "BasicAPIExtensions",
    "CLUSTER_DSN",
    "Cluster",
    "ClusterError",
    "ClusterOpenError",
    "DBAPIDatabaseIO",
    "DQClusterNameProvider",
    "Database",
    "DatabaseIO",
    "Dialect",
    "Driver",
    "FRESH_SCHEMA",
    "FileSystem",
    "GateDecision",
    "GateError",
    "GateState",
    "GracefulAbort",
    "InconsistentVersionsError",
    "Member",
    "MemberState",
    "MemberStatus",
    "MemoryServerStore",
    "NameProvider",
    "NodeBehindError",
    "NodeNotFoundError",
    "NodeVersionUpdateError",
    "PATCH_FILE_NAME",
    "RealFileSystem",
    "RetryPolicy",
    "STMT_INITIAL_NODE",
    "STMT_INSERT_SCHEMA_VERSION",
    "STMT_SELECT_NODES_VERSIONS",
    "STMT_UPDATE_NODE_VERSION",
    "Schema",
    "SchemaError",
    "SchemaProvider",
    "SchemaProviderProtocol",
    "ServerInfo",
    "ServerStore",
    "SomeNodesAreBehind",
    "TransactionStateError",
    "Tx",
    "UnclusteredNodesError",
    "Version",
    "VersionGate",
    "compare_versions",
    "decide",
    "dialect_for",
    "fresh_schema",
    "gate_decision",
    "is_transient_error",
    "local_node_id",
    "member_states",
    "node_is_outdated",
    "open_and_ensure",
    "register_dialect",
    "retry",
    "schema_table_exists",
    "split_sqlite_script",
    "sqlite_connect",
    "transaction",
    "update_from_v0",
    "update_from_v1",
    "update_node_version",
    "wait_for_database",
]
