"""Django's SQLite functions on the store: Django's results, and nothing larger than SQLite allows.

Where SQLite lacks its math functions, Django's POWER made ``3 ** 10**9`` as a Python integer
(an hour of CPU, holding the GIL) for a value no SQLite INTEGER holds.

``REPEAT('x', 10**11)`` (Django's ``Repeat``) asked Python for 100 GB on every
node applying the entry: a MemoryError, again at each attempt, and the
cluster wrote nothing more. LPAD and RPAD repeated their fill ``length``
times before cutting it.
"""

import itertools
import sqlite3

import pytest
from django.db.backends.sqlite3._functions import _sqlite_lpad, _sqlite_power, _sqlite_repeat, _sqlite_rpad, register

from django_dqcluster import dbapi
from django_dqcluster.backend.sql_functions import django_functions_hook, lpad, power, repeat, rpad

from ..store.conftest import start_embedded_node

LIMIT = 1000
TEXTS = ["", "a", "abc", "ünïcode", None]
LENGTHS = [-3, 0, 1, 2, 3, 5, 10, 1000, None]
FILLS = ["", "x", "xy", "αβγ", "0123456789", None]


@pytest.mark.parametrize("text, length, fill", list(itertools.product(TEXTS, LENGTHS, FILLS)))
def test_lpad_and_rpad_return_what_djangos_return(text, length, fill):
    assert lpad(text, length, fill, LIMIT) == _sqlite_lpad(text, length, fill)
    assert rpad(text, length, fill, LIMIT) == _sqlite_rpad(text, length, fill)


@pytest.mark.parametrize("text, count", list(itertools.product(TEXTS + [b"\x00\x01"], [-2, 0, 1, 3, 100, None])))
def test_repeat_returns_what_djangos_returns(text, count):
    assert repeat(text, count, LIMIT) == _sqlite_repeat(text, count)


def test_other_arguments_go_to_djangos_functions_whatever_they_make_of_them():
    assert repeat(5, 3, LIMIT) == _sqlite_repeat(5, 3) == 15
    with pytest.raises(TypeError):
        lpad("a", 2.5, "x", LIMIT)


@pytest.fixture
def conn():
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, LIMIT)
    django_functions_hook(conn)
    yield conn
    conn.close()


@pytest.mark.parametrize("sql", [
    "SELECT REPEAT('x', 100000000000)",
    "SELECT REPEAT('abc', 334)",  # 1,002 characters
    "SELECT LPAD('x', 100000000000, 'ab')",
    "SELECT RPAD('x', 1001, 'ab')",
])
def test_a_result_over_the_connections_limit_is_sqlites_too_big_before_it_is_made(conn, sql):
    with pytest.raises(sqlite3.DataError, match="string or blob too big"):
        conn.execute(sql).fetchone()


def test_a_result_within_it_is_made(conn):
    assert conn.execute("SELECT length(REPEAT('abc', 333)), LPAD('7', 3, '0'), RPAD('ab', 1000, 'c') = "
                        "'ab' || REPEAT('c', 998)").fetchone() == (999, "007", 1)
    assert conn.execute("SELECT LPAD('abc', 1000000, '')").fetchone() == ("abc",)  # no fill: nothing made


def test_on_a_node_such_a_write_fails_naming_the_limit_and_the_next_one_commits(tmp_path):
    node = start_embedded_node(tmp_path / "node", connection_hooks=[django_functions_hook])
    try:
        conn = dbapi.connect(node=node, isolation_level=None)
        conn.execute("CREATE TABLE t (v)")
        for sql in ["INSERT INTO t VALUES (REPEAT('x', 100000000000))",
                    "INSERT INTO t VALUES (LPAD('x', 100000000, 'abcdefghij'))",
                    "INSERT INTO t VALUES (randomblob(200000000))"]:
            with pytest.raises(dbapi.DataError, match="over 67,108,864 bytes, the store's limit"):
                conn.execute(sql)
        conn.execute("INSERT INTO t VALUES (REPEAT('ab', 3))")
        assert conn.execute("SELECT v FROM t").fetchall() == [("ababab",)]
        assert node.state_machine.fatal is None
        conn.close()
    finally:
        node.stop()


class WithoutMathFunctions(sqlite3.Connection):
    """A connection to a SQLite built without its math functions, where Django registers its own POWER."""

    def execute(self, sql, *args):
        if "ENABLE_MATH_FUNCTIONS" in sql:
            sql = "SELECT 0"
        return super().execute(sql, *args)


def outcome(conn, sql, params):
    try:
        return conn.execute(sql, params).fetchone()
    except sqlite3.Error as error:
        return type(error), str(error)


@pytest.mark.parametrize("x, y", list(itertools.product([-3, -2, -1, 0, 1, 2, 7, 2.5, None], [-2, 0, 1, 2, 10, 40, 62, 63, 0.5, None])))
def test_power_gives_sqlite_what_djangos_gives(x, y):
    ours, djangos = (sqlite3.connect(":memory:", factory=WithoutMathFunctions) for _ in range(2))
    django_functions_hook(ours)
    register(djangos)
    assert outcome(ours, "SELECT POWER(?, ?)", (x, y)) == outcome(djangos, "SELECT POWER(?, ?)", (x, y))


@pytest.mark.parametrize("x, y", [(3, 1_000_000_000), (2, 64), (-2, 64), (10, 22), (3, 9_223_372_036_854_775_807)])
def test_a_whole_power_over_64_bits_fails_before_it_is_made_as_djangos_fails_once_made(x, y):
    conn = sqlite3.connect(":memory:", factory=WithoutMathFunctions)
    django_functions_hook(conn)
    with pytest.raises(OverflowError, match="over 64 bits"):
        power(x, y)
    # Python's sqlite3 reports an OverflowError as SQLITE_TOOBIG, Django's too.
    too_big = (sqlite3.DataError, "string or blob too big")
    assert outcome(conn, "SELECT POWER(?, ?)", (x, y)) == too_big
    if y < 100:  # Django's makes the number first
        django = sqlite3.connect(":memory:", factory=WithoutMathFunctions)
        register(django)
        assert outcome(django, "SELECT POWER(?, ?)", (x, y)) == too_big


def test_where_sqlite_has_its_math_functions_its_own_power_stays():
    conn = sqlite3.connect(":memory:")
    django_functions_hook(conn)
    if conn.execute("SELECT sqlite_compileoption_used('ENABLE_MATH_FUNCTIONS')").fetchone()[0]:
        assert conn.execute("SELECT POWER(2, 62)").fetchone() == (2.0 ** 62,)  # SQLite's: a REAL
    else:
        assert conn.execute("SELECT POWER(2, 62)").fetchone() == (2 ** 62,)
