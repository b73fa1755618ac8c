"""Parameters SQLite cannot bind are refused before anything runs, and never stop a node applying.

An integer over 64 bits in a later parameter set of an executemany (the
leader binds only the first before the entry is in the log) raised
OverflowError in every node's apply, again at each attempt: from one
request of a client speaking the protocol, the cluster wrote nothing more.
"""

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.parameters import unbindable
from django_dqcluster.store.statemachine import StateMachine, encode_entry

from .conftest import EMBEDDED_SECRET
from .test_group_commit import rows, tx

HUGE = 2 ** 64 - 1  # msgpack carries it; SQLite's INTEGER does not


@pytest.mark.parametrize("params, many, problem", [
    ([1, "a", None, 2.5, b"x", True, 2 ** 63 - 1, -2 ** 63], False, None),
    ([1, HUGE], False, "parameter 2: Python int too large to convert to SQLite INTEGER"),
    ({"a": 1, "b": -2 ** 63 - 1}, False, "parameter b: Python int too large"),
    ([[1], [2], [HUGE]], True, "parameter set 3, parameter 1: Python int too large"),
    ([{"v": 1}, {"v": HUGE}], True, "parameter set 2, parameter v: Python int too large"),
    (None, False, None),
    (True, False, "parameters must be a list or a mapping, not bool"),
    (5, True, "executemany needs a list of parameter sets, not int"),
    ([[1], 5], True, "parameter set 2 must be a list or a mapping of parameters, not int"),
])
def test_what_cannot_be_bound_is_named(params, many, problem):
    found = unbindable(params, many)
    assert (found is None) if problem is None else (problem in found)


@pytest.fixture
def raw_client(embedded_node):
    """A connection whose requests are sent as given, as by any client speaking the protocol."""
    conn = dbapi.connect(embedded_node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=10)
    conn.execute("CREATE TABLE t (v)")

    def send(sql, params, many=False):
        return conn._request({"op": "exec", "sql": sql, "params": params, "many": many}, may_write=True)

    send.conn = conn
    yield send
    conn.close()


def test_an_executemany_with_an_integer_over_64_bits_is_refused_whole_and_the_next_write_commits(raw_client):
    with pytest.raises(dbapi.ProgrammingError, match="parameter set 2, parameter 1: Python int too large"):
        raw_client("INSERT INTO t VALUES (?)", [[1], [HUGE]], many=True)
    raw_client.conn.execute("INSERT INTO t VALUES (5)")
    assert raw_client.conn.execute("SELECT v FROM t").fetchall() == [(5,)]


def test_inside_a_transaction_too(raw_client):
    raw_client.conn.execute("BEGIN")
    raw_client("INSERT INTO t VALUES (?)", [1])
    with pytest.raises(dbapi.ProgrammingError, match="parameter 1: Python int too large"):
        raw_client("INSERT INTO t VALUES (?)", [HUGE])
    raw_client.conn.execute("COMMIT")
    assert raw_client.conn.execute("SELECT v FROM t").fetchall() == [(1,)]


def test_an_entry_already_in_a_log_with_one_records_an_error_and_the_next_applies(tmp_path):
    """Written before the leader checked (or by one that did not): every node records the same error."""
    machine = StateMachine(str(tmp_path / "data"), fsync=False)
    try:
        machine.apply(encode_entry(tx("CREATE TABLE t (v)")), 1)
        outcome = machine.apply(encode_entry(tx("INSERT INTO t VALUES (?)", [[1], [HUGE]], many=True)), 2)
        assert outcome["error"]["kind"] == "ProgrammingError"
        assert "Python int too large" in outcome["error"]["message"]
        machine.apply(encode_entry(tx("INSERT INTO t VALUES (7)")), 3)
        assert rows(machine, "SELECT v FROM t") == [(7,)]
    finally:
        machine.close()


@pytest.mark.parametrize("request_, refused", [
    ({"op": "exec", "sql": "SELECT ?", "params": True}, "parameters must be a list or a mapping, not bool"),
    ({"op": "exec", "sql": "INSERT INTO t VALUES (?)", "params": 7, "many": True},
     "executemany needs a list of parameter sets, not int"),
    ({"op": "script", "sql": 1.5}, "script needs the SQL text as a string"),
    ({"op": "open", "pragmas": "foreign_keys"}, "open needs pragmas as a mapping of names to 0 or 1"),
    ({"op": "open", "hops": "1"}, "open needs hops as a whole number, not '1'"),
    ({"op": "fetch", "result": {"a": 1}}, r"fetch needs result as a string, not \{'a': 1\}"),
    ({"op": "drop_database", "db": []}, r"drop_database needs db as a string, not \[\]"),
    ({"op": "add_member", "client": "127.0.0.1:1"}, "add_member needs raft as a string, not None"),
])
def test_a_request_of_another_shape_is_refused_naming_what_is_wrong(raw_client, request_, refused):
    """Not an "internal error in the node" with a traceback in its log: 3,000 requests of random
    shapes drew 26 kinds of internal error, and now none."""
    with pytest.raises(dbapi.ProgrammingError, match=refused):
        raw_client.conn._request(request_, may_write=True)
