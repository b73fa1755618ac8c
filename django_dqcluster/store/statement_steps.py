"""A limit on the work of one statement, counted in SQLite steps so that every node agrees.

Every node applies a committed entry on its Raft thread. A statement that never
ends (a recursive CTE without a bound, a join that multiplies large tables)
would hold that thread on every node at once and, being in the log, again
after each restart: the cluster would not write again. A clock cannot stop
it: a slow node would give up where a fast one finished, and their files
would differ. The number of steps of SQLite's virtual machine a statement
takes is the same on every node (same data, same SQL, same SQLite), so the
leader writes its limit into each entry and every node stops the statement
at the same step and records the same error. Reads and a transaction's
statements on the leader are held to the same limit, so a statement that
would be stopped when applied is stopped before it reaches the log.

SQLite calls the progress handler every so many steps, counted from the
statement's preparation, on from its earlier runs when it is cached: the apply
connection prepares each statement afresh, so every node counts from zero.
Different SQLite releases may compile a statement into different steps:
members should run the same one.

The handler is a Python call, and each call waits for the GIL, up to the
interpreter's switch interval (5 ms) while other threads run Python: called
every 10,000 steps, it made a 6-million-step statement 35 times slower, and
the Raft thread applying one missed its heartbeats. So it is set only while
a client's statement runs, and called at most every ``MAX_STEPS_PER_CHECK``
steps (at the limit itself, below that).

A client's statement can also be cancelled from another thread
(:func:`cancel_statement_of`): the node's client server does so when the
client closes its connection while its statement runs (a web request that
timed out, Ctrl-C in ``dbshell``), so that nobody's work runs on for a client
that will never read it. Only statements on the session's own connections are
cancelled: an entry the Raft thread applies runs to its end on every node.

A node embedded in the process runs its client's statements in the client's
thread. In the main thread, that is where Python runs signal handlers: Ctrl-C's
KeyboardInterrupt, the SoftTimeLimitExceeded of a Celery task's time limit.
Python runs them at the next Python code, which during a long statement is the
progress handler; the sqlite3 module drops whatever a progress handler raises
and only stops the statement, so the caller used to get "interrupted" in place
of its own exception. Here the handler keeps that exception and the statement
raises it once SQLite has stopped. In the main thread the handler is set even
without a limit, so that a statement there can be stopped at all.
"""

import contextlib
import math
import sqlite3
import threading

from .regexp_time import RegexpClock, over_the_limit, pattern_too_long
from .value_size import too_big

#: The most steps between two calls of the progress handler: a third of a
#: second to one second of SQLite work here, against at most a few ms of GIL.
MAX_STEPS_PER_CHECK = 10_000_000
#: About 30 s to 2 min of one CPU here (10-35 million steps a second): far
#: beyond what a web request's statement takes, well short of forever.
DEFAULT_MAX_STATEMENT_STEPS = 1_000_000_000

# The connection running a client's statement, by the thread that runs it:
# what cancel_statement_of() interrupts. The lock makes sure a connection is
# interrupted only while that thread's statement is on it, never once it has
# gone back to a pool and serves someone else.
_running = {}
_running_lock = threading.Lock()


def cancel_statement_of(thread_id, reason):
    """Stop the client statement thread ``thread_id`` runs, if any; it raises an error saying ``reason``.

    Returns whether a statement was running. Safe from any thread.
    """
    with _running_lock:
        conn = _running.get(thread_id)
        if conn is None:
            return False
        conn._cancelled_because = reason
        conn.interrupt()
        return True


class LimitedConnection(sqlite3.Connection):
    """A node's SQLite connection, whose statements may be held to a number of steps
    (its values to a size: value_size.py; its REGEXP matching to a time: regexp_time.py).

    A client's statement runs inside ``steps_limited(n)``: the node's own
    bookkeeping statements are never stopped, and an error the statement
    raised goes through ``stopped()``, which tells the limit's stop from any
    other interruption.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_limit = None
        self.value_limit = None  # see value_size.py
        self.regexp_clock = RegexpClock(None)  # no limit until one is set (regexp_time.py)
        self._checks_left = 0
        self._stopped = False
        self._cancelled_because = None
        # What a signal handler raised in the progress handler, to raise once SQLite stopped.
        self._raised = None
        self._checker = self._next_check = None

    @contextlib.contextmanager
    def steps_limited(self, limit):
        """Hold what runs inside to ``limit`` steps; an error raised inside goes through ``stopped()``.

        What runs inside can be cancelled by cancel_statement_of() for this thread.
        """
        thread_id = threading.get_ident()
        self._cancelled_because = None
        with _running_lock:
            outer = _running.get(thread_id)
            _running[thread_id] = self
        self.limit_steps(limit)
        self.regexp_clock.start_statement()
        try:
            yield
            self._raise_what_a_signal_raised()
        except sqlite3.Error as error:
            self._raise_what_a_signal_raised()
            raise self.stopped(error) from None
        finally:
            with _running_lock:
                if outer is None:
                    del _running[thread_id]
                else:
                    _running[thread_id] = outer
            self.unlimit_steps()

    def limit_steps(self, limit):
        """Hold what runs from now on to ``limit`` steps (None or 0: no limit).

        The statement is stopped at the first check at or past ``limit``: at
        ``limit`` exactly, or, beyond MAX_STEPS_PER_CHECK, up to that many
        steps later (1% of the default limit), the same on every node.
        In the main thread, a signal handler's exception also stops it.
        """
        self._stopped = False
        self._raised = None
        if not limit and threading.current_thread() is not threading.main_thread():
            self.unlimit_steps()
            return
        self.step_limit = limit or None
        per_check = min(limit, MAX_STEPS_PER_CHECK) if limit else MAX_STEPS_PER_CHECK
        self._checks_left = -(-limit // per_check) if limit else math.inf  # rounded up
        if self._checker is None or self._checker.gi_frame is None:
            # First use, or an exception escaped it (see _checks): a new one.
            self._checker = self._checks()
            next(self._checker)  # to its first yield: each check resumes it inside its ``try``
            self._next_check = self._checker.__next__
        self.set_progress_handler(self._next_check, per_check)

    def unlimit_steps(self):
        """What runs from now on runs to its end; what every caller does once its statement ended."""
        self.step_limit = None
        self.set_progress_handler(None, 0)

    def _checks(self):
        """The progress handler, as a generator SQLite resumes at each check: 1 stops the statement.

        A function would not do: Python runs a pending signal handler as it
        enters a function, before any ``try`` in it, and the exception would
        go to the sqlite3 module, which drops it. A generator is resumed at
        its ``yield``, inside the ``try`` that keeps the exception. (A signal
        handled in the few instructions between the ``try`` and the next
        ``yield`` would still end the generator: limit_steps makes another.)
        """
        verdict = 0
        while True:
            try:
                yield verdict
                verdict = 0
                self._checks_left -= 1
                if self._checks_left <= 0:
                    self._stopped = True
                    verdict = 1  # SQLite ends the statement with SQLITE_INTERRUPT
            except GeneratorExit:  # the connection is going away
                return
            except BaseException as raised:  # KeyboardInterrupt above all
                self._raised = raised
                verdict = 1

    def _raise_what_a_signal_raised(self):
        raised, self._raised = self._raised, None
        if raised is not None:
            raise raised

    def stopped(self, error):
        """``error``, or the limit's own error if the limit stopped the statement.

        SQLite reports both as SQLITE_INTERRUPT, which the store otherwise takes
        for a node's own business (a deposed leader's statement interrupted);
        the limit's stop is the statement's outcome on every node.
        A cancelled statement's error says why it was cancelled, and a value
        over the connection's size limit names that limit (value_size.py).
        """
        if self.value_limit is not None:
            error = too_big(error, self.value_limit)
        clock = self.regexp_clock
        if clock.exceeded:
            return over_the_limit(clock.limit)
        if clock.too_long is not None:
            return pattern_too_long(clock.too_long)
        interrupted = getattr(error, "sqlite_errorname", None) == "SQLITE_INTERRUPT"
        if self._cancelled_because is not None and interrupted and not self._stopped:
            return sqlite3.OperationalError(f"statement cancelled: {self._cancelled_because}")
        if not self._stopped:
            return error
        return sqlite3.OperationalError(
            f"statement stopped after {self.step_limit:,} SQLite steps, the store's limit (max_statement_steps), "
            "so that it cannot hold up the cluster: bound the query, or split the work into smaller statements"
        )
