"""pysyncobj's most frequent small calls run without a Python frame, and give what they gave.

Members hash in C (the engine keys its per-member state by node), the clock
is a C-level callable, and an entry appended within the journal's memory
map is copied in without asking the file its size (an fstat per write); a
large command is written through the file, whose copy releases the GIL.
"""

import errno
import pickle
import time
import types

import pytest

from pysyncobj import SyncObjConf, monotonic, syncobj, tcp_connection, transport
from pysyncobj.journal import FileJournal
from pysyncobj.node import Node, TCPNode

from django_dqcluster.store.engine_calls import RaftMember, raft_clock, use_c_level_clock
from django_dqcluster.store import raft
from django_dqcluster.store.raft import WRITTEN_WITHOUT_THE_GIL, JournalWriteFailed, SafeSyncObj, make_node

from .test_raft_safety import LEADER, NO_OP, NoStateMachine, RecordingTransport, append_entries, deliver, log_of

ADDRESS = "127.0.0.1:7001"


def test_a_member_is_the_same_key_as_pysyncobjs_nodes_of_its_address():
    member = RaftMember(ADDRESS)
    for other in (TCPNode(ADDRESS), Node(ADDRESS)):
        assert member == other and other == member and not member != other
        assert {member: "state"}[other] == "state"
        assert {other: "state"}[member] == "state"
        assert len({member, other}) == 1
    assert member != RaftMember("127.0.0.1:7002")


def test_a_member_is_never_equal_to_its_address_as_text():
    member = RaftMember(ADDRESS)

    assert member != ADDRESS and not member == ADDRESS
    assert str(member) == ADDRESS
    assert repr(member) == f"RaftMember({ADDRESS!r})"
    assert (member.address, member.host, member.port, member.id) == (ADDRESS, "127.0.0.1", 7001, ADDRESS)


def test_a_pickled_member_reads_as_pysyncobjs_own_node():
    copy = pickle.loads(pickle.dumps(RaftMember(ADDRESS)))

    assert type(copy) is TCPNode and copy == RaftMember(ADDRESS)


def test_the_engine_keys_its_members_by_members_and_still_hears_a_node_of_the_same_address():
    follower = SafeSyncObj("127.0.0.1:2", [LEADER.address], SyncObjConf(autoTick=False, appendEntriesUseBatch=False),
                           NoStateMachine(), durable=False, transportClass=RecordingTransport)

    assert all(type(node) is RaftMember for node in follower._SyncObj__otherNodes)
    assert type(follower._SyncObj__selfNode) is RaftMember
    assert type(make_node(ADDRESS)) is RaftMember
    deliver(follower, append_entries(1, 0, [(NO_OP, 2, 1)]))  # sent by pysyncobj's TCPNode(LEADER)
    assert log_of(follower) == [(1, 0), (2, 1)]
    assert follower._SyncObj__raftLeader == LEADER


def test_pysyncobjs_clock_is_the_same_clock_read_without_a_python_frame():
    use_c_level_clock()

    for module in (syncobj, tcp_connection, transport):
        assert not isinstance(module.monotonicTime, types.FunctionType), module.__name__
        assert module.monotonicTime.func is time.clock_gettime
        assert module.monotonicTime.args == (time.CLOCK_MONOTONIC_RAW,)
    assert raft_clock.args == (time.CLOCK_MONOTONIC_RAW,)
    before = monotonic.monotonic()
    reading = syncobj.monotonicTime()
    after = monotonic.monotonic()
    assert before <= reading <= after


class CountingMap:
    """The journal's memory map, counting the times it is asked the file's size."""

    def __init__(self, mapping):
        self.mapping, self.size_asked, self.copied_in = mapping, 0, []

    def size(self):
        self.size_asked += 1
        return self.mapping.size()

    def __len__(self):
        return len(self.mapping)

    def __setitem__(self, key, value):
        self.copied_in.append(len(value))
        self.mapping[key] = value

    def __getitem__(self, key):
        return self.mapping[key]

    def __getattr__(self, name):
        return getattr(self.mapping, name)


def journal_engine(path):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, journalFile=path)
    return SafeSyncObj("127.0.0.1:2", [], conf, NoStateMachine(), durable=False, transportClass=RecordingTransport)


def watched_journal(path, room):
    """An engine's journal with ``room`` bytes free in its map, and the map, watched from now on."""
    journal = journal_engine(path)._SyncObj__raftLog
    journal_file = journal._FileJournal__journalFile
    while len(journal_file._ResizableFile__mm) - journal._FileJournal__currentOffset < room:
        journal.add(NO_OP + bytes(room // 2), journal[-1][1] + 1, 1)  # (grown as it goes: asked then)
    counting = journal_file._ResizableFile__mm = CountingMap(journal_file._ResizableFile__mm)
    return journal, counting


def read_back(journal, counting, path):
    """The entries in the journal's file, as a node starting again reads them."""
    journal._FileJournal__journalFile._ResizableFile__mm = counting.mapping
    journal._destroy()
    return list(FileJournal(path))


def test_entries_appended_within_the_journals_map_never_ask_the_file_its_size(tmp_path):
    path = str(tmp_path / "raft.journal")
    journal, counting = watched_journal(path, room=10_000)
    first = journal[-1][1] + 1
    written = [(NO_OP + f"entry {index}".encode() * 3, index, 1) for index in range(first, first + 50)]

    for entry in written:
        journal.add(*entry)

    assert counting.size_asked == 0
    assert read_back(journal, counting, path)[-50:] == written


def test_an_entry_past_the_journals_map_grows_the_file_and_is_read_back(tmp_path):
    path = str(tmp_path / "raft.journal")
    engine = journal_engine(path)
    journal = engine._SyncObj__raftLog
    mapped = len(journal._FileJournal__journalFile._ResizableFile__mm)
    first = journal[-1][1] + 1
    written = [(NO_OP + bytes(mapped // 3), index, 1) for index in range(first, first + 4)]

    for entry in written:
        journal.add(*entry)

    assert len(journal._FileJournal__journalFile._ResizableFile__mm) > mapped
    journal._destroy()
    assert list(FileJournal(path))[-4:] == written


def test_a_large_command_reaches_the_journal_through_the_file_with_the_gil_released(tmp_path):
    path = str(tmp_path / "raft.journal")
    command = NO_OP + bytes(range(256)) * (WRITTEN_WITHOUT_THE_GIL // 256)
    journal, counting = watched_journal(path, room=2 * len(command))
    entry = (command, journal[-1][1] + 1, 1)

    journal.add(*entry)

    assert counting.copied_in and max(counting.copied_in) < WRITTEN_WITHOUT_THE_GIL  # only its small parts
    offset = journal._FileJournal__currentOffset - len(command) - 4
    assert counting.mapping[offset:offset + len(command)] == command  # seen through the map at once
    assert read_back(journal, counting, path)[-1] == entry


def test_a_large_write_the_disk_fails_stops_the_node_naming_the_journal(tmp_path, monkeypatch):
    path = str(tmp_path / "raft.journal")
    command = NO_OP + bytes(WRITTEN_WITHOUT_THE_GIL)
    journal, counting = watched_journal(path, room=2 * len(command))

    def failing(fd, data, offset):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(raft.os, "pwrite", failing)
    with pytest.raises(JournalWriteFailed, match="cannot write the Raft journal .*raft.journal: Input/output error"):
        journal.add(command, journal[-1][1] + 1, 1)
