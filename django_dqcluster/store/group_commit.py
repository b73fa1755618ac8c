"""Group commit: transactions that wait together are appended as one log entry.

Sessions put their entries here instead of handing them to Raft one by one;
the Raft thread takes everything waiting at the start of each tick (see
``SafeSyncObj.command_source``). Consecutive transactions become one
``group`` entry, so eight clients' commits cost one journal record, one log
entry to replicate, apply and acknowledge, and (usually) one SQLite commit on
every node, instead of eight. A transaction is never split: each one is whole
inside exactly one entry, applied in order with its own outcome.

A lone transaction (one client, or a quiet moment) is appended exactly as
before, so grouping adds nothing to a single client's latency: entries only
group when they arrived while the Raft thread was busy with earlier ones.

A transaction's entry belongs to the leader that ran it: its statements read
that leader's state, which only the next entry of that leader's log is sure
to find. Its callback says so (``leader_only``): a node that stopped leading
before appending it fails it as not applied (safe to retry) instead of
forwarding it to the new leader, where other transactions may have committed
in between (see ``SafeSyncObj``). Other entries (a member's address, a
checkpoint) read nothing and may be forwarded.
"""

import threading

from .entry_parts import pack_in_parts
from .statemachine import GROUP, TX, encode_entry, new_entry_id

# Bounds of one group entry: a follower applies it in one go, and an entry
# over pysyncobj's appendEntriesBatchSizeBytes (256 KiB here) is sent in pieces.
MAX_GROUP_ENTRIES = 64
MAX_GROUP_BYTES = 128 * 1024
# Entries whose statements take this many bytes or more are encoded in parts
# (.entry_parts): below it msgpack in one call is quicker, and its hold of the GIL short.
LARGE_ENTRY = 1024 * 1024


class CommitQueue:
    """Entries waiting for the Raft thread, in the order sessions enqueued them."""

    def __init__(self, max_entries=MAX_GROUP_ENTRIES, max_bytes=MAX_GROUP_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._waiting = []  # (may_group, payload, pending)

    def put(self, entry, pending, size=0):
        """Add an entry; True if the Raft thread must be woken for it.

        Only the first entry after a take needs a wake-up: the take that
        wake-up causes collects every entry put before it. ``size``: about
        how many bytes its statements take; from LARGE_ENTRY on, its large
        values are copied with the GIL released (.entry_parts).
        """
        payload = encode_entry(entry) if size < LARGE_ENTRY else pack_in_parts(entry)
        is_transaction = entry.get("kind") == TX
        # Only transactions group; a large one travels alone.
        may_group = is_transaction and len(payload) <= self.max_bytes // 4
        with self._lock:
            first = not self._waiting
            self._waiting.append((is_transaction, may_group, payload, pending))
        return first

    def take(self):
        """Everything waiting, as (payload, callback) in enqueue order, consecutive transactions grouped."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        commands = []
        group, size = [], 0
        for is_transaction, may_group, payload, pending in waiting:
            if group and (not may_group or len(group) == self.max_entries or size + len(payload) > self.max_bytes):
                commands.append(_command(group))
                group, size = [], 0
            if may_group:
                group.append((payload, pending))
                size += len(payload)
            elif is_transaction:
                commands.append((payload, TransactionOutcome([pending])))
            else:
                commands.append((payload, pending.resolve))
        if group:
            commands.append(_command(group))
        return commands


def _command(group):
    if len(group) == 1:
        payload, pending = group[0]
        return payload, TransactionOutcome([pending])
    payload = encode_entry({"kind": GROUP, "id": new_entry_id(), "parts": [payload for payload, _ in group]})
    return payload, TransactionOutcome([pending for _, pending in group], grouped=True)


class TransactionOutcome:
    """The callback of an entry holding transactions: each waiting one gets its own outcome."""

    #: Only the leader that ran these transactions may append them (see the module doc).
    leader_only = True

    def __init__(self, pendings, grouped=False):
        self.pendings = pendings
        self.grouped = grouped

    def __call__(self, result, error):
        parts = result.get("parts") if self.grouped and isinstance(result, dict) else None
        for position, pending in enumerate(self.pendings):
            pending.resolve(parts[position] if parts is not None else result, error)
