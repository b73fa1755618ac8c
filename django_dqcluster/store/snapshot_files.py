"""A node's snapshot file: written beside the Raft thread, sent in order, taken in whole.

Takes the place of pysyncobj's ``Serializer`` (``SafeSyncObj`` puts it in),
keeping its interface, for what a snapshot of hundreds of megabytes showed
(a 3-node cluster holding 300 MB, one follower wiped, logs compacted):

* **Writing.** pysyncobj copies every database on the Raft thread when it
  compacts its log (it forks only for its own pickled state). The leader sent
  no heartbeat for the second or more that took, and the followers elected
  another leader at each compaction, aborting every open transaction. Here
  the Raft thread only takes the state (:meth:`.StateMachine.begin_snapshot`:
  a read transaction per database) and a thread writes the copy.
* **Sending.** A transfer kept its place when the connection under it was
  replaced: the chunk the old connection lost left a hole in the follower's
  file. pysyncobj hears of a replaced connection only when the one that
  dropped was the dialled one, so a transfer here belongs to the connection
  it began on (the object and how many times it dropped) and starts over on
  any other. And the file was read as fast as the disk gave it into the
  connection's buffer, hundreds of megabytes the peer had not taken yet:
  here a chunk is read only while less than ``buffer_limit`` waits there.
* **Receiving.** A snapshot still being written when one arrives from the
  leader (newer: the leader sends one only to a node whose log ends before
  its own starts) must not be renamed over it afterwards: it is cancelled.
* **Installing.** Checking a received snapshot and copying it into the
  databases took seconds on the Raft thread (3.5 s for 300 MB), during which
  the node read no message: the leader's connection to it filled up and was
  dropped. Here a thread installs it, and the node hears of the outcome
  through :meth:`SnapshotFiles.take_installed` (see ``SafeSyncObj``, which
  answers the leader only then and meanwhile neither applies entries nor
  takes new ones).

Everything here runs on the Raft thread except the writing and installing
threads' bodies.
"""

import logging
import os
import threading
from time import monotonic

from pysyncobj.config import SERIALIZER_STATE

from .files import flush_directory, remove_if_present
from .send_queue import UNSENT_LIMIT
from .statemachine import SnapshotCancelled

logger = logging.getLogger(__name__)

SYNC_EVERY = 16 * 2 ** 20  # bytes of a snapshot being received between two flushes to disk
RETRY_AFTER_FAILURE = 10.0  # seconds before another snapshot after one that could not be written
WRITING_SUFFIX = ".writing"


class SnapshotFiles:
    """``file_name``'s snapshot: written in the background, sent and received in chunks.

    ``begin(raft_data)``: the state as of now, a :class:`.PendingSnapshot`.
    ``check(path)``: raise ValueError if the snapshot file at ``path`` is damaged.
    ``load(file_name)``: install a snapshot file, returning pysyncobj's data.
    ``on_installed()``: called by the installing thread once it is over.
    ``link_to(node)``: the connection to a peer (None if there is none).
    ``hold(node)``: called when no chunk is given to ``node`` for now.
    ``durable``: flush the directory after putting a new file in place.
    """

    def __init__(self, file_name, chunk_size, *, begin, load, link_to, hold=lambda node: None,
                 check=lambda path: None, on_installed=lambda: None, durable=True,
                 buffer_limit=UNSENT_LIMIT, clock=monotonic):
        self.file_name = file_name
        self.chunk_size = chunk_size
        self.buffer_limit = buffer_limit
        self._begin = begin
        self._load = load
        self._link_to = link_to
        self._hold = hold
        self._check = check
        self._on_installed = on_installed
        self._durable = durable
        self._clock = clock
        self._writing = None  # the _Write under way or finished and not yet reported
        self._writes = 0
        self._rename_lock = threading.Lock()
        self._not_before = 0.0
        self._transfers = {}  # node -> _Transfer
        self._incoming = None  # (file, path) of a snapshot being received
        self._installing = None  # the _Install under way or over and not yet taken
        self._installed = None  # pysyncobj's data of the snapshot just installed, for deserialize
        _remove_left_behind(file_name)

    # -- writing -------------------------------------------------------------------------

    def serialize(self, data, id):
        """Start writing a snapshot of the state as of entry ``id`` (pysyncobj's data: ``data[1:]``)."""
        if not self.may_begin():  # (while one is installed, the databases are being replaced)
            return
        try:
            pending = self._begin(data[1:])
        except Exception as exc:  # noqa: BLE001 - as for a write that failed
            self._not_before = self._clock() + RETRY_AFTER_FAILURE
            logger.warning("could not take a snapshot of entry %d (%s: %s); the log is kept whole, "
                           "trying again in %.0f s", id, type(exc).__name__, exc, RETRY_AFTER_FAILURE)
            return
        self._writes += 1
        job = _Write(id, pending, f"{self.file_name}{WRITING_SUFFIX}-{self._writes}")
        self._writing = job
        threading.Thread(target=self._write, args=(job,), name="dqcluster-snapshot", daemon=True).start()

    def _write(self, job):
        try:
            job.pending.write(job.path, cancelled=lambda: job.cancelled)
            with self._rename_lock:
                if job.cancelled:
                    raise SnapshotCancelled()
                os.replace(job.path, self.file_name)
            if self._durable:
                flush_directory(self.file_name)
            job.outcome = SERIALIZER_STATE.SUCCESS
        except SnapshotCancelled:
            job.outcome = SERIALIZER_STATE.FAILED
        except Exception as exc:  # noqa: BLE001 - a node goes on with its longer log
            job.error = f"{type(exc).__name__}: {exc}"
            job.outcome = SERIALIZER_STATE.FAILED
        finally:
            if job.outcome != SERIALIZER_STATE.SUCCESS:
                remove_if_present(job.path)
            job.done.set()

    def may_begin(self):
        """Whether ``serialize`` would begin a snapshot now."""
        return self._writing is None and self._installing is None and self._clock() >= self._not_before

    def checkSerializing(self):
        """pysyncobj's question at every tick: (state, id of the entry the snapshot is at)."""
        job = self._writing
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if job.outcome is None:
            return SERIALIZER_STATE.SERIALIZING, job.id
        self._writing = None
        if job.outcome == SERIALIZER_STATE.SUCCESS:
            # Transfers under way send the previous file, which the log no
            # longer continues once pysyncobj cuts it to this one.
            for node in list(self._transfers):
                self.cancelTransmisstion(node)
            return job.outcome, job.id
        self._not_before = self._clock() + RETRY_AFTER_FAILURE
        logger.warning("could not write a snapshot of entry %d to %s (%s); the log is kept whole, "
                       "trying again in %.0f s", job.id, self.file_name, job.error, RETRY_AFTER_FAILURE)
        return job.outcome, job.id

    def _cancel_writing(self):
        job, self._writing = self._writing, None
        if job is not None:
            with self._rename_lock:
                job.cancelled = True

    def wait_for_writing(self, timeout=None):
        """Cancel a snapshot being written and wait for it, and for one being installed (the node stops)."""
        job = self._writing
        self._cancel_writing()
        if job is not None:
            job.done.wait(timeout)
        installing = self._installing
        if installing is not None:
            installing.done.wait(timeout)

    # -- loading -------------------------------------------------------------------------

    def deserialize(self):
        """pysyncobj's data of the snapshot file: the one just installed, or (at start) installed now."""
        installed, self._installed = self._installed, None
        if installed is None:
            self._check(self.file_name)
            installed = self._load(self.file_name)
        return (None,) + tuple(installed)

    # -- sending -------------------------------------------------------------------------

    def getTransmissionData(self, node):
        """The next chunk for ``node``: (bytes, first, last), or None to send nothing now."""
        chunk = self._next_chunk(node)
        if chunk is None:
            self._hold(node)
        return chunk

    def _next_chunk(self, node):
        link = self._link_to(node)
        if link is None or link.getSendBufferSize() > self.buffer_limit:
            return None
        transfer = self._transfers.get(node)
        if transfer is not None and not transfer.on(link):
            self.cancelTransmisstion(node)  # begun on a connection that dropped: start over
            transfer = None
        if transfer is None:
            try:
                transfer = _Transfer(open(self.file_name, "rb"), link)
            except OSError as exc:
                self._cannot_send(node, exc)
                return None
            self._transfers[node] = transfer
        try:
            chunk = transfer.file.read(self.chunk_size)
        except OSError as exc:
            self._cannot_send(node, exc)
            self.cancelTransmisstion(node)
            return None
        first = transfer.sent == 0
        transfer.sent += len(chunk)
        last = not chunk
        if last:
            self.cancelTransmisstion(node)
        return chunk, first, last

    def _cannot_send(self, node, exc):
        # Asked again at every heartbeat: say it once a minute.
        now = self._clock()
        if now >= self._quiet_until:
            self._quiet_until = now + 60.0
            logger.warning("cannot send the snapshot to %s: %s", node, exc)

    _quiet_until = 0.0

    def cancelTransmisstion(self, node):  # sic: pysyncobj's name
        transfer = self._transfers.pop(node, None)
        if transfer is not None:
            transfer.file.close()

    # -- receiving -----------------------------------------------------------------------

    def setTransmissionData(self, data):
        """Take a chunk from the leader; always False: a whole file is installed by a thread of its own."""
        if data is None or self._installing is not None:
            return False
        chunk, first, last = data
        if first:
            self._drop_incoming()
            path = self.file_name + ".receiving"
            try:
                self._incoming = (open(path, "wb"), path)
            except OSError as exc:
                logger.warning("cannot receive a snapshot into %s: %s", path, exc)
                return False
        elif self._incoming is None:
            return False  # the rest of a transfer whose beginning this node did not keep
        handle, path = self._incoming
        try:
            handle.write(chunk)
            if not last:
                if self._durable and handle.tell() // SYNC_EVERY != (handle.tell() - len(chunk)) // SYNC_EVERY:
                    # A bit at a time, rather than all of it at the end, in one tick.
                    handle.flush()
                    os.fdatasync(handle.fileno())
                return False
            handle.flush()
            if self._durable:
                os.fsync(handle.fileno())
            handle.close()
        except OSError as exc:
            logger.warning("cannot receive a snapshot into %s: %s", path, exc)
            self._drop_incoming()
            return False
        self._incoming = None
        self._cancel_writing()
        job = _Install(path)
        self._installing = job
        threading.Thread(target=self._install, args=(job,), name="dqcluster-install", daemon=True).start()
        return False  # not installed yet: see take_installed

    def _install(self, job):
        started = self._clock()
        try:
            # Checked before it takes the place of the node's own snapshot,
            # which the node's log starts from.
            self._check(job.path)
            os.replace(job.path, self.file_name)
            if self._durable:
                flush_directory(self.file_name)
            job.result = self._load(self.file_name)
        except Exception as exc:  # noqa: BLE001 - the node keeps its log and is sent a snapshot again
            job.error = f"{type(exc).__name__}: {exc}"
            remove_if_present(job.path)
        finally:
            job.seconds = self._clock() - started
            job.done.set()
            self._on_installed()

    @property
    def installing(self):
        """Whether a received snapshot is being installed or was and has not been taken yet."""
        return self._installing is not None

    def take_installed(self):
        """None while a received snapshot is installed; then True (``deserialize`` has it) or False."""
        job = self._installing
        if job is None or not job.done.is_set():
            return None
        self._installing = None
        if job.error is not None:
            logger.warning("could not install the snapshot received from the leader (%s); "
                           "this node keeps its log and will be sent one again", job.error)
            return False
        self._installed = job.result
        self.install_seconds = job.seconds
        return True

    install_seconds = None  # how long the last snapshot received took to install

    def _drop_incoming(self):
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming[0].close()
            remove_if_present(incoming[1])


class _Write:
    def __init__(self, id, pending, path):
        self.id = id
        self.pending = pending
        self.path = path
        self.cancelled = False
        self.outcome = None  # SERIALIZER_STATE.SUCCESS or FAILED once over
        self.error = None
        self.done = threading.Event()


class _Install:
    def __init__(self, path):
        self.path = path  # the received file, until it is put in place
        self.result = None
        self.error = None
        self.seconds = None
        self.done = threading.Event()


class _Transfer:
    """A snapshot being sent to one peer, on one connection."""

    def __init__(self, file, link):
        self.file = file
        self.sent = 0
        self._link = link
        self._drops = getattr(link, "drops", 0)

    def on(self, link):
        """Whether ``link`` is still the connection this transfer began on, never dropped since."""
        return link is self._link and getattr(link, "drops", 0) == self._drops




def _remove_left_behind(file_name):
    # A node stopped while it wrote or received a snapshot leaves the partial
    # file, as large as its databases; nothing reads it.
    directory, base = os.path.split(os.path.abspath(file_name))
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith(base + WRITING_SUFFIX) or entry == base + ".receiving":
            remove_if_present(os.path.join(directory, entry))
