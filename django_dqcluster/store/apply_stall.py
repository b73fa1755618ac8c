"""An entry this node cannot apply yet: retried, reported without flooding the log, and cleared.

A committed entry must be applied, in order, by every member: a node whose
disk is full, or that runs code older than the entry's format, cannot skip
it. Its state machine raises :class:`EntryNotApplied`; the engine keeps the
entry, goes on with Raft (heartbeats, incoming messages, votes) and offers
the same entry again a little later. :class:`ApplyStall` is that bookkeeping:
when to retry, what to log (the first failure at once, then at most one line
a minute while it lasts, and a line when it is over), and for how long the
node has been stuck, which the engine uses to keep a stuck node from leading.
"""

import logging
from time import monotonic

logger = logging.getLogger("django_dqcluster.store")

RETRY_EVERY = 0.1  # seconds between attempts at the same entry
# A stall this long is no passing lock (a deposed leader's transaction rolling
# back): the node leaves leading and serving clients to the others.
STUCK_AFTER = 1.0
REPORT_EVERY = 60.0  # seconds between log lines while the same entry stays stuck


class EntryNotApplied(Exception):
    """Raised by a state machine that could not apply an entry, for now; the message says why.

    Nothing of the entry may remain applied: the engine offers the same
    entry again, and the state machine must be able to apply it then.
    """


class ApplyStall:
    def __init__(self, *, retry_every=RETRY_EVERY, report_every=REPORT_EVERY, stuck_after=STUCK_AFTER,
                 clock=monotonic):
        self.retry_every = retry_every
        self.stuck_after = stuck_after
        self.report_every = report_every
        self._clock = clock
        self.index = None  # the entry that could not be applied; None while every entry applies
        self.reason = None
        self.since = None
        self.attempts = 0
        self._retry_at = 0.0
        self._reported_at = None

    @property
    def stalled(self):
        return self.index is not None

    @property
    def stuck(self):
        since = self.since
        return since is not None and self._clock() - since >= self.stuck_after

    def may_retry(self):
        return self.index is None or self._clock() >= self._retry_at

    def failed(self, index, reason):
        """The entry at ``index`` could not be applied, because of ``reason``."""
        now = self._clock()
        if index != self.index:
            self.index, self.since, self.attempts, self._reported_at = index, now, 0, None
        self.attempts += 1
        self._retry_at = now + self.retry_every
        changed, self.reason = reason != self.reason, reason
        if self._reported_at is None:
            logger.error("cannot apply entry %d: %s; retrying every %gs until it applies",
                         index, reason, self.retry_every)
        elif changed or now - self._reported_at >= self.report_every:
            logger.error("still cannot apply entry %d after %.0fs (%d attempts): %s",
                         index, now - self.since, self.attempts, reason)
        else:
            return
        self._reported_at = now

    def applied_up_to(self, index):
        """Entries up to ``index`` are applied: a stall at or below it is over."""
        if self.index is None or index < self.index:
            return
        logger.warning("applied entry %d at last, %.1fs after the first of %d failed attempts; "
                       "this node goes on", self.index, self._clock() - self.since, self.attempts)
        self.index = self.reason = self.since = None
        self.attempts = 0
