"""A PRAGMA or EXPLAIN answers from the schema as it is now, not as its connection parsed it last.

SQLite answers ``PRAGMA index_info`` (``table_info``, ``foreign_key_list``...) and
EXPLAIN from the copy of the schema the connection parsed, and only a statement
that reads the database makes it notice that another connection changed the
schema. The node's read connections are such other connections: after an index
was created, its ``PRAGMA index_info`` named no column (Django's introspection
then failed with a KeyError, seen in Django's migrations tests on a follower).
"""

import pytest

from django_dqcluster import dbapi

from .conftest import followers


def index_columns(conn, name="i"):
    return [row[2] for row in conn.execute(f"PRAGMA index_info({name})").fetchall()]


@pytest.mark.parametrize("isolation", ["autocommit", "deferred transaction"])
def test_an_index_made_by_another_request_shows_in_pragma_index_info_at_once(embedded_node, isolation):
    conn = dbapi.connect(node=embedded_node, isolation_level=None)
    conn.execute("CREATE TABLE t (x, y)")
    assert index_columns(conn) == []  # asked once before: the node has seen this statement
    conn.execute("CREATE INDEX i ON t (x)")
    if isolation == "deferred transaction":
        conn.execute("BEGIN DEFERRED")
    assert index_columns(conn) == ["x"]
    if isolation == "deferred transaction":
        conn.execute("COMMIT")
    conn.execute("DROP INDEX i")
    conn.execute("CREATE INDEX i ON t (y)")
    assert index_columns(conn) == ["y"]


def test_explain_plans_with_an_index_made_since_the_statement_was_last_explained(embedded_node):
    conn = dbapi.connect(node=embedded_node, isolation_level=None)
    conn.execute("CREATE TABLE t (x, y)")
    plan = "EXPLAIN QUERY PLAN SELECT x FROM t WHERE y = 1"
    assert "INDEX" not in str(conn.execute(plan).fetchall())
    conn.execute("CREATE INDEX by_y ON t (y)")
    assert "INDEX by_y" in str(conn.execute(plan).fetchall())


def test_in_a_transaction_a_pragma_sees_the_schema_committed_before_it_began(embedded_node):
    conn, other = (dbapi.connect(node=embedded_node, isolation_level=None) for _ in range(2))
    conn.execute("CREATE TABLE t (x, y)")
    conn.execute("BEGIN")
    assert index_columns(conn) == []
    conn.execute("COMMIT")
    other.execute("CREATE INDEX i ON t (y)")
    conn.execute("BEGIN")
    assert index_columns(conn) == ["y"]
    conn.execute("COMMIT")


@pytest.mark.parametrize("consistency", ["strong", "none"])
def test_a_followers_pragma_names_the_columns_of_an_index_made_through_the_leader(cluster, consistency):
    leader = cluster.leader()
    writer = leader.connect()
    reader = followers(cluster, leader)[0].connect(consistency=consistency)
    writer.execute("CREATE TABLE t (x, y)")
    cluster.wait_converged()
    assert index_columns(reader) == []
    writer.execute("CREATE INDEX i ON t (x)")
    cluster.wait_converged()
    assert index_columns(reader) == ["x"]
