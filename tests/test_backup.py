"""Backups: a database copied, as of one moment, into a SQLite file; and loaded back.

``django_dqcluster.backup`` speaks DB-API, so its rules are shown first between
plain sqlite3 connections, then on the store: a copy taken while transactions
move money between two tables never sees half of one, and a restore through a
follower reaches every node's file.
"""

import io
import os
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest
from django.core.management.base import OutputWrapper

from django_dqcluster import dbapi
from django_dqcluster.backup import BackupError, RestoreInterrupted, backup, restore
from django_dqcluster.management.commands.dqcluster_backup import table_progress
from django_dqcluster.store.local_cluster import LocalCluster

from .store.conftest import EMBEDDED_SECRET, rows_on_every_node, start_embedded_node

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


def test_progress_is_told_after_each_batch_and_once_each_table_is_done(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source)
    calls = []
    restore(sqlite_connection(str(tmp_path / "target.sqlite3")), str(tmp_path / "source.sqlite3"), batch_bytes=4000,
            progress=lambda table, rows, done: calls.append((table, rows, done)))
    authors = [(rows, done) for table, rows, done in calls if table == "author"]
    assert len(authors) > 3 and authors[-1] == (299, True)
    assert [done for _, done in authors[:-1]] == [False] * (len(authors) - 1)
    assert [rows for rows, _ in authors] == sorted(rows for rows, _ in authors)
    assert [call for call in calls if call[2]] == [("author", 299, True), ("book", 200, True), ("audit", 200, True)]


def test_the_commands_say_how_far_a_large_table_got_every_few_seconds_and_each_table_at_verbosity_2():
    def lines(verbosity):
        now = [0.0]
        out = io.StringIO()
        progress = table_progress(SimpleNamespace(stdout=OutputWrapper(out)), verbosity, clock=lambda: now[0])
        for rows, at in ((1000, 1.0), (2000, 5.5), (3000, 7.0), (4000, 11.0)):
            now[0] = at
            progress("big", rows, False)
        progress("big", 4500, True)
        progress("small", 3, True)
        return out.getvalue().splitlines()

    assert lines(1) == ["  big: 2,000 row(s) so far...", "  big: 4,000 row(s) so far..."]
    assert lines(2) == ["  big: 2,000 row(s) so far...", "  big: 4,000 row(s) so far...",
                        "  big: 4,500 row(s)", "  small: 3 row(s)"]
    assert lines(0) == []


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


def restore_stopped_after_two_batches(tmp_path, connection=FailingAfter, **options):
    """Restore fill()'s file through a connection that fails after two batches: (the target, the error)."""
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source)
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    with pytest.raises(RestoreInterrupted) as failure:
        restore(connection(target, batches=2), str(tmp_path / "source.sqlite3"), batch_bytes=2000, **options)
    assert not target.in_transaction  # its last batch rolled back
    return target, failure.value


def test_a_restore_that_stops_part_way_drops_what_it_made_and_leaves_the_database_empty_as_it_was(tmp_path):
    target, error = restore_stopped_after_two_batches(tmp_path)
    assert str(error) == ("the restore stopped (OperationalError: the node went away); the 3 table(s) it had "
                          "created were dropped again: the database is empty, as it was.")
    assert error.created == []
    assert target.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall() == []
    assert target.execute("PRAGMA foreign_keys").fetchone() == (0,)  # as it was before
    assert restore(target, str(tmp_path / "source.sqlite3")).rows == 699  # so the next restore can begin


def test_asked_to_keep_a_partial_restore_it_names_the_tables_it_made(tmp_path):
    target, error = restore_stopped_after_two_batches(tmp_path, keep_partial=True)
    assert str(error) == ("the restore stopped (OperationalError: the node went away); it had created 3 table(s): "
                          "author, book, audit. Drop them before restoring again.")
    assert error.created == ["author", "book", "audit"]
    assert target.execute("SELECT count(*) FROM author").fetchone()[0] < 299  # two batches, no more


class GoneAfter(FailingAfter):
    """A connection lost for good after ``batches`` batches: nothing it is asked afterwards works either."""

    def executemany(self, sql, rows):
        try:
            return super().executemany(sql, rows)
        except sqlite3.OperationalError:
            self._gone = True
            raise

    def execute(self, sql, *params):
        if getattr(self, "_gone", False) and not sql.startswith("ROLLBACK"):
            raise sqlite3.OperationalError("no connection to the node")
        return self._conn.execute(sql, *params)


def test_a_restore_that_cannot_drop_what_it_made_names_the_tables_left(tmp_path):
    _, error = restore_stopped_after_two_batches(tmp_path, connection=GoneAfter)
    assert str(error) == ("the restore stopped (OperationalError: the node went away); dropping the tables it had "
                          "created failed too (OperationalError: no connection to the node): drop author, book, "
                          "audit before restoring again.")
    assert error.created == ["author", "book", "audit"]


def test_a_failed_backup_leaves_the_earlier_file_as_it_was(tmp_path):
    (tmp_path / "copy.sqlite3").write_bytes(b"yesterday's backup")
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source, authors=10)

    def connection_lost(table, rows, done):
        source.close()

    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        backup(source, str(tmp_path / "copy.sqlite3"), progress=connection_lost)
    assert (tmp_path / "copy.sqlite3").read_bytes() == b"yesterday's backup"
    assert not os.path.exists(tmp_path / "copy.sqlite3.partial")


def fts5_or_skip(conn):
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.probe USING fts5(x)")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no FTS5")
    conn.execute("DROP TABLE temp.probe")


SEARCH_SCHEMA = [
    # A full-text index of its own, one over the book table (external content,
    # kept in step by a trigger), and a spatial index.
    "CREATE VIRTUAL TABLE notes USING fts5(title, body)",
    "CREATE VIRTUAL TABLE book_search USING fts5(title, content='book', content_rowid='id')",
    "CREATE TRIGGER book_indexed AFTER INSERT ON book BEGIN "
    "INSERT INTO book_search (rowid, title) VALUES (NEW.id, NEW.title); END",
    "CREATE VIRTUAL TABLE shelves USING rtree(id, x0, x1, y0, y1)",
]


def fill_searchable(conn):
    fill(conn, authors=60)
    for statement in SEARCH_SCHEMA:
        conn.execute(statement)
    conn.executemany("INSERT INTO notes (title, body) VALUES (?, ?)",
                     [(f"note {i}", f"raft log entry {i} replicated {'quorum' if i % 7 == 0 else 'follower'}")
                      for i in range(500)])
    conn.execute("DELETE FROM notes WHERE rowid % 10 = 0")  # deletions live in the index too
    conn.execute("INSERT INTO book_search (book_search) VALUES ('rebuild')")  # index the books already there
    conn.executemany("INSERT INTO book (title, author_id) VALUES (?, 1)", [("a quorum of books",), ("raft",)])
    conn.executemany("INSERT INTO shelves VALUES (?, ?, ?, ?, ?)",
                     [(i, i, i + 2.5, -i, -i + 1.5) for i in range(1, 300)])


def searches(conn):
    for table in ("notes", "book_search"):  # raises if an index and its content disagree
        conn.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")
    return as_lists({
        "notes": conn.execute("SELECT rowid, title FROM notes WHERE notes MATCH 'quorum' ORDER BY rowid").fetchall(),
        "ranked": conn.execute("SELECT rowid FROM notes WHERE notes MATCH 'entry AND 4*' ORDER BY rank").fetchall(),
        "books": conn.execute("SELECT rowid FROM book_search WHERE book_search MATCH 'quorum OR raft'").fetchall(),
        "shelves": conn.execute("SELECT id FROM shelves WHERE x0 <= 20 AND x1 >= 18 ORDER BY id").fetchall(),
        "index blocks": conn.execute("SELECT id, block FROM notes_data ORDER BY id").fetchall(),
    })


def test_full_text_and_spatial_indexes_come_across_as_they_were(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fts5_or_skip(source)
    fill_searchable(source)
    report = backup(source, str(tmp_path / "copy.sqlite3"))
    assert report.virtual_tables == 3
    assert {"notes_data", "notes_idx", "notes_content", "book_search_data", "shelves_node"} <= set(report.tables)
    assert "notes" not in report.tables  # its rows are its shadow tables'
    copy = sqlite_connection(str(tmp_path / "copy.sqlite3"))
    expected = searches(source)
    assert expected["notes"] and expected["books"] and expected["shelves"] and expected["ranked"]
    assert searches(copy) == expected  # down to the index's own blocks
    assert contents(copy) == contents(source)

    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    restored = restore(target, str(tmp_path / "copy.sqlite3"), batch_bytes=2000)
    assert restored.virtual_tables == 3
    assert searches(target) == expected
    # The trigger came last, so the load did not index the books twice; from now on it indexes new ones.
    target.execute("INSERT INTO book (title, author_id) VALUES ('quorum reads', 1)")
    assert len(target.execute("SELECT rowid FROM book_search WHERE book_search MATCH 'quorum'").fetchall()) == 2


def test_wherever_a_restore_stops_the_database_is_left_empty_or_its_tables_can_be_dropped(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fts5_or_skip(source)
    fill_searchable(source)
    source.close()
    whole = restore(sqlite_connection(str(tmp_path / "whole.sqlite3")), str(tmp_path / "source.sqlite3"),
                    batch_bytes=2000)

    def user_objects(conn):
        return conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()

    stops = 0
    for batches in range(1000):
        results = {}
        for keep_partial in (False, True):
            path = str(tmp_path / f"target-{batches}-{keep_partial}.sqlite3")
            target = sqlite_connection(path)
            try:
                restore(FailingAfter(target, batches), str(tmp_path / "source.sqlite3"), batch_bytes=2000,
                        keep_partial=keep_partial)
            except RestoreInterrupted as stopped:
                results[keep_partial] = stopped.created
            finally:
                assert not target.in_transaction, batches
                target.close()
        if not results:
            break  # every later one gets through too
        stops += 1
        assert user_objects(sqlite_connection(str(tmp_path / f"target-{batches}-False.sqlite3"))) == [], batches
        # Kept: a virtual table whose shadow tables were emptied but not yet
        # filled could not be opened, nor dropped, by a new connection.
        again = sqlite_connection(str(tmp_path / f"target-{batches}-True.sqlite3"))
        for table in results[True]:
            again.execute(f'DROP TABLE "{table}"')
        assert user_objects(again) == [], batches
    # It stopped at every batch, so inside every table that has rows, shadow tables included.
    assert stops >= len([rows for rows in whole.tables.values() if rows]) > 10


def test_a_restore_lists_virtual_tables_among_those_in_the_way(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source, authors=10)
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    fts5_or_skip(target)
    target.execute("CREATE VIRTUAL TABLE search USING fts5(body)")
    with pytest.raises(BackupError, match=r"already has 1 table\(s\) \(search\)"):
        restore(target, str(tmp_path / "source.sqlite3"))


def test_shadow_tables_laid_out_otherwise_than_the_files_are_refused_before_any_row_is_copied(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fts5_or_skip(source)
    source.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
    source.execute("INSERT INTO notes VALUES ('raft')")
    # What another SQLite might do with the same statement, played by a
    # contentless table's: no notes_content, where the file has one.
    source.execute("PRAGMA writable_schema = ON")
    source.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'notes'",
                   ("CREATE VIRTUAL TABLE notes USING fts5(body, content='')",))
    source.close()
    target = sqlite_connection(str(tmp_path / "target.sqlite3"))
    with pytest.raises(RestoreInterrupted, match=r"modules here made the shadow tables notes_config, notes_data, "
                                                 r"notes_docsize, notes_idx, but the source has notes_config, "
                                                 r"notes_content, notes_data"):
        restore(target, str(tmp_path / "source.sqlite3"), keep_partial=True)
    fresh = sqlite3.connect(":memory:")
    fresh.execute("CREATE VIRTUAL TABLE notes USING fts5(body, content='')")
    for shadow in ("notes_config", "notes_data"):  # as creating it left them: nothing emptied, nothing copied
        assert target.execute(f"SELECT * FROM {shadow}").fetchall() == fresh.execute(f"SELECT * FROM {shadow}").fetchall()
    target.execute("DROP TABLE notes")
    with pytest.raises(RestoreInterrupted, match="the 1 table\\(s\\) it had created were dropped again"):
        restore(target, str(tmp_path / "source.sqlite3"))



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

        def after_each_table(table, rows, done):
            if not done:
                return
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


def test_a_restore_the_store_refuses_part_way_leaves_its_database_empty(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fill(source, authors=60)
    source.execute("CREATE TABLE attachment (id INTEGER PRIMARY KEY, body BLOB)")
    source.execute("INSERT INTO attachment (body) VALUES (?)", (b"x" * 300_000,))  # more than one frame may carry
    node = start_embedded_node(tmp_path / "node", max_frame=256 * 1024)
    try:
        conn = dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, database="restored")
        with pytest.raises(RestoreInterrupted, match=r"the 4 table\(s\) it had created were dropped again"):
            restore(conn, str(tmp_path / "source.sqlite3"))
        assert conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                            "AND name NOT LIKE '_dqcluster_%'").fetchall() == []
        conn.close()
    finally:
        node.stop()


@pytest.mark.cluster
def test_a_restore_through_a_follower_reaches_every_node(tmp_path):
    source = sqlite_connection(str(tmp_path / "source.sqlite3"))
    fts5_or_skip(source)
    fill_searchable(source)
    with LocalCluster(str(tmp_path / "cluster"), 3, durability="process") as cluster:
        leader = cluster.leader()
        follower = next(node for node in cluster.nodes if node is not leader)
        target = follower.connect(database="restored")
        report = restore(target, str(tmp_path / "source.sqlite3"), batch_bytes=4000)
        assert report.tables["author"] == 59 and report.virtual_tables == 3
        expected = sorted(tuple(row) for row in source.execute("SELECT id, name, photo FROM author"))
        on_each = rows_on_every_node(cluster, "SELECT id, name, photo FROM author ORDER BY id", database="restored")
        assert sorted(on_each) == [0, 1, 2]
        for rows in on_each.values():
            assert [tuple(row) for row in rows] == expected
        found = rows_on_every_node(cluster, "SELECT rowid, title FROM notes WHERE notes MATCH 'quorum' ORDER BY rowid",
                                   database="restored")
        assert [[tuple(row) for row in rows] for rows in found.values()] == [searches(source)["notes"]] * 3
        assert as_lists(contents(leader.connect(database="restored"))) == as_lists(contents(source))
        assert searches(leader.connect(database="restored")) == searches(source)
        # And back out, through the same follower: the same contents again.
        backup(target, str(tmp_path / "copy.sqlite3"))
        copy = sqlite_connection(str(tmp_path / "copy.sqlite3"))
        assert contents(copy) == contents(source)
        assert searches(copy) == searches(source)
        target.close()
