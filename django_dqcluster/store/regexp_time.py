"""A limit on the time a client's statement spends matching REGEXP patterns, enforced before the log.

SQLite's ``X REGEXP Y`` calls the application's ``regexp(Y, X)`` function
(Django's backend registers one; see ``backend/sql_functions.py``). The step
limit (statement_steps.py) counts such a call as one step, however long it
runs, and a pattern that backtracks takes exponential time: ``(a|aa)+$``
against 40 characters runs for minutes. Python's ``re`` also holds the GIL all
that time, so the node's Raft thread sent no heartbeats; in a write, every
node applied the entry at once, and again after each restart, since it was in
the log: a cluster stopped by one ``__regex`` lookup.

A clock cannot stop an entry while it is applied (a slow node would give up
where a fast one finished, and their files would differ). So the limit is
enforced where a statement first runs, on one node:

* reads, on the node (or the client's replica reader) that answers them;
* writes, on the leader, before anything reaches the log: a transaction's
  statements already run there first (on the scratch connection), and an
  autocommit write that may call ``regexp`` (:data:`TIMED_FUNCTIONS`, named
  in the statement, a view or a trigger, or in a CHECK constraint, generated
  column or index of a table it writes: see ``classify.py``) runs there as a
  one-statement transaction instead of going to the log unseen.

A statement the limit stops fails with an error naming it, has no effect (an
error raised by a function rolls the statement back), and is not replayed. One
that finished is applied by every node without a limit, taking about as long
as it took the leader. The matching itself releases the GIL
(``regex``'s ``concurrent``), so other requests and the Raft thread run on
meanwhile.

The limit is per statement, and per page of a read whose result is fetched
page by page (each page is a run of the statement).
"""

import sqlite3
import time

#: Seconds of REGEXP matching one client statement may take (None or 0: no limit).
#: A simple pattern over a million rows takes about one; a backtracking one
#: reaches any limit within a few dozen characters.
DEFAULT_MAX_REGEXP_SECONDS = 10.0

#: The longest pattern a limited statement may match with. Compiling one takes
#: 3-6 us per character here, in code that holds the GIL and that no timeout
#: stops (a 1 MB pattern: 3-5 s; SQLite lets a client send 64 MiB).
MAX_PATTERN_CHARS = 32_768

#: The functions whose time the leader must see before their statement reaches the log.
TIMED_FUNCTIONS = frozenset({"regexp"})


class RegexpClock:
    """What one connection's current statement has spent matching, against its limit.

    ``per_call``: the limit holds each call on its own (a connection nobody
    tells where its statements start: a client's replica reader).
    """

    def __init__(self, limit, per_call=False):
        self.limit = limit or None
        self.per_call = per_call
        self.spent = 0.0
        self.exceeded = False
        self.too_long = None  # the length of a pattern refused in this statement

    def start_statement(self):
        self.spent = 0.0
        self.exceeded = False
        self.too_long = None

    def check_pattern(self, pattern):
        """Refuse (ValueError) a pattern over MAX_PATTERN_CHARS where matching is limited.

        Where entries are applied there is no limit: what the leader let
        through is applied as it was, by members of every release.
        """
        if self.limit is not None and isinstance(pattern, (str, bytes)) and len(pattern) > MAX_PATTERN_CHARS:
            self.too_long = len(pattern)
            raise ValueError(f"a REGEXP pattern of {len(pattern):,} characters")

    def remaining(self):
        """Seconds the next call may take (None: no limit)."""
        if self.limit is None:
            return None
        if self.per_call:
            return self.limit
        return max(self.limit - self.spent, 0.0)

    def timed(self, match):
        """``match(timeout)``'s result; a TimeoutError it raises marks the statement as over the limit."""
        started = time.monotonic()
        try:
            return match(self.remaining())
        except TimeoutError:
            self.exceeded = True
            raise
        finally:
            self.spent += time.monotonic() - started


def limit_regexp_time(conn, seconds):
    """From now on, hold each statement of ``conn`` (a LimitedConnection) to ``seconds`` of matching.

    A node's connections start with no limit (the apply connection keeps none).
    """
    conn.regexp_clock.limit = seconds or None


def regexp_clock_of(conn):
    """The clock a ``regexp`` function registered on ``conn`` asks how long it may match.

    A node's connection has its own, whose limit may be set later; any other
    (a client's replica reader) holds each call to the default limit.
    """
    clock = getattr(conn, "regexp_clock", None)
    if clock is None:
        clock = RegexpClock(DEFAULT_MAX_REGEXP_SECONDS, per_call=True)
    return clock


def pattern_too_long(length):
    """The error of a statement whose REGEXP pattern was over MAX_PATTERN_CHARS (see _node_local)."""
    return _node_local(
        f"a REGEXP pattern of {length:,} characters, over the store's limit of {MAX_PATTERN_CHARS:,}: compiling it "
        "would hold up the node"
    )


def over_the_limit(limit):
    """The error of a statement the limit stopped (see _node_local)."""
    return _node_local(
        f"REGEXP matching took {limit:g} s in this statement, the store's limit (max_regexp_seconds), "
        "so that a pattern that backtracks cannot hold the cluster up: simplify the pattern (no nested or "
        "overlapping repetition such as (a|aa)+), or match fewer or shorter values"
    )


def _node_local(message):
    """An error only the connections where clients' statements first run give.

    Its code is SQLITE_INTERRUPT, as for a statement a node stopped for its
    own reasons: never written to the log as a statement's outcome
    (statemachine.is_environmental), since the apply connection, which has
    no limit, would not fail the statement again: a transaction's entry
    replayed to a different end, and its commit never came.
    """
    error = sqlite3.OperationalError(message)
    error.sqlite_errorname = "SQLITE_INTERRUPT"
    return error
