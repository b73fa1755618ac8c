"""Transactions open on the leader: the write lock each holds, and aborting them.

On the leader a transaction holds its database's write lock from BEGIN (or,
deferred, from its first write) until its entry is enqueued, and the next one
begins once that entry is applied; its statements run on the database's
scratch connection. :class:`LeaderState` knows every open one, so that losing
leadership, stopping, or the idle transaction timeout can end them from
outside their sessions.
"""

import logging
import threading
import time

from . import errors
from .classify import Classifier
from .determinism import FixedValues
from .savepoints import OpenSavepoints
from .statemachine import rollback_quietly

logger = logging.getLogger("django_dqcluster.store")


def aborted_error(reason):
    """The error for a statement of a transaction aborted on the leader (``reason``: why)."""
    return errors.retryable(f"transaction aborted: {reason}; nothing was applied, retry it")


class Transaction:
    """An open transaction on the leader (or, deferred and until its first write, on a follower).

    A deferred one (``BEGIN DEFERRED``, Django's ``transaction_mode``) holds
    no lock while it only reads. As in SQLite, its first read starts its
    ``snapshot`` (a read connection in a read transaction, with the
    database's applied index at its start), which its later reads see. Its
    first write takes the write lock, and only if nothing was committed to
    the database since that snapshot (as SQLite's deferred transactions,
    which get SQLITE_BUSY_SNAPSHOT otherwise; one that has not read yet has
    no snapshot to go stale); from then on it runs as any other transaction.
    A deferred transaction a client begins on a follower reads there (see
    ``on_follower``) until it writes.
    """

    def __init__(self, database, pragmas, started_by_savepoint=None, deferred=False, results=None):
        """``results``: its session's open results (an abort ends the ones of this transaction)."""
        self.database = database
        self._results = results
        self.pragmas = dict(pragmas)
        self.values = FixedValues.fresh()
        self.statements = []  # [ordinal, sql, params, many, expect_error]
        self.entry_bytes = 0  # about the size of its statements and parameters (large_entries.statement_bytes)
        #: A statement of it bound a long text or blob (see .bound_values).
        self.bound_long_values = False
        self.ordinal = 0
        self.writes = False
        self.aborted = None
        #: Why an abort from outside interrupted the statement it ran (see LeaderState.abort_all).
        self.interrupted_because = None
        self.started_by_savepoint = started_by_savepoint
        self._deferred = deferred
        self.snapshot = None  # (read connection, applied index) once a deferred one read
        #: Begun on a follower: its reads run on that replica, and its first write moves it to the leader
        #: (Session._move_to_leader). Never in LeaderState: it holds no lock.
        self.on_follower = False
        #: A deferred one's savepoints while it only reads, kept by name: it
        #: opens them at its first write (Session._upgrade, _move_to_leader).
        self.savepoints = OpenSavepoints() if deferred else None
        #: On the leader, a follower's transaction moved here: the applied index
        #: of the database its reads saw on the follower, which its first write
        #: (or read) must find unchanged, as its own snapshot's.
        self.read_at = None
        #: On the leader, a follower's transaction's first read: the index the
        #: follower's replica applied, which may let the follower run it itself.
        self.follower_applied = None
        self._holds_lock = not deferred  # a deferred transaction holds none yet
        #: monotonic() when its last statement ended (see running).
        self.idle_since = time.monotonic()
        #: Held while a statement of it runs: the scratch mutex, then a new idle_since.
        self.running = _Running(self)
        # How many of its statements run now (a fetch may run inside one), and
        # the lock that makes "one runs" and interrupting it a single step.
        self._statements_running = 0
        self._interrupt_lock = threading.Lock()
        self.committing = False  # its COMMIT is under way: never idle again

    @property
    def deferred(self):
        """Has it not taken the write lock yet (BEGIN DEFERRED, and no write so far)?"""
        return self._deferred

    @property
    def holds_lock(self):
        """Does it still hold the database's write lock (and with it the scratch connection)?"""
        return self._holds_lock

    def took_lock(self):
        """A deferred transaction now holds the database's write lock (see Session._upgrade)."""
        with self.database.scratch_mutex:
            self._holds_lock = True
            self.idle_since = time.monotonic()  # however long it read before
        self._deferred = False
        self.snapshot = None

    def abort(self, reason):
        """End it from outside its session (``reason``: why, for the client's next statement)."""
        with self.database.scratch_mutex:
            self.aborted = reason
            if self._holds_lock and self._results is not None:
                # Its results not read to their end are statements still open
                # on the scratch connection, and SQLite keeps the abort's
                # interrupt pending while any is, failing every later
                # statement, the ROLLBACK below included: the next transaction
                # got SQLite's bare "interrupted" (found by the chaos run).
                # Fetching their rows now says the transaction was aborted.
                self._results.drop_owned_by(self, aborted_error(reason))
            self.end(rollback_scratch=True)

    def interrupt_running_statement(self, reason):
        """Interrupt its statement if one runs now; its session reports the abort (``reason``).

        Only while one of its statements runs is the scratch connection surely
        its own: interrupting on the strength of "it holds the lock" hit the
        next transaction's statement when this one ended in between, and that
        client got SQLite's bare "interrupted", which is not retryable.
        """
        with self._interrupt_lock:
            if self._statements_running:
                self.interrupted_because = reason
                self.database.scratch_connection().interrupt()

    def _statement_started(self):
        with self._interrupt_lock:
            self._statements_running += 1

    def _statement_ended(self):
        with self._interrupt_lock:
            self._statements_running -= 1

    def end(self, rollback_scratch):
        """Give the write lock back, once, rolling back its scratch work first if asked.

        Its session and an abort (leadership lost) may both end it, on two
        threads. Whoever comes second must not touch the scratch connection:
        once the lock is free it may be another transaction's. Under the
        scratch mutex, rolling back and releasing are one step.
        """
        with self.database.scratch_mutex:
            if not self._holds_lock:
                return
            if rollback_scratch:
                scratch = self.database.scratch_connection()
                rollback_quietly(scratch)
                if scratch.in_transaction:
                    # Never hand the next transaction this one's writes.
                    logger.warning("could not roll back an aborted transaction on database %r; "
                                   "its connection is replaced", self.database.name)
                    self.database.replace_scratch_connection()
            if self.bound_long_values:
                # Its prepared statements hold SQLite's copies of the values
                # last bound to them (see .bound_values); a new connection none.
                self.database.replace_scratch_connection()
            self._holds_lock = False
            self.database.write_lock.release()


class _Running:
    """``with tx.running:`` a statement of ``tx`` runs on the scratch connection.

    The scratch mutex keeps the Raft thread (or an idle abort) from rolling
    the transaction back under the statement; leaving it marks the
    transaction idle from then on (LeaderState.abort_idle).
    """

    def __init__(self, tx):
        self._tx = tx

    def __enter__(self):
        self._tx.database.scratch_mutex.acquire()
        self._tx._statement_started()
        return self

    def __exit__(self, *exc_info):
        self._tx._statement_ended()
        self._tx.idle_since = time.monotonic()
        self._tx.database.scratch_mutex.release()
        return False


class LeaderState:
    """The transactions open on this node while it leads; aborted together when it stops leading."""

    def __init__(self, node):
        self.node = node
        self.classifier = Classifier()
        self._open = set()
        self._lock = threading.Lock()

    def register(self, tx):
        with self._lock:
            self._open.add(tx)

    def unregister(self, tx):
        with self._lock:
            self._open.discard(tx)

    def abort_idle(self, timeout):
        """Abort the transactions that hold a write lock and have run nothing for ``timeout`` seconds.

        One client that left a transaction open (a stuck worker, a shell
        session) would otherwise hold every writer of its database up.
        """
        with self._lock:
            open_now = list(self._open)
        for tx in open_now:
            if not tx.holds_lock or tx.committing or time.monotonic() - tx.idle_since < timeout:
                continue
            with tx.database.scratch_mutex:  # held by a statement of it that runs now
                idle_since = tx.idle_since
                if not tx.holds_lock or tx.committing or time.monotonic() - idle_since < timeout:
                    continue
                tx.abort(f"it ran nothing for {timeout:g} s (the node's idle transaction timeout)")
            self.unregister(tx)
            logger.warning("aborted a transaction on database %r idle for %.1f s (idle transaction timeout %g s)",
                           tx.database.name, time.monotonic() - idle_since, timeout)

    def abort_all(self, reason):
        with self._lock:
            open_now = list(self._open)
        for tx in open_now:
            if tx.deferred:
                # Holds no lock and uses no shared connection; its session
                # sees it aborted at its next statement.
                tx.aborted = reason
                self.unregister(tx)
                continue
            # A statement it runs now fails with SQLITE_INTERRUPT; its session
            # reports it as this abort (retryable), not as the SQL's error.
            tx.interrupt_running_statement(reason)
            # Its client may never come back: free the database now so this
            # node can take transactions again when it leads again.
            tx.abort(reason)
            self.unregister(tx)
