"""Group commit: transactions that wait together share one log entry, and each keeps its own outcome."""

import sqlite3
import uuid

import pytest

from django_dqcluster.store.databases import entry_was_applied
from django_dqcluster.store.determinism import FixedValues
from django_dqcluster.store.group_commit import CommitQueue
from django_dqcluster.store.statemachine import (
    CHECKPOINT, GROUP, MEMBER, TX, StateMachine, decode_entry, encode_entry,
)


def tx(sql, params=None, db="app", pragmas=None, many=False):
    values = FixedValues.fresh()
    return {
        "kind": TX, "id": uuid.uuid4().hex, "db": db, "now": values.now, "seed": values.seed,
        "pragmas": pragmas or {}, "stmts": [[0, sql, params, many, False]], "want_result": True,
    }


def group(*parts):
    return encode_entry({"kind": GROUP, "id": uuid.uuid4().hex, "parts": [encode_entry(p) for p in parts]})


class Waiting:
    """Stands in for a session waiting on its entry."""

    def __init__(self):
        self.outcomes = []

    def resolve(self, result, error):
        self.outcomes.append((result, error))


def rows(machine, sql, db="app"):
    return machine.databases.get(db).apply_connection().execute(sql).fetchall()


@pytest.fixture
def machine(tmp_path):
    machine = StateMachine(str(tmp_path / "data"), fsync=False)
    yield machine
    machine.close()


# -- the queue: what the Raft thread appends ------------------------------------------------


def test_transactions_waiting_together_become_one_entry_in_their_order():
    queue = CommitQueue()
    entries = [tx("INSERT INTO t VALUES (?)", [n]) for n in range(3)]
    waiting = [Waiting() for _ in entries]
    for entry, pending in zip(entries, waiting, strict=True):
        queue.put(entry, pending)

    [(payload, callback)] = queue.take()
    grouped = decode_entry(payload)
    assert grouped["kind"] == GROUP
    assert [decode_entry(part)["id"] for part in grouped["parts"]] == [e["id"] for e in entries]

    callback({"parts": [{"results": [n]} for n in range(3)]}, 0)
    assert [w.outcomes for w in waiting] == [[({"results": [n]}, 0)] for n in range(3)]
    assert queue.take() == []


def test_a_lone_transaction_is_appended_exactly_as_it_was_enqueued():
    queue = CommitQueue()
    entry, pending = tx("INSERT INTO t VALUES (1)"), Waiting()
    queue.put(entry, pending)
    [(payload, callback)] = queue.take()
    assert payload == encode_entry(entry)
    callback({"results": []}, 0)
    assert pending.outcomes == [({"results": []}, 0)]


def test_other_entries_are_never_grouped_and_keep_their_place_in_the_log():
    queue = CommitQueue()
    first, second = tx("INSERT INTO t VALUES (1)"), tx("INSERT INTO t VALUES (2)")
    checkpoint = {"kind": CHECKPOINT, "id": "c", "upto": 1, "hash": b"h"}
    third = tx("INSERT INTO t VALUES (3)")
    for entry in (first, second, checkpoint, third):
        queue.put(entry, Waiting())
    kinds = [decode_entry(payload)["kind"] for payload, _ in queue.take()]
    assert kinds == [GROUP, CHECKPOINT, TX]


def test_entries_holding_transactions_may_only_be_appended_by_the_leader_that_ran_them():
    # Their statements read that leader's state (see SafeSyncObj for the refusal).
    queue = CommitQueue(max_entries=2, max_bytes=4000)
    member = {"kind": MEMBER, "id": "m", "raft": "127.0.0.1:7001", "client": "127.0.0.1:7101"}
    for entry in (tx("INSERT INTO t VALUES (1)"), member, tx("INSERT INTO t VALUES (?)", ["x" * 2000]),
                  tx("INSERT INTO t VALUES (2)"), tx("INSERT INTO t VALUES (3)")):
        queue.put(entry, Waiting())

    taken = [(decode_entry(payload)["kind"], getattr(callback, "leader_only", False))
             for payload, callback in queue.take()]

    assert taken == [(TX, True), (MEMBER, False), (TX, True), (GROUP, True)]


def test_a_group_is_bounded_in_count_and_size_and_a_large_transaction_travels_alone():
    queue = CommitQueue(max_entries=2, max_bytes=4000)
    small = [tx("INSERT INTO t VALUES (?)", [n]) for n in range(3)]
    large = tx("INSERT INTO t VALUES (?)", ["x" * 2000])
    for entry in small + [large]:
        queue.put(entry, Waiting())
    sizes = [len(decode_entry(p).get("parts", [p])) for p, _ in queue.take()]
    assert sizes == [2, 1, 1]


def test_a_failed_group_fails_every_transaction_in_it():
    queue = CommitQueue()
    waiting = [Waiting(), Waiting()]
    for pending in waiting:
        queue.put(tx("INSERT INTO t VALUES (1)"), pending)
    [(_, callback)] = queue.take()
    callback(None, 3)
    assert [w.outcomes for w in waiting] == [[(None, 3)], [(None, 3)]]


# -- the state machine: applying a group -----------------------------------------------------


def test_each_transaction_of_a_group_keeps_its_own_outcome(machine):
    machine.apply(encode_entry(tx("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")), 1)
    result = machine.apply(group(
        tx("INSERT INTO t (v) VALUES (?)", ["a"]),
        tx("INSERT INTO t (v) VALUES (?)", ["a"]),
        tx("INSERT INTO t (v) VALUES (?) RETURNING id, v", ["b"]),
    ), 2)

    first, duplicate, returning = result["parts"]
    assert first["results"][0]["lastrowid"] == 1
    assert duplicate["error"]["kind"] == "IntegrityError"
    assert returning["results"][0]["rows"] == [[2, "b"]]
    assert rows(machine, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]


def test_a_group_leaves_the_same_data_and_outcomes_as_its_transactions_applied_one_by_one(tmp_path):
    setup = [
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id) "
        "DEFERRABLE INITIALLY DEFERRED, v TEXT UNIQUE)",
    ]
    # A child whose parent does not exist yet fails at its own COMMIT (the
    # foreign key is deferred), even though the next transaction creates the
    # parent: sharing one SQLite transaction would have let it through.
    parts = [
        tx("INSERT INTO child (parent_id, v) VALUES (7, 'orphan')"),
        tx("INSERT INTO parent (id) VALUES (7)"),
        tx("INSERT INTO child (parent_id, v) VALUES (7, 'adopted')"),
        tx("INSERT INTO child (parent_id, v) VALUES (7, 'adopted')"),
    ]
    grouped = StateMachine(str(tmp_path / "grouped"), fsync=False)
    single = StateMachine(str(tmp_path / "single"), fsync=False)
    for index, sql in enumerate(setup, start=1):
        for machine in (grouped, single):
            machine.apply(encode_entry(dict(tx(sql), id=f"setup{index}")), index)

    together = grouped.apply(group(*parts), 3)["parts"]
    alone = [single.apply(encode_entry(part), index) for index, part in enumerate(parts, start=3)]

    assert [sorted(o) for o in together] == [sorted(o) for o in alone]
    assert together[0]["error"]["message"] == "FOREIGN KEY constraint failed"
    assert together[3]["error"]["kind"] == "IntegrityError"
    dump = "SELECT * FROM parent UNION ALL SELECT id || ':' || parent_id || ':' || v FROM child"
    assert rows(grouped, dump) == rows(single, dump) == [(7,), ("1:7:adopted",)]
    grouped.close()
    single.close()


def test_a_group_that_creates_a_deferred_constraint_checks_it_per_transaction(machine):
    machine.apply(encode_entry(tx("CREATE TABLE parent (id INTEGER PRIMARY KEY)")), 1)
    result = machine.apply(group(
        tx("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"),
        tx("INSERT INTO child VALUES (1)"),
        tx("INSERT INTO parent VALUES (1)"),
    ), 2)["parts"]
    assert "results" in result[0] and "results" in result[2]
    assert result[1]["error"]["message"] == "FOREIGN KEY constraint failed"
    assert rows(machine, "SELECT count(*) FROM child") == [(0,)]


def test_replaying_a_group_applies_nothing_twice(tmp_path):
    machine = StateMachine(str(tmp_path), fsync=False)
    machine.apply(encode_entry(tx("CREATE TABLE t (v)")), 1)
    payload = group(tx("INSERT INTO t VALUES (1)"), tx("INSERT INTO t VALUES (2)"))
    machine.apply(payload, 2)
    machine.close()

    restarted = StateMachine(str(tmp_path), fsync=False)
    assert restarted.apply(payload, 2)["parts"] == [{"replayed": True}] * 2
    assert rows(restarted, "SELECT v FROM t ORDER BY v") == [(1,), (2,)]
    restarted.close()


def test_a_group_cut_short_by_a_crash_resumes_after_the_transactions_already_in_the_file(machine):
    machine.apply(encode_entry(tx("CREATE TABLE t (v)")), 1)
    first, second = tx("INSERT INTO t VALUES (1)"), tx("INSERT INTO t VALUES (2)")
    # What the file holds when a node stopped after committing only the first
    # transaction of the group at index 2.
    machine.apply(group(first), 2)

    result = machine.apply(group(first, second), 2)
    assert result["parts"][0] == {"replayed": True}
    assert "results" in result["parts"][1]
    assert rows(machine, "SELECT v FROM t ORDER BY v") == [(1,), (2,)]


def test_a_group_spanning_databases_applies_each_in_order_and_remembers_every_id(machine):
    machine.apply(encode_entry(tx("CREATE TABLE t (v)", db="one")), 1)
    machine.apply(encode_entry(tx("CREATE TABLE t (v)", db="two")), 2)
    parts = [
        tx("INSERT INTO t VALUES ('a')", db="one"),
        tx("INSERT INTO t VALUES ('b')", db="two"),
        tx("INSERT INTO t VALUES ('c')", db="one"),
    ]
    machine.apply(group(*parts), 3)
    assert rows(machine, "SELECT v FROM t ORDER BY v", db="one") == [("a",), ("c",)]
    assert rows(machine, "SELECT v FROM t", db="two") == [("b",)]
    one = machine.databases.get("one").apply_connection()
    assert entry_was_applied(one, parts[0]["id"]) and entry_was_applied(one, parts[2]["id"])
    assert not entry_was_applied(one, parts[1]["id"])
    assert machine.databases.get("one").applied_index == 3


def test_transactions_with_different_session_pragmas_are_applied_with_their_own(machine):
    machine.apply(encode_entry(tx("CREATE TABLE parent (id INTEGER PRIMARY KEY)")), 1)
    machine.apply(encode_entry(tx("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id))")), 2)
    result = machine.apply(group(
        tx("INSERT INTO child VALUES (5)", pragmas={"foreign_keys": 0}),
        tx("INSERT INTO child VALUES (6)"),
    ), 3)["parts"]
    assert "results" in result[0]
    assert result[1]["error"]["message"] == "FOREIGN KEY constraint failed"
    assert rows(machine, "SELECT parent_id FROM child") == [(5,)]


def test_an_environmental_failure_applies_nothing_of_the_group_until_it_is_retried(machine, monkeypatch):
    machine.apply(encode_entry(tx("CREATE TABLE t (v)")), 1)
    payload = group(tx("INSERT INTO t VALUES (1)"), tx("INSERT INTO t VALUES (2)"))
    database = machine.databases.get("app")
    real = database.apply_connection()

    class FullDisk:
        """The apply connection, as seen when the disk is full at COMMIT."""

        def __getattr__(self, name):
            return getattr(real, name)

        def execute(self, sql, *args):
            if sql == "COMMIT":
                error = sqlite3.OperationalError("database or disk is full")
                error.sqlite_errorname = "SQLITE_FULL"
                raise error
            return real.execute(sql, *args)

    monkeypatch.setattr(database, "apply_connection", lambda: FullDisk())
    with pytest.raises(Exception, match="disk is full"):
        machine.apply(payload, 2)
    monkeypatch.undo()
    assert rows(machine, "SELECT count(*) FROM t") == [(0,)]

    assert [sorted(p) for p in machine.apply(payload, 2)["parts"]] == [["results"], ["results"]]
    assert rows(machine, "SELECT v FROM t ORDER BY v") == [(1,), (2,)]
