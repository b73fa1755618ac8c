"""One running node per data directory.

A node's data directory holds its Raft journal, its term and vote, and its
SQLite files. Two processes running a node on the same directory (a second
``runserver`` of an embedded project, a sidecar started twice, a copy of the
settings with other ports) would both write them: interleaved journal
records, a vote given twice, databases changed behind the other's back. The
node holds an exclusive lock on a file in the directory while it runs; the
kernel drops it when the process dies, so a crash leaves nothing to clean up.
"""

import errno
import fcntl
import json
import os

LOCK_FILE = "node.lock"


class DataDirInUse(OSError):
    """Another live process runs a node on this data directory.

    ``holder``: what that node recorded, ``{"pid", "raft", "client"}``, or {}
    (for a client that would rather talk to it than fail).
    """

    def __init__(self, data_dir, holder):
        who = (f"the node of pid {holder['pid']} (Raft {holder['raft']}, clients {holder['client']})"
               if holder else "another process")
        super().__init__(errno.EBUSY, f"the data directory {data_dir} is in use by {who}; one data directory "
                                      "serves one node (stop that one, or give this node its own data_dir)")
        self.holder = holder


class DataDirLock:
    def __init__(self, data_dir):
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._fd = None

    def acquire(self, raft, client):
        """Hold the lock, recording this node's addresses for whoever finds it taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise DataDirInUse(os.path.dirname(self.path), holder) from None
        except BaseException:
            os.close(fd)
            raise
        record = json.dumps({"pid": os.getpid(), "raft": raft, "client": client}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays for the next node
            self._fd = None


def _holder(record):
    # Empty while the holder is still writing it (it locks first).
    try:
        holder = json.loads(record)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) and {"pid", "raft", "client"} <= holder.keys() else {}
