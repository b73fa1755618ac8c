"""The PEP 249 exception hierarchy.

Every error raised by the driver carries three extra attributes:
``retryable`` (nothing was applied; running the same transaction again is
safe), ``unknown_outcome`` (a commit may or may not have been applied; check
before retrying) and ``sqlite_errorname`` (SQLite's code, e.g.
``SQLITE_CONSTRAINT_UNIQUE``, when the error came from SQLite).
"""


class Warning(Exception):  # noqa: A001 - the name PEP 249 prescribes
    pass


class Error(Exception):
    retryable = False
    unknown_outcome = False
    sqlite_errorname = None


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


_BY_KIND = {cls.__name__: cls for cls in (
    InterfaceError, DatabaseError, DataError, OperationalError, IntegrityError,
    InternalError, ProgrammingError, NotSupportedError,
)}


def from_payload(payload):
    """Build the exception a node's error response describes."""
    cls = _BY_KIND.get(payload.get("kind"), DatabaseError)
    error = cls(payload.get("message", "unknown error"))
    error.retryable = bool(payload.get("retryable"))
    error.unknown_outcome = bool(payload.get("unknown_outcome"))
    error.sqlite_errorname = payload.get("code")
    return error


def operational(message, *, retryable=False, unknown_outcome=False):
    error = OperationalError(message)
    error.retryable = retryable
    error.unknown_outcome = unknown_outcome
    return error
