"""Records of pysyncobj's journal, written where they go instead of joined first.

A record is ``length | index, term | command | length``. pysyncobj builds one
by joining its parts twice, then copies it into its memory map: three copies
of the command, on the Raft thread, holding the GIL. For a large entry that
is the time the leader sends no heartbeats (a copy of 256 MB took 0.5 s
here; see .large_entries). Written part by part, the command is copied once.
Same bytes in the file, so either version reads the other's journal.
"""

import struct

from pysyncobj.pickle import to_bytes

RECORD_HEAD = struct.Struct("<I")
INDEX_TERM = struct.Struct("<QQ")


def record_size(command):
    return RECORD_HEAD.size * 2 + INDEX_TERM.size + len(command)


def write_record(handle, entry):
    """Write ``entry`` (command, index, term) as one record to the file object ``handle``."""
    command, index, term = entry
    command = to_bytes(command)
    length = RECORD_HEAD.pack(INDEX_TERM.size + len(command))
    handle.write(length + INDEX_TERM.pack(index, term))
    handle.write(command)
    handle.write(length)


def add_in_place(journal):
    """Make ``journal`` (pysyncobj's FileJournal) append a record without joining its parts first."""

    def add(command, index, term):
        journal._FileJournal__journal.append((command, index, term))
        data = to_bytes(command)
        journal_file = journal._FileJournal__journalFile
        offset = journal._FileJournal__currentOffset
        length = RECORD_HEAD.pack(INDEX_TERM.size + len(data))
        end = offset + record_size(data)
        # The trailing length first: the file grows once, to the record's end.
        journal_file.write(end - RECORD_HEAD.size, length)
        journal_file.write(offset, length + INDEX_TERM.pack(index, term))
        journal_file.write(offset + RECORD_HEAD.size + INDEX_TERM.size, data)
        journal._FileJournal__currentOffset = end
        journal._FileJournal__setLastRecordOffset(end)

    journal.add = add
