"""Read-only clients, as a specification (store/read_only.py).

A token from ``dqcluster_client_token --read-only`` lets its holder read:
queries, inspecting pragmas, transactions of reads. Every write is refused
with SQLite's own words for it, before it runs or is forwarded, and nothing
is written; a read-only transaction takes no write lock, so writers never wait
for a report.
"""

import time

import pytest

from django_dqcluster import dbapi, wire

from .conftest import start_embedded_node

SECRET = "read-only-test-secret"
READ_ONLY = "attempt to write a readonly database: this client's token is read-only"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    running = start_embedded_node(tmp_path_factory.mktemp("read-only") / "node", SECRET)
    writer = full_client(running)
    writer.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER)")
    writer.execute("INSERT INTO account VALUES (1, 100), (2, 50)")
    writer.close()
    yield running
    running.stop()


def full_client(node, **kwargs):
    return dbapi.connect(node.config.client, secret=SECRET, isolation_level=None, timeout=5, **kwargs)


def read_only_client(node, **kwargs):
    return dbapi.connect(node.config.client, token=wire.client_token(SECRET, read_only=True),
                         isolation_level=None, timeout=5, **kwargs)


def balances(node):
    conn = full_client(node)
    try:
        return conn.execute("SELECT id, balance FROM account ORDER BY id").fetchall()
    finally:
        conn.close()


def test_the_read_only_token_is_neither_the_secret_nor_the_full_token():
    token = wire.client_token(SECRET, read_only=True)
    assert token != wire.client_token(SECRET) and SECRET not in token
    assert len(token) == 64


def test_a_read_only_client_reads(node):
    conn = read_only_client(node)
    try:
        assert conn.execute("SELECT sum(balance) FROM account").fetchone() == (150,)
        assert [row[1] for row in conn.execute("PRAGMA table_info(account)")] == ["id", "balance"]
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] >= 1
    finally:
        conn.close()


@pytest.mark.parametrize("sql", [
    "INSERT INTO account VALUES (3, 10)",
    "UPDATE account SET balance = 0",
    "DELETE FROM account",
    "REPLACE INTO account VALUES (1, 0)",
    "WITH t(v) AS (SELECT 1) INSERT INTO account SELECT v + 10, v FROM t",
    "INSERT INTO account VALUES (4, 1) RETURNING id",
    "CREATE TABLE other (v)",
    "CREATE INDEX account_balance ON account (balance)",
    "DROP TABLE account",
    "ALTER TABLE account ADD COLUMN note TEXT",
    "PRAGMA user_version = 7",
], ids=lambda sql: sql.split()[0] + ("-returning" if "RETURNING" in sql else "")
                   + ("-cte" if sql.startswith("WITH") else ""))
def test_every_kind_of_write_is_refused_and_changes_nothing(node, sql):
    conn = read_only_client(node)
    try:
        with pytest.raises(dbapi.OperationalError, match=READ_ONLY):
            conn.execute(sql)
        assert conn.execute("SELECT 1").fetchone() == (1,), "the session goes on after a refusal"
    finally:
        conn.close()
    assert balances(node) == [(1, 100), (2, 50)]
    full = full_client(node)
    try:
        assert full.execute("PRAGMA user_version").fetchone() == (0,)
        assert full.execute("SELECT name FROM sqlite_master WHERE name IN ('other', 'account_balance')").fetchall() == []
    finally:
        full.close()


def test_executemany_and_a_script_that_writes_are_refused(node):
    conn = read_only_client(node)
    try:
        with pytest.raises(dbapi.OperationalError, match=READ_ONLY):
            conn.executemany("INSERT INTO account VALUES (?, ?)", [(5, 1), (6, 1)])
        with pytest.raises(dbapi.OperationalError, match=READ_ONLY):
            conn.executescript("SELECT 1; UPDATE account SET balance = balance + 1;")
        assert not conn.in_transaction, "the script's transaction was rolled back"
    finally:
        conn.close()
    assert balances(node) == [(1, 100), (2, 50)]


@pytest.mark.parametrize("request_", [
    lambda conn: conn.drop_database("default"),
    lambda conn: conn.clone_database("default", "copy"),
    lambda conn: conn.compact(),
    lambda conn: conn.remove_member("127.0.0.1:1"),
    lambda conn: conn.add_member("127.0.0.1:1", "127.0.0.1:2"),
], ids=["drop_database", "clone_database", "compact", "remove_member", "add_member"])
def test_requests_that_change_the_store_are_refused(node, request_):
    conn = read_only_client(node)
    try:
        with pytest.raises(dbapi.OperationalError, match=READ_ONLY):
            request_(conn)
    finally:
        conn.close()
    full = full_client(node)
    try:
        assert full.list_databases() == ["default"]
        assert len(full.servers()) == 1
    finally:
        full.close()


@pytest.mark.parametrize("begin", ["BEGIN", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_a_read_only_transaction_takes_no_write_lock_and_reads_one_state(node, begin):
    report, writer = read_only_client(node), full_client(node)
    try:
        report.execute(begin)
        assert report.execute("SELECT balance FROM account WHERE id = 1").fetchone() == (100,)
        started = time.monotonic()
        writer.execute("UPDATE account SET balance = balance + 1 WHERE id = 2")
        # Kept waiting for a lock, it would be told "database is locked" after 5 s (the busy timeout).
        assert time.monotonic() - started < 4.5, "the writer waited for the report's lock"
        assert report.execute("SELECT balance FROM account WHERE id = 2").fetchone() == (50,)
        # Savepoints (Django's nested atomic blocks) take no lock either.
        report.execute("SAVEPOINT outer")
        report.execute("SAVEPOINT inner")
        report.execute("ROLLBACK TO inner")
        report.execute("RELEASE outer")
        with pytest.raises(dbapi.OperationalError, match="no such savepoint: inner"):
            report.execute("RELEASE inner")  # released with outer
        assert report.execute("SELECT balance FROM account WHERE id = 2").fetchone() == (50,)
        with pytest.raises(dbapi.OperationalError, match=READ_ONLY):
            report.execute("UPDATE account SET balance = 0")
        report.execute("COMMIT")
        assert report.execute("SELECT balance FROM account WHERE id = 2").fetchone() == (51,)
    finally:
        writer.execute("UPDATE account SET balance = 50 WHERE id = 2")
        report.close()
        writer.close()


def test_a_savepoint_outside_a_transaction_is_refused_with_the_way_out(node):
    conn = read_only_client(node)
    try:
        with pytest.raises(dbapi.OperationalError, match="begin with BEGIN"):
            conn.execute("SAVEPOINT report")
    finally:
        conn.close()


def test_a_read_only_token_of_another_cluster_is_refused(node):
    with pytest.raises(dbapi.InterfaceError, match="authentication failed"):
        dbapi.connect(node.config.client, token=wire.client_token("another secret", read_only=True), timeout=5)


@pytest.mark.parametrize("consistency", ["strong", "none"])
def test_through_a_follower_writes_are_refused_there_not_forwarded(cluster, consistency):
    leader = cluster.leader()
    setup = leader.connect()
    setup.execute("CREATE TABLE log (v)")
    setup.execute("INSERT INTO log VALUES ('before')")
    setup.close()
    cluster.wait_converged()
    follower = next(node for node in cluster.nodes if node is not leader)
    conn = dbapi.connect(follower.client, token=wire.client_token(cluster.secret, read_only=True),
                         isolation_level=None, timeout=10, consistency=consistency)
    try:
        assert conn.execute("SELECT v FROM log").fetchall() == [("before",)]
        with pytest.raises(dbapi.OperationalError, match=READ_ONLY):
            conn.execute("INSERT INTO log VALUES ('through the follower')")
        conn.execute("BEGIN")  # forwarded to the leader as BEGIN DEFERRED
        with pytest.raises(dbapi.OperationalError, match=READ_ONLY):
            conn.execute("DELETE FROM log")
        assert conn.execute("SELECT count(*) FROM log").fetchone() == (1,)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    check = leader.connect()
    assert check.execute("SELECT v FROM log").fetchall() == [("before",)]
    assert not check.status(of="leader")["write_locks"], "the read-only transaction held a write lock"
    check.close()
