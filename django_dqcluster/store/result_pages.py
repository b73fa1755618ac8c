"""Query results sent a page at a time.

A statement's whole result used to travel as one answer, so a result larger
than the connection's frame limit could not be read at all, and the node
held all of it in memory while it sent it. Now a client that says it can
fetch (``page_bytes`` in its ``open`` request) gets the rows of a read a page
at a time: the first page in the statement's answer, marked ``more`` with the
id of the open result, the next ones from ``fetch`` requests, until an answer
has no ``more``. A page is at most ``page_bytes`` of msgpack (one row larger
than that travels alone). The node reads the result from SQLite as the pages
are asked for and holds about a page of it.

An open result keeps its SQLite statement stepping, which keeps a read
snapshot on its connection. So a read outside a transaction that does not
fit one page takes the session's read connection with it (the session's next
read borrows another, and sees the newest applied state), and gives it back
to the database when it ends. Inside a transaction a result reads the
transaction's own connection; when the transaction ends (and that connection
is rolled back) the rows still unread are read into memory first, so a client
may finish reading them after COMMIT, as with sqlite3.

A session keeps at most ``MAX_OPEN_RESULTS`` open results; beyond that the
oldest is closed, and fetching from it says so. Clients free the results they
stop reading (a cursor closed or executed again before its last page) by
listing their ids in ``discard`` on their next request.

This module imports neither Django nor pysyncobj.
"""

import secrets
from collections import OrderedDict

import msgpack

from . import errors

#: Rows read from SQLite at a time while a page fills.
CHUNK_ROWS = 256
MAX_OPEN_RESULTS = 16


def _packed_size(value):
    return len(msgpack.packb(value, use_bin_type=True))


class OpenResult:
    """The unread rows of one statement: a stepping SQLite cursor, or rows already read."""

    def __init__(self, cursor, *, guard=None, owner=None, steps=None):
        """``guard``: a context manager held while the cursor steps (the transaction's
        connection mutex). ``owner``: the transaction whose connection it reads.
        ``steps``: the most SQLite steps reading one chunk may take (statement_steps.py)."""
        self._cursor = cursor
        self._steps = steps
        #: Set to a callable that takes the cursor's connection once the result ends.
        self.release = None
        self._guard = guard
        self.owner = owner
        self._pending = []  # rows read from the cursor and not yet sent
        self._failure = None  # a StoreError to report on the next fetch

    @property
    def stepping(self):
        return self._cursor is not None

    def next_page(self, page_bytes):
        """(rows, more): rows up to ``page_bytes`` of msgpack, at least one if any are left."""
        if self._failure is not None:
            raise self._failure
        rows, size = [], 0
        while True:
            chunk = self._next_chunk()
            if not chunk:
                return rows, False
            chunk_size = _packed_size(chunk)
            if size + chunk_size <= page_bytes:
                rows.extend(chunk)
                size += chunk_size
                continue
            # The page ends inside this chunk: take its rows one by one.
            for position, row in enumerate(chunk):
                row_size = _packed_size(row)
                if rows and size + row_size > page_bytes:
                    self._pending = chunk[position:]
                    return rows, True
                rows.append(row)
                size += row_size
            return rows, bool(self._pending) or self.stepping

    def _next_chunk(self):
        if self._pending:
            chunk, self._pending = self._pending, []
            return chunk
        if self._cursor is None:
            return []
        if self._guard is not None:
            with self._guard:
                chunk = self._step(self._cursor.fetchmany, CHUNK_ROWS)
        else:
            chunk = self._step(self._cursor.fetchmany, CHUNK_ROWS)
        if len(chunk) < CHUNK_ROWS:
            self._end_cursor()
        return chunk

    def read_rest(self, failure):
        """Read every row left into memory: its connection is about to be rolled back.

        If the rows can no longer be read, the next fetch raises ``failure``.
        """
        if self._cursor is None:
            return
        try:
            self._pending.extend(self._step(self._cursor.fetchall))
        except Exception:
            self._pending = []
            self._failure = failure
        self._end_cursor()

    def _step(self, fetch, *args):
        """``fetch(*args)``, held to the step limit: a statement that finds no next row
        must not keep the node's thread (or, reading the rest, its memory) for ever."""
        if not self._steps:
            return fetch(*args)
        with self._cursor.connection.steps_limited(self._steps):
            return fetch(*args)

    def fail(self, failure):
        """Drop the rows left without reading them; the next fetch raises ``failure``."""
        self._pending = []
        self._failure = failure
        self._end_cursor()

    def close(self):
        self._pending = []
        self._end_cursor()

    def _end_cursor(self):
        cursor, self._cursor = self._cursor, None
        if cursor is None:
            return
        try:
            cursor.close()
        except Exception:
            pass  # its connection may be closed already (database dropped, node stopping)
        if self.release is not None:
            self.release(cursor.connection)


class OpenResults:
    """A session's open results, by id, oldest first."""

    def __init__(self, limit=MAX_OPEN_RESULTS):
        self.limit = limit
        self._open = OrderedDict()
        self._evicted = OrderedDict()  # ids of the last results closed for the limit

    def __len__(self):
        return len(self._open)

    def __contains__(self, result_id):
        return result_id in self._open

    def first_page(self, response, result, page_bytes):
        """Put the first page of ``result`` in ``response``; keep the result open if rows are left."""
        try:
            rows, more = result.next_page(page_bytes)
        except BaseException:
            result.close()
            raise
        response["rows"] = rows
        if not more:
            result.close()
            return response
        result_id = secrets.token_hex(8)
        self._open[result_id] = result
        response["more"] = result_id
        while len(self._open) > self.limit:
            oldest_id, oldest = self._open.popitem(last=False)
            oldest.close()
            self._evicted[oldest_id] = True
            while len(self._evicted) > 4 * self.limit:
                self._evicted.popitem(last=False)
        return response

    def fetch(self, result_id, page_bytes):
        result = self._open.get(result_id)
        if result is None and self._evicted.pop(result_id, None):
            raise errors.operational(
                f"the rest of this result was dropped unread: a connection keeps at most {self.limit} results "
                "open with rows left to read (close the cursors you stop reading); run the query again")
        if result is None:
            raise errors.operational(
                "the rest of this result is gone: it was read to the end or discarded, or it was "
                "opened on another connection to the store (the connection was lost and reopened); "
                "run the query again")
        try:
            rows, more = result.next_page(page_bytes)
        except BaseException:
            self.discard([result_id])
            raise
        if not more:
            self.discard([result_id])
        return {"rows": rows, "more": result_id} if more else {"rows": rows}

    def discard(self, result_ids):
        for result_id in result_ids:
            result = self._open.pop(result_id, None) if isinstance(result_id, str) else None
            if result is not None:
                result.close()

    def read_rest_of(self, owner, failure):
        """Before ``owner``'s connection is rolled back: read its results' rows into memory."""
        for result in self._open.values():
            if result.owner is owner:
                result.read_rest(failure)

    def drop_owned_by(self, owner, failure):
        """Give up ``owner``'s results unread (its connection is no longer its own); fetching them raises ``failure``."""
        for result in list(self._open.values()):  # (from an abort's thread too)
            if result.owner is owner:
                result.fail(failure)

    def close_all(self):
        self.discard(list(self._open))
