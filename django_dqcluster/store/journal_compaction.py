"""Cutting the Raft journal after a snapshot, through a new file put in place with one rename.

pysyncobj cuts its journal in place: it marks the file empty, then writes the
entries it keeps back one by one. A node killed in between restarts with only
the first of them, and has forgotten entries it acknowledged (Raft then
counts a vote it should not). Since snapshots are written beside the Raft
thread (see .snapshot_files), the entries kept are all those applied
meanwhile: thousands, not one or two. Here they go into a new file, flushed,
which then replaces the old one: a node killed at any point finds either
journal whole. The file also shrinks back (pysyncobj's never did).
"""

import logging
import os

from pysyncobj.journal import FIRST_RECORD_OFFSET, LAST_RECORD_OFFSET_OFFSET, ResizableFile

from .files import flush_directory, remove_if_present
from .journal_records import RECORD_HEAD, record_size, write_record

logger = logging.getLogger(__name__)


def cut_through_a_new_file(journal, path, *, durable, reopened=lambda journal: None):
    """Make ``journal`` (pysyncobj's FileJournal at ``path``) cut itself atomically.

    ``reopened(journal)`` is called once the journal writes to the new file
    (to patch its file object as the old one was).
    """

    def delete_entries_to(position):
        kept = journal._FileJournal__journal[position:]
        old_file = journal._FileJournal__journalFile
        header = bytearray(old_file.read(0, FIRST_RECORD_OFFSET))
        end = FIRST_RECORD_OFFSET + sum(record_size(entry[0]) for entry in kept)
        header[LAST_RECORD_OFFSET_OFFSET:LAST_RECORD_OFFSET_OFFSET + 4] = RECORD_HEAD.pack(end)
        new_path = path + ".cut"
        try:
            with open(new_path, "wb") as handle:
                handle.write(header)
                for entry in kept:
                    write_record(handle, entry)
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
        except OSError as exc:
            # The journal stays whole and longer than it needs to be; the
            # next compaction tries again. (A node that restarts meanwhile
            # keeps it too: raft.SafeSyncObj._load_snapshot.)
            logger.warning("could not cut the Raft journal %s after a snapshot (%s); it is kept whole",
                           path, exc.strerror or exc)
            remove_if_present(new_path)
            return
        os.replace(new_path, path)
        if durable:
            flush_directory(path)
        # Closed without pysyncobj's msync: its pages belong to the file just
        # replaced, and writing them back would only hold up the Raft thread.
        old_file._ResizableFile__mm.close()
        old_file._ResizableFile__f.close()
        journal._FileJournal__journalFile = ResizableFile(path)
        journal._FileJournal__journal = list(kept)
        journal._FileJournal__currentOffset = end
        reopened(journal)

    journal.deleteEntriesTo = delete_entries_to
