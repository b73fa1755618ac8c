"""Recognising transaction-control statements, and splitting scripts.

The node, not the client, decides what BEGIN/COMMIT/SAVEPOINT mean: a
transaction lives on the leader and ends as one Raft log entry, so these
statements are intercepted instead of being run on a local SQLite connection.
"""

import functools
import re
import sqlite3

BEGIN = "begin"
COMMIT = "commit"
ROLLBACK = "rollback"
SAVEPOINT = "savepoint"
RELEASE = "release"
ROLLBACK_TO = "rollback_to"

_LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*\n?|/\*.*?\*/)*", re.S)
# Written so that a failed match backtracks in linear time: "\s*;?\s*$" tried every
# split of a long run of spaces between its two halves (100,000 took a minute).
_BEGIN = re.compile(r"BEGIN(\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(\s+TRANSACTION)?\s*(;\s*)?$", re.I)
_COMMIT = re.compile(r"(COMMIT|END)(\s+TRANSACTION)?\s*(;\s*)?$", re.I)
_ROLLBACK = re.compile(r"ROLLBACK(\s+TRANSACTION)?\s*(;\s*)?$", re.I)
_ROLLBACK_TO = re.compile(r"ROLLBACK(\s+TRANSACTION)?\s+TO\s+", re.I)
_SAVEPOINT = re.compile(r"SAVEPOINT\s+", re.I)
_RELEASE = re.compile(r"RELEASE\s+", re.I)


#: The longest statement text a node keeps what it worked out about. An
#: application sends the same few hundred short statements over and over; a
#: long one (a generated IN list, or any text up to max_frame) is worked out
#: afresh each time rather than kept by each of the caches of 4,096 texts
#: (classification, declared types, transaction control, session pragmas):
#: 100 distinct 1 MB SELECTs and 100 INSERTs left 314 such texts in an
#: embedded node's memory, now 128 (what sqlite3 keeps: its cache of 128
#: prepared statements on the reader connection).
MAX_CACHED_SQL = 16 * 1024


def cached_per_text(function):
    """``function(sql)`` cached as functools.lru_cache does, for texts up to MAX_CACHED_SQL."""
    cached = functools.lru_cache(maxsize=4096)(function)

    @functools.wraps(function)
    def per_text(sql):
        return cached(sql) if len(sql) <= MAX_CACHED_SQL else function(sql)

    per_text.cache_info = cached.cache_info
    return per_text


def strip_leading_comments(sql):
    return _LEADING_COMMENTS.sub("", sql, count=1)


# A pure function of the text, asked for every statement a node receives.
@cached_per_text
def transaction_control(sql):
    """Return which transaction-control statement ``sql`` is, or None."""
    text = strip_leading_comments(sql)
    if not text or text[0].upper() not in "BCERS":
        return None
    if _BEGIN.match(text):
        return BEGIN
    if _COMMIT.match(text):
        return COMMIT
    if _ROLLBACK_TO.match(text):
        return ROLLBACK_TO
    if _ROLLBACK.match(text):
        return ROLLBACK
    if _SAVEPOINT.match(text):
        return SAVEPOINT
    if _RELEASE.match(text):
        return RELEASE
    return None


def savepoint_name(sql):
    """The savepoint a SAVEPOINT, RELEASE or ROLLBACK TO statement names."""
    words = sql.replace(";", " ").split()
    return words[-1].strip('"`[]') if words else ""


def split_script(script):
    """Split a multi-statement script into complete statements, as sqlite3 would run them."""
    statements, rest = take_statements(script)
    if rest.strip():
        statements.append(rest.strip())
    return [s for s in statements if strip_leading_comments(s).strip().rstrip(";").strip()]


def take_statements(text):
    """The complete statements at the start of ``text``, and the rest.

    A ';' ends a statement only where ``sqlite3.complete_statement`` agrees
    (not inside a string, a comment or a trigger's body), so a line may hold
    several statements, as in the sqlite3 shell: the store runs one per call.
    """
    statements, start = [], 0
    for end, char in enumerate(text):
        if char == ";" and sqlite3.complete_statement(text[start:end + 1]):
            statement = text[start:end + 1].strip()
            if statement != ";":
                statements.append(statement)
            start = end + 1
    return statements, text[start:]
