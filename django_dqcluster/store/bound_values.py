"""What a connection keeps of the values bound to its statements, and keeping it short.

sqlite3 keeps each connection's last 128 statements prepared (its statement
cache), and a prepared statement holds SQLite's own copies of the values last
bound to it until its text runs again. A write of a 16 MiB value kept 16 MiB
per connection it was compiled on, for each distinct statement text, for as
long as the connection lived: the EXPLAIN that classifies it, the leader's
scratch connection that runs a transaction's statements first, and a read
with such a parameter its read connection (the node's, or a client's
reading the replica file itself). So EXPLAIN binds long values empty
(``emptied``), a read connection that bound one is closed rather than kept
(``holds_long_values``: session.Session._read, dbapi.replica), and the
scratch connection is replaced after a large transaction
(transactions.Transaction.end). The apply connection keeps no statement
prepared (databases.Database._open_apply).
"""

#: Text and blob parameters longer than this are bound empty to EXPLAIN.
EXPLAINED_EMPTY_FROM = 4096
#: A read connection that bound a text or blob this long is closed after the read.
READER_CLOSED_FROM = 64 * 1024
#: The scratch connection is replaced after a transaction whose statements and parameters took this many bytes.
SCRATCH_REPLACED_FROM = 1024 * 1024


def _long(value, length):
    return isinstance(value, (str, bytes)) and len(value) >= length


def holds_long_values(params, length):
    """Whether one parameter set (a sequence, a mapping or None) binds a text or blob of ``length`` or more."""
    if not params:
        return False
    values = params.values() if isinstance(params, dict) else params
    return any(_long(value, length) for value in values)


def emptied(params, length=EXPLAINED_EMPTY_FROM):
    """``params`` with every text or blob of ``length`` or more emptied, its type kept.

    For EXPLAIN: a statement compiles the same whatever values are bound to it
    (the authorizer sees it before any is), and a value sqlite3 cannot bind
    still fails, since the types stay.
    """
    if not holds_long_values(params, length):
        return params
    if isinstance(params, dict):
        return {name: value[:0] if _long(value, length) else value for name, value in params.items()}
    return [value[:0] if _long(value, length) else value for value in params]
