"""Everything the store needs from pysyncobj, in one module.

pysyncobj 0.3.17 is used, but not trusted blindly (ARCHITECTURE invariant 9,
design/pysyncobj-safety.md):

* **Raft §5.3.** Its follower deletes every entry after ``prevLogIdx`` on each
  AppendEntries, even entries that match the leader's, while the leader keeps
  counting the follower's earlier acknowledgements. A leader crash in that
  window loses acknowledged writes. :class:`SafeSyncObj` rewrites each
  AppendEntries before the library sees it so that matching entries are kept,
  truncation starts only at the first conflicting entry, and the follower
  never acknowledges an entry it no longer holds.
* **Durability.** The journal is an mmap that pysyncobj never flushes while
  running. In ``fsync`` mode the journal is flushed before a follower
  acknowledges entries and before the leader acknowledges a client; term and
  vote metadata are written with fsync.
* **Leader lease.** Strong reads need proof that no other leader exists.
  Followers stay loyal to a leader they heard from within the election
  timeout (and every node for that long after it starts: a restart forgets
  whom it heard from) and echo its clock with that timeout; a majority's
  echoes give the leader a lease during which it answers reads from its own
  state (:meth:`SafeSyncObj.lease_valid`). Told the leader is busy with a
  large entry, they promise longer, on disk (:mod:`.vote_promises`).
* **Throughput.** Commands queued in one tick leave in one AppendEntries
  (group commit), the extra AppendEntries pysyncobj sends after every
  apply is skipped unless a follower waits for it (``announce_commit``),
  and messages are not zlib-compressed
  (:class:`UncompressedConnection`).
* **Pickle.** Raft messages are pickled, so a multi-node store refuses to run
  without a cluster secret, and every message is sealed with a key derived
  from it (:mod:`.cipher`, in place of pysyncobj's slower ``password``
  encryption). See :mod:`.node`.

The subclass relies on private, name-mangled attributes of that exact
release; :func:`check_engine` verifies they exist at start-up so an upgrade of
the library fails loudly instead of silently losing the fix.
"""

import errno
import io
import logging
import os
import pickle
import queue
import struct
import sys
import threading
import zlib
from time import monotonic

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj import pickle as raft_pickle
from pysyncobj.journal import FileJournal, MetaStorer
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from .apply_stall import ApplyStall, EntryNotApplied
from .cipher import RaftCipher
from .config import DEFAULT_MAX_LOG_MB
from .engine_calls import RaftMember, raft_clock, use_c_level_clock
from .files import write_durably
from .journal_compaction import cut_through_a_new_file
from .journal_records import add_in_place
from .large_entries import (
    BUSY_FROM, LEADER_BUSY, LEADER_BUSY_PROMISE, MAX_BUSY_SECONDS, IncomingEntry, IncompleteEntry, LargeEntrySender,
    leader_busy_seconds,
)
from .send_queue import UNSENT_LIMIT, SendQueue
from .snapshot_files import SnapshotFiles
from .vote_promises import VotePromise

logger = logging.getLogger("django_dqcluster.store.raft")

SUPPORTED_VERSION = "0.3.17"

# Private names the safety fix and the durability hooks depend on.
REQUIRED_SYNCOBJ_ATTRIBUTES = (
    "_SyncObj__onMessageReceived",
    "_SyncObj__sendAppendEntries",
    "_SyncObj__onBecomeLeader",
    "_SyncObj__deleteEntriesFrom",
    "_SyncObj__getEntries",
    "_SyncObj__getCurrentLogIndex",
    "_SyncObj__applyLogEntries",
    "_SyncObj__onNodeDisconnected",
    "_SyncObj__loadDumpFile",
    "_SyncObj__deleteEntriesTo",
    "_SyncObj__generateRaftTimeout",
    "_getFuncName",
)
REQUIRED_INSTANCE_ATTRIBUTES = (
    "_SyncObj__raftLog",
    "_SyncObj__raftCurrentTerm",
    "_SyncObj__raftCommitIndex",
    "_SyncObj__recvTransmission",
    "_SyncObj__raftMatchIndex",
    "_SyncObj__raftNextIndex",
    "_SyncObj__otherNodes",
    "_SyncObj__raftState",
    "_SyncObj__transport",
    "_SyncObj__noopIDx",
    "_SyncObj__raftLeader",
    "_SyncObj__commandsQueue",
    "_methodToID",
    "_SyncObj__raftElectionDeadline",
    "_SyncObj__transferInProgress",
    "_SyncObj__lastResponseTime",
    "_SyncObj__connectedNodes",
    "_SyncObj__selfNode",
    "_SyncObj__votedForNodeId",
    "_SyncObj__commandsWaitingCommit",
    "_SyncObj__raftLastApplied",
    "_SyncObj__serializer",
    "_poller",
)
REQUIRED_CONNECTION_ATTRIBUTES = (
    "_TcpConnection__processParseMessage",
    "_TcpConnection__trySendBuffer",
    "_TcpConnection__writeBuffer",
    "_TcpConnection__readBuffer",
    "_TcpConnection__processRead",
    "_TcpConnection__processSend",
    "_TcpConnection__socket",
    "_TcpConnection__recvBufferSize",
)
REQUIRED_COMMAND_QUEUE_ATTRIBUTES = ("_FastQueue__lock", "_FastQueue__queue")
REQUIRED_JOURNAL_ATTRIBUTES = ("_FileJournal__metaStorer", "_FileJournal__journalFile", "_FileJournal__journal",
                               "_FileJournal__currentOffset", "_FileJournal__setLastRecordOffset")
REQUIRED_JOURNAL_FILE_ATTRIBUTES = ("_ResizableFile__f", "_ResizableFile__mm", "_ResizableFile__resizeFactor",
                                    "_ResizableFile__extand")

# The journal is an mmap, and mmap.flush() holds the GIL for the whole msync
# (measured: every thread of the node stops for the ~0.5 ms a flush takes
# here, client sessions included). On Linux, fdatasync() of the file writes
# back the pages dirtied through a shared mapping too (msync is implemented as
# an fsync of the mapped range), and os.fdatasync releases the GIL.
FDATASYNC_COVERS_MMAP = sys.platform.startswith("linux")
# Journal writes this large go through pwrite() rather than the map (see
# reserve_before_growing): the same pages on Linux, and the copy releases the GIL.
WRITTEN_WITHOUT_THE_GIL = 2 ** 20 if FDATASYNC_COVERS_MMAP else float("inf")

# Bytes of entries in the log above which a node compacts it (config.py says why).
MAX_LOG_BYTES = DEFAULT_MAX_LOG_MB * 2 ** 20

MEMBERSHIP_COMMAND = 2  # pysyncobj _COMMAND_TYPE.MEMBERSHIP
# The leader's message to a follower whose log ends below what it acknowledged
# (SafeSyncObj._notice_lost_entries); a node of an older release ignores it.
LOST_ENTRIES = "lost_entries"
_REGULAR_COMMAND = bytes([0])  # pysyncobj _COMMAND_TYPE.REGULAR: a replicated method call
# pysyncobj pickles with protocol 2, which has no opcode for bytes: each one
# (an entry's payload) goes through latin-1 text and a _codecs.encode call,
# ~4x the time of protocol 5 for an AppendEntries message. Messages and
# entries this node creates use protocol 5; any Python the store supports
# reads both, so old and new nodes still understand each other.
_PICKLE_PROTOCOL = 5

# Failures after which the entry was certainly not applied (safe to retry).
NOT_APPLIED = {
    FAIL_REASON.QUEUE_FULL: "the leader's command queue is full",
    FAIL_REASON.MISSING_LEADER: "the cluster has no leader right now",
    FAIL_REASON.DISCARDED: "a new leader replaced the entry before it was committed",
    FAIL_REASON.NOT_LEADER: "this node stopped being the leader before the entry was appended",
    FAIL_REASON.REQUEST_DENIED: "the leader refused the request",
}
# Failures after which nobody can tell yet whether the entry will be applied.
OUTCOME_UNKNOWN = {
    FAIL_REASON.LEADER_CHANGED: "the leader changed while the entry was in flight",
    FAIL_REASON.UNKNOWN_OUTCOME: "the entry's outcome could not be tracked",
}


class EngineMismatch(RuntimeError):
    pass


def check_engine():
    """Fail at start-up if pysyncobj is not the release the safety fix was written for."""
    from pysyncobj.version import VERSION

    if VERSION != SUPPORTED_VERSION:
        raise EngineMismatch(
            f"django_dqcluster's store needs pysyncobj=={SUPPORTED_VERSION} (found {VERSION}): "
            "its Raft safety fix relies on that release's internals"
        )
    missing = [name for name in REQUIRED_SYNCOBJ_ATTRIBUTES if not hasattr(SyncObj, name)]
    probe = TcpConnection(poller=None, timeout=1.0, sendBufferSize=1, recvBufferSize=1)
    missing += [name for name in REQUIRED_CONNECTION_ATTRIBUTES if not hasattr(probe, name)]
    if missing:
        raise EngineMismatch(f"pysyncobj lacks the internals the safety fix needs: {', '.join(missing)}")


def check_instance(engine):
    missing = [name for name in REQUIRED_INSTANCE_ATTRIBUTES if not hasattr(engine, name)]
    commands = getattr(engine, "_SyncObj__commandsQueue", None)
    missing += [name for name in REQUIRED_COMMAND_QUEUE_ATTRIBUTES if not hasattr(commands, name)]
    journal = engine._SyncObj__raftLog
    if isinstance(journal, FileJournal):
        missing += [name for name in REQUIRED_JOURNAL_ATTRIBUTES if not hasattr(journal, name)]
        journal_file = getattr(journal, "_FileJournal__journalFile", None)
        missing += [name for name in REQUIRED_JOURNAL_FILE_ATTRIBUTES if not hasattr(journal_file, name)]
    if missing:
        raise EngineMismatch(f"pysyncobj lacks the internals the safety fix needs: {', '.join(missing)}")


def _is_number(value):
    """A number as a peer's message may carry one (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class JournalWriteFailed(OSError):
    """The Raft journal or its term-and-vote file could not be written (a full disk).

    pysyncobj has already taken the entry into its in-memory log by then, so
    the node cannot go on as if nothing happened: it stops (see
    SafeSyncObj.failed), as PostgreSQL stops when it cannot write its WAL.
    Nothing it acknowledged is lost: an entry is acknowledged after its write.
    """


class FsyncMetaStorer(MetaStorer):
    """Term and vote are promises to other nodes: write them with fsync (pysyncobj only renames)."""

    def storeMeta(self, meta):
        try:
            write_durably(self.getPath(), raft_pickle.dumps(meta))
        except OSError as exc:
            raise JournalWriteFailed(exc.errno, f"cannot write the Raft term and vote to {self.getPath()}: "
                                                f"{exc.strerror or exc}") from exc


def reserve_before_growing(journal, path):
    """Make the journal allocate disk blocks before its memory map grows over them.

    pysyncobj grows the journal file with ftruncate and writes it through a
    memory map: on a full disk the write into the new, unallocated pages
    kills the process with SIGBUS, with no word in the log. posix_fallocate
    fails with ENOSPC instead, before anything is written.
    """
    journal_file = journal._FileJournal__journalFile
    write = journal_file.write

    def reserve(start, size):
        if size <= start:
            return
        try:
            os.posix_fallocate(journal_file._ResizableFile__f.fileno(), start, size - start)
        except OSError as exc:
            raise JournalWriteFailed(exc.errno, f"cannot grow the Raft journal {path} to {size} bytes: "
                                                f"{exc.strerror or exc}") from exc

    # A journal grown before (by pysyncobj alone) may have holes past its last
    # entry, where the next entries go: fill them now, while nothing depends on it.
    reserve(0, len(journal_file._ResizableFile__mm))

    def write_within_reserved_space(offset, values):
        mapping = journal_file._ResizableFile__mm
        end = offset + len(values)
        if end <= len(mapping):
            # Within the map, whose blocks are reserved: copied in directly.
            # ResizableFile.write asks the file for its size first (an fstat
            # per call, four per appended entry, on every node).
            if len(values) < WRITTEN_WITHOUT_THE_GIL:
                mapping[offset:end] = values
                return
            # Copied into the map, a large command held the GIL: 0.4 s for
            # 128 MiB here, when no other thread of the node ran. The file
            # and its shared map are the same pages (Linux's page cache), so
            # a pwrite, which releases the GIL, puts the bytes in the same place.
            try:
                _write_all(journal_file._ResizableFile__f.fileno(), values, offset)
            except OSError as exc:  # (its blocks are reserved: an I/O error, not a full disk)
                raise JournalWriteFailed(exc.errno, f"cannot write the Raft journal {path}: "
                                                    f"{exc.strerror or exc}") from exc
            return
        mapped = len(mapping)
        size = mapped
        while end > size:  # the size ResizableFile.write would grow the file to
            size = max(int(size * journal_file._ResizableFile__resizeFactor), end)
        reserve(mapped, size)
        # The file has its new size already, so ResizableFile.write (which
        # compares with the file's size) would not grow the map: grow it here.
        try:
            mapping.resize(size)
        except (SystemError, OSError):
            journal_file._ResizableFile__extand(0)  # pysyncobj's own fallback: map the whole file again
        write(offset, values)

    journal_file.write = write_within_reserved_space


def _write_all(fd, data, offset):
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


_FRAME_LENGTH = struct.Struct("i")


class UncompressedConnection(TcpConnection):
    """pysyncobj's connection, minus the zlib pass over every message.

    zlib.compress costs ~35 us per message here (its deflate state is set up
    on each call) to save ~70 bytes of a loopback or LAN frame: ~14% of the
    leader's busy CPU in a profile; one client's commits/s rose by a quarter
    without it. Frames keep pysyncobj's layout (length, then
    the sealed bytes); what is sealed is the pickle itself. Compressed frames
    from pysyncobj's own connection class are still understood.
    """

    last_sent = 0.0  # monotonic(); read by FlushingTransport's keepalive
    drops = 0  # times this connection dropped (see .snapshot_files)

    def send(self, message):
        self.last_sent = monotonic()
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = pickle.dumps(message, _PICKLE_PROTOCOL)
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, 0)
        waiting = self._TcpConnection__writeBuffer
        if not isinstance(waiting, SendQueue):  # pysyncobj resets it to bytes() on (re)connecting
            waiting = self._TcpConnection__writeBuffer = SendQueue(waiting)
        waiting.append(_FRAME_LENGTH.pack(len(data)) + data)
        self._TcpConnection__trySendBuffer()
        fileno = self._TcpConnection__fileno
        if waiting and fileno is not None and self.state == CONNECTION_STATE.CONNECTED:
            # The socket took part of it. pysyncobj would send the rest only
            # when it next sends on this connection (its poller stops asking
            # for write events once a connection's first write is done): at
            # most one socket buffer per heartbeat, 5 MB/s here. A 4 MiB
            # transaction took 1.5 s to reach a follower, and snapshots and
            # catching up crawled. Woken when the socket has room, the Raft
            # thread sends the rest then (pysyncobj's handler of that event
            # stops asking once nothing waits).
            self._TcpConnection__poller.subscribe(
                fileno, self._TcpConnection__processConnection,
                POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)

    def _TcpConnection__processSend(self):
        # pysyncobj's, sending from a SendQueue: True while the socket takes more.
        waiting = self._TcpConnection__writeBuffer
        if not waiting:
            return False
        if not isinstance(waiting, SendQueue):
            waiting = self._TcpConnection__writeBuffer = SendQueue(waiting)
        try:
            return waiting.send_to(self._TcpConnection__socket) > 0
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.disconnect()
            return False

    def disconnect(self):
        if self.state != CONNECTION_STATE.DISCONNECTED:
            self.drops += 1
        super().disconnect()

    def _TcpConnection__processRead(self):
        # pysyncobj reads until recv raises EAGAIN and asks the socket for a
        # pending error after each read: three system calls and an exception
        # per message. A read shorter than the buffer emptied the socket (the
        # poller is level-triggered, so later bytes wake it again), and an
        # error after data shows up on the next read.
        size = self._TcpConnection__recvBufferSize
        try:
            incoming = self._TcpConnection__socket.recv(size)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.disconnect()
            return False
        if not incoming:
            self.disconnect()
            return False
        self._TcpConnection__readBuffer += incoming
        return len(incoming) == size

    def _TcpConnection__processParseMessage(self):
        buffer = self._TcpConnection__readBuffer
        if len(buffer) < _FRAME_LENGTH.size:
            return None
        (length,) = _FRAME_LENGTH.unpack_from(buffer)
        end = _FRAME_LENGTH.size + length
        if len(buffer) < end:
            return None
        data = buffer[_FRAME_LENGTH.size:end]
        try:
            if self.encryptor:
                sequence = self.encryptor.extract_timestamp(data)
                # The sender's sequence strictly increases (see .cipher):
                # a repeat is a replay.
                if sequence <= self.recvLastTimestamp:
                    raise ValueError("replayed or reordered message")
                data = self.encryptor.decrypt(data)
                self.recvLastTimestamp = sequence
            # A pickle starts with the PROTO opcode, a zlib stream (what
            # pysyncobj's own connection sends) never does.
            if data[:1] != pickle.PROTO:
                data = zlib.decompress(data)
            message = raft_pickle.loads(data)
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise ValueError("message for another connection")
        except Exception as exc:
            _unreadable_messages.report(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            self.disconnect()
            return None
        self._TcpConnection__readBuffer = buffer[end:]
        return message


class RateLimitedWarning:
    """Log the first occurrence now, then at most one per ``interval`` seconds with a count.

    A peer sealing with another secret (a host given the wrong secret file) is
    redialed every heartbeat, and each attempt ends in an unreadable message:
    without a limit that is ten warnings a second per peer.
    """

    def __init__(self, message, interval=10.0, clock=monotonic):
        self.message = message  # a format string with {reason}
        self.interval = interval
        self._clock = clock
        self._last = None
        self._suppressed = 0

    def report(self, reason):
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return
        text = self.message.format(reason=reason)
        if self._suppressed:
            text += f" ({self._suppressed} more like it in the last {now - self._last:.0f} s)"
        logger.warning(text)
        self._last, self._suppressed = now, 0


_unreadable_messages = RateLimitedWarning(
    "dropping a Raft connection: an unreadable message ({reason}); "
    "does every node have the same cluster secret?")


KEEPALIVE = {"type": "keepalive"}  # no handler: pysyncobj ignores a type it does not know


class FlushingTransport(TCPTransport):
    """Flushes the journal before a follower's acknowledgement leaves the node,
    carries the leader-lease timestamps (see :class:`SafeSyncObj`), keeps idle
    connections alive, and speaks through :class:`UncompressedConnection`."""

    flush_journal = None  # set by SafeSyncObj in fsync mode
    _next_keepalive = 0.0

    def _onTick(self):
        super()._onTick()
        # pysyncobj drops a connection on which nothing arrived for
        # connectionTimeout, but notices only when it next sends on it, and the
        # message that noticed is lost. Followers say nothing to each other
        # until the leader fails: a candidate's vote request to the other
        # follower was lost that way after every quiet spell, so each failover
        # took a second election round (~2 s instead of ~1 s). Anything sent
        # more often than the timeout, from both ends, keeps the link alive.
        now = monotonic()
        if now < self._next_keepalive:
            return
        interval = self._syncObj.conf.connectionTimeout / 4
        self._next_keepalive = now + interval / 2
        for node, connection in list(self._connections.items()):
            if (connection.state == CONNECTION_STATE.CONNECTED
                    and now - getattr(connection, "last_sent", now) >= interval):
                self.send(node, KEEPALIVE)

    # pysyncobj builds its connections itself (here for outgoing ones, in its
    # TcpServer for incoming ones); both pass through these two methods
    # before the first message, which is where they change class.
    def addNode(self, node):
        super().addNode(node)
        connection = self._connections.get(node)
        if type(connection) is TcpConnection:
            connection.__class__ = UncompressedConnection

    def _onNewIncomingConnection(self, conn):
        if type(conn) is TcpConnection:
            conn.__class__ = UncompressedConnection
        super()._onNewIncomingConnection(conn)

    def send(self, node, message):
        connection = self._connections.get(node)
        if (connection is not None and connection.sendRandKey is None
                and getattr(self._syncObj, "encryptor", None) is not None):
            # Its keys are still being exchanged. pysyncobj's transport sends
            # on any connected socket, and pysyncobj sends vote requests to
            # every member, connected or not: a message sent now leaves
            # unsealed for this connection, the other end cannot read it and
            # drops the new connection (seen after every pause or restart of
            # a node). Not sent, as when there is no connection.
            return False
        kind = message.get("type")
        engine = self._syncObj
        if kind == "next_node_idx":
            if self.flush_journal is not None and message.get("success"):
                self.flush_journal()
            echo = getattr(engine, "_lease_echo", None)
            if echo is not None:
                # With how long this node then votes for no one (_sticky):
                # members may run with different election timeouts.
                message = dict(message, lease_echo=echo, lease_window=engine.conf.raftMinTimeout)
        elif kind == "append_entries" and getattr(engine, "_lease_enabled", False):
            message = dict(message, lease_ts=monotonic())
        sent = super().send(node, message)
        if (kind == "append_entries" and "serialized" not in message and connection is not None
                and connection.getSendBufferSize() > UNSENT_LIMIT):
            # (Not after a snapshot chunk: SnapshotFiles holds those before
            # reading the next one. pysyncobj's loop goes on while a transfer
            # is under way whatever the node's next index, and with the index
            # past the log it sent heartbeats the follower could only refuse,
            # for the rest of its 0.1 s: a catch-up took 100 s instead of 9.)
            hold = getattr(engine, "_hold_sends", None)
            if hold is not None:
                hold(node)  # see SafeSyncObj._hold_sends
        return sent


class SafeSyncObj(SyncObj):
    """pysyncobj with Raft §5.3 restored and the state machine plugged in.

    ``apply_entry`` is the only replicated method: its argument is an opaque
    msgpack payload handed to ``state_machine.apply(payload, index)``, which
    raises :class:`.apply_stall.EntryNotApplied` when it cannot apply it yet.
    """

    def __init__(self, self_address, peers, conf, state_machine, *, secret=None, secret_fallbacks=(),
                 durable=True, catching_up_file=None, fresh_member=False, vote_promise_file=None,
                 max_log_bytes=MAX_LOG_BYTES, **kwargs):
        """``secret``: the cluster secret every message is sealed with; None only in
        unit tests that drive the engine by hand (the node always passes one).
        ``secret_fallbacks``: secrets of messages also accepted (a rotation under way).
        ``catching_up_file``: where a node that started with an empty log
        remembers that it is still catching up (see :meth:`_start_catching_up`);
        None turns that rule off (unit tests). ``fresh_member``: this node is
        joining for the first time, so an empty log is all it ever held.
        ``vote_promise_file``: where it keeps a promise to vote for no one
        (:mod:`.vote_promises`); None: it promises nothing (unit tests).
        ``max_log_bytes``: the log's size on disk past which it is compacted
        (and the memory that holds it freed), however few its entries."""
        check_engine()
        if conf.password is not None:
            raise EngineMismatch("pass the cluster secret as secret=, not as pysyncobj's password")
        # Set before the library starts its tick thread, which reads it.
        self._raft_cipher = RaftCipher(secret, secret_fallbacks) if secret is not None else None
        self._state_machine = state_machine
        self._durable = durable
        self._flush_lock = threading.Lock()
        self._flushed_upto = None
        # The highest index this follower knows matches the leader of term
        # ``_matched_term``: everything it received from that leader.
        self._matched_term = -1
        self._matched_upto = 0
        self._apply_index = None
        # Leader lease (see lease_valid): timestamps of the leader's own clock.
        self._lease_enabled = True
        self._lease_echo = None  # follower: lease_ts of the last AppendEntries it accepted
        self._lease_acks = {}  # leader: node -> till when it votes for no one else (_note_promise)
        self._leader_since = None
        self._heard_from_leader_at = 0.0
        # Before this process started, the node may have echoed a leader's
        # lease time, and its stickiness went with the process; or promised
        # a busy leader more, which it kept on disk (see _sticky).
        self._vote_promise = VotePromise(vote_promise_file) if vote_promise_file else None
        promised = self._vote_promise.seconds_left() if self._vote_promise else 0.0
        if promised:
            logger.info("node %s keeps the promise it made a busy leader: no vote for %.1f s", self_address, promised)
        self._promised_until = monotonic() + promised if promised else 0.0  # (see _onTick)
        self._votes_refused_until = max(monotonic() + conf.raftMinTimeout, self._promised_until)
        self._collecting_commands = False
        self._send_after_collecting = False
        self._catching_up = False
        self.apply_stall = ApplyStall()
        self._handing_over_for_stall = False
        kwargs.setdefault("transportClass", FlushingTransport)
        kwargs.setdefault("nodeClass", RaftMember)
        use_c_level_clock()
        self._snapshot_files = None
        self._held_sends = {}  # node -> its next index, during one round of sends
        self._large_entries = LargeEntrySender(conf.appendEntriesBatchSizeBytes)  # the leader's (.large_entries)
        self._incoming_entry = IncomingEntry()  # a follower's
        # A follower's: till when (raft_clock()) its leader of term _leader_busy_term said it is busy (LEADER_BUSY).
        self._leader_busy_until, self._leader_busy_term = 0.0, -1
        self._busy_lock = threading.Lock()
        self._busy_requests = []  # (size, threading.Event): see announce_large_entry
        if conf.fullDumpFile and conf.serializer and hasattr(state_machine, "begin_snapshot"):
            # Put in place of pysyncobj's by the Raft thread (see _onTick).
            self._snapshot_files = SnapshotFiles(
                conf.fullDumpFile, conf.logCompactionBatchSize, begin=state_machine.begin_snapshot,
                load=self._load_snapshot, link_to=self._link_to, hold=self._hold_sends, durable=durable,
                check=getattr(state_machine, "check_snapshot", lambda path: None), on_installed=self.wake,
            )
        self._loading_at_start = False
        self.max_log_bytes = max_log_bytes
        super().__init__(self_address, peers, conf, **kwargs)
        check_instance(self)
        self._apply_entry_id = self._methodToID[self._getFuncName("apply_entry")]
        self.failed = None  # why this node stopped (see _stop_for_journal_write), or None
        if isinstance(self._SyncObj__raftLog, FileJournal):
            add_in_place(self._SyncObj__raftLog)
            reserve_before_growing(self._SyncObj__raftLog, conf.journalFile)
            cut_through_a_new_file(self._SyncObj__raftLog, conf.journalFile, durable=durable,
                                   reopened=lambda journal: reserve_before_growing(journal, conf.journalFile))
        if durable and isinstance(self._SyncObj__raftLog, FileJournal):
            journal = self._SyncObj__raftLog
            journal._FileJournal__metaStorer = FsyncMetaStorer(journal._FileJournal__metaStorer.getPath())
            transport = self._SyncObj__transport
            if isinstance(transport, FlushingTransport):
                transport.flush_journal = self.flush_journal
        self._start_catching_up(catching_up_file, fresh_member)

    @property
    def encryptor(self):
        # pysyncobj's transport seals and opens every message with this object.
        return self._raft_cipher

    # -- the state machine ----------------------------------------------------------------

    @replicated
    def apply_entry(self, payload):
        return self._state_machine.apply(payload, self.raftLastApplied + 1)

    def _SyncObj__applyLogEntries(self):
        # With appendEntriesUseBatch=False pysyncobj sends every follower an
        # extra AppendEntries after each apply, only to advance their commit
        # index. The next entry's message (or the next heartbeat, at most
        # appendEntriesPeriod later) carries it anyway; skipping it halves the
        # messages per commit and raised 1-client commits/s by ~50% here.
        # Except when a follower waits for it (announce_commit).
        stall = self.apply_stall
        if not stall.may_retry() or self.installing_snapshot:
            return False
        waiting = self._SyncObj__commandsWaitingCommit
        callbacks = dict(waiting) if waiting else None
        try:
            SyncObj._SyncObj__applyLogEntries(self)
        except EntryNotApplied as exc:
            # Raised out of pysyncobj's loop, this would skip the rest of the
            # tick (heartbeats, reading messages) and log a traceback per
            # tick. The entries before it are applied; this one is retried
            # later, and pysyncobj already took its client's callback.
            index = self._SyncObj__raftLastApplied + 1
            if callbacks and index in callbacks:
                waiting[index] = callbacks[index]
            stall.failed(index, str(exc))
            return False
        stall.applied_up_to(self._SyncObj__raftLastApplied)
        announce, self._announce = self._announce, False
        return announce

    _announce = False

    def announce_commit(self):
        """Send the followers the new commit index right after this apply (on the Raft thread).

        For an entry a follower forwarded: it answers its client only once it
        applied the entry itself, and would otherwise learn that the entry is
        committed with the next entry or heartbeat, up to appendEntriesPeriod later.
        """
        self._announce = True

    # -- snapshots ----------------------------------------------------------------------------

    def _link_to(self, node):
        return getattr(self._SyncObj__transport, "_connections", {}).get(node)

    def _SyncObj__loadDumpFile(self, clearJournal):
        self._loading_at_start = not clearJournal
        try:
            SyncObj._SyncObj__loadDumpFile(self, clearJournal)
        finally:
            self._loading_at_start = False

    def _load_snapshot(self, filename):
        entry1, entry0, cluster = self.conf.deserializer(filename)
        if self._loading_at_start:
            # The snapshot file is put in place first, the log is cut to it
            # next: a node stopped in between finds a log that starts before
            # the snapshot and goes on past it, and pysyncobj, seeing it does
            # not start at the snapshot, would throw all of it away, entries
            # this node had acknowledged included. Cut it here instead.
            log = self._SyncObj__raftLog
            if len(log) and log[0][1] < entry0[1] and entry1[1] <= log[-1][1]:
                first = log[0][1]
                if (tuple(log[entry0[1] - first]) == tuple(entry0)
                        and tuple(log[entry1[1] - first]) == tuple(entry1)):
                    self._SyncObj__deleteEntriesTo(entry0[1])
        return entry1, entry0, cluster

    def _take_installed_snapshot(self):
        """On the Raft thread: once a received snapshot is installed, take it up and tell the leader.

        While it is installed (a thread of SnapshotFiles replaces the
        databases), this node applies nothing, takes no entries, and stands
        for no election: its state is neither the old one nor the new.
        """
        files = self._snapshot_files
        if files is None or not files.installing:
            return
        installed = files.take_installed()
        if installed is None:
            self._SyncObj__raftElectionDeadline = max(
                self._SyncObj__raftElectionDeadline, raft_clock() + self.conf.raftMaxTimeout)
            return
        if not installed:
            return  # the leader, hearing nothing, sends entries; the reply to them asks for it again
        self._SyncObj__loadDumpFile(clearJournal=True)
        logger.info("node %s installed the leader's snapshot of entry %d in %.1f s", self._SyncObj__selfNode,
                    self._SyncObj__raftLastApplied, files.install_seconds)
        leader = self._SyncObj__raftLeader
        if leader is not None:
            # The leader (this one or a later one) learns where this node's log ends now.
            self._SyncObj__sendNextNodeIdx(leader, success=True)
        if self._catching_up:
            self._check_caught_up()

    def _compact_a_large_log(self):
        files = self._snapshot_files
        size = getattr(self._SyncObj__raftLog, "_FileJournal__currentOffset", None)
        if (files is None or size is None or size <= self.max_log_bytes
                or not files.may_begin() or self._SyncObj__forceLogCompaction):
            return
        # (Not while a snapshot is written or installed: the log is cut then,
        # and a flag still up would start another one at once.)
        logger.info("node %s compacts its log: %d MB of entries", self._SyncObj__selfNode, size // 2 ** 20)
        self._SyncObj__forceLogCompaction = True

    def finish_snapshot_writing(self, timeout=None):
        """Stop a snapshot being written, waiting up to ``timeout`` for its thread (the node stops)."""
        if self._snapshot_files is not None:
            self._snapshot_files.wait_for_writing(timeout)

    def _SyncObj__onNodeDisconnected(self, node):
        # pysyncobj keeps a snapshot transfer's place across a dropped
        # connection: the chunk whose send found it dead is lost, and once
        # reconnected the transfer went on after it, so the follower stitched
        # a file with a hole (found by the chaos run: "snapshot file is
        # truncated"). The next transfer starts from the first chunk.
        self._SyncObj__serializer.cancelTransmisstion(node)
        self._large_entries.forget(node)  # (the next connection's transfer starts over)
        SyncObj._SyncObj__onNodeDisconnected(self, node)

    def _SyncObj__sendAppendEntries(self):
        if self._collecting_commands:
            self._send_after_collecting = True
            return None
        members = self._SyncObj__otherNodes
        backed_up = self._backed_up(members)
        # Followers whose next entry is a large one get its chunks from
        # _send_large_entries, not from pysyncobj's loop.
        skipped = backed_up | self._send_large_entries(members - backed_up)
        if skipped:
            # Nothing for them in this round, not even the one message
            # pysyncobj's loop sends every node (sent at every commit, it
            # would add an entry per commit to what already waits). What
            # waits carries their heartbeats.
            self._SyncObj__otherNodes = members - skipped
        self._sending_round = True
        try:
            return SyncObj._SyncObj__sendAppendEntries(self)
        finally:
            self._sending_round = False
            self._SyncObj__otherNodes = members
            held, self._held_sends = self._held_sends, {}
            for node, next_index in held.items():
                self._SyncObj__raftNextIndex[node] = next_index

    def _backed_up(self, members):
        """Members sent entries (not a snapshot) with more than UNSENT_LIMIT still waiting to leave."""
        connections = getattr(self._SyncObj__transport, "_connections", None)
        if not connections:
            return set()
        log_start = self._SyncObj__raftLog[0][1]
        next_index = self._SyncObj__raftNextIndex
        return {
            node for node in members
            if node in connections and connections[node].getSendBufferSize() > UNSENT_LIMIT
            and next_index.get(node, 0) > log_start  # (a snapshot transfer holds itself, chunk by chunk)
        }

    _sending_round = False

    def _send_large_entries(self, members):
        """Send the ``members`` with a large entry ahead of them what they lack up to it, then its chunks.

        See .large_entries. The entries before it go as pysyncobj sends
        entries (whose loop would then have met the large one); the large
        one's chunks are queued until more than UNSENT_LIMIT waits unsent for
        the follower, and the tick queues more as its socket drains (_onTick).
        Once the last chunk is queued its next index moves past the entry.
        Returns the members handled so: pysyncobj's loop sends them nothing
        in this round (what is queued carries their heartbeats).
        """
        sender = self._large_entries
        if self._SyncObj__raftState != _RAFT_STATE.LEADER:
            sender.forget_all()
            return set()
        if not sender.knows_any:
            return set()  # no large entry in the log, none being sent: every commit's case
        handled = set()
        log = self._SyncObj__raftLog
        first, last = log[0][1], log[-1][1]
        next_index = self._SyncObj__raftNextIndex
        connected = self._SyncObj__connectedNodes
        for node in members:
            index, link = next_index.get(node), self._link_to(node)
            ahead = sender.next_large(index, first + 1) if index is not None and index > first else None
            if ahead is None or ahead > last or node not in connected or link is None:
                sender.forget(node)
                continue
            handled.add(node)
            while index < ahead and link.getSendBufferSize() <= UNSENT_LIMIT and node in connected:
                entries = self._entries_from(index, ahead, sender.chunk_size)
                self._SyncObj__transport.send(node, dict(self._append_entries_header(index), entries=entries))
                index = next_index[node] = entries[-1][1] + 1
            if index != ahead:
                continue
            transfer = sender.transfer_to(node, self._local_entry(index), link)
            header = self._append_entries_header(index)
            while not transfer.done and link.getSendBufferSize() <= UNSENT_LIMIT and node in connected:
                self._SyncObj__transport.send(node, transfer.next_message(header, sender.chunk_size))
            if transfer.done:
                next_index[node] = index + 1
                sender.forget(node)
        return handled

    def _append_entries_header(self, index):
        """An AppendEntries for the entries from ``index`` on, but for them."""
        return {
            "type": "append_entries", "term": self._SyncObj__raftCurrentTerm,
            "commit_index": self._SyncObj__raftCommitIndex,
            "prevLogIdx": index - 1, "prevLogTerm": self._local_entry(index - 1)[2],
        }

    def _entries_from(self, index, end, max_bytes):
        """The entries from ``index`` on, before ``end``: one, then more while they take under ``max_bytes``."""
        entries, size = [], 0
        while index < end and (not entries or size < max_bytes):
            entry = self._local_entry(index)
            entries.append(entry)
            size += len(entry[0])
            index += 1
        return entries

    def _hold_sends(self, node):
        """Nothing more for ``node`` in this round of sends: what is queued for it is enough.

        Said by SnapshotFiles when it gives no chunk, and by the transport
        once more than UNSENT_LIMIT waits unsent for the node. pysyncobj sends
        a follower every entry it lacks in each round, for up to 0.1 s, and
        goes on from there at the next, whether or not the first ones left:
        a follower catching up a long log (or a slow one) had all of it
        queued in the leader's memory, with the heartbeats behind it. For a
        snapshot, its loop asked again and again, sending an empty message
        for each refusal, until its time for the round was up.

        The loop for ``node`` ends once the node's next index is past the
        log: set so for the rest of the round, then put back (to after what
        was sent). Outside a round (a reply, a vote request) nothing is held.
        """
        next_index = self._SyncObj__raftNextIndex
        if self._sending_round and node in next_index:
            self._held_sends.setdefault(node, next_index[node])
            next_index[node] = self._SyncObj__getCurrentLogIndex() + 1

    # -- the tick ---------------------------------------------------------------------------

    def _onTick(self, timeToWait=0.0):
        if self._busy_requests:
            self._send_requested_busy_notices()
        if self._snapshot_files is not None and self._SyncObj__serializer is not self._snapshot_files:
            # Every use of the serializer is on this thread: swapped here, no
            # other thread can be half way through pysyncobj's.
            self._SyncObj__serializer = self._snapshot_files
        self._take_installed_snapshot()
        self._compact_a_large_log()
        if self._give_the_leader_time_after_a_stall() and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._give_the_followers_time_after_a_stall()
        if (self._catching_up and self._SyncObj__raftState != _RAFT_STATE.LEADER
                and self._SyncObj__getCurrentLogIndex() > 1):
            # Part way through catching up, its log may be longer than another
            # member's and still lack committed entries: it must not lead.
            self._SyncObj__raftElectionDeadline = raft_clock() + self.conf.raftMaxTimeout
        self._keep_a_stalled_node_from_leading()
        if (self._SyncObj__raftState != _RAFT_STATE.LEADER and not self._SyncObj__transferInProgress
                and self._SyncObj__raftElectionDeadline < self._promised_until):
            # Its promise to a busy leader (see _sticky) holds for its own vote
            # too, unless that leader asks it to take over (then it steps
            # down before its vote can elect this node). (In the first
            # election timeout after it started, its timer keeps it from
            # standing: it was set at least that far ahead.)
            self._SyncObj__raftElectionDeadline = self._promised_until
        if (self._SyncObj__raftState != _RAFT_STATE.LEADER
                and self._SyncObj__raftElectionDeadline < raft_clock()
                and self._SyncObj__transport.ready):
            # pysyncobj checks the election timer before it reads messages.
            # When this node's own tick came late (a long apply, a starved
            # CPU), the leader's heartbeats are waiting in its sockets: read
            # them first, or it calls an election that deposes a healthy leader
            # (pysyncobj has no pre-vote) and aborts every open transaction.
            try:
                self._poller.poll(0)
            except JournalWriteFailed as exc:  # a message's entries could not be written
                self._stop_for_journal_write(exc)
                return None
        term, heard_at = self._SyncObj__raftCurrentTerm, self._heard_from_leader_at
        try:
            result = SyncObj._onTick(self, timeToWait)
        except JournalWriteFailed as exc:
            self._stop_for_journal_write(exc)
            return None
        if self._large_entries.sending:
            # Followers part way through a large entry get more of it as their
            # queues drain (the poll above woke for that), not only at the
            # next round of sends, up to a heartbeat period away.
            self._send_large_entries(self._large_entries.nodes & self._SyncObj__otherNodes)
        # A new term with this node's own vote: it called an election (maybe
        # already won, if the votes arrived within the same tick).
        if (self._SyncObj__raftCurrentTerm > term and self._SyncObj__selfNode is not None
                and self._SyncObj__votedForNodeId == self._SyncObj__selfNode.id):
            # Every election aborts the open transactions of a deposed leader;
            # say why this one happened, so an operator can tell a crash from
            # a stalled node (slow disk, starved CPU) or a partition.
            # (A node that never heard from a leader is forming a cluster or
            # just restarted: routine, so not a warning.)
            if heard_at:
                level, heard = logging.WARNING, f"no message from the leader for {monotonic() - heard_at:.2f}s"
            else:
                level, heard = logging.INFO, "no leader heard from yet"
            logger.log(level, "node %s calls an election for term %d: %s",
                       self._SyncObj__selfNode, self._SyncObj__raftCurrentTerm, heard)
        return result

    _last_tick_at = None
    _led_at_last_tick = False

    def _give_the_leader_time_after_a_stall(self):
        # A node that stood still for longer than any election timeout (its
        # process was paused, its CPU starved, a write stuck on a slow disk)
        # heard nothing from the leader meanwhile, and neither could it have:
        # that says nothing about the leader. Its election timer ran out all
        # the same, and the election it called deposed a healthy leader
        # (pysyncobj has no pre-vote): found after each large snapshot
        # install, when those ran on this thread. It gives the leader a fresh timeout
        # to be heard first. A stall shorter than that changes nothing.
        # Likewise a leader that just stepped down (a paused one that woke up
        # to find no majority answering): its timer is the one it had before
        # it led, long run out, and it called an election at once, deposing
        # the leader elected while it was away.
        now = raft_clock()
        last, self._last_tick_at = self._last_tick_at, now
        stalled = last is not None and now - last > self.conf.raftMaxTimeout
        if stalled:
            logger.warning("node %s stood still for %.1f s, longer than an election timeout (a paused process, "
                           "a starved CPU, a slow disk, a large transaction)", self._SyncObj__selfNode, now - last)
        leading = self._SyncObj__raftState == _RAFT_STATE.LEADER
        stepped_down, self._led_at_last_tick = self._led_at_last_tick and not leading, leading
        if (stalled or stepped_down) and not leading:
            self._SyncObj__raftElectionDeadline = max(
                self._SyncObj__raftElectionDeadline, now + self._SyncObj__generateRaftTimeout())
        return stalled

    def _give_the_followers_time_after_a_stall(self):
        # pysyncobj's tick steps a leader down when no majority answered
        # within leaderFallbackTimeout, and counts before it reads messages.
        # A leader that stood still that long (a large entry pickled,
        # written, applied: see .large_entries) sent nothing meanwhile, so
        # its followers had nothing to answer: it stepped down from a
        # healthy cluster. It gives them an election timeout to answer, from
        # now; a partitioned leader still steps down, that much later.
        last_response = self._SyncObj__lastResponseTime
        since = raft_clock() - self.conf.leaderFallbackTimeout + self.conf.raftMaxTimeout
        for node in self._SyncObj__otherNodes:
            last_response[node] = max(last_response.get(node, 0.0), since)

    def _stop_for_journal_write(self, exc):
        if self.failed is None:
            self.failed = f"{exc.strerror}; this node stopped: free space on that disk, then start it again"
            logger.critical("node %s: %s", self._SyncObj__selfNode, self.failed)
        self.destroy()  # the tick thread ends at its next turn, before any other tick
        # Their entries are in the log, maybe committed by the others: tell
        # their clients now that nobody here will know, not at their timeout.
        waiting = self._SyncObj__commandsWaitingCommit
        callbacks = [callback for subscribers in waiting.values() for _, callback in subscribers]
        waiting.clear()
        for callback in callbacks:
            callback(None, FAIL_REASON.UNKNOWN_OUTCOME)

    def _keep_a_stalled_node_from_leading(self):
        # A leader answers from its own state: one that cannot apply (a full
        # disk) would stall every write of the cluster. Stuck, it hands over to
        # a follower that can; stalled, it calls no election (it still votes,
        # so the others keep their majority). Alone, it stays leader: nobody
        # else could be.
        stall = self.apply_stall
        stalled = stall.stalled
        if stalled and self._SyncObj__raftState != _RAFT_STATE.LEADER:
            self._SyncObj__raftElectionDeadline = raft_clock() + self.conf.raftMaxTimeout
        elif stalled and stall.stuck and self._SyncObj__otherNodes and not self._handover_requested:
            logger.warning("node %s hands leadership over: it cannot apply entry %d",
                           self._SyncObj__selfNode, self.apply_stall.index)
            self._handing_over_for_stall = self._handover_requested = True
        elif not stalled and self._handing_over_for_stall:
            self._handing_over_for_stall = self._handover_requested = False
            self._handover_target = None

    # -- taking commands --------------------------------------------------------------------

    #: Set by the node: returns the (payload, callback) pairs waiting to be
    #: appended (group commit, see .group_commit); called on the Raft thread.
    command_source = None

    def wake(self):
        """Make the Raft thread take waiting commands now, not at its next periodic tick."""
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    def _queue_entry(self, payload, callback):
        # What calling apply_entry(payload, callback=...) queues, minus its
        # wake-up write: this runs on the Raft thread, which takes it next.
        call = (self._apply_entry_id, (payload,))
        if len(payload) < BUSY_FROM:
            command = _REGULAR_COMMAND + pickle.dumps(call, _PICKLE_PROTOCOL)
        else:
            # One copy of a large payload, not two (see .large_entries).
            buffer = io.BytesIO()
            buffer.write(_REGULAR_COMMAND)
            pickle.dump(call, buffer, _PICKLE_PROTOCOL)
            command = buffer.getvalue()
        try:
            self._SyncObj__commandsQueue.put_nowait((command, callback))
        except queue.Full:
            callback(None, FAIL_REASON.QUEUE_FULL)

    _handover_requested = False
    _handover_target = None

    def request_handover(self):
        """Make the most caught-up follower leader now (Raft's TimeoutNow); for a graceful stop.

        The Raft thread sends it, at its next tick and at every tick after
        until this node is no longer leader: pysyncobj refuses while no
        follower holds the whole log, and a target may miss its chance.
        Meanwhile this node appends nothing (see _checkCommandsToApply).
        """
        self._handover_requested = True
        self.wake()

    def cancel_handover(self):
        """Give up a handover that did not happen: take commands again."""
        self._handover_requested = False
        self._handover_target = None
        self.wake()

    def _hand_over(self):
        # One target for the whole handover: pysyncobj picks the most
        # caught-up follower on each call, and a second follower told to
        # start an election a tick later splits the votes with the first.
        connected = self._SyncObj__connectedNodes
        target = self._handover_target
        if target not in connected or target not in self._SyncObj__otherNodes:
            match = self._SyncObj__raftMatchIndex
            last = self._SyncObj__getCurrentLogIndex()
            caught_up = [node for node in self._SyncObj__otherNodes
                         if node in connected and match.get(node, 0) == last]
            if not caught_up:
                return  # the followers are still receiving the last entries: next tick
            target = self._handover_target = max(caught_up, key=lambda node: node.id)
        self.transferLeadership(target)

    def _checkCommandsToApply(self):
        if self._handover_requested and self._isLeader():
            # Raft's leadership transfer (thesis section 3.10): the target wins
            # only with a log at least as up to date as this node's, so append
            # nothing until it leads. An entry appended after the TimeoutNow
            # (a member announcing its client address, a checkpoint) made this
            # node refuse the target its vote: no leader until an election
            # timeout later, and two more terms. Commands wait in their
            # queues; once this node follows, they go to the new leader (or
            # fail as not applied, which is safe to retry).
            self._hand_over()
            return
        source = self.command_source
        if source is not None:
            for payload, callback in source():
                if len(payload) >= BUSY_FROM:
                    self._tell_followers_busy(len(payload))  # before this thread pickles and writes it
                self._queue_entry(payload, callback)
        if not self._isLeader():
            self._refuse_leader_only_commands()
        log = self._SyncObj__raftLog
        before = log[-1][1]
        # pysyncobj (with appendEntriesUseBatch=False) sends AppendEntries
        # after every queued command; send once after taking all of them, so
        # concurrent clients' commands share one message (group commit).
        self._collecting_commands, self._send_after_collecting = True, False
        try:
            super()._checkCommandsToApply()
        finally:
            self._collecting_commands = False
        appended = log[-1][1] != before
        if appended:
            self._large_entries.note(self._local_entry(index) for index in range(before + 1, log[-1][1] + 1))
        if self._send_after_collecting:
            self._SyncObj__sendAppendEntries()
        if appended and self._durable:
            # The new entries are already on their way to the followers:
            # flush our own copy while they flush theirs, so the flush before
            # the client's acknowledgement finds nothing left to do.
            self.flush_journal()
        if appended and not self._SyncObj__otherNodes and self._isLeader():
            # Alone, its own (flushed) copy is the majority: committed now. The
            # tick would commit it only after its poll, which nobody's reply
            # ends: a wake-up through its pipe, another tick and four system
            # calls per entry of an embedded node.
            self._commit_alone(log[-1][1])

    def _commit_alone(self, last):
        self._SyncObj__raftCommitIndex = self._SyncObj__leaderCommitIndex = last
        self._SyncObj__raftLog.setRaftCommitIndex(last)
        self._SyncObj__applyLogEntries()

    def _refuse_leader_only_commands(self):
        """Fail, as not applied, the queued commands only a leader may append.

        pysyncobj forwards what a follower's queue holds to the leader. A
        transaction's entry must not go there: its statements read this
        node's state as leader, and the new leader may have committed other
        transactions since (see .group_commit). Its callback says so with
        ``leader_only``; the client gets a retryable error, nothing applied.
        Sessions enqueue transactions only while this node leads; one is
        still here if leadership moved before the Raft thread took it, during
        a handover, or when a tick's time to append ran out.
        """
        commands = self._SyncObj__commandsQueue
        with commands._FastQueue__lock:
            waiting = commands._FastQueue__queue
            if not waiting:
                return
            refused = [callback for _, callback in waiting if getattr(callback, "leader_only", False)]
            if not refused:
                return
            kept = [item for item in waiting if not getattr(item[1], "leader_only", False)]
            waiting.clear()
            waiting.extend(kept)
        for callback in refused:
            callback(None, FAIL_REASON.NOT_LEADER)

    # -- durability -----------------------------------------------------------------------

    def flush_journal(self):
        """Make the journal durable if it changed since the last flush (fsync mode only).

        Called on the Raft thread only, the thread that also writes (and may
        reopen) the journal file, so the descriptor synced is the current one.
        """
        if not self._durable:
            return
        journal = self._SyncObj__raftLog
        if not isinstance(journal, FileJournal) or not len(journal):
            return
        last = journal[-1][1:3]
        with self._flush_lock:
            if last == self._flushed_upto:
                return
            if FDATASYNC_COVERS_MMAP:
                os.fdatasync(journal._FileJournal__journalFile._ResizableFile__f.fileno())
            else:
                journal.flush()
            self._flushed_upto = last

    # -- a leader busy with a large entry (see .large_entries) -------------------------------

    def announce_large_entry(self, size, wait=0.2):
        """Have the followers told, if this node leads, that it is about to work on an entry of ``size`` bytes.

        For a session thread about to encode one: that holds the GIL, and
        the Raft thread with it, for a while. Waits up to ``wait`` seconds
        for the Raft thread to have sent the notice.
        """
        if size < BUSY_FROM or not self._isLeader() or not self._SyncObj__otherNodes:
            return
        sent = threading.Event()
        with self._busy_lock:
            self._busy_requests.append((size, sent))
        self.wake()
        sent.wait(wait)

    def _send_requested_busy_notices(self):
        with self._busy_lock:
            requests, self._busy_requests = self._busy_requests, []
        if requests:
            self._tell_followers_busy(max(size for size, _ in requests))
        for _, sent in requests:
            sent.set()

    def _tell_followers_busy(self, size):
        if self._SyncObj__raftState != _RAFT_STATE.LEADER:
            return
        notice = {"type": LEADER_BUSY, "term": self._SyncObj__raftCurrentTerm, "seconds": leader_busy_seconds(size),
                  "lease_ts": monotonic()}
        for node in self._SyncObj__otherNodes & self._SyncObj__connectedNodes:
            self._SyncObj__transport.send(node, notice)

    def _told_leader_is_busy(self, node, message):
        seconds = message.get("seconds")
        if (node != self._SyncObj__raftLeader or message.get("term") != self._SyncObj__raftCurrentTerm
                or not _is_number(seconds)):
            return None
        self._leader_busy_term = message["term"]
        self._leader_busy_until = max(self._leader_busy_until, raft_clock() + min(max(seconds, 0.0), MAX_BUSY_SECONDS))
        self._wait_for_a_busy_leader()
        if _is_number(message.get("lease_ts")):  # a leader that counts on promises
            self._promise_not_to_vote(node, message)
        return None

    def _promise_not_to_vote(self, node, message):
        """Promise the busy leader to vote for no one until its busy time ends, on disk first."""
        if self._vote_promise is None:
            return
        promised = self._leader_busy_until - raft_clock()
        try:
            self._vote_promise.make(promised)
        except OSError as exc:  # (a full disk) no promise, so the leader's lease stays as short as ever
            logger.warning("node %s cannot write its vote promise to %s: %s", self._SyncObj__selfNode,
                           self._vote_promise.path, exc)
            return
        self._promised_until = max(self._promised_until, monotonic() + promised)
        self._votes_refused_until = max(self._votes_refused_until, self._promised_until)
        self._SyncObj__transport.send(node, {"type": LEADER_BUSY_PROMISE, "term": message["term"],
                                             "lease_ts": message["lease_ts"], "seconds": promised})

    def _accept_busy_promise(self, node, message):
        current = message.get("term") == self._SyncObj__raftCurrentTerm
        if current and self._isLeader() and self._leader_since is not None:
            self._note_promise(node, message.get("lease_ts"), message.get("seconds"))
        return None

    def _leader_is_busy(self):
        return self._leader_busy_term == self._SyncObj__raftCurrentTerm and raft_clock() < self._leader_busy_until

    def _wait_for_a_busy_leader(self):
        # Its election timeout runs from the end of the leader's busy time
        # (pysyncobj sets it from now at each AppendEntries: called after).
        if self._leader_is_busy():
            self._SyncObj__raftElectionDeadline = max(
                self._SyncObj__raftElectionDeadline, self._leader_busy_until + self._SyncObj__generateRaftTimeout())

    # -- Raft §5.3 ------------------------------------------------------------------------

    def _SyncObj__onMessageReceived(self, node, message):
        if not isinstance(message, dict):
            return SyncObj._SyncObj__onMessageReceived(self, node, message)
        kind = message.get("type")
        if kind == LOST_ENTRIES:
            return self._told_it_lost_entries(node, message)
        if kind == LEADER_BUSY:
            return self._told_leader_is_busy(node, message)
        if kind == LEADER_BUSY_PROMISE:
            return self._accept_busy_promise(node, message)
        if kind == "request_vote" and self._sticky():
            # Leader stickiness (Raft thesis §4.2.3): while a leader is known
            # to be alive, neither grant a vote nor adopt the candidate's term.
            # This is what makes the leader's lease (lease_valid) safe.
            return None
        if kind == "request_vote" and self._catching_up and message.get("last_log_index", 0) > 1:
            # This node may have lost entries it once acknowledged (see
            # _start_catching_up): its vote could elect a candidate that lacks them.
            return None
        if kind == "append_entries" and message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
            self._heard_from_leader_at = monotonic()
            if "lease_ts" in message:
                self._lease_echo = message["lease_ts"]
            received = message
            if self.installing_snapshot:
                # Heard as a heartbeat (the election timer, the leader, the
                # term), not as entries or chunks: nothing is added to a log
                # the installed snapshot replaces, and no reply says where it
                # ends (_take_installed_snapshot does once it is in).
                message = {"type": kind, "term": message["term"], "commit_index": self._SyncObj__raftCommitIndex}
            elif "prevLogIdx" in message:
                message = self._keep_matching_entries(message, node)
            else:
                # A snapshot chunk. pysyncobj raised the commit index to the
                # end of this node's log on each one; that log is the one the
                # snapshot is sent to replace, and may end in entries of an
                # older term the leader never had: nothing of it is known to
                # be committed.
                message = dict(message, commit_index=self._SyncObj__raftCommitIndex)
            catching_up = self._catching_up
            if catching_up:
                self._catch_up_with(received)
            result = SyncObj._SyncObj__onMessageReceived(self, node, message)
            # The leader's own commit index, as pysyncobj keeps it (its
            # status); what was rewritten above only holds back this node's.
            self._SyncObj__leaderCommitIndex = received.get("commit_index")
            self._wait_for_a_busy_leader()
            if catching_up:
                self._check_caught_up()
            return result
        elif kind == "next_node_idx":
            if "lease_echo" in message and self._leader_since is not None:
                # With how long it then votes for no one: a release before
                # this says nothing, and shares ours (it was required then).
                self._note_promise(node, message["lease_echo"], message.get("lease_window", self.conf.raftMinTimeout))
            if message.get("success") and not message.get("reset"):
                return self._accept_acknowledgement(node, message)
            if message.get("reset") and self._isLeader():
                self._notice_lost_entries(node, message)
        return SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _note_promise(self, node, sent_at, seconds):
        """``node`` accepted this leader's message sent at ``sent_at`` and votes for no one for ``seconds`` after.

        It counts from the moment it received the message, after
        ``sent_at``, and as long after a restart (_sticky). The lease keeps
        80% of it, for clocks running at slightly different rates.
        """
        if not (_is_number(sent_at) and _is_number(seconds)) or sent_at < self._leader_since:
            return  # not a number, or sent before this node led
        ends = sent_at + 0.8 * max(seconds, 0.0)
        if ends > self._lease_acks.get(node, 0.0):
            self._lease_acks[node] = ends

    def _accept_acknowledgement(self, node, message):
        """Let a follower's success reply advance its next index, never rewind it.

        pysyncobj sets the next index from every success reply that raises the
        match index, so the reply to one AppendEntries, arriving while later
        ones are in flight, moves it back below entries already sent, and the
        next message sends them again: with 8 clients a fifth of the entries
        sent were such repeats (and repeats are what exposed the §5.3 loss).
        A failure reply ("reset") still moves it back, as Raft requires.
        """
        next_index = self._SyncObj__raftNextIndex
        before = next_index.get(node)
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        if before is not None and self._isLeader() and next_index.get(node, before) < before:
            next_index[node] = before

    def _notice_lost_entries(self, node, message):
        """Does a follower's log end below what it acknowledged to this leader? Tell it so.

        Within one leader's term a follower's log never loses an entry it
        acknowledged (only a later leader may replace entries, and those it
        acknowledged match this one's log). A refusal that says its log ends
        below one means it lost them: its data directory was restored from an
        older copy, or its disk dropped flushed writes. As a voter it could
        then elect a candidate lacking entries committed with its copy, so it
        is told to catch up first, as a node that lost its whole disk does;
        and its old acknowledgements no longer count toward a commit.
        """
        # The match index is what it acknowledged to this leader: pysyncobj
        # sets it to 0 when a leader begins and when a member is added (a new
        # data directory under a removed member's address lost nothing), and
        # only success replies raise it.
        match_index = self._SyncObj__raftMatchIndex
        log_end = message.get("next_node_idx", 0) - 1
        acknowledged = match_index.get(node, 0)
        if log_end >= acknowledged:
            return
        # Known to hold nothing now: success replies raise it again (and the
        # refusals that walk its log back have nothing more to report).
        match_index[node] = 0
        catch_up_to = max(self._SyncObj__raftCommitIndex, acknowledged)
        logger.warning("member %s no longer holds entries it acknowledged (its log ends at %d, it had acknowledged "
                       "%d): a data directory restored from an older copy, or a disk that lost flushed writes; "
                       "it votes again once it holds the entries up to %d", node, log_end, acknowledged, catch_up_to)
        self._SyncObj__transport.send(node, {"type": LOST_ENTRIES, "term": self._SyncObj__raftCurrentTerm,
                                             "log_end": log_end, "acknowledged": acknowledged,
                                             "catch_up_to": catch_up_to})

    def _told_it_lost_entries(self, node, message):
        """The leader says this node lost entries it acknowledged: it catches up before it votes."""
        if (self._catching_up_file is None or node != self._SyncObj__raftLeader
                or message.get("term") != self._SyncObj__raftCurrentTerm):
            return None
        catch_up_to = message.get("catch_up_to")
        if not isinstance(catch_up_to, int):
            return None
        logger.warning("node %s no longer holds entries it acknowledged (its log ended at %s, it had acknowledged "
                       "%s, the leader %s says): a data directory restored from an older copy, or a disk that "
                       "lost flushed writes; it votes again once it holds the entries up to %d",
                       self._SyncObj__selfNode, message.get("log_end"), message.get("acknowledged"), node,
                       catch_up_to)
        self._catching_up = True
        self._catch_up_term = message["term"]
        self._catch_up_to = max(self._catch_up_to or 0, catch_up_to)
        write_durably(self._catching_up_file, str(self._catch_up_to))
        return None

    # -- a node that lost its disk ----------------------------------------------------------

    def _start_catching_up(self, path, fresh_member=False):
        """Does this node start without the entries it may once have acknowledged?

        Raft assumes every member remembers what it acknowledged. A member
        whose data directory was emptied (a replaced disk, a restored image)
        comes back with an empty log and no vote; as an ordinary voter it
        would elect any candidate, and a lagging one could then win and drop
        entries committed with the lost copy. So a node that starts with an
        empty log in a cluster of several catches up first: it votes only for
        a candidate whose log is as empty as its own (a cluster forming for
        the first time), stands for election only while its own log is
        empty, and becomes an ordinary member once it holds everything the
        leader it hears from (of the newest term it heard) had committed.
        ``path`` keeps that state across restarts: a node restarted part way
        through is still catching up. A ``fresh_member`` (one asking to join)
        never acknowledged anything before, so its empty log is no loss.
        """
        self._catching_up_file = path
        self._catch_up_to = None
        self._catch_up_term = -1  # the term of the leader that set _catch_up_to
        if path is None:
            return
        if os.path.exists(path):
            with open(path) as handle:
                text = handle.read().strip()
            self._catch_up_to = int(text) if text.isdigit() else None
        elif self._SyncObj__getCurrentLogIndex() <= 1 and self._SyncObj__otherNodes and not fresh_member:
            write_durably(path, "")
        else:
            return
        self._catching_up = True
        logger.info("node %s starts with an empty log: it votes once it has caught up with a leader%s",
                    self._SyncObj__selfNode, "" if self._catch_up_to is None else f" (to index {self._catch_up_to})")

    def _catch_up_with(self, message):
        """What the leader had committed is what this node must hold before it votes.

        The first leader heard from sets it; a leader of a later term (the first
        may have been deposed without knowing it) raises it to what that one
        had committed.
        """
        commit_index, term = message.get("commit_index"), message.get("term", -1)
        if not isinstance(commit_index, int) or term <= self._catch_up_term:
            return
        self._catch_up_term = term
        if self._catch_up_to is None or commit_index > self._catch_up_to:
            self._catch_up_to = commit_index
            write_durably(self._catching_up_file, str(commit_index))

    def _check_caught_up(self):
        if self._catch_up_to is not None and self._SyncObj__getCurrentLogIndex() >= self._catch_up_to:
            self.flush_journal()  # what it now votes with must outlive a crash
            self._caught_up()

    def _caught_up(self):
        self._catching_up = False
        try:
            os.remove(self._catching_up_file)
        except FileNotFoundError:
            pass
        logger.info("node %s has caught up (index %s): it votes and may lead again",
                    self._SyncObj__selfNode, self._SyncObj__getCurrentLogIndex())

    @property
    def catching_up(self):
        return self._catching_up

    @property
    def catching_up_to(self):
        """The entry a node catching up must hold before it votes again (None: not known yet, or not catching up)."""
        return self._catch_up_to if self._catching_up else None

    @property
    def installing_snapshot(self):
        """A snapshot received from the leader is being installed (see _take_installed_snapshot)."""
        return self._snapshot_files is not None and self._snapshot_files.installing

    def other_member_addresses(self):
        """The Raft addresses of the other members, read safely from any thread.

        A sending round replaces pysyncobj's member set with the members it
        sends to, for its length (_SyncObj__sendAppendEntries), and a leader's
        per-member indexes are filled just after it becomes leader: a thread
        reading either alone could miss a member then. Both at once never do.
        """
        nodes = set(self._SyncObj__otherNodes)
        nodes.update(list(self._SyncObj__raftNextIndex))
        return {node.address for node in nodes}

    # -- leader lease ---------------------------------------------------------------------

    def _SyncObj__onBecomeLeader(self):
        self._lease_acks = {}
        self._leader_since = monotonic()
        if self._catching_up:
            # Elected with an empty log by members with empty logs: a cluster
            # forming, with nothing committed that it could lack.
            self._caught_up()
        # Its log may hold large entries its followers lack (appended as a follower).
        self._large_entries.forget_all()
        self._large_entries.note(self._SyncObj__raftLog)
        SyncObj._SyncObj__onBecomeLeader(self)

    def _sticky(self):
        """A follower that heard from its leader within the election timeout ignores candidates,
        and so does a node for the election timeout after it started, or while it keeps a
        promise to a busy leader (:mod:`.vote_promises`).

        The leader itself is not sticky: a higher-term candidate (a restarted
        node whose term ran ahead) makes it step down, and with it its lease,
        or such a node could never rejoin (pysyncobj has no pre-vote).
        That is also what makes a handover (request_handover) work: the
        outgoing leader's vote, with the target's own, is a majority of three;
        in larger clusters the sticky followers vote only once they stop
        hearing from it, an election timeout later, as after a crash.
        """
        if self._isLeader():
            return False
        if monotonic() < self._votes_refused_until:
            # Just started: the process before it may have echoed a leader's
            # lease time moments before it stopped, and its stickiness went
            # with it. Voting now could elect a second leader while the first
            # still answers strong reads from its lease. Or it promised a
            # busy leader (_told_leader_is_busy). It stands for election no
            # sooner either (_onTick).
            return True
        return (self._SyncObj__raftLeader is not None
                and (monotonic() - self._heard_from_leader_at < self.conf.raftMinTimeout or self._leader_is_busy()))

    def lease_valid(self):
        """May this leader answer a read from its own state, with no log round trip?

        Every AppendEntries carries the leader's clock; followers echo the
        newest one they accepted, with their election timeout ``w``. A follower
        that accepted a message sent at ``t`` will not vote for anyone before
        ``t + w`` (by its own clock; stickiness above, which a restart does not
        shorten), so no other leader can exist before then once a majority
        echoed. The lease ends at 80% of that, leaving room for clock-rate
        differences (_note_promise). Followers told the leader is busy with a
        large entry promise it longer (LEADER_BUSY_PROMISE). A new leader must
        also have committed an entry of its own term.
        """
        if not self._isLeader() or self._leader_since is None:
            return False
        noop = self._SyncObj__noopIDx
        if noop is None or self._SyncObj__raftCommitIndex < noop:
            return False
        promised = [self._lease_acks.get(node, 0.0) for node in self._SyncObj__otherNodes]
        needed = (len(promised) + 1) // 2  # followers that, with this node, form a majority
        if needed == 0:
            return True
        return monotonic() < sorted(promised, reverse=True)[needed - 1]

    def answers_reads_locally(self):
        """May this leader answer a strong read from its applied state, with no log round trip?

        It holds its lease, and it applied every write any leader answered: a
        leader answers a write only once it applied it, and this one's first
        entry of its term follows everything earlier leaders committed. The
        entries it is applying meanwhile have not been answered, so a read may
        come before them. (A transaction's start asks more: Node.barrier.)
        """
        # (lease_valid holds only once this leader's no-op is committed, so it is set.)
        return self.lease_valid() and self._SyncObj__raftLastApplied >= self._SyncObj__noopIDx

    def _SyncObj__deleteEntriesFrom(self, fromIDx):
        allowed = getattr(self, "_delete_allowed_from", None)
        if allowed is None or fromIDx < allowed:
            # Not a conflict: Raft §5.3 keeps these entries.
            logger.debug("kept entries from %d that pysyncobj would have deleted", fromIDx)
            return
        SyncObj._SyncObj__deleteEntriesFrom(self, fromIDx)

    def _local_entry(self, index):
        log = self._SyncObj__raftLog
        first = log[0][1]
        if index < first or index > log[-1][1]:
            return None
        return log[index - first]

    def _keep_matching_entries(self, message, node=None):
        """Rewrite an AppendEntries so that pysyncobj deletes only conflicting entries.

        Returns the message to hand to the library (possibly the same object).
        Sets ``_delete_allowed_from`` to the first conflicting index, if any.
        """
        self._delete_allowed_from = None
        term = message["term"]
        if term != self._matched_term:
            self._matched_term, self._matched_upto = term, 0

        if "transmission" in message:
            message = self._collect_large_entry(message, node)
            if "transmission" in message:
                return message  # a chunk collected: pysyncobj answers "not yet"
        entries = message.get("entries") or []

        log = self._SyncObj__raftLog
        last_index = log[-1][1]
        prev_index = message["prevLogIdx"]
        prev_entry = self._local_entry(prev_index)
        if prev_entry is None or prev_entry[2] != message["prevLogTerm"]:
            # Unknown or mismatching predecessor: the library answers with a
            # reset and deletes nothing.
            return message

        # Skip the entries we already hold with the same index and term.
        kept = 0
        while kept < len(entries):
            local = self._local_entry(entries[kept][1])
            if local is None or local[2] != entries[kept][2]:
                break
            kept += 1
        new_entries = entries[kept:]
        if kept:
            prev_index, prev_term = entries[kept - 1][1], entries[kept - 1][2]
        else:
            prev_term = message["prevLogTerm"]

        if new_entries:
            if new_entries[0][1] <= last_index:
                # A real conflict: Raft deletes from here on.
                self._delete_allowed_from = new_entries[0][1]
            self._matched_upto = max(self._matched_upto, new_entries[-1][1])
            if not kept:
                return message  # the common case, appending new entries: nothing to rewrite
        rewritten = dict(message)
        if new_entries:
            rewritten.update(prevLogIdx=prev_index, prevLogTerm=prev_term, entries=new_entries)
            return rewritten

        # Every entry of the message is already here.
        message_end = prev_index
        if message_end >= last_index:
            rewritten.update(prevLogIdx=prev_index, prevLogTerm=prev_term, entries=[])
            self._matched_upto = max(self._matched_upto, message_end)
            return rewritten

        # Our log is longer than the message (a stale, shortening re-send).
        # Acknowledge as far as we know our entries match this leader's log:
        # what it sent us in this term, what is committed, and anything up to
        # an entry of the leader's own term (Log Matching). Never further.
        known = max(message_end, self._matched_upto, self._SyncObj__raftCommitIndex)
        for index in range(last_index, known, -1):
            if self._local_entry(index)[2] == term:
                known = index
                break
        known = min(known, last_index)
        tail = [self._local_entry(i) for i in range(known + 1, last_index + 1)]
        if any(entry[0][:1] == bytes([MEMBERSHIP_COMMAND]) for entry in tail):
            # pysyncobj undoes membership changes in a tail it deletes; keeping
            # such a tail would desynchronise its member list, so let it go.
            self._delete_allowed_from = known + 1
        rewritten.update(
            prevLogIdx=known,
            prevLogTerm=self._local_entry(known)[2],
            entries=[],
            commit_index=min(message["commit_index"], known),
        )
        self._matched_upto = max(self._matched_upto, known)
        return rewritten

    def _collect_large_entry(self, message, node):
        """One chunk of a large entry (see .large_entries): a regular AppendEntries once the entry is whole.

        Until then, a chunk pysyncobj answers "not yet" to and does nothing
        else with (a "start" with no data: what it would collect, in a
        ``bytes`` it grows by copying, is collected here instead).
        """
        regular = {key: value for key, value in message.items()
                   if key not in ("transmission", "data", "size", "offset")}
        try:
            entry = self._incoming_entry.add(message)
        except IncompleteEntry as exc:
            prev_index = message["prevLogIdx"]
            if node is not None and self._SyncObj__getCurrentLogIndex() == prev_index:
                # Its log ends right before that entry, which the leader sent
                # in full as far as it knows: a refusal saying where its log
                # ends makes it send the entry again, from its first chunk.
                logger.info("node %s missed part of entry %d from %s (%s): it asks for it again",
                            self._SyncObj__selfNode, prev_index + 1, node, exc)
                self._SyncObj__transport.send(node, {"type": "next_node_idx", "next_node_idx": prev_index + 1,
                                                     "reset": True, "success": False})
            else:
                # A last chunk left over from a transfer that started over (a
                # replaced connection): what it was for is here, or asked for.
                logger.debug("node %s left out the last chunk of entry %d from %s (%s)",
                             self._SyncObj__selfNode, prev_index + 1, node, exc)
            return dict(regular, entries=[])  # heard as a heartbeat
        if entry is None:
            return dict(regular, transmission="start", data=b"")
        return dict(regular, entries=[entry])


def make_conf(*, journal_file, dump_file, serializer, deserializer, on_state_changed,
              election_timeout, bind_address=None, dynamic_membership=True):
    """pysyncobj settings that matter (design/engine-evaluation.md).

    ``bind_address``: where the Raft port listens, "HOST:PORT" (IPv6 hosts
    unbracketed). Without it pysyncobj listens on every interface
    (0.0.0.0) at the node's port, whatever host its address names: a node
    configured for 127.0.0.1 would take Raft connections from the network.
    """
    low, high = election_timeout
    heartbeat = min(0.1, low / 4)
    return SyncObjConf(
        bindAddress=bind_address,
        # No password: SafeSyncObj seals messages itself (secret=, see cipher.py).
        # With batching on, a synchronous write waits up to 100 ms for the
        # next batch: ~10 commits/s instead of ~1000.
        appendEntriesUseBatch=False,
        journalFile=journal_file,
        fullDumpFile=dump_file,
        serializer=serializer,
        deserializer=deserializer,
        dynamicMembershipChange=dynamic_membership,
        onStateChanged=on_state_changed,
        # Fail fast when there is no leader: the store turns that into a
        # retryable error instead of letting callers queue up blindly.
        commandsWaitLeader=False,
        raftMinTimeout=low,
        raftMaxTimeout=high,
        appendEntriesPeriod=heartbeat,
        connectionTimeout=max(3.5, high * 2.5),
        # Of two nodes, only the one with the larger address dials the other,
        # and pysyncobj redials a peer that was down every 5 s by default. A
        # node that starts (or restarts) after its peers would then hear no
        # leader for seconds, call elections at ever higher terms through the
        # peers it dialed itself, and depose the leader as soon as it is
        # reached. Redialing every heartbeat reaches it within its election
        # timeout; a refused or pending non-blocking connect costs little.
        connectionRetryTime=heartbeat,
        # A leader that hears from no majority for this long steps down, so a
        # partitioned leader stops accepting transactions it cannot commit.
        leaderFallbackTimeout=max(high * 2, 2.0),
        logCompactionMinEntries=20000,
        logCompactionMinTime=600,
        # Large transactions (a 10,000-row bulk_create is > 1 MB) travel in
        # chunks of this size, so heartbeats keep flowing between them.
        appendEntriesBatchSizeBytes=2 ** 18,
        logCompactionBatchSize=2 ** 18,
        useFork=False,
    )


def make_node(address):
    return RaftMember(address)
