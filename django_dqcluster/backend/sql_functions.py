"""Django's SQLite functions on the store's connections: results no larger than SQLite allows, REGEXP timed.

Every node registers the functions Django's sqlite3 backend adds to SQLite
(django_date_extract, REGEXP, MD5, LPAD...), on every connection it opens,
so that the ORM's SQL runs on the store as on plain SQLite; clients reading
this host's replica file register them too.

Three of them build their result in Python, where SQLite's length limit
(value_size.py: ``max_frame`` for clients' statements) cannot see it until
it is made: ``REPEAT('x', 10**11)`` (Django's ``Repeat``) asked Python for
100 GB, a MemoryError on every node applying the entry, again at every
attempt; ``LPAD`` and ``RPAD`` repeat their fill ``length`` times before
cutting it. Here each gives SQLite's own "string or blob too big" instead,
before making anything longer than the connection's limit, and otherwise
returns exactly what Django's returns.

REGEXP (the ``__regex`` and ``__iregex`` lookups) matches with the ``regex``
package instead of ``re`` (the same syntax and results for ``re``'s patterns),
for two things ``re`` cannot do: release the GIL while it matches, so that a
node's Raft thread and its other clients run on, and stop at a timeout, which
store/regexp_time.py sets to what is left of the statement's limit
(``max_regexp_seconds``) on the connections where clients' statements first
run, and leaves unset where the log's entries are applied. ``re`` held a
node's GIL for minutes on ``(a|aa)+$`` against 40 characters.

Where SQLite lacks its own math functions, Django registers a Python POWER,
which computed ``POWER(3, 1000000000)`` as a Python integer: an hour of one
node's CPU holding the GIL (``3 ** 10**7`` took 2.2 s here), for a value no
SQLite INTEGER holds. Here an integer result over 64 bits fails before it is
made, as Django's fails once it is made.
"""

import functools

import regex
from django.db.backends.sqlite3._functions import _sqlite_lpad, _sqlite_power, _sqlite_repeat, _sqlite_rpad, register

from ..store.regexp_time import regexp_clock_of
from ..store.statements import MAX_CACHED_SQL
from ..store.value_size import length_limit_of


def django_functions_hook(conn):
    """Register Django's SQLite functions on ``conn`` (a node's connection, or a replica reader's)."""
    register(conn)
    limit = length_limit_of(conn)
    conn.create_function("LPAD", 3, lambda text, length, fill: lpad(text, length, fill, limit()), deterministic=True)
    conn.create_function("RPAD", 3, lambda text, length, fill: rpad(text, length, fill, limit()), deterministic=True)
    conn.create_function("REPEAT", 2, lambda text, count: repeat(text, count, limit()), deterministic=True)
    if not conn.execute("SELECT sqlite_compileoption_used('ENABLE_MATH_FUNCTIONS')").fetchone()[0]:
        conn.create_function("POWER", 2, power, deterministic=True)  # in place of Django's (above)
    clock = regexp_clock_of(conn)
    conn.create_function("REGEXP", 2, lambda pattern, string: regexp(pattern, string, clock), deterministic=True)


def power(x, y):
    """Django's POWER: ``x ** y``; for whole numbers, none over 64 bits (which SQLite could not take)."""
    if type(x) is int and type(y) is int and y > 0 and abs(x) > 1 and y * (abs(x).bit_length() - 1) >= 64:
        # |x| ** y is at least 2 ** (y * (bits - 1)), past any SQLite INTEGER.
        raise OverflowError(f"POWER({x}, {y}) is over 64 bits, more than a SQLite INTEGER holds")
    return _sqlite_power(x, y)


def _too_big(length, limit):
    if length > limit:
        # Python's sqlite3 reports an OverflowError as SQLITE_TOOBIG.
        raise OverflowError(f"a result of {length:,} characters, over the limit of {limit:,} bytes")


def lpad(text, length, fill, limit):
    """Django's LPAD: ``text`` cut or left-padded with ``fill`` to ``length`` characters."""
    if _pads(text, length, fill):
        _too_big(length, limit)
        missing = length - len(text)
        return (fill * -(-missing // len(fill)))[:missing] + text
    return _sqlite_lpad(text, length, fill)


def rpad(text, length, fill, limit):
    """Django's RPAD: ``text`` cut or right-padded with ``fill`` to ``length`` characters."""
    if _pads(text, length, fill):
        _too_big(length, limit)
        missing = length - len(text)
        return (text + fill * -(-missing // len(fill)))[:length]
    return _sqlite_rpad(text, length, fill)


def _pads(text, length, fill):
    """Would LPAD/RPAD pad ``text`` (strings and a whole number, as the ORM passes them)?

    Anything else goes to Django's own function, whatever it makes of it.
    """
    return (isinstance(text, str) and isinstance(fill, str) and fill != "" and isinstance(length, int)
            and length > len(text))


def repeat(text, count, limit):
    """Django's REPEAT: ``text`` ``count`` times."""
    if isinstance(text, (str, bytes)) and isinstance(count, int):
        _too_big(len(text) * max(count, 0), limit)
    return _sqlite_repeat(text, count)


# As Django's REGEXP, which compiles through re's own cache.
_compiled = functools.lru_cache(maxsize=512)(regex.compile)


def regexp(pattern, string, clock):
    """Django's REGEXP: does ``pattern`` match anywhere in ``string``? Timed by ``clock`` (a RegexpClock)."""
    if pattern is None or string is None:
        return None
    if not isinstance(string, str):
        string = str(string)
    clock.check_pattern(pattern)
    # Long patterns are compiled each time rather than kept (see store/statements.py).
    kept = not isinstance(pattern, (str, bytes)) or len(pattern) <= MAX_CACHED_SQL
    compiled = _compiled(pattern) if kept else regex.compile(pattern)
    return bool(clock.timed(lambda timeout: compiled.search(string, concurrent=True, timeout=timeout)))
