"""Reads with consistency ``none`` answered from this host's replica file.

A ``none`` read on a node is answered from that node's own SQLite file. When
the client runs on the node's host (the sidecar deployment: gunicorn workers
beside ``manage.py dqcluster_node``), it can open that file itself, read-only,
and skip the round trip: the same data the node would read, at a fraction of
the latency (a get by primary key on loopback spends about half its time in
the two socket hops and the node's request handling).

It is only an optimisation of where the same read runs, so anything unusual
falls back to asking the node, which then answers (or reports the error)
exactly as before:

* the node proves the file is its own: it publishes a random instance id in
  a file beside its databases and sends the same id over the authenticated
  connection; a client on another host (or one that may not read the node's
  files) never finds that id, and reads through the socket;
* the node withdraws the id when it stops or stops serving (a replica that
  diverged), so a dead or diverged node's file is never read; a node killed
  outright closes the client's socket, which the driver checks before
  every local read;
* a database file dropped or cloned over has a new inode: the reader notices
  with one ``stat`` and reopens it (a snapshot is installed into the file in
  place, through SQLite, so an open connection sees it as any commit);
* any SQLite error (a table this replica does not have yet, a function the
  local library lacks) lets the node answer; a file this process cannot read
  (its WAL index not created yet, a lock the node holds) is left to the node
  for a second before the next try, so it never costs every read an attempt.

A result is read a page (``PAGE_ROWS``) at a time, as the node sends its own
(see ``store/result_pages.py``), so iterating over a large table holds a page
of it in memory, not all of it. A result longer than a page keeps its SQLite
statement stepping, which holds a read snapshot on its connection: it takes
that connection with it (:class:`LocalResult`), and the next read opens
another, so reads made while it is being iterated over see the node's newest
state (a loop that writes and reads back sees its writes).
"""

import os
import sqlite3
import time
import urllib.parse

from ..store.bound_values import holds_long_values

#: Seconds during which a file that could not be read is left to the node.
RETRY_AFTER = 1.0

#: Rows of a local result read at a time (the node reads its results from
#: SQLite in chunks of the same size).
PAGE_ROWS = 256


class LocalResult:
    """The rows of a local read that did not fit its first page, read on as they are asked for.

    It owns the connection its statement steps on, and closes it once the last
    row is read or nobody will read the rest (:meth:`close`).
    """

    def __init__(self, conn, cursor):
        self._conn = conn
        self._cursor = cursor

    def next_page(self):
        """(rows, more): the next rows (at most PAGE_ROWS), and whether more may follow."""
        if self._conn is None:
            return [], False
        try:
            rows = self._cursor.fetchmany(PAGE_ROWS)
        except sqlite3.Error:
            # The first page came from this file, so the node cannot take
            # over half way: the caller reports it.
            self.close()
            raise
        if len(rows) < PAGE_ROWS:
            self.close()
            return rows, False
        return rows, True

    def close(self):
        if self._conn is not None:
            self._conn.close()
        self._conn = self._cursor = None


class ReplicaFile:
    """A read-only connection to one database file of this host's node."""

    def __init__(self, path, instance_file, configure=None, detect_types=0, clock=time.monotonic):
        self.path = path
        self.instance_file = instance_file
        self._configure = configure
        self._detect_types = detect_types
        self._clock = clock
        self._conn = None
        self._opened = None  # (st_dev, st_ino) of the file self._conn reads
        self._retry_at = 0.0  # after a failure to read the file: when to try again

    @classmethod
    def offered(cls, offer, configure=None, detect_types=0):
        """The replica a node offered in its ``open`` answer, if it is on this host; else None."""
        if not offer:
            return None
        try:
            with open(offer["instance_file"], encoding="ascii") as handle:
                published = handle.read().strip()
        except (OSError, KeyError, TypeError, UnicodeDecodeError):
            return None
        if not published or published != offer.get("instance"):
            return None
        return cls(offer["path"], offer["instance_file"], configure, detect_types)

    @property
    def withdrawn(self):
        """Has the node withdrawn its replica (stopped, or stopped serving)?"""
        return not os.path.exists(self.instance_file)

    def query(self, sql, params):
        """The result of the read ``sql``, or None when the node should answer it."""
        if self._retry_at and self._clock() < self._retry_at:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            self.close()  # dropped, or not created on this node yet
            return None
        try:
            if self._opened != (stat.st_dev, stat.st_ino):
                self._open(stat)
            cursor = self._conn.execute(sql, params)
            rows = cursor.fetchmany(PAGE_ROWS)
        except sqlite3.Error as error:
            if getattr(error, "sqlite_errorname", None) != "SQLITE_ERROR":
                # Not the statement (no such table, a syntax error) but the
                # file: cannot open, locked, not a database...
                self._give_up_for_a_while()
            return None
        except Exception:  # noqa: BLE001 - e.g. the configure hook failed: the node's connections have it
            self._give_up_for_a_while()
            return None
        description = cursor.description
        more = None
        if len(rows) == PAGE_ROWS:
            # Still stepping, with a read snapshot on this connection: the
            # result takes the connection; the next read opens another.
            more = LocalResult(self._conn, cursor)
            self._conn = self._opened = None
        elif holds_long_values(params):
            # sqlite3 keeps the statement prepared, with SQLite's copy of the
            # long value, as long as the connection lives (store/bound_values.py).
            cursor.close()
            self.close()
        return {
            "columns": [column[0] for column in description] if description is not None else None,
            "rows": rows,
            "rowcount": cursor.rowcount,
            "lastrowid": None,
            "more": more,
        }

    def _open(self, stat):
        self.close()
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
        # timeout=0: a file the node holds locked (a clone being written) is
        # the node's to read; never wait here for its lock.
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=0,
                               detect_types=self._detect_types)
        try:
            if self._configure is not None:
                self._configure(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._opened = conn, (stat.st_dev, stat.st_ino)

    def _give_up_for_a_while(self):
        self.close()
        self._retry_at = self._clock() + RETRY_AFTER

    def close(self):
        if self._conn is not None:
            self._conn.close()
        self._conn = self._opened = None
