"""A large write, or a read with a long parameter, leaves none of its values in memory.

A transaction's statements run first on the leader's scratch connection,
and every write is classified (compiled with EXPLAIN) on a connection of the
node. sqlite3 keeps a connection's last 128 statements prepared, and a
prepared statement holds SQLite's own copies of the values last bound to it
until its text runs again: each distinct statement of a bulk load kept its
last values (a 16 MiB value in a transaction: 32 MiB more, with the EXPLAIN
of its classification; outside one, 16 MiB on a read connection), for as
long as the connection lived; and so did a read with such a parameter.
"""

import ctypes
import ctypes.util
import os
import sqlite3

import pytest

from django_dqcluster.dbapi.replica import ReplicaFile
from django_dqcluster.store.bound_values import LONG_VALUE

VALUE = 16 * 2 ** 20


@pytest.fixture
def memory_held():
    """A function giving how many bytes SQLite holds more than when the test began (all connections
    of this process together: SQLite's own count)."""
    library = ctypes.util.find_library("sqlite3")
    if library is None:
        pytest.skip("no shared SQLite library to ask (sqlite3 linked statically)")
    memory_used = ctypes.CDLL(library).sqlite3_memory_used
    memory_used.restype = ctypes.c_int64
    # The count must be the one of the library sqlite3 runs on: a value bound
    # to a cached statement shows in it.
    conn = sqlite3.connect(":memory:")
    before = memory_used()
    conn.execute("SELECT length(?)", (bytes(VALUE),))
    counted = memory_used() - before >= VALUE
    conn.close()
    if not counted:
        pytest.skip("this SQLite library is not the one sqlite3 runs on, or counts no memory")
    started = memory_used()
    return lambda: memory_used() - started


def test_large_transactions_leave_their_values_in_no_prepared_statement(embedded_conn, memory_held):
    conn = embedded_conn
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    for statement in range(4):  # four statement texts, as a bulk load into four tables has
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO t (v) VALUES (?) /* {statement} */", (os.urandom(VALUE),))
        conn.execute("COMMIT")
        conn.execute("DELETE FROM t")
    assert memory_held() < VALUE
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_large_writes_outside_a_transaction_leave_their_values_in_no_prepared_statement(embedded_conn, memory_held):
    """Classified on a read connection (EXPLAIN), applied on a connection that keeps no statement prepared."""
    conn = embedded_conn
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, w TEXT)")
    for statement in range(3):
        conn.execute(f"INSERT INTO t (v, w) VALUES (?, ?) /* {statement} */", (os.urandom(VALUE), "é" * VALUE))
        conn.execute(f"UPDATE t SET w = :w /* {statement} */", {"w": "ü" * VALUE})
        conn.execute("DELETE FROM t")
    assert memory_held() < VALUE


def test_a_read_with_a_long_parameter_leaves_it_bound_on_no_connection(embedded_conn, memory_held):
    conn = embedded_conn
    conn.execute("CREATE TABLE t (v BLOB)")
    conn.executemany("INSERT INTO t VALUES (?)", [(bytes([n]) * 30000,) for n in range(100)])
    for statement in range(3):
        value = os.urandom(VALUE)
        assert conn.execute(f"SELECT length(?) /* {statement} */", (value,)).fetchall() == [(VALUE,)]
        # Paged: 3 MB of rows, more than a page (1 MiB), read to the end.
        rows = conn.execute(f"SELECT v FROM t WHERE length(?) > 0 /* {statement} */", (value,)).fetchall()
        assert len(rows) == 100
    assert memory_held() < VALUE
    assert conn.execute("SELECT count(*) FROM t WHERE length(?) = 3", ("abc",)).fetchone() == (100,)


@pytest.mark.parametrize("begin", ["BEGIN", "BEGIN DEFERRED"])
def test_reads_of_long_parameters_in_a_transaction_leave_them_bound_on_no_connection(embedded_conn, memory_held,
                                                                                     begin):
    conn = embedded_conn
    conn.execute("CREATE TABLE t (v BLOB)")
    for statement in range(3):
        conn.execute(begin)
        assert conn.execute(f"SELECT length(?) /* {statement} */", (os.urandom(VALUE),)).fetchall() == [(VALUE,)]
        conn.execute("COMMIT")
    assert memory_held() < VALUE


def test_a_transaction_of_short_values_keeps_its_statements_prepared(embedded_node, embedded_conn):
    """A bulk load of short rows (here 1.2 MB) leaves only the last row's values bound: nothing to let go."""
    conn = embedded_conn
    conn.execute("CREATE TABLE t (v)")
    database = embedded_node.state_machine.databases.get("default")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("COMMIT")
    scratch = database.scratch_connection()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 600,)] * 2000)
    conn.execute("INSERT INTO t VALUES (?)", (b"x" * (LONG_VALUE - 1),))
    conn.execute("COMMIT")
    assert database.scratch_connection() is scratch
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (?)", (b"x" * LONG_VALUE,))
    conn.execute("COMMIT")
    assert database.scratch_connection() is not scratch


def test_a_local_read_with_a_long_parameter_leaves_it_bound_on_no_connection(tmp_path, memory_held):
    """A client reading its node's replica file itself (consistency none) holds no copy of it either."""
    path = tmp_path / "replica.sqlite3"
    setup = sqlite3.connect(path)
    setup.executescript("CREATE TABLE t (n); INSERT INTO t VALUES (7);")
    setup.close()
    replica = ReplicaFile(str(path), str(tmp_path / ".instance"))
    try:
        assert replica.query("SELECT n FROM t", ())["rows"] == [(7,)]
        opened = memory_held()
        for statement in range(3):
            answer = replica.query(f"SELECT n, length(?) FROM t /* {statement} */", (os.urandom(VALUE),))
            assert answer["rows"] == [(7, VALUE)] and answer["more"] is None
        assert memory_held() - opened < VALUE
        assert replica.query("SELECT n FROM t", ())["rows"] == [(7,)]  # the next read opens the file again
    finally:
        replica.close()
