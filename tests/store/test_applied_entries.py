"""Each database file records which log entries it applied, in the transaction that applied them."""

import sqlite3

from django_dqcluster.store.databases import APPLIED_TABLE, DatabaseSet, entry_was_applied, record_applied


def test_the_applied_index_is_the_highest_recorded_entry_and_ids_are_remembered(tmp_path):
    database = DatabaseSet(str(tmp_path)).get("app")
    conn = database.apply_connection()
    assert database.applied_index == 0
    for index, entry_id in ((5, "first"), (6, "second")):
        conn.execute("BEGIN IMMEDIATE")
        record_applied(conn, entry_id, index)
        conn.execute("COMMIT")
    database.close()

    reopened = DatabaseSet(str(tmp_path)).get("app")
    assert reopened.read_applied_index() == 6
    assert entry_was_applied(reopened.apply_connection(), "first")
    assert not entry_was_applied(reopened.apply_connection(), "never-sent")


def test_a_file_in_the_earlier_layout_keeps_its_applied_index_and_remembered_ids(tmp_path):
    databases = DatabaseSet(str(tmp_path))
    legacy = sqlite3.connect(databases.path_for("app"))
    legacy.executescript("""
        CREATE TABLE _dqcluster_applied (id INTEGER PRIMARY KEY CHECK (id = 1), raft_index INTEGER NOT NULL);
        INSERT INTO _dqcluster_applied VALUES (1, 42);
        CREATE TABLE _dqcluster_entries (entry_id TEXT PRIMARY KEY, raft_index INTEGER NOT NULL);
        INSERT INTO _dqcluster_entries VALUES ('older', 41), ('newest', 42);
        CREATE TABLE notes (v TEXT);
        INSERT INTO notes VALUES ('kept');
    """)
    legacy.close()

    database = databases.get("app")
    conn = database.apply_connection()
    assert database.applied_index == 42
    assert entry_was_applied(conn, "older") and entry_was_applied(conn, "newest")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {APPLIED_TABLE, "notes"}
    assert conn.execute("SELECT v FROM notes").fetchall() == [("kept",)]
