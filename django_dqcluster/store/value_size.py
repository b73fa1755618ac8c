"""A limit on the size of one value, the same on every node: what a client could send or read back.

SQLite refuses a string, blob or row longer than its length limit
(SQLITE_LIMIT_LENGTH, a billion bytes by default). A client cannot send a
value larger than the node's ``max_frame`` (64 MiB), but SQL can make one:
``INSERT INTO t VALUES (hex(zeroblob(300000000)))`` is 600 MB made in memory
(1.5 GB at its peak) and written to disk on every node at once, in one SQLite
step that the step limit cannot stop, and, being in the log, made again at
each restart: a few of them run every node out of memory for good. No client
could read such a value back anyway (a row over ``max_frame`` fails to reach
it).

So a client's statements run under a length limit of ``max_frame`` bytes. The
leader writes its limit into each entry, and every node applies the entry's
statements under it, so that a value too big on one node is too big on all
and each records the same error, whatever their own ``max_frame``. Entries
without one were written before the limit existed and are applied under
SQLite's default, as they were then. The node's own statements (bookkeeping,
snapshots) are not limited.
"""

import contextlib
import sqlite3
import weakref


def limit_values(conn, limit):
    """From now on, hold the values and rows of ``conn`` (a LimitedConnection) to ``limit`` bytes.

    None leaves them as they are. A value or row over the limit fails with
    sqlite3.DataError (SQLITE_TOOBIG); a statement run inside
    ``conn.steps_limited`` gets the error of :func:`too_big`, naming the limit.
    """
    if limit is not None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
        conn.value_limit = limit


@contextlib.contextmanager
def values_limited(conn, limit):
    """Hold the values and rows of what runs inside to ``limit`` bytes (None: as they are)."""
    if limit is None:
        yield
        return
    previous, previous_named = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH), conn.value_limit
    limit_values(conn, limit)
    try:
        yield
    finally:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, previous)
        conn.value_limit = previous_named


def length_limit_of(conn):
    """A function giving ``conn``'s length limit as it is when called (it changes per entry).

    For Python functions registered on ``conn`` that could make a value over
    it: SQLite only sees a value's size once Python has made it.
    """
    try:
        # The function belongs to the connection: no cycle through it.
        ref = weakref.ref(conn)
    except TypeError:
        # A plain sqlite3.Connection (a client's replica reader) takes no weak
        # reference, and nothing changes its limit: the one it has now.
        fixed = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        return lambda: fixed

    def limit():
        conn = ref()
        return conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) if conn is not None else 0

    return limit


def too_big(error, limit):
    """``error``, or, for SQLite's "string or blob too big", an error that says which limit it met."""
    if getattr(error, "sqlite_errorname", None) != "SQLITE_TOOBIG":
        return error
    named = sqlite3.DataError(
        f"string or blob too big: a value or row over {limit:,} bytes, the store's limit (max_frame, the "
        "largest message a client may send or receive), which every node applies alike"
    )
    named.sqlite_errorcode, named.sqlite_errorname = error.sqlite_errorcode, error.sqlite_errorname
    return named
