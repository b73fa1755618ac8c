"""Values converted by their column's declared type, as sqlite3's ``PARSE_DECLTYPES`` does.

With ``detect_types=PARSE_DECLTYPES`` a client asks the node for the declared
type of each result column (``store/declared_types.py``) and converts each
value of a column whose type has a converter in sqlite3's registry
(``sqlite3.register_converter``; the type's first word, any case, as sqlite3
looks it up). A converter gets the value as bytes, as sqlite3 gives it: text
as UTF-8, a number as SQLite writes it as text; NULL is never converted.
Local reads (``.replica``) open the file with ``detect_types`` themselves.
"""

import re
import sqlite3

PARSE_DECLTYPES = sqlite3.PARSE_DECLTYPES

_FIRST_WORD = re.compile(r"[^ (]*")


def converters_for(types):
    """For each column, the converter registered for its declared type (or None); None if no column has one."""
    if not types:
        return None
    found = [None if not declared else sqlite3.converters.get(_FIRST_WORD.match(declared).group().upper())
             for declared in types]
    return found if any(found) else None


def convert_rows(rows, converters):
    """``rows`` (lists or tuples) as tuples, each value with a converter converted."""
    return [
        tuple(value if convert is None or value is None else convert(_as_bytes(value))
              for value, convert in zip(row, converters))
        for row in rows
    ]


def _as_bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return str(value).encode("ascii")
    return _real_text(value).encode("ascii")


def _real_text(value):
    """A REAL as SQLite writes it as text (printf "%!.15g": always a decimal point)."""
    if value != value or value in (float("inf"), float("-inf")):
        return "Inf" if value > 0 else "-Inf" if value < 0 else "NaN"
    text = "%.15g" % value
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent
