"""Non-deterministic SQL on a 3-node cluster, as a specification.

Every replica executes every replicated statement, so values that differ from call to call
(``random()``, ``'now'``) must be fixed in the log entry, and values that differ from node to
node (``sqlite_version()``, ``'localtime'``, per-connection counters) must be refused before
anything is applied. Writes go through a follower, so they are forwarded to the leader.

One cluster serves the module (starting one takes about a second); every test uses its own
tables.
"""

import datetime
import time
import uuid

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.databases import APPLIED_TABLE
from django_dqcluster.store.local_cluster import LocalCluster

from .conftest import rows_on_every_node

CLOCK_TOLERANCE = 5.0  # seconds between the fixed time and the test's clock


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Same as conftest's ``cluster`` (three node processes on 127.0.0.1), shared by the module."""
    with LocalCluster(str(tmp_path_factory.mktemp("determinism") / "cluster"), 3) as running:
        yield running


@pytest.fixture
def connections(cluster):
    opened = []

    def _open(node, **kwargs):
        conn = node.connect(**kwargs)
        opened.append(conn)
        return conn

    yield _open
    for conn in opened:
        conn.close()


@pytest.fixture
def follower(cluster):
    leader = cluster.leader()
    return next(node for node in cluster.nodes if node is not leader and node.alive)


@pytest.fixture
def writer(connections, follower):
    """A session on a follower: its writes are forwarded to the leader."""
    return connections(follower)


@pytest.fixture
def table(writer):
    name = f"t_{uuid.uuid4().hex[:10]}"
    writer.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v)")
    return name


def identical_everywhere(cluster, sql):
    """The rows ``sql`` returns, after checking every replica returns exactly the same ones."""
    results = rows_on_every_node(cluster, sql)
    assert len(results) == len(cluster.nodes)
    first = next(iter(results.values()))
    for index, rows in results.items():
        assert rows == first, f"node{index} differs from the others"
    return first


def assert_nothing_applied(cluster, table):
    assert identical_everywhere(cluster, f"SELECT count(*) FROM {table}") == [(0,)]


def utc_seconds(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()


# -- values fixed in the log entry ----------------------------------------------------------------


def test_random_and_randomblob_leave_identical_rows_on_every_replica(cluster, writer):
    writer.execute("CREATE TABLE rnd (id INTEGER PRIMARY KEY, r, b)")
    writer.execute("INSERT INTO rnd (r, b) VALUES (random(), randomblob(8))")
    writer.executemany("INSERT INTO rnd (r, b) VALUES (random(), randomblob(8))", [()] * 5)
    writer.execute("INSERT INTO rnd (r, b) SELECT random(), randomblob(8) FROM rnd")
    rows = identical_everywhere(cluster, "SELECT id, r, b FROM rnd ORDER BY id")
    assert len(rows) == 12
    assert all(isinstance(r, int) and isinstance(b, bytes) and len(b) == 8 for _, r, b in rows)
    # Fixed per entry, yet still random: no two rows got the same values.
    assert len({r for _, r, _ in rows}) == 12
    assert len({b for _, _, b in rows}) == 12


def test_random_in_an_update_differs_per_row_and_is_identical_on_every_replica(cluster, writer, table):
    writer.executemany(f"INSERT INTO {table} (v) VALUES (?)", [(i,) for i in range(50)])
    writer.execute(f"UPDATE {table} SET v = random()")
    rows = identical_everywhere(cluster, f"SELECT v FROM {table} ORDER BY id")
    assert len(set(rows)) == 50


def test_now_in_date_functions_leaves_identical_rows_on_every_replica(cluster, writer):
    writer.execute("CREATE TABLE clock (id INTEGER PRIMARY KEY, dt, epoch, jd, d, t)")
    for _ in range(3):
        writer.execute(
            "INSERT INTO clock (dt, epoch, jd, d, t) VALUES "
            "(datetime('now'), strftime('%s','now'), julianday('now'), date('now'), time('now'))"
        )
    rows = identical_everywhere(cluster, "SELECT dt, epoch, jd, d, t FROM clock ORDER BY id")
    assert len(rows) == 3
    assert all(value is not None for row in rows for value in row)


def test_current_timestamp_column_defaults_are_identical_on_every_replica(cluster, writer):
    writer.execute(
        "CREATE TABLE stamped (id INTEGER PRIMARY KEY, v, "
        "ts DEFAULT CURRENT_TIMESTAMP, d DEFAULT CURRENT_DATE, t DEFAULT CURRENT_TIME)"
    )
    writer.execute("INSERT INTO stamped (v) VALUES (1)")
    writer.executemany("INSERT INTO stamped (v) VALUES (?)", [(2,), (3,)])
    rows = identical_everywhere(cluster, "SELECT ts, d, t FROM stamped ORDER BY id")
    assert len(rows) == 3
    for ts, d, t in rows:
        assert ts == f"{d} {t}"


def test_the_fixed_time_is_close_to_real_time(cluster, writer):
    writer.execute(
        "CREATE TABLE real_clock (id INTEGER PRIMARY KEY, dt, epoch, jd, "
        "ts DEFAULT CURRENT_TIMESTAMP)"
    )
    before = time.time()
    writer.execute("INSERT INTO real_clock (dt, epoch, jd) VALUES (datetime('now'), strftime('%s','now'), julianday('now'))")
    after = time.time()
    ((dt, epoch, jd, ts),) = identical_everywhere(cluster, "SELECT dt, epoch, jd, ts FROM real_clock")
    for seconds in (utc_seconds(dt), int(epoch), (jd - 2440587.5) * 86400, utc_seconds(ts)):
        assert before - CLOCK_TOLERANCE <= seconds <= after + CLOCK_TOLERANCE
    # One instant per entry: every way of asking for 'now' agrees.
    assert dt == ts
    assert int(epoch) == int(utc_seconds(dt))


def test_a_transaction_mixing_reads_and_non_deterministic_writes_is_identical_on_every_replica(cluster, writer, table):
    writer.execute("BEGIN")
    writer.execute(f"INSERT INTO {table} (v) VALUES (random())")
    assert writer.execute("SELECT random()").fetchone()[0] is not None  # a read, not replayed
    writer.execute(f"INSERT INTO {table} (v) VALUES (random())")
    writer.execute("SAVEPOINT sp")
    writer.execute(f"INSERT INTO {table} (v) VALUES (randomblob(4))")
    writer.execute("ROLLBACK TO sp")
    writer.execute(f"INSERT INTO {table} (v) VALUES (datetime('now'))")
    seen_by_transaction = writer.execute(f"SELECT v FROM {table} ORDER BY id").fetchall()
    writer.execute("COMMIT")
    rows = identical_everywhere(cluster, f"SELECT v FROM {table} ORDER BY id")
    assert len(rows) == 3
    # What the transaction read of its own writes is what every replica applied.
    assert rows == seen_by_transaction


def test_a_trigger_calling_random_leaves_identical_rows_on_every_replica(cluster, writer, table):
    audit = f"{table}_audit"
    writer.execute(f"CREATE TABLE {audit} (id INTEGER PRIMARY KEY, token)")
    writer.execute(
        f"CREATE TRIGGER {table}_tr AFTER INSERT ON {table} "
        f"BEGIN INSERT INTO {audit} (token) VALUES (random()); END"
    )
    writer.executemany(f"INSERT INTO {table} (v) VALUES (?)", [(1,), (2,), (3,)])
    rows = identical_everywhere(cluster, f"SELECT token FROM {audit} ORDER BY id")
    assert len(set(rows)) == 3


# -- values that depend on the node: refused ------------------------------------------------------


@pytest.mark.parametrize("function, sql", [
    ("sqlite_version", "INSERT INTO {t} (v) VALUES (sqlite_version())"),
    ("total_changes", "INSERT INTO {t} (v) VALUES (total_changes())"),
    ("last_insert_rowid", "INSERT INTO {t} (v) VALUES (last_insert_rowid())"),
    ("changes", "INSERT INTO {t} (v) SELECT changes()"),
    ("sqlite_version", "INSERT INTO {t} (v) SELECT x FROM (SELECT sqlite_version() AS x)"),
])
def test_a_write_calling_a_node_dependent_function_is_refused_naming_it(cluster, writer, table, function, sql):
    with pytest.raises(dbapi.OperationalError, match=rf"\b{function}\(\)"):
        writer.execute(sql.format(t=table))
    assert_nothing_applied(cluster, table)


def test_an_update_calling_a_node_dependent_function_is_refused_and_changes_nothing(cluster, writer, table):
    writer.execute(f"INSERT INTO {table} (v) VALUES ('original')")
    with pytest.raises(dbapi.OperationalError, match=r"total_changes\(\)"):
        writer.execute(f"UPDATE {table} SET v = total_changes()")
    assert identical_everywhere(cluster, f"SELECT v FROM {table}") == [("original",)]


@pytest.mark.parametrize("sql", [
    "INSERT INTO {t} (v) SELECT file FROM pragma_database_list",  # the node's own path
    "INSERT INTO {t} (v) SELECT page_count FROM pragma_page_count",
    "UPDATE {t} SET v = (SELECT data_version FROM pragma_data_version())",
    "INSERT INTO {t} (v) SELECT cache_size FROM pragma_cache_size",
])
def test_a_write_reading_a_pragma_of_the_nodes_own_file_or_connection_is_refused(cluster, writer, table, sql):
    """Each node ran it on its own file: every replica stored its own path, and they diverged."""
    pragma = sql.split("pragma_")[1].split()[0].rstrip("()")
    with pytest.raises(dbapi.OperationalError, match=rf"pragma_{pragma} cannot be used in a statement that writes"):
        writer.execute(sql.format(t=table))
    assert_nothing_applied(cluster, table)
    assert writer.execute("SELECT count(*) FROM pragma_database_list").fetchone() == (1,)  # reading it is fine


@pytest.mark.parametrize("sql, name", [
    ("INSERT INTO {t} (v) SELECT count(*) FROM sqlite_stmt", "sqlite_stmt"),
    ("INSERT INTO {t} (v) SELECT sum(unused) FROM dbstat", "dbstat"),
    ("UPDATE {t} SET v = (SELECT pgoffset FROM DBSTAT('main') LIMIT 1)", "dbstat"),
])
def test_a_write_reading_a_virtual_table_of_the_nodes_own_connection_is_refused(cluster, writer, table, sql, name):
    """Each node applies on a connection of its own: a transaction on the leader read 11 prepared
    statements and 14,070 unused bytes where every node stored 1 and 14,071."""
    with pytest.raises(dbapi.OperationalError, match=rf"{name} cannot be used in a statement that writes"):
        writer.execute(sql.format(t=table))
    assert_nothing_applied(cluster, table)
    assert writer.execute("SELECT count(*) FROM dbstat").fetchone()[0] > 0  # reading it is fine


def test_a_table_made_with_such_a_module_is_refused_in_writes_too(cluster, writer, table):
    pages = f"pages_{table}"
    writer.execute(f"CREATE VIRTUAL TABLE {pages} USING dbstat")
    with pytest.raises(dbapi.OperationalError, match=rf"{pages} cannot be used in a statement that writes"):
        writer.execute(f"INSERT INTO {table} (v) SELECT count(*) FROM {pages}")
    assert_nothing_applied(cluster, table)


def test_a_write_reading_a_pragma_of_the_schema_is_replicated_like_any_other(cluster, writer, table):
    writer.execute(f"INSERT INTO {table} (v) SELECT name FROM pragma_table_info('{table}') ORDER BY cid")
    assert identical_everywhere(cluster, f"SELECT v FROM {table} ORDER BY id") == [("id",), ("v",)]


def test_a_write_firing_a_trigger_that_calls_one_is_refused_even_right_after_the_trigger_is_made(
        cluster, writer, table):
    """The leader compiled each statement against the schema its connection parsed last: a trigger
    created since (its statement applied on another connection) was left out, and what it called went
    unseen, so every node counted its own total_changes() into the row."""
    writer.execute(f"INSERT INTO {table} (v) VALUES ('before')")  # compiled before the trigger exists
    writer.execute(f"CREATE TRIGGER {table}_tr AFTER INSERT ON {table} "
                   f"BEGIN UPDATE {table} SET v = total_changes() WHERE id = new.id; END")
    with pytest.raises(dbapi.OperationalError, match=r"total_changes\(\)"):
        writer.execute(f"INSERT INTO {table} (v) VALUES ('before')")
    assert identical_everywhere(cluster, f"SELECT v FROM {table}") == [("before",)]


def test_a_refused_statement_inside_a_transaction_is_not_applied_but_the_rest_commits(cluster, writer, table):
    writer.execute("BEGIN")
    writer.execute(f"INSERT INTO {table} (v) VALUES ('kept')")
    with pytest.raises(dbapi.OperationalError, match=r"sqlite_version\(\)"):
        writer.execute(f"INSERT INTO {table} (v) VALUES (sqlite_version())")
    with pytest.raises(dbapi.OperationalError, match="localtime"):
        writer.execute(f"INSERT INTO {table} (v) VALUES (datetime('now', 'localtime'))")
    writer.execute("COMMIT")
    assert identical_everywhere(cluster, f"SELECT v FROM {table}") == [("kept",)]


@pytest.mark.parametrize("expression", [
    "datetime('now', 'localtime')",
    "date('now', '+1 day', 'localtime')",
    "strftime('%H', 'now', 'LocalTime')",
    "datetime('2020-01-01 12:00:00', 'localtime')",
])
def test_localtime_in_a_write_is_refused_mentioning_localtime(cluster, writer, table, expression):
    with pytest.raises(dbapi.OperationalError, match="(?i)localtime"):
        writer.execute(f"INSERT INTO {table} (v) VALUES ({expression})")
    assert_nothing_applied(cluster, table)


def test_a_write_firing_a_trigger_that_calls_a_node_dependent_function_is_refused(cluster, writer, table):
    audit = f"{table}_audit"
    writer.execute(f"CREATE TABLE {audit} (version)")
    writer.execute(f"INSERT INTO {table} (v) VALUES (1)")  # classified before the trigger exists
    writer.execute(
        f"CREATE TRIGGER {table}_tr AFTER INSERT ON {table} "
        f"BEGIN INSERT INTO {audit} (version) VALUES (sqlite_version()); END"
    )
    for sql in (f"INSERT INTO {table} (v) VALUES (1)", f"INSERT INTO {table} (v) VALUES (2)"):
        with pytest.raises(dbapi.OperationalError, match=r"sqlite_version\(\)"):
            writer.execute(sql)
    assert identical_everywhere(cluster, f"SELECT count(*) FROM {audit}") == [(0,)]


def test_a_column_default_calling_a_node_dependent_function_is_refused(cluster, writer):
    name = f"d_{uuid.uuid4().hex[:10]}"
    try:
        writer.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, version DEFAULT (sqlite_version()), v)")
    except dbapi.OperationalError as refused:
        assert "sqlite_version()" in str(refused)
        return
    with pytest.raises(dbapi.OperationalError, match=r"sqlite_version\(\)"):
        writer.execute(f"INSERT INTO {name} (v) VALUES (1)")
    assert_nothing_applied(cluster, name)


# -- reads ----------------------------------------------------------------------------------------


def entries(conn):
    return conn.execute(f"SELECT count(*) FROM {APPLIED_TABLE}").fetchone()[0]


def test_reads_calling_non_deterministic_functions_are_allowed_and_not_replicated(cluster, connections, follower):
    leader_conn = connections(cluster.leader())
    local = connections(follower, consistency="none")
    before = entries(leader_conn)
    for conn in (leader_conn, local):
        values = [conn.execute("SELECT random()").fetchone()[0] for _ in range(3)]
        assert len(set(values)) == 3  # not fixed: nothing is replayed for a read
        assert conn.execute("SELECT sqlite_version(), datetime('now', 'localtime')").fetchone()[0]
        assert len(conn.execute("SELECT randomblob(4)").fetchone()[0]) == 4
    assert entries(leader_conn) == before


# -- node-local state: refused or per session -----------------------------------------------------


def test_a_temp_table_is_refused(cluster, writer, table):
    with pytest.raises(dbapi.OperationalError, match="(?i)temporary"):
        writer.execute("CREATE TEMP TABLE scratch (a)")
    with pytest.raises(dbapi.OperationalError, match="(?i)temporary"):
        writer.execute(f"CREATE TEMP VIEW scratch_view AS SELECT * FROM {table}")


@pytest.mark.parametrize("pragma, sql", [
    ("journal_mode", "PRAGMA journal_mode=DELETE"),
    ("journal_mode", "PRAGMA main.journal_mode = MEMORY"),
    ("synchronous", "PRAGMA synchronous = OFF"),
])
def test_a_node_local_pragma_is_refused_naming_it(cluster, writer, pragma, sql):
    with pytest.raises(dbapi.OperationalError, match=rf"\b{pragma}\b"):
        writer.execute(sql)
    assert identical_everywhere(cluster, "PRAGMA journal_mode") == [("wal",)]


def test_foreign_keys_off_is_a_per_session_setting(cluster, connections, follower):
    others = [node for node in cluster.nodes if node is not follower]
    relaxed = connections(follower)
    strict_here = connections(follower)
    strict_elsewhere = connections(others[0])
    suffix = uuid.uuid4().hex[:8]
    relaxed.execute(f"CREATE TABLE parent_{suffix} (id INTEGER PRIMARY KEY)")
    relaxed.execute(f"CREATE TABLE child_{suffix} (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent_{suffix}(id))")

    relaxed.execute("PRAGMA foreign_keys = OFF")
    assert relaxed.execute("PRAGMA foreign_keys").fetchone() == (0,)
    assert strict_here.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert strict_elsewhere.execute("PRAGMA foreign_keys").fetchone() == (1,)

    relaxed.execute(f"INSERT INTO child_{suffix} VALUES (1, 99)")  # an orphan: allowed here
    relaxed.execute("BEGIN")
    relaxed.execute(f"INSERT INTO child_{suffix} VALUES (2, 98)")
    relaxed.execute("COMMIT")
    for conn, child_id in ((strict_here, 3), (strict_elsewhere, 4)):
        with pytest.raises(dbapi.IntegrityError, match="FOREIGN KEY"):
            conn.execute(f"INSERT INTO child_{suffix} VALUES (?, 97)", (child_id,))
    # The relaxed session's orphans reached every replica, the strict sessions' did not.
    assert identical_everywhere(cluster, f"SELECT id, parent FROM child_{suffix} ORDER BY id") == [(1, 99), (2, 98)]

    relaxed.execute("PRAGMA foreign_keys = ON")
    assert relaxed.execute("PRAGMA foreign_keys").fetchone() == (1,)
    with pytest.raises(dbapi.IntegrityError, match="FOREIGN KEY"):
        relaxed.execute(f"INSERT INTO child_{suffix} VALUES (5, 96)")
