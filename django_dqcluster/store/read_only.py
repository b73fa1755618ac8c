"""Sessions of read-only clients: a token from ``manage.py dqcluster_client_token --read-only``.

A read-only client may run whatever only reads: queries, inspecting pragmas,
transactions of reads. It may not write, nor hold a database's write lock,
which would stall every writer: its BEGIN runs as BEGIN DEFERRED (a read
snapshot, no lock). The node the client reached checks each request before
running or forwarding it, because the leader takes a follower's forwarded
session for the follower's own.
"""

from .. import wire
from . import errors
from .statements import BEGIN, RELEASE, ROLLBACK_TO, SAVEPOINT, savepoint_name, strip_leading_comments

#: Requests that change the store other than through SQL.
WRITING_REQUESTS = frozenset({"drop_database", "clone_database", "add_member", "remove_member", "compact"})


def refused(what):
    # SQLite's own words (and code) for a write to a read-only database.
    return errors.StoreError(
        wire.OPERATIONAL, f"attempt to write a readonly database: this client's token is read-only ({what})",
        code="SQLITE_READONLY",
    )


class ReadOnlyClient:
    """What one read-only session may do, and the names of its transaction's savepoints."""

    def __init__(self):
        self._savepoints = []

    def check_request(self, op):
        if op in WRITING_REQUESTS:
            raise refused(f"a {op.replace('_', ' ')} request")

    def statement(self, sql, params, many, control, in_transaction, classify):
        """The SQL to run for ``sql`` (BEGIN DEFERRED for a BEGIN), or None when answered here; raises if it writes.

        ``classify(sql, params)``: the statement's :class:`~.classify.Info`.
        """
        if control == BEGIN:
            self._savepoints = []
            return "BEGIN DEFERRED"
        if control in (SAVEPOINT, RELEASE, ROLLBACK_TO):
            if not in_transaction:
                raise refused("a SAVEPOINT outside a transaction starts one that may write; begin with BEGIN")
            self._savepoint(control, savepoint_name(sql))
            return None
        if control is not None:
            return sql
        if many:
            raise refused("executemany() runs statements that write")
        if classify(sql, params).writes:
            raise refused(f"a statement that writes: {strip_leading_comments(sql).split(None, 1)[0].upper()}")
        return sql

    def _savepoint(self, control, name):
        """Savepoints are answered here, by name only: nothing a read-only transaction
        did needs undoing, and run as statements they would make the leader take the
        write lock (a savepoint is recorded with a transaction's writes)."""
        if control == SAVEPOINT:
            self._savepoints.append(name)
            return
        for position in range(len(self._savepoints) - 1, -1, -1):
            if self._savepoints[position].lower() == name.lower():
                break
        else:
            raise errors.operational(f"no such savepoint: {name}")
        # RELEASE forgets it and those after it; ROLLBACK TO keeps it, as in SQLite.
        del self._savepoints[position + (control == ROLLBACK_TO):]
