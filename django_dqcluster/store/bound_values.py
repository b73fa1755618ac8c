"""What a connection keeps of the values bound to its statements, and keeping it short.

sqlite3 keeps each connection's last 128 statements prepared (its statement
cache), and a prepared statement holds SQLite's own copies of the values last
bound to it until its text runs again. A write of a 16 MiB value kept 16 MiB
per connection it was compiled on, for each distinct statement text, for as
long as the connection lived: the EXPLAIN that classifies it, the leader's
scratch connection that runs a transaction's statements first, and a read
with such a parameter its read connection (the node's, or a client's
reading the replica file itself). So EXPLAIN binds long values empty
(``emptied``); a read connection that bound a LONG_VALUE is closed after
the read rather than kept (session.Session._read and _end_snapshot,
dbapi.replica), and the scratch connection replaced after a transaction
that bound one (transactions.Transaction.end). The apply connection keeps
no statement prepared (databases.Database._open_apply).
"""

#: Text and blob parameters this long are bound empty to EXPLAIN.
EXPLAINED_EMPTY_FROM = 4096
#: A connection that bound a text or blob this long is let go after it (~0.3 ms to open another).
LONG_VALUE = 64 * 1024


def _long(value, length):
    return isinstance(value, (str, bytes)) and len(value) >= length


def holds_long_values(params, length=LONG_VALUE):
    """Whether one parameter set (a sequence, a mapping or None) binds a text or blob of ``length`` or more."""
    if not params:
        return False
    values = params.values() if isinstance(params, dict) else params
    return any(_long(value, length) for value in values)


def binds_long_values(params, many, size):
    """``holds_long_values`` for a statement's parameters (with ``many``, a list of sets) of ``size`` bytes in all."""
    if size < LONG_VALUE:
        return False  # (no value is longer than all of them together)
    return any(holds_long_values(one) for one in params) if many else holds_long_values(params)


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
