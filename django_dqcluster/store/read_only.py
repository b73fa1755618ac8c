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
from .savepoints import OpenSavepoints
from .statements import BEGIN, RELEASE, ROLLBACK_TO, SAVEPOINT, strip_leading_comments

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
        self._savepoints = OpenSavepoints()

    def check_request(self, op):
        if op in WRITING_REQUESTS:
            raise refused(f"a {op.replace('_', ' ')} request")

    def statement(self, sql, params, many, control, in_transaction, classify):
        """The SQL to run for ``sql`` (BEGIN DEFERRED for a BEGIN), or None when answered here; raises if it writes.

        ``classify(sql, params)``: the statement's :class:`~.classify.Info`.
        """
        if control == BEGIN:
            # Its savepoints are answered here, by name (.savepoints).
            self._savepoints = OpenSavepoints()
            return "BEGIN DEFERRED"
        if control in (SAVEPOINT, RELEASE, ROLLBACK_TO):
            if not in_transaction:
                raise refused("a SAVEPOINT outside a transaction starts one that may write; begin with BEGIN")
            self._savepoints.run(control, sql)
            return None
        if control is not None:
            return sql
        if many:
            raise refused("executemany() runs statements that write")
        if classify(sql, params).writes:
            raise refused(f"a statement that writes: {strip_leading_comments(sql).split(None, 1)[0].upper()}")
        return sql
