"""Entries larger than one Raft message: sent in chunks, pickled once, a bounded amount at a time.

pysyncobj sends an entry of ``appendEntriesBatchSizeBytes`` or more in chunks
(AppendEntries with ``transmission`` start, process, finish). As it does it,
one large transaction stopped the cluster; measured on a 3-node cluster here,
32 MB committed in 8-10 s and 64 MB or more never (the leader was deposed
while sending it, and the client told the outcome was unknown):

* the leader pickled the whole entry again for each follower, with protocol
  2 (bytes go through latin-1 text: up to twice as long, ~20 MB/s), and
  queued every chunk at once: its Raft thread stood still for seconds, with
  no heartbeats, and the followers elected another leader;
* a follower grew the entry by concatenating ``bytes``, a copy of all it had
  for each chunk: quadratic, minutes for 256 MB;
* the leader marked a chunk "finish" once past the command's length, not the
  pickle's, so the follower tried to parse every chunk of the second half.

Here the leader pickles an entry once (shared by its followers, and with
its command not copied: :func:`pickle_parts`) and queues a follower chunks
only while less than ``UNSENT_LIMIT`` waits unsent for it, going on as the
socket drains; the chunks keep the follower's election timer reset. Every
chunk carries the pickle's ``size`` and where it goes (``offset``), and only
the last one says "finish". A follower collects the chunks in one bytearray,
leaving out any that does not continue it, and parses them once, when it
holds ``size`` bytes. What the leader still does holding the GIL, it
announces first (LEADER_BUSY, below). Messages keep
pysyncobj's shape, so a node of an older release still understands them,
and this one still reads an older leader's chunks (no ``size``, early
"finish": parsed only once the pickle can be whole).

No Django here, nor pysyncobj: the engine (:mod:`.raft`) does the sending.
"""

import bisect
import pickle
import struct

# The leader's message to its followers before it works on an entry of
# BUSY_FROM bytes or more: ``{"type": LEADER_BUSY, "term": ..., "seconds": ...}``.
#
# The leader encodes, pickles, writes, flushes and applies an entry on
# threads that hold the GIL for each copy of it (here a copy of 256 MB takes
# 0.5 s), so its Raft thread sends no heartbeats meanwhile: for a large entry
# longer than an election timeout (a 256 MB one held it 6 s here, and its
# followers elected another leader, losing the transaction; each follower
# stands still about as long over it). Told first, a follower gives it that
# much longer before it calls an election or votes for another: ten seconds
# per 100 MiB, so that a leader that crashed meanwhile is still noticed
# within seconds of the time the entry would have taken. The commit waits as
# much longer for it (Session). A node of an older release ignores the
# message.
LEADER_BUSY = "leader_busy"
# A follower of this release answers a notice that carries the leader's clock
# (``lease_ts``) with ``{"type": LEADER_BUSY_PROMISE, "term": ..., "lease_ts":
# ..., "seconds": ...}``: it will vote for no one for that long, a promise on
# disk (.vote_promises). With a majority's promises the leader's lease lasts
# through the busy time, so strong reads go on being answered from its state
# while its Raft thread writes and applies the entry.
LEADER_BUSY_PROMISE = "leader_busy_promise"
BUSY_FROM = 4 * 2 ** 20
LEADER_BUSY_BYTES_PER_SECOND = 10 * 2 ** 20
MAX_BUSY_SECONDS = 300.0


def leader_busy_seconds(size):
    """How long a leader may go unheard while it works on an entry of ``size`` bytes."""
    return min(size / LEADER_BUSY_BYTES_PER_SECOND, MAX_BUSY_SECONDS)


def over_the_limit(entry_bytes, added, limit, in_transaction):
    """Why a write adding ``added`` bytes to an entry of ``entry_bytes`` may not run, or None."""
    if entry_bytes + added <= limit:
        return None
    if in_transaction:
        what = (f"transaction too large: with this statement ({added:,} bytes) its statements and parameters "
                f"would take {entry_bytes + added:,} bytes")
    else:
        what = f"statement too large: its text and parameters take {added:,} bytes"
    return (f"{what}, over the store's limit, max_transaction_mb ({limit // 2 ** 20:,} MiB, {limit:,} bytes); "
            "the statement did nothing: split the work into smaller transactions, or raise max_transaction_mb "
            "on every node")


def statement_bytes(sql, params, many):
    """About how many bytes a statement adds to its transaction's entry (its text and parameters)."""
    if params is None:
        return len(sql)
    rows = params if many else (params,)
    size = len(sql)
    for row in rows:
        values = row.values() if isinstance(row, dict) else row
        for value in values:
            size += len(value) if isinstance(value, (str, bytes, bytearray, memoryview)) else 9
    return size


def pickle_parts(entry):
    """A pickle of ``entry`` (command, index, term), as three parts whose middle one is the command itself.

    What ``pickle.dumps(entry)`` makes, but without copying the command
    into it: for a large entry, a copy is time the Raft thread sends no
    heartbeats. Protocol 4 opcodes, which any pickle.loads reads: the
    command as BINBYTES8, the two integers, TUPLE3, STOP.
    """
    command, index, term = entry

    def integer(value):
        return pickle.dumps(value, 2)[2:-1]  # without PROTO and STOP

    head = pickle.PROTO + bytes([4]) + pickle.BINBYTES8 + struct.pack("<Q", len(command))
    return head, command, integer(index) + integer(term) + pickle.TUPLE3 + pickle.STOP


class OutgoingEntry:
    """One large entry on its way to one follower, over one connection."""

    def __init__(self, entry, parts, link):
        self.index, self.term = entry[1], entry[2]
        self._parts = parts
        self.size = sum(len(part) for part in parts)
        self.offset = 0
        self._link = (id(link), getattr(link, "drops", 0))

    @property
    def done(self):
        return self.offset >= self.size

    def continues(self, entry, link):
        """Is this the transfer of ``entry`` over ``link`` as it was (not dropped since)?"""
        return (entry[1], entry[2]) == (self.index, self.term) and self._link == (id(link), getattr(link, "drops", 0))

    def next_message(self, header, chunk_size):
        """The next chunk as an AppendEntries: ``header`` (type, term, commit and previous index) plus the chunk."""
        start, end = self.offset, min(self.offset + chunk_size, self.size)
        self.offset = end
        transmission = "start" if start == 0 else "finish" if end == self.size else "process"
        return dict(header, transmission=transmission, data=self._bytes(start, end), size=self.size, offset=start)

    def _bytes(self, start, end):
        pieces, position = [], 0
        for part in self._parts:
            low, high = max(start - position, 0), min(end - position, len(part))
            if low < high:
                pieces.append(memoryview(part)[low:high])
            position += len(part)
        return b"".join(pieces)


class LargeEntrySender:
    """The leader's transfers of large entries, one per follower at most."""

    def __init__(self, chunk_size):
        self.chunk_size = chunk_size
        self._outgoing = {}  # node -> OutgoingEntry
        self._pickled = None  # (index, term, parts): the entry pickled last, shared by the followers
        self._large = []  # indexes of the large entries in the log, in order

    def note(self, entries):
        """Entries (command, index, term) appended to the log, in order: the large ones are remembered."""
        for entry in entries:
            if self.is_large(entry):
                self._large.append(entry[1])

    def next_large(self, index, log_start):
        """The index of the first large entry at ``index`` or later (None: there is none).

        Those before ``log_start`` are forgotten: the log no longer holds them.
        """
        del self._large[:bisect.bisect_left(self._large, log_start)]
        position = bisect.bisect_left(self._large, index)
        return self._large[position] if position < len(self._large) else None

    def is_large(self, entry):
        """Would pysyncobj send ``entry`` in chunks? (Its own test: the command's length.)"""
        return len(entry[0]) >= self.chunk_size

    @property
    def knows_any(self):
        """Is a large entry in the log (as far as :meth:`note` was told), or a transfer under way?"""
        return bool(self._large or self._outgoing)

    @property
    def sending(self):
        """Is a transfer under way? (Asked at every tick: no set built for it.)"""
        return bool(self._outgoing)

    @property
    def nodes(self):
        """The followers with a transfer under way."""
        return set(self._outgoing)

    def transfer_to(self, node, entry, link):
        """The transfer of ``entry`` to ``node`` over ``link``: the one under way, or a new one from its start.

        A connection that dropped since the transfer began lost whatever was
        queued on it, and the follower's half-collected pickle with it: the
        transfer starts over.
        """
        transfer = self._outgoing.get(node)
        if transfer is None or not transfer.continues(entry, link):
            transfer = self._outgoing[node] = OutgoingEntry(entry, self._pickle(entry), link)
        return transfer

    def _pickle(self, entry):
        cached = self._pickled
        if cached is None or cached[:2] != (entry[1], entry[2]):
            cached = self._pickled = (entry[1], entry[2], pickle_parts(entry))
        return cached[2]

    def forget(self, node):
        """No transfer to ``node`` any more (sent, or not wanted); its pickle goes once nobody needs it."""
        self._outgoing.pop(node, None)
        if self._pickled is not None and not any(
                (transfer.index, transfer.term) == self._pickled[:2] for transfer in self._outgoing.values()):
            self._pickled = None

    def forget_all(self):
        """No transfer under way, and no large entry known (a leader begins: see :meth:`note`)."""
        self._outgoing.clear()
        self._pickled = None
        self._large.clear()


class IncomingEntry:
    """A follower's collection of one large entry's chunks."""

    def __init__(self):
        self._data = None  # a bytearray while chunks arrive
        self._key = None  # (leader's term, previous index, size) of the entry collected
        self._sized = False  # chunks of this release (a size, an offset) or of an older one

    def add(self, message):
        """Take one chunk; the entry ``(command, index, term)`` once it is whole, else None.

        A chunk of this release says which entry it belongs to (the leader's
        term and the previous index: one entry per leader) and where it goes
        (``offset``); one that does not continue the entry collected is left
        out: a chunk still waiting on a connection the leader has replaced,
        read after the new connection's first ones (the same entry, pickled
        the same, so nothing collected is lost). Raises :class:`IncompleteEntry`
        when a last chunk comes that does not complete the entry collected:
        chunks were missed (this node restarted or joined part way through).
        """
        transmission, data, size = message["transmission"], message["data"], message.get("size")
        if size is None:
            return self._add_unsized(transmission, data)
        key = (message.get("term"), message.get("prevLogIdx"), size)
        offset = message.get("offset", 0 if transmission == "start" else None)
        if offset == 0:
            self._data, self._key, self._sized = bytearray(data), key, True
        elif self._data is not None and self._sized and key == self._key and offset == len(self._data):
            self._data += data
        elif transmission != "finish":
            return None  # not a continuation: left out
        else:
            collected = 0 if self._data is None or key != self._key else len(self._data)
            raise IncompleteEntry(f"collected {collected:,} of a {size:,}-byte entry")
        if transmission != "finish":
            return None
        collected, self._data = self._data, None
        if len(collected) != size:
            raise IncompleteEntry(f"collected {len(collected):,} of a {size:,}-byte entry")
        return pickle.loads(collected)

    def _add_unsized(self, transmission, data):
        # A chunk from a leader of an older release.
        if transmission == "start" or self._data is None or self._sized:
            self._data, self._key, self._sized = bytearray(data), None, False
        else:
            self._data += data
        if transmission != "finish":
            return None
        # An older leader's "finish" may come before the last chunk (see the
        # module docstring). Every pickle ends with its STOP opcode, so a
        # collection ending otherwise is not whole yet; one that ends with it
        # may still not be (its data may hold that byte anywhere).
        if self._data[-1:] != pickle.STOP:
            return None
        try:
            entry = pickle.loads(self._data)
        except Exception:
            return None
        self._data = None
        return entry


class IncompleteEntry(ValueError):
    """The chunks of a large entry did not add up to it."""
