"""Values converted by their column's declared type, as sqlite3's PARSE_DECLTYPES does.

sqlite3 converts in the process that runs the query; here that is the node,
and the converters are the client's. A client that passes
``detect_types=PARSE_DECLTYPES`` gets each result column's declared type from
the node and converts with sqlite3's registered converters, wherever the
statement ran: an autocommit read, a transaction, a deferred transaction, a
follower forwarding to the leader, a local read of the replica file.
"""

import sqlite3

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.declared_types import DeclaredTypes

from .conftest import EMBEDDED_SECRET, followers


class Point:
    def __init__(self, raw):
        self.x, self.y = map(float, raw.split(b";"))

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


# Converter names only these tests use: sqlite3's registry is per process.
sqlite3.register_converter("dq_point", Point)
sqlite3.register_converter("dq_flag", b"1".__eq__)

SCHEMA = "CREATE TABLE shapes (id INTEGER PRIMARY KEY, at DQ_POINT, visible dq_flag NOT NULL, note TEXT)"
ROW = (1, "1.5;2", 1, "first")
CONVERTED = (1, Point(b"1.5;2"), True, "first")


def create_shapes(conn):
    conn.execute(SCHEMA)
    conn.execute("INSERT INTO shapes VALUES (?, ?, ?, ?)", ROW)
    conn.execute("INSERT INTO shapes VALUES (2, NULL, 0, NULL)")


@pytest.fixture
def typed(embedded_node):
    """An autocommit connection to the embedded node that converts by declared type."""
    conn = dbapi.connect(embedded_node.config.client, secret=EMBEDDED_SECRET, isolation_level=None,
                         detect_types=dbapi.PARSE_DECLTYPES)
    create_shapes(conn)
    yield conn
    conn.close()


def test_columns_with_a_registered_type_are_converted(typed):
    assert typed.execute("SELECT * FROM shapes ORDER BY id").fetchall() == [CONVERTED, (2, None, False, None)]


def test_expressions_and_other_connections_get_stored_values(typed, embedded_node):
    # An expression has no declared type; sqlite3 converts only columns.
    assert typed.execute("SELECT at || '', visible + 0 FROM shapes WHERE id = 1").fetchone() == ("1.5;2", 1)
    plain = dbapi.connect(embedded_node.config.client, secret=EMBEDDED_SECRET, isolation_level=None)
    assert plain.execute("SELECT * FROM shapes WHERE id = 1").fetchone() == ROW


def test_reads_in_transactions_are_converted(typed):
    typed.execute("BEGIN")
    typed.execute("UPDATE shapes SET at = '3;4' WHERE id = 1")
    assert typed.execute("SELECT at FROM shapes WHERE id = 1").fetchone() == (Point(b"3;4"),)
    typed.execute("ROLLBACK")
    typed.execute("BEGIN DEFERRED")
    assert typed.execute("SELECT visible FROM shapes ORDER BY id").fetchall() == [(True,), (False,)]
    typed.execute("COMMIT")


def test_every_page_of_a_large_result_is_converted(typed):
    typed.executemany("INSERT INTO shapes VALUES (?, ?, 1, NULL)", [(n, f"{n};0") for n in range(3, 40003)])
    rows = typed.execute("SELECT id, at, visible FROM shapes WHERE id >= 3 ORDER BY id").fetchall()
    assert len(rows) == 40000
    assert rows[-1] == (40002, Point(b"40002;0"), True)
    assert all(type(at) is Point and visible is True for _, at, visible in rows)


def test_a_changed_column_type_is_seen(typed):
    query = "SELECT visible FROM shapes WHERE id = 1"
    assert typed.execute(query).fetchone() == (True,)
    typed.execute("ALTER TABLE shapes RENAME TO old_shapes")
    typed.execute("CREATE TABLE shapes (id INTEGER PRIMARY KEY, visible TEXT)")
    typed.execute("INSERT INTO shapes VALUES (1, '1')")
    assert typed.execute(query).fetchone() == ("1",)


def test_an_embedded_client_converts_too(embedded_node):
    conn = dbapi.connect(node=embedded_node, isolation_level=None, detect_types=dbapi.PARSE_DECLTYPES)
    create_shapes(conn)
    assert conn.execute("SELECT * FROM shapes WHERE id = 1").fetchone() == CONVERTED


@pytest.mark.cluster
def test_through_a_follower_and_from_its_file(cluster):
    leader = cluster.leader()
    create_shapes(leader.connect())
    cluster.wait_converged()
    follower = followers(cluster, leader)[0]
    forwarded = follower.connect(detect_types=dbapi.PARSE_DECLTYPES)  # strong: read on the leader
    assert forwarded.execute("SELECT * FROM shapes WHERE id = 1").fetchone() == CONVERTED
    local = follower.connect(consistency="none", detect_types=dbapi.PARSE_DECLTYPES)
    assert local.execute("SELECT * FROM shapes WHERE id = 1").fetchone() == CONVERTED
    assert local.replica_reads == 1


def test_types_of_a_file_replaced_since_it_was_read_are_the_new_files(tmp_path):
    path = str(tmp_path / "db.sqlite3")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a DATE)")
    types = DeclaredTypes(path)
    assert types.of("SELECT a FROM t", 1) == ("DATE",)
    replacement = str(tmp_path / "new.sqlite3")
    with sqlite3.connect(replacement) as conn:
        conn.execute("CREATE TABLE t (a BOOL)")
        conn.execute("CREATE TABLE u (b TEXT)")  # schema version 2
    (tmp_path / "new.sqlite3").replace(path)
    assert types.of("SELECT a FROM t", 2) == ("BOOL",)
    # A schema the file does not have (a transaction's own change): unknown.
    assert types.of("SELECT a FROM t", 5) is None
    types.close()
