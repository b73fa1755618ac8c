"""The SQL texts of the seed, verbatim (SQLite dialect, qmark placeholders).

They are written once, for SQLite, exactly as the seed has them (tests compare these
objects, and ``STMT_INITIAL_NODE`` keeps its 226-byte layout with trailing spaces). When a
connection is not SQLite, ``dialect.Dialect.translate`` rewrites placeholders, functions
and column types at execution time; the constants themselves never change.

Seed name → here:

=========================  ==============================
StmtSelectNodesVersions    STMT_SELECT_NODES_VERSIONS
StmtUpdateNodeVersion      STMT_UPDATE_NODE_VERSION
StmtInitialNode            STMT_INITIAL_NODE
freshSchema/FreshSchema()  FRESH_SCHEMA / fresh_schema()
schema.StmtSchemaTableExists  STMT_SCHEMA_TABLE_EXISTS
schema.StmtCreateTable     STMT_CREATE_SCHEMA_TABLE
schema.StmtSelectSchemaVersions  STMT_SELECT_SCHEMA_VERSIONS
schema.StmtSelectTableSQL  STMT_SELECT_TABLE_SQL
schema.StmtInsertSchemaVersion  STMT_INSERT_SCHEMA_VERSION
schema.StmtDump            STMT_DUMP (a %-format with the version)
=========================  ==============================
"""

# Exported for reference but never executed. The seed ran it in checkClusterIsUpgradable;
# the gate runs STMT_SELECT_NODES_MEMBERS there instead, because the seed's statement
# returns bare (schema, api_extensions) pairs while the gate's errors must name every
# member with its version (GateError.members and report(), canonical/lxd#5045). Running
# both would only read the same rows twice. STMT_SELECT_NODES_MEMBERS reads exactly these
# rows (no WHERE, so pending nodes count too); tests/cluster/test_cluster_gate.py
# (test_gate_reads_the_same_rows_as_the_seed_versions_select) checks that.
STMT_SELECT_NODES_VERSIONS = """
SELECT schema, api_extensions FROM nodes
"""

STMT_UPDATE_NODE_VERSION = """
UPDATE nodes SET schema=?, api_extensions=? WHERE address=?
"""

# Trailing spaces are part of the seed's literal (226 bytes); keep them.
STMT_INITIAL_NODE = (
    "\n"
    "INSERT INTO nodes \n"
    "            (id, \n"
    "             name, \n"
    "             address, \n"
    "             schema, \n"
    "             api_extensions) \n"
    "VALUES     (1, \n"
    "            'none', \n"
    "            '0.0.0.0', \n"
    "            ?, \n"
    "            ?) \n"
)

# Not a seed constant: what the gate runs where the seed ran STMT_SELECT_NODES_VERSIONS
# (see there for why). The ORDER BY only makes reports stable; the decision ignores order.
STMT_SELECT_NODES_MEMBERS = """
SELECT address, schema, api_extensions FROM nodes ORDER BY id
"""

# Used by the status helpers (member_states) and node identity lookup.
STMT_SELECT_NODES_STATUS = """
SELECT id, address, schema, api_extensions, heartbeat, pending FROM nodes ORDER BY id
"""

UNCLUSTERED_ADDRESS = "0.0.0.0"

STMT_COUNT_UNCLUSTERED_NODES = "SELECT COUNT(*) FROM nodes WHERE address='0.0.0.0'"

STMT_SCHEMA_TABLE_EXISTS = """
SELECT COUNT(name) FROM sqlite_master WHERE type = 'table' AND name = 'schema'
"""

STMT_CREATE_SCHEMA_TABLE = """
CREATE TABLE schema (
    id         INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at DATETIME NOT NULL,
    UNIQUE (version)
)
"""

STMT_SELECT_SCHEMA_VERSIONS = """
SELECT version FROM schema ORDER BY version
"""

STMT_SELECT_TABLE_SQL = """
SELECT sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'schema' ORDER BY name
"""

STMT_INSERT_SCHEMA_VERSION = """
INSERT INTO schema (version, updated_at) VALUES (?, strftime("%s"))
"""

STMT_DUMP = """
INSERT INTO schema (version, updated_at) VALUES (%d, strftime("%%s"))
"""

# The cluster database's flattened schema (the seed's freshSchema, byte for byte,
# including its mix of tabs and spaces). The ``schema`` table is not part of it:
# Schema.ensure creates that table first.
FRESH_SCHEMA = """
CREATE TABLE config (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    UNIQUE (key)
);

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT DEFAULT '',
    address TEXT NOT NULL,
    schema INTEGER NOT NULL,
    api_extensions INTEGER NOT NULL,
    heartbeat DATETIME DEFAULT CURRENT_TIMESTAMP,
    pending INTEGER NOT NULL DEFAULT 0,
    UNIQUE (name),
    UNIQUE (address)
);

CREATE TABLE operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    uuid TEXT NOT NULL,
    node_id TEXT NOT NULL,
    type TEXT NOT NULL,
    UNIQUE (uuid),
    FOREIGN KEY (node_id) REFERENCES nodes (id) ON DELETE CASCADE
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    uuid TEXT NOT NULL,
\tnode_id TEXT NOT NULL,
\tquery TEXT NOT NULL,
\tschedule INTEGER NOT NULL,
    result TEXT NOT NULL,
    status INTEGER NOT NULL,
    UNIQUE (uuid),
    FOREIGN KEY (node_id) REFERENCES nodes (id) ON DELETE CASCADE
);

CREATE TABLE services (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    daemon_address TEXT NOT NULL,
\tdaemon_nonce TEXT NOT NULL,
\theartbeat DATETIME DEFAULT CURRENT_TIMESTAMP,
\tUNIQUE (name),
\tUNIQUE (address),
\tUNIQUE (daemon_address)
);

INSERT INTO schema (version, updated_at) VALUES (2, strftime("%s"));
"""

# Update v0 -> v1, "the dawn of clustering": config, nodes, operations, tasks.
UPDATE_FROM_V0 = """
CREATE TABLE config (
\tid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
\tkey TEXT NOT NULL,
\tvalue TEXT,
\tUNIQUE (key)
);

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT DEFAULT '',
    address TEXT NOT NULL,
    schema INTEGER NOT NULL,
    api_extensions INTEGER NOT NULL,
    heartbeat DATETIME DEFAULT CURRENT_TIMESTAMP,
    pending INTEGER NOT NULL DEFAULT 0,
    UNIQUE (name),
    UNIQUE (address)
);

CREATE TABLE operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    uuid TEXT NOT NULL,
\tnode_id TEXT NOT NULL,
\ttype TEXT NOT NULL,
    UNIQUE (uuid),
    FOREIGN KEY (node_id) REFERENCES nodes (id) ON DELETE CASCADE
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    uuid TEXT NOT NULL,
\tnode_id TEXT NOT NULL,
\tquery TEXT NOT NULL,
\tschedule INTEGER NOT NULL,
    result TEXT NOT NULL,
    status INTEGER NOT NULL,
    UNIQUE (uuid),
    FOREIGN KEY (node_id) REFERENCES nodes (id) ON DELETE CASCADE
);
"""

# Update v1 -> v2, "the dawn of discovery": services.
UPDATE_FROM_V1 = """
CREATE TABLE services (
\tid INTEGER PRIMARY KEY,
\tname TEXT NOT NULL,
\taddress TEXT NOT NULL,
\tdaemon_address TEXT NOT NULL,
\tdaemon_nonce TEXT NOT NULL,
\theartbeat DATETIME DEFAULT CURRENT_TIMESTAMP,
\tUNIQUE (name),
\tUNIQUE (address),
\tUNIQUE (daemon_address)
);
"""
