"""Backups: a database copied, as of one moment, into a SQLite file; and loaded back.

``django_dqcluster.backup`` speaks DB-API, so its rules are shown first between
plain sqlite3 connections, then on the store: a copy taken while transactions
move money between two tables never sees half of one, and a restore through a
follower reaches every node's file.
"""

import os
import sqlite3
import threading
import time

import pytest

from django_dqcluster import dbapi
from django_dqcluster.backup import BackupError, RestoreInterrupted, backup, restore
from django_dqcluster.store.local_cluster import LocalCluster

from .store.conftest import rows_on_every_node, start_embedded_node

SCHEMA = [
    "CREATE TABLE author (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, photo BLOB,"
    " name_length INTEGER GENERATED ALWAYS AS (length(name)) VIRTUAL)",
    "CREATE TABLE book (id INTEGER PRIMARY KEY, title TEXT, author_id INTEGER REFERENCES author (id)"
    " DEFERRABLE INITIALLY DEFERRED)",
    "CREATE INDEX book_author ON book (author_id)",
    "CREATE VIEW titles AS SELECT title FROM book ORDER BY title",
    "CREATE TABLE audit (book_id INTEGER)",
    "CREATE TRIGGER book_added AFTER INSERT ON book BEGIN INSERT INTO audit VALUES (NEW.id); END",
]


def sqlite_connection(path):
    return sqlite3.connect(path, isolation_level=None)


def fill(conn, authors=300):
    for statement in SCHEMA:
        conn.execute(statement)
    conn.executemany("INSERT INTO author (name, photo) VALUES (?, ?)",
                     [(f"author {i} é日", os.urandom(64)) for i in range(authors)])
    conn.execute("DELETE FROM author WHERE id = ?", (authors,))  # the counter stays ahead of max(id)
    conn.executemany("INSERT INTO book (title, author_id) VALUES (?, ?)", [(f"book {i}", i % 50 + 1) for i in range(200)])


def contents(conn):
    return {
        "authors": conn.execute("SELECT id, name, photo, name_length FROM author ORDER BY id").fetchall(),
        "books": conn.execute("SELECT * FROM book ORDER BY id").fetchall(),
        "audit": conn.execute("SELECT count(*) FROM audit").fetchall(),
        "view": conn.execute("SELECT count(*) FROM titles").fetchall(),
        "sequence": conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall(),
        "objects": sorted(conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE '_dqcluster_%'"
        ).fetchall()),
    }


def as_lists(value):
    return {key: [tuple(row) for row in rows] for key, rows in value.items()}


def test_a_backup_is_a_plain_sqlite_file_with_every_table_row_index_trigger_and_view(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source)
    report = backup(source, str(tmp_path / "copy.sqlite3"))
    assert report.tables == {"author": 299, "book": 200, "audit": 200}
    assert (report.indexes, report.triggers, report.views) == (1, 1, 1)
    assert contents(sqlite3.connect(tmp_path / "copy.sqlite3")) == contents(source)
    assert not os.path.exists(tmp_path / "copy.sqlite3.partial")


def test_a_restore_loads_everything_and_the_autoincrement_counter_goes_on_where_it_was(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source)
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    report = restore(target, str(tmp_path / "source.sqlite3"), batch_bytes=2000)
    assert report.rows == 699 and report.foreign_key_violations == []
    assert contents(target) == contents(source)  # the trigger did not fire again while loading
    target.execute("INSERT INTO author (name) VALUES ('new')")
    assert target.execute("SELECT max(id) FROM author").fetchone() == (301,)  # not 300, a deleted id
    assert target.execute("PRAGMA foreign_keys").fetchone() == (0,)  # as it was before


def test_a_restore_refuses_a_database_that_has_tables_and_changes_nothing(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source)
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    target.execute("CREATE TABLE mine (x)")
    target.execute("INSERT INTO mine VALUES (1)")
    with pytest.raises(BackupError, match=r"already has 1 table\(s\) \(mine\); restore only into an empty database"):
        restore(target, str(tmp_path / "source.sqlite3"))
    assert target.execute("SELECT name FROM sqlite_master").fetchall() == [("mine",)]


def test_a_file_that_is_not_a_sqlite_database_is_named_as_such(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database, " * 100)
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    with pytest.raises(BackupError, match="notes.txt is not a SQLite database"):
        restore(target, str(tmp_path / "notes.txt"))
    with pytest.raises(BackupError, match="missing.sqlite3 is not a file"):
        restore(target, str(tmp_path / "missing.sqlite3"))


def test_foreign_key_violations_the_file_had_are_reported_not_hidden(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source, authors=60)  # every book's author exists
    source.execute("INSERT INTO book (id, title, author_id) VALUES (999, 'orphan', 12345)")  # foreign_keys is off
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    report = restore(target, str(tmp_path / "source.sqlite3"))
    assert [(table, rowid, parent) for table, rowid, parent, _ in report.foreign_key_violations] == [
        ("book", 999, "author")]


class FailingAfter:
    """A sqlite3 connection whose writes of rows fail after ``batches`` batches (a lost node, say)."""

    def __init__(self, conn, batches):
        self._conn, self._left = conn, batches

    def executemany(self, sql, rows):
        if self._left == 0:
            raise sqlite3.OperationalError("the node went away")
        self._left -= 1
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_restore_that_stops_part_way_names_the_tables_it_made_and_rolls_back_its_last_batch(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source)
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    with pytest.raises(RestoreInterrupted, match=r"the restore stopped \(OperationalError: the node went away\); "
                                                 r"it had created 3 table\(s\): author, book, audit\. Drop them") as failure:
        restore(FailingAfter(target, batches=2), str(tmp_path / "source.sqlite3"), batch_bytes=2000)
    assert failure.value.created == ["author", "book", "audit"]
    assert not target.in_transaction
    assert target.execute("SELECT count(*) FROM author").fetchone()[0] < 299  # two batches, no more
    assert target.execute("PRAGMA foreign_keys").fetchone() == (0,)  # as it was before


def test_virtual_tables_are_refused_by_name_and_nothing_is_written(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    try:
        source.execute("CREATE VIRTUAL TABLE search USING fts5(body)")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no FTS5")
    with pytest.raises(BackupError, match="table 'search' is a virtual table"):
        backup(source, str(tmp_path / "copy.sqlite3"))
    assert not os.path.exists(tmp_path / "copy.sqlite3") and not os.path.exists(tmp_path / "copy.sqlite3.partial")


def test_a_failed_backup_leaves_the_earlier_file_as_it_was(tmp_path):
    (tmp_path / "copy.sqlite3").write_bytes(b"yesterday's backup")
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source, authors=10)
    source.execute("CREATE VIRTUAL TABLE IF NOT EXISTS r USING rtree(id, x0, x1)")
    with pytest.raises(BackupError):
        backup(source, str(tmp_path / "copy.sqlite3"))
    assert (tmp_path / "copy.sqlite3").read_bytes() == b"yesterday's backup"


# -- on the store ------------------------------------------------------------------------------


ACCOUNTS, TOTAL = 20, 20 * 1000


def open_accounts(conn):
    conn.execute("CREATE TABLE checking (id INTEGER PRIMARY KEY, balance INTEGER)")
    conn.execute("CREATE TABLE savings (id INTEGER PRIMARY KEY, balance INTEGER)")
    conn.executemany("INSERT INTO checking VALUES (?, 1000)", [(i,) for i in range(ACCOUNTS)])
    conn.executemany("INSERT INTO savings VALUES (?, 0)", [(i,) for i in range(ACCOUNTS)])


def test_a_backup_of_the_store_sees_one_moment_while_transactions_go_on(tmp_path):
    node = start_embedded_node(tmp_path / "node")
    try:
        conn = dbapi.connect(node=node, isolation_level=None, database="bank")
        open_accounts(conn)
        stop, moved = threading.Event(), [0]

        def move_money():
            # Each transfer takes from one table and gives to the other: a copy
            # that read the two tables at different moments would miss or
            # double the amount in flight.
            mover = dbapi.connect(node=node, isolation_level=None, database="bank")
            while not stop.is_set():
                account = moved[0] % ACCOUNTS
                mover.execute("BEGIN")
                mover.execute("UPDATE checking SET balance = balance - 1 WHERE id = ?", (account,))
                mover.execute("UPDATE savings SET balance = balance + 1 WHERE id = ?", (account,))
                mover.execute("COMMIT")
                moved[0] += 1
            mover.close()

        def after_each_table(table, rows):
            # Let at least one transfer commit between reading the two tables.
            seen = moved[0]
            while moved[0] == seen and mover.is_alive():
                time.sleep(0.001)

        mover = threading.Thread(target=move_money)
        mover.start()
        try:
            for attempt in range(5):
                path = tmp_path / f"bank-{attempt}.sqlite3"
                backup(conn, str(path), progress=after_each_table)
                copy = sqlite3.connect(path)
                (total,) = copy.execute(
                    "SELECT (SELECT sum(balance) FROM checking) + (SELECT sum(balance) FROM savings)").fetchone()
                assert total == TOTAL, (attempt, total)
                assert not copy.execute("SELECT name FROM sqlite_master WHERE name LIKE '_dqcluster_%'").fetchall()
        finally:
            stop.set()
            mover.join(30)
        assert moved[0] >= 10
        conn.close()
    finally:
        node.stop()


@pytest.mark.cluster
def test_a_restore_through_a_follower_reaches_every_node(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source)
    with LocalCluster(str(tmp_path / "cluster"), 3, durability="process") as cluster:
        leader = cluster.leader()
        follower = next(node for node in cluster.nodes if node is not leader)
        target = follower.connect(database="restored")
        report = restore(target, str(tmp_path / "source.sqlite3"), batch_bytes=4000)
        assert report.rows == 699
        expected = sorted(tuple(row) for row in source.execute("SELECT id, name, photo FROM author"))
        on_each = rows_on_every_node(cluster, "SELECT id, name, photo FROM author ORDER BY id", database="restored")
        assert sorted(on_each) == [0, 1, 2]
        for rows in on_each.values():
            assert [tuple(row) for row in rows] == expected
        assert as_lists(contents(leader.connect(database="restored"))) == as_lists(contents(source))
        # And back out, through the same follower: the same contents again.
        backup(target, str(tmp_path / "copy.sqlite3"))
        assert contents(sqlite3.connect(tmp_path / "copy.sqlite3")) == contents(source)
        target.close()
