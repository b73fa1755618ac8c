"""No statement can make a value larger than a client could send or read back (store/value_size.py).

SQL can make a value far larger than any client message: ``hex(zeroblob(3e8))``
is 600 MB, made in memory on every node at once in one SQLite step, and made
again at each restart while its entry is in the log. A client's statements
are held to ``max_frame`` bytes per value and per row; the leader's limit
travels in each entry, so every node refuses the same values and records the
same error.
"""

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store import statemachine
from django_dqcluster.store.local_cluster import LocalCluster
from django_dqcluster.store.statemachine import StateMachine, encode_entry

from .conftest import connections_to, rows_on_every_node, start_embedded_node
from .test_group_commit import rows, tx

LIMIT = 1024 * 1024
TOO_BIG = r"string or blob too big: a value or row over 1,048,576 bytes, the store's limit \(max_frame"
# 1.2 MB, made by SQL from a 13-byte statement.
MADE_TOO_BIG = "hex(zeroblob(600000))"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    running = start_embedded_node(tmp_path_factory.mktemp("value-size") / "node", max_frame=LIMIT)
    yield running
    running.stop()


@pytest.fixture(params=["embedded", "socket"])
def connect(node, request):
    with connections_to(node, request.param) as connect:
        yield connect


@pytest.fixture
def conn(connect):
    conn = connect()
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute("CREATE TABLE t (a, b)")
    return conn


def test_a_write_making_a_value_over_the_limit_is_refused_naming_it_and_stores_nothing(conn):
    with pytest.raises(dbapi.DataError, match=TOO_BIG):
        conn.execute(f"INSERT INTO t VALUES ({MADE_TOO_BIG}, 1)")
    conn.execute("INSERT INTO t VALUES ('next', 2)")
    assert conn.execute("SELECT a, b FROM t").fetchall() == [("next", 2)]


def test_a_row_over_the_limit_is_refused_though_each_of_its_values_is_under_it(conn):
    with pytest.raises(dbapi.DataError, match=TOO_BIG):
        conn.execute("INSERT INTO t VALUES (hex(zeroblob(300000)), hex(zeroblob(300000)))")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_value_just_under_the_limit_is_stored_and_read_back(conn):
    conn.execute("INSERT INTO t VALUES (zeroblob(?), 1)", (LIMIT - 1000,))
    assert conn.execute("SELECT length(a) FROM t").fetchone() == (LIMIT - 1000,)


def test_a_read_making_a_value_over_the_limit_is_refused_naming_it(conn):
    with pytest.raises(dbapi.DataError, match=TOO_BIG):
        conn.execute(f"SELECT {MADE_TOO_BIG}").fetchall()
    assert conn.execute("SELECT length(zeroblob(600000))").fetchone() == (600000,)  # not made: fine


def test_inside_a_transaction_the_refused_statement_alone_fails(connect):
    setup = connect()
    setup.execute("DROP TABLE IF EXISTS t")
    setup.execute("CREATE TABLE t (a, b)")
    conn = connect(isolation_level="DEFERRED")
    conn.execute("INSERT INTO t VALUES ('before', 1)")
    with pytest.raises(dbapi.DataError, match=TOO_BIG):
        conn.execute(f"UPDATE t SET a = {MADE_TOO_BIG}")
    conn.execute("INSERT INTO t VALUES ('after', 2)")
    conn.commit()
    assert setup.execute("SELECT a FROM t ORDER BY b").fetchall() == [("before",), ("after",)]


# -- every node alike: the entry carries the leader's limit ------------------------------------------


@pytest.fixture
def machines(tmp_path):
    """Two nodes' state machines whose own limits differ (a small one and a large one)."""
    made = [StateMachine(str(tmp_path / f"node{n}"), fsync=False, max_value_bytes=own)
            for n, own in enumerate([1000, 10**6])]
    for machine in made:
        machine.apply(encode_entry(tx("CREATE TABLE t (v)")), 1)
    yield made
    for machine in made:
        machine.close()


def test_every_node_applies_an_entry_under_the_limit_it_carries_not_its_own(machines):
    over = encode_entry({**tx("INSERT INTO t VALUES (hex(zeroblob(1000)))"), "length": 1500,
                         "format": statemachine.ENTRY_FORMAT})
    outcomes = [machine.apply(over, 2) for machine in machines]
    assert [outcome["error"]["kind"] for outcome in outcomes] == ["DataError", "DataError"]
    assert all("over 1,500 bytes" in outcome["error"]["message"] for outcome in outcomes)
    under = encode_entry({**tx("INSERT INTO t VALUES (hex(zeroblob(700)))"), "length": 1500,
                          "format": statemachine.ENTRY_FORMAT})
    for machine in machines:
        assert "error" not in machine.apply(under, 3)  # 1,400 bytes: over the small node's own limit
        assert rows(machine, "SELECT length(v) FROM t") == [(1400,)]


def test_an_entry_without_a_limit_is_applied_as_it_was_before_the_limit_existed(machines):
    """Entries written by older versions (format 2 and before) carry none."""
    for machine in machines:
        assert "error" not in machine.apply(encode_entry(tx("INSERT INTO t VALUES (hex(zeroblob(2000)))")), 2)
        assert rows(machine, "SELECT length(v) FROM t") == [(4000,)]


def test_the_limit_holds_only_while_the_entrys_statements_run(machines):
    machine = machines[0]
    entry = {**tx("INSERT INTO t VALUES (1)"), "length": 1500, "format": statemachine.ENTRY_FORMAT}
    machine.apply(encode_entry(entry), 2)
    conn = machine.databases.get("app").apply_connection()
    assert conn.execute("SELECT length(hex(zeroblob(5000)))").fetchone() == (10000,)


def test_a_leader_writes_its_limit_into_every_transaction_entry(node):
    written = []
    node.state_machine.listeners.append(lambda kind, entry: written.append(entry))
    try:
        conn = dbapi.connect(node=node, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS written (v)")
        conn.execute("INSERT INTO written VALUES (1)")
        conn.close()
    finally:
        node.state_machine.listeners.pop()
    transactions = [entry for entry in written if entry.get("kind") == statemachine.TX]
    assert len(transactions) == 2
    assert all(entry["length"] == LIMIT and entry["format"] == statemachine.ENTRY_FORMAT for entry in transactions)


@pytest.mark.cluster
def test_on_a_cluster_a_value_over_the_limit_is_refused_and_every_replica_stays_alike(tmp_path):
    """The default limit, 64 MiB: SQLite refuses the value before making it, so no node spends the memory."""
    with LocalCluster(str(tmp_path / "cluster"), 3) as cluster:
        conn = cluster.leader().connect()
        conn.execute("CREATE TABLE t (v)")
        with pytest.raises(dbapi.DataError, match=r"over 67,108,864 bytes, the store's limit"):
            conn.execute("INSERT INTO t VALUES (hex(zeroblob(40000000)))")
        conn.execute("INSERT INTO t VALUES (length(hex(zeroblob(30000000))))")
        conn.close()
        assert rows_on_every_node(cluster, "SELECT v FROM t") == {node.index: [(60000000,)] for node in cluster.nodes}
