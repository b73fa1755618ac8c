"""The Raft journal is cut after a snapshot through a new file: a node killed meanwhile keeps every entry.

pysyncobj cuts in place (marks the file empty, then writes back the entries it
keeps, one by one): killed in between, a node restarts without entries it had
acknowledged.
"""

import os

import pytest
from pysyncobj.journal import FileJournal

from django_dqcluster.store import journal_compaction
from django_dqcluster.store.journal_compaction import cut_through_a_new_file


def entries(first, last):
    return [(b"\x00" + f"entry {index}".encode() * 20, index, 1) for index in range(first, last + 1)]


def journal_holding(path, held):
    journal = FileJournal(str(path))
    for entry in held:
        journal.add(*entry)
    return journal


def on_disk(path):
    journal = FileJournal(str(path))
    try:
        return [entry[1] for entry in journal]
    finally:
        journal._destroy()


class Killed(BaseException):
    """The process dies here."""


def test_stock_pysyncobj_killed_while_it_cuts_its_journal_loses_entries_it_kept(tmp_path, monkeypatch):
    journal = journal_holding(tmp_path / "raft.journal", entries(1, 100))
    written = []

    def add_then_die(command, index, term):
        if len(written) == 10:
            raise Killed()
        written.append(index)
        FileJournal.add(journal, command, index, term)

    monkeypatch.setattr(journal, "add", add_then_die)
    with pytest.raises(Killed):
        journal.deleteEntriesTo(50)
    journal._destroy()
    assert on_disk(tmp_path / "raft.journal") == list(range(51, 61))  # 61..100 are gone


def test_a_cut_journal_holds_the_entries_kept_and_goes_on_from_them(tmp_path):
    path = tmp_path / "raft.journal"
    journal = journal_holding(path, entries(1, 100))
    cut_through_a_new_file(journal, str(path), durable=True)

    journal.deleteEntriesTo(50)
    assert [entry[1] for entry in journal] == list(range(51, 101))
    for entry in entries(101, 110):
        journal.add(*entry)
    journal._destroy()

    assert on_disk(path) == list(range(51, 111))
    assert not os.path.exists(str(path) + ".cut")


def test_killed_before_the_new_journal_is_in_place_the_old_one_is_whole(tmp_path, monkeypatch):
    path = tmp_path / "raft.journal"
    journal = journal_holding(path, entries(1, 100))
    cut_through_a_new_file(journal, str(path), durable=True)

    def die(*args):
        raise Killed()

    monkeypatch.setattr(journal_compaction.os, "replace", die)
    with pytest.raises(Killed):
        journal.deleteEntriesTo(50)
    monkeypatch.undo()
    journal._destroy()
    assert on_disk(path) == list(range(1, 101))


def test_a_journal_that_cannot_be_cut_stays_whole_and_says_so(tmp_path, monkeypatch, caplog):
    path = tmp_path / "raft.journal"
    journal = journal_holding(path, entries(1, 100))
    cut_through_a_new_file(journal, str(path), durable=True)
    real_open = open

    def full_disk(name, mode="r", *args, **kwargs):
        if str(name).endswith(".cut"):
            raise OSError(28, "No space left on device")
        return real_open(name, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    journal.deleteEntriesTo(50)
    monkeypatch.undo()

    assert "No space left on device" in caplog.text
    assert [entry[1] for entry in journal] == list(range(1, 101))
    journal.add(*entries(101, 101)[0])
    journal._destroy()
    assert on_disk(path) == list(range(1, 102))


def test_a_cut_journal_file_shrinks_back(tmp_path):
    path = tmp_path / "raft.journal"
    journal = journal_holding(path, entries(1, 2000))
    grown = os.path.getsize(path)
    cut_through_a_new_file(journal, str(path), durable=False)
    journal.deleteEntriesTo(1990)
    journal._destroy()
    assert os.path.getsize(path) < grown / 10
