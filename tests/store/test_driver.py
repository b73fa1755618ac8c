"""The PEP 249 driver (``django_dqcluster.dbapi``), as a specification.

Every behaviour is checked twice: through the in-process connection to an
embedded node (``embedded_conn``) and through a real socket connection to the
same node's client port. One node serves the whole module (starting one takes
about a second); tests keep out of each other's way with their own tables and
database names.
"""

import datetime
import decimal
import os
import threading
import uuid

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.databases import APPLIED_TABLE
from django_dqcluster.store.local_cluster import free_ports
from django_dqcluster.store.statemachine import CLONE_DB, StateMachine, encode_entry

from .conftest import connections_to, start_embedded_node
from .test_group_commit import rows, tx

SECRET = "embedded-test-secret"


@pytest.fixture(scope="module")
def embedded_node(tmp_path_factory):
    """Same node as conftest's ``embedded_node``, shared by the module for speed."""
    node = start_embedded_node(tmp_path_factory.mktemp("driver") / "node", SECRET)
    yield node
    node.stop()


@pytest.fixture(params=["embedded", "socket"])
def connect(request, embedded_node):
    """Open connections of the kind under test (autocommit unless told otherwise)."""
    with connections_to(embedded_node, request.param, SECRET) as connect:
        yield connect


@pytest.fixture
def conn(request, connect):
    """The connection under test: conftest's ``embedded_conn``, or a socket connection."""
    if connect.kind == "embedded":
        return request.getfixturevalue("embedded_conn")
    return connect()


@pytest.fixture
def other(connect):
    """A second, independent session on the same node."""
    return connect()


@pytest.fixture
def table(conn):
    name = f"t_{uuid.uuid4().hex[:10]}"
    conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name TEXT UNIQUE, v)")
    return name


def unique_name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def entry_count(conn):
    """Transaction log entries applied to the connection's database (one row per entry)."""
    return conn.execute(f"SELECT count(*) FROM {APPLIED_TABLE}").fetchone()[0]


def count(conn, table):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- module globals -------------------------------------------------------------------------------


def test_module_declares_dbapi_2_0_with_qmark_parameters():
    assert dbapi.apilevel == "2.0"
    assert dbapi.threadsafety in (0, 1, 2, 3)
    assert dbapi.paramstyle == "qmark"


def test_module_provides_the_pep249_constructors_and_type_objects():
    assert dbapi.Date(2024, 1, 2) == datetime.date(2024, 1, 2)
    assert dbapi.Time(3, 4, 5) == datetime.time(3, 4, 5)
    assert dbapi.Timestamp(2024, 1, 2, 3, 4, 5) == datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert dbapi.Binary(b"\x00\x01") == b"\x00\x01"
    assert isinstance(dbapi.TimestampFromTicks(0), datetime.datetime)
    for type_object in (dbapi.STRING, dbapi.BINARY, dbapi.NUMBER, dbapi.DATETIME, dbapi.ROWID):
        assert type_object is not None


def test_exception_classes_follow_the_pep249_hierarchy():
    assert issubclass(dbapi.Warning, Exception)
    assert issubclass(dbapi.Error, Exception)
    assert issubclass(dbapi.InterfaceError, dbapi.Error)
    assert issubclass(dbapi.DatabaseError, dbapi.Error)
    for cls in (dbapi.DataError, dbapi.OperationalError, dbapi.IntegrityError,
                dbapi.InternalError, dbapi.ProgrammingError, dbapi.NotSupportedError):
        assert issubclass(cls, dbapi.DatabaseError), cls
    assert not issubclass(dbapi.InterfaceError, dbapi.DatabaseError)


# -- cursor results -------------------------------------------------------------------------------


def test_description_names_the_columns_of_a_select_and_is_none_after_dml(conn, table):
    cursor = conn.execute(f"INSERT INTO {table} (name, v) VALUES ('a', 1)")
    assert cursor.description is None
    cursor = conn.execute(f"SELECT id, name AS label, v FROM {table}")
    assert [column[0] for column in cursor.description] == ["id", "label", "v"]
    assert all(len(column) == 7 for column in cursor.description)


def test_description_is_set_for_a_select_that_returns_no_rows(conn, table):
    cursor = conn.execute(f"SELECT id, name FROM {table} WHERE 0")
    assert [column[0] for column in cursor.description] == ["id", "name"]
    assert cursor.fetchall() == []


def test_rowcount_counts_inserted_updated_and_deleted_rows(conn, table):
    assert conn.execute(f"INSERT INTO {table} (name) VALUES ('a')").rowcount == 1
    assert conn.executemany(f"INSERT INTO {table} (name) VALUES (?)", [("b",), ("c",), ("d",)]).rowcount == 3
    assert conn.execute(f"UPDATE {table} SET v = 1 WHERE name IN ('a', 'b')").rowcount == 2
    assert conn.execute(f"UPDATE {table} SET v = 1 WHERE name = 'nobody'").rowcount == 0
    assert conn.execute(f"DELETE FROM {table} WHERE name != 'a'").rowcount == 3
    assert conn.execute(f"SELECT * FROM {table}").rowcount == -1


def test_lastrowid_is_the_rowid_of_the_inserted_row(conn, table):
    assert conn.execute(f"INSERT INTO {table} (id, name) VALUES (41, 'a')").lastrowid == 41
    assert conn.execute(f"INSERT INTO {table} (name) VALUES ('b')").lastrowid == 42
    conn.execute("BEGIN")
    assert conn.execute(f"INSERT INTO {table} (id, name) VALUES (77, 'c')").lastrowid == 77
    conn.execute("COMMIT")
    assert conn.execute(f"SELECT id FROM {table} WHERE name = 'c'").fetchone() == (77,)


def test_lastrowid_after_a_statement_that_inserts_nothing_is_not_a_bookkeeping_rowid(conn, table):
    assert conn.execute(f"INSERT INTO {table} (id, name) VALUES (500, 'a')").lastrowid == 500
    cursor = conn.cursor()
    cursor.execute(f"UPDATE {table} SET v = 2 WHERE id = 500")
    assert cursor.rowcount == 1
    assert cursor.lastrowid in (None, 500)


def test_fetchone_fetchmany_fetchall_and_iteration_walk_the_result_once(conn, table):
    conn.executemany(f"INSERT INTO {table} (id, name) VALUES (?, ?)", [(i, f"n{i}") for i in range(1, 8)])
    cursor = conn.execute(f"SELECT id FROM {table} ORDER BY id")
    assert cursor.fetchone() == (1,)
    assert cursor.fetchmany(2) == [(2,), (3,)]
    assert cursor.fetchmany() == [(4,)]  # arraysize defaults to 1
    cursor.arraysize = 2
    assert cursor.fetchmany() == [(5,), (6,)]
    assert cursor.fetchall() == [(7,)]
    assert cursor.fetchone() is None
    assert cursor.fetchmany(5) == []
    assert cursor.fetchall() == []
    assert list(conn.execute(f"SELECT id FROM {table} WHERE id <= 3 ORDER BY id")) == [(1,), (2,), (3,)]


def test_named_parameters_bind_by_name(conn, table):
    conn.execute(f"INSERT INTO {table} (name, v) VALUES (:name, :value)", {"value": 7, "name": "x"})
    row = conn.execute(f"SELECT name, v FROM {table} WHERE name = :wanted", {"wanted": "x"}).fetchone()
    assert row == ("x", 7)


def test_executemany_inserts_every_row_as_one_log_entry(conn, table):
    before = entry_count(conn)
    cursor = conn.executemany(f"INSERT INTO {table} (name, v) VALUES (?, ?)", [(f"n{i}", i) for i in range(100)])
    assert cursor.rowcount == 100
    assert entry_count(conn) == before + 1
    assert conn.execute(f"SELECT count(*), sum(v) FROM {table}").fetchone() == (100, sum(range(100)))


def test_executemany_with_a_failing_row_applies_none_of_them(conn, table):
    with pytest.raises(dbapi.IntegrityError):
        conn.executemany(f"INSERT INTO {table} (name) VALUES (?)", [("a",), ("b",), ("a",)])
    assert count(conn, table) == 0


# -- transactions ---------------------------------------------------------------------------------


def test_a_committed_transaction_is_visible_to_other_sessions(conn, other, table):
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('a')")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('b')")
    assert conn.in_transaction
    conn.execute("COMMIT")
    assert not conn.in_transaction
    assert sorted(other.execute(f"SELECT name FROM {table}").fetchall()) == [("a",), ("b",)]


def test_rollback_of_an_explicit_transaction_leaves_nothing(conn, other, table):
    before = entry_count(conn)
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('a')")
    conn.execute(f"UPDATE {table} SET v = 5")
    conn.execute("ROLLBACK")
    assert not conn.in_transaction
    assert count(conn, table) == 0
    assert count(other, table) == 0
    assert entry_count(conn) == before


def test_connection_commit_and_rollback_end_an_explicit_transaction(conn, other, table):
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('kept')")
    conn.commit()
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('discarded')")
    conn.rollback()
    assert not conn.in_transaction
    assert other.execute(f"SELECT name FROM {table}").fetchall() == [("kept",)]


def test_reads_inside_a_transaction_see_its_own_writes_and_others_do_not(conn, other, table):
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('mine')")
    assert conn.execute(f"SELECT name FROM {table}").fetchall() == [("mine",)]
    assert count(other, table) == 0
    conn.execute("COMMIT")
    assert count(other, table) == 1


def test_rollback_to_a_savepoint_undoes_only_the_work_after_it(conn, other, table):
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('before')")
    conn.execute("SAVEPOINT sp1")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('after')")
    assert count(conn, table) == 2
    conn.execute("ROLLBACK TO sp1")
    assert conn.execute(f"SELECT name FROM {table}").fetchall() == [("before",)]
    conn.execute("RELEASE sp1")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('later')")
    conn.execute("COMMIT")
    assert sorted(other.execute(f"SELECT name FROM {table}").fetchall()) == [("before",), ("later",)]


def test_released_nested_savepoints_commit_with_the_transaction(conn, other, table):
    conn.execute("BEGIN")
    conn.execute("SAVEPOINT outer_sp")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('a')")
    conn.execute("SAVEPOINT inner_sp")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('b')")
    conn.execute("RELEASE inner_sp")
    conn.execute("RELEASE outer_sp")
    conn.execute("COMMIT")
    assert sorted(other.execute(f"SELECT name FROM {table}").fetchall()) == [("a",), ("b",)]


def test_a_savepoint_outside_a_transaction_starts_one_that_its_release_commits(conn, other, table):
    conn.execute("SAVEPOINT solo")
    conn.execute(f"INSERT INTO {table} (name) VALUES ('a')")
    assert conn.in_transaction
    assert count(other, table) == 0
    conn.execute("RELEASE solo")
    assert not conn.in_transaction
    assert count(other, table) == 1


def test_isolation_level_empty_begins_implicitly_before_dml_until_commit(connect, other, table):
    legacy = connect(isolation_level="")
    assert legacy.isolation_level == ""
    legacy.execute(f"SELECT count(*) FROM {table}").fetchall()
    assert not legacy.in_transaction  # reads do not open a transaction
    legacy.execute(f"INSERT INTO {table} (name) VALUES ('a')")
    assert legacy.in_transaction
    assert count(other, table) == 0
    legacy.commit()
    assert not legacy.in_transaction
    assert count(other, table) == 1
    legacy.execute(f"UPDATE {table} SET v = 9")
    assert legacy.in_transaction
    legacy.rollback()
    assert other.execute(f"SELECT v FROM {table}").fetchall() == [(None,)]


# -- errors ---------------------------------------------------------------------------------------


def test_unique_violation_is_an_integrity_error_with_the_sqlite_code(conn, table):
    conn.execute(f"INSERT INTO {table} (name) VALUES ('a')")
    with pytest.raises(dbapi.IntegrityError) as info:
        conn.execute(f"INSERT INTO {table} (name) VALUES ('a')")
    assert info.value.sqlite_errorname.startswith("SQLITE_CONSTRAINT")
    assert "UNIQUE" in str(info.value)
    assert count(conn, table) == 1
    conn.execute(f"INSERT INTO {table} (name) VALUES ('b')")  # the session is still usable
    assert count(conn, table) == 2


def test_syntax_error_is_an_operational_error(conn):
    with pytest.raises(dbapi.OperationalError, match="syntax error"):
        conn.execute("SELEC 1")


def test_wrong_number_of_bindings_is_a_programming_error(conn, table):
    with pytest.raises(dbapi.ProgrammingError, match="bindings"):
        conn.execute(f"INSERT INTO {table} (name) VALUES (?)", ("a", "b"))
    with pytest.raises(dbapi.ProgrammingError):
        conn.execute(f"INSERT INTO {table} (name, v) VALUES (?, ?)", ("a",))
    assert count(conn, table) == 0


def test_missing_named_parameter_is_a_programming_error(conn, table):
    with pytest.raises(dbapi.ProgrammingError, match="wanted"):
        conn.execute(f"SELECT * FROM {table} WHERE name = :wanted", {"other": 1})


def test_unsupported_parameter_type_is_a_programming_error_naming_the_parameter(conn, table):
    with pytest.raises(dbapi.ProgrammingError, match=r"parameter 2\b.*set"):
        conn.execute(f"INSERT INTO {table} (name, v) VALUES (?, ?)", ("a", {1, 2}))
    with pytest.raises(dbapi.ProgrammingError, match=r"payload.*object"):
        conn.execute(f"INSERT INTO {table} (name, v) VALUES ('b', :payload)", {"payload": object()})
    assert count(conn, table) == 0


def test_integer_beyond_64_bits_raises_overflow_error(conn, table):
    with pytest.raises(OverflowError):
        conn.execute(f"INSERT INTO {table} (name, v) VALUES ('big', ?)", (1 << 63,))
    with pytest.raises(OverflowError):
        conn.execute(f"INSERT INTO {table} (name, v) VALUES ('small', ?)", (-(1 << 63) - 1,))
    assert count(conn, table) == 0


# -- parameter adaptation -------------------------------------------------------------------------


def test_parameters_of_common_python_types_round_trip(conn, table):
    moment = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)
    values = {
        "decimal": decimal.Decimal("12345678901234567890.10"),
        "datetime": moment,
        "date": datetime.date(2024, 2, 29),
        "bytes": b"\x00\xffbinary\x00",
        "true": True,
        "false": False,
        "none": None,
        "max_int": (1 << 63) - 1,
        "min_int": -(1 << 63),
        "float": 2.5,
        "text": "snowman \u2603",
    }
    conn.executemany(f"INSERT INTO {table} (name, v) VALUES (?, ?)", list(values.items()))
    got = dict(conn.execute(f"SELECT name, v FROM {table}").fetchall())
    # Decimal travels as exact text, never through a float.
    assert decimal.Decimal(got["decimal"]) == values["decimal"]
    assert datetime.datetime.fromisoformat(got["datetime"]) == moment
    assert datetime.date.fromisoformat(got["date"]) == values["date"]
    assert got["bytes"] == values["bytes"]
    assert conn.execute(f"SELECT typeof(v) FROM {table} WHERE name = 'bytes'").fetchone() == ("blob",)
    assert got["true"] == 1 and got["false"] == 0
    assert got["none"] is None
    assert got["max_int"] == (1 << 63) - 1 and got["min_int"] == -(1 << 63)
    assert got["float"] == 2.5
    assert got["text"] == "snowman \u2603"


def test_parameters_bind_in_where_clauses_like_stored_values(conn, table):
    conn.execute(f"INSERT INTO {table} (name, v) VALUES ('d', ?)", (datetime.date(2020, 5, 17),))
    conn.execute(f"INSERT INTO {table} (name, v) VALUES ('b', ?)", (b"\x01\x02",))
    assert conn.execute(f"SELECT name FROM {table} WHERE v = ?", (datetime.date(2020, 5, 17),)).fetchall() == [("d",)]
    assert conn.execute(f"SELECT name FROM {table} WHERE v = ?", (b"\x01\x02",)).fetchall() == [("b",)]


# -- closed objects -------------------------------------------------------------------------------


def test_a_closed_connection_raises_programming_error(connect):
    closed = connect()
    cursor = closed.cursor()
    closed.close()
    closed.close()  # closing twice is harmless
    assert closed.closed
    for operation in (closed.cursor, lambda: closed.execute("SELECT 1"), closed.commit, closed.rollback,
                      lambda: cursor.execute("SELECT 1"), cursor.fetchall):
        with pytest.raises(dbapi.ProgrammingError):
            operation()


def test_threads_sharing_a_connection_each_get_the_answers_to_their_own_statements(conn, table):
    """threadsafety 2: each request and its answer go together, whichever thread sends it."""
    conn.executemany(f"INSERT INTO {table} (id, v) VALUES (?, ?)", [(n, n * 10) for n in range(6)])
    wrong = []

    def ask(n):
        try:
            for _ in range(100):
                got = conn.execute(f"SELECT id, v FROM {table} WHERE id = ?", (n,)).fetchall()
                if got != [(n, n * 10)]:
                    wrong.append((n, got))
        except Exception as error:  # noqa: BLE001 - reported below, with the thread's number
            wrong.append((n, repr(error)))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []
    assert count(conn, table) == 6


def test_a_closed_cursor_raises_programming_error(conn):
    cursor = conn.execute("SELECT 1")
    cursor.close()
    for operation in (lambda: cursor.execute("SELECT 1"), cursor.fetchone, cursor.fetchall,
                      lambda: cursor.fetchmany(1), lambda: cursor.executemany("SELECT 1", [])):
        with pytest.raises(dbapi.ProgrammingError):
            operation()
    assert conn.execute("SELECT 2").fetchone() == (2,)  # the connection is unaffected


# -- executescript --------------------------------------------------------------------------------


def test_executescript_runs_several_statements_as_one_log_entry(conn, table):
    before = entry_count(conn)
    conn.executescript(f"""
        INSERT INTO {table} (name) VALUES ('a');
        INSERT INTO {table} (name) VALUES ('semi;colon');
        UPDATE {table} SET v = 1;
    """)
    assert not conn.in_transaction
    assert conn.execute(f"SELECT name, v FROM {table} ORDER BY id").fetchall() == [("a", 1), ("semi;colon", 1)]
    assert entry_count(conn) == before + 1


def test_executescript_whose_last_statement_fails_applies_none_of_them(conn, other, table):
    with pytest.raises(dbapi.OperationalError, match="no such table"):
        conn.executescript(f"""
            INSERT INTO {table} (name) VALUES ('a');
            INSERT INTO {table} (name) VALUES ('b');
            INSERT INTO no_such_table_{uuid.uuid4().hex[:6]} VALUES (1);
        """)
    assert count(other, table) == 0
    assert not conn.in_transaction
    assert count(conn, table) == 0


# -- databases ------------------------------------------------------------------------------------


def test_two_databases_on_one_store_are_independent(connect):
    first, second = connect(database=unique_name("one")), connect(database=unique_name("two"))
    first.execute("CREATE TABLE items (v)")
    first.execute("INSERT INTO items VALUES ('in one')")
    with pytest.raises(dbapi.OperationalError, match="no such table"):
        second.execute("SELECT * FROM items")
    second.execute("CREATE TABLE items (v)")
    second.execute("INSERT INTO items VALUES ('in two')")
    assert first.execute("SELECT v FROM items").fetchall() == [("in one",)]
    assert second.execute("SELECT v FROM items").fetchall() == [("in two",)]


def test_list_databases_names_every_database(conn, connect):
    names = [unique_name("listed"), unique_name("listed")]
    for name in names:
        connect(database=name).execute("CREATE TABLE x (a)")
    listed = conn.list_databases()
    assert set(names) | {"default"} <= set(listed)


def test_drop_database_removes_it_and_leaves_the_others(conn, connect):
    doomed, kept = unique_name("doomed"), unique_name("kept")
    connect(database=doomed).execute("CREATE TABLE x (a)")
    kept_conn = connect(database=kept)
    kept_conn.execute("CREATE TABLE x (a)")
    kept_conn.execute("INSERT INTO x VALUES (1)")
    conn.drop_database(doomed)
    assert doomed not in conn.list_databases()
    with pytest.raises(dbapi.OperationalError, match="no such table"):
        connect(database=doomed).execute("SELECT * FROM x")
    assert kept_conn.execute("SELECT a FROM x").fetchall() == [(1,)]


def test_clone_database_copies_it_and_the_copies_then_diverge(conn, connect):
    source, target = unique_name("source"), unique_name("copy")
    source_conn = connect(database=source)
    source_conn.execute("CREATE TABLE x (a)")
    source_conn.executemany("INSERT INTO x VALUES (?)", [(1,), (2,)])
    conn.clone_database(source, target)
    assert {source, target} <= set(conn.list_databases())
    target_conn = connect(database=target)
    assert target_conn.execute("SELECT a FROM x ORDER BY a").fetchall() == [(1,), (2,)]
    target_conn.execute("INSERT INTO x VALUES (3)")
    source_conn.execute("DELETE FROM x WHERE a = 1")
    assert source_conn.execute("SELECT a FROM x ORDER BY a").fetchall() == [(2,)]
    assert target_conn.execute("SELECT a FROM x ORDER BY a").fetchall() == [(1,), (2,), (3,)]


def test_a_database_cannot_be_cloned_onto_itself_or_from_nothing(conn, connect):
    """Onto itself, the clone removed the database's files before copying them: every row was lost."""
    name = unique_name("kept")
    kept = connect(database=name)
    kept.execute("CREATE TABLE x (a)")
    kept.execute("INSERT INTO x VALUES (1)")
    with pytest.raises(dbapi.ProgrammingError, match=rf"cannot clone database '{name}' onto itself"):
        conn.clone_database(name, name)
    missing = unique_name("missing")
    with pytest.raises(dbapi.ProgrammingError, match=rf"cannot clone database '{missing}': there is no such database"):
        conn.clone_database(missing, unique_name("copy"))
    assert missing not in conn.list_databases()
    assert kept.execute("SELECT a FROM x").fetchall() == [(1,)]


def test_a_clone_onto_itself_already_in_a_log_changes_nothing(tmp_path):
    machine = StateMachine(str(tmp_path / "data"), fsync=False)
    try:
        machine.apply(encode_entry(tx("CREATE TABLE x (a)", db="kept")), 1)
        machine.apply(encode_entry(tx("INSERT INTO x VALUES (1)", db="kept")), 2)
        outcome = machine.apply(encode_entry({"kind": CLONE_DB, "id": "c1", "src": "kept", "dst": "kept"}), 3)
        assert "onto itself" in outcome["error"]["message"]
        assert rows(machine, "SELECT a FROM x", db="kept") == [(1,)]
    finally:
        machine.close()


@pytest.mark.parametrize("operation", [
    "connect",
    "drop_database",
    "clone_database",
])
def test_an_invalid_database_name_is_refused_with_a_clear_programming_error(connect, embedded_node, operation):
    with pytest.raises(dbapi.ProgrammingError, match=r"invalid database name '\.\./x'"):
        if operation == "connect":
            connect(database="../x")
        elif operation == "drop_database":
            connect().drop_database("../x")
        else:
            connect().clone_database("default", "../x")
    data_dir = embedded_node.config.data_dir
    assert not os.path.exists(os.path.join(data_dir, "x.sqlite3"))


# -- reaching the store ---------------------------------------------------------------------------


def test_an_unreachable_cluster_raises_operational_error_naming_every_address_tried():
    first, second = (f"127.0.0.1:{port}" for port in free_ports(2))
    with pytest.raises(dbapi.OperationalError) as info:
        dbapi.connect(f"{first},{second}", secret=SECRET, timeout=1)
    assert first in str(info.value)
    assert second in str(info.value)


def test_connect_without_any_address_is_an_interface_error():
    with pytest.raises(dbapi.InterfaceError):
        dbapi.connect(secret=SECRET)
