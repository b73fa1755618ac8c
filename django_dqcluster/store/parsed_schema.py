"""Statements SQLite answers from a connection's parsed schema, and making that schema current first.

Each connection parses the schema once and re-reads it when a statement that
reads the database finds its version changed. A PRAGMA such as ``index_info``
or ``table_info`` and EXPLAIN read no table and answer from the parsed copy as
it is: after the apply connection created an index, a read connection's
``PRAGMA index_info`` of it named no column (Django's introspection then
failed with a KeyError). The first classification of each statement text
happened to read the catalog, so only a text seen before got the stale answer.
Reading the catalog (no rows) makes SQLite check the version: a few
microseconds, paid only by these statements.
"""

import re

from .statements import cached_per_text, strip_leading_comments

_ANSWERED_FROM_PARSED_SCHEMA = re.compile(r"(PRAGMA|EXPLAIN)\b", re.I)


# A pure function of the text, asked for every read a node runs.
@cached_per_text
def answers_from_parsed_schema(sql):
    return _ANSWERED_FROM_PARSED_SCHEMA.match(strip_leading_comments(sql)) is not None


def make_schema_current(conn, sql):
    """Before ``sql`` runs on ``conn``: if it answers from the parsed schema, have ``conn`` re-read a changed one."""
    if answers_from_parsed_schema(sql):
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 0").fetchall()
