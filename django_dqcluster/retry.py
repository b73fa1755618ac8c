"""Run a transaction again when the database says nothing of it was applied.

On the replicated store a transaction can fail for reasons that have nothing
to do with the transaction itself: its leader was lost (a failover), the
database's write lock stayed busy past the node's wait, a deferred
transaction's snapshot went stale (``SQLITE_BUSY_SNAPSHOT``). The store marks
each such error ``retryable``: nothing was applied, so the whole transaction
can run again. Django re-raises the driver's error as its own
``OperationalError`` with the driver's error as ``__cause__``;
:func:`is_retryable` looks there.

::

    from django_dqcluster.retry import retry_transaction

    @retry_transaction                      # or @retry_transaction(using="other", attempts=3)
    def transfer(source_id, target_id, amount):
        source = Account.objects.select_for_update().get(pk=source_id)
        ...

The function runs inside ``transaction.atomic(using)``, and again (up to
``attempts`` times, with a growing random pause) when that transaction
fails retryably. What is never retried: an error whose outcome is unknown (a
COMMIT whose answer was lost: it may have been applied, and running it again
could apply it twice), any other error (an ``IntegrityError``), and a
function called inside an atomic block that is already open (only whoever
opened the outer transaction can run it again; the function then runs once,
in a savepoint, and its error goes to that caller).

It works on PostgreSQL too (serialization failures and deadlocks, SQLSTATE
40001 and 40P01) and on Django's sqlite3 backend ("database is locked"), so
code written against it keeps working where a project moves.
"""

import functools
import logging
import random
import time

from django.db import DEFAULT_DB_ALIAS, DatabaseError, transaction

logger = logging.getLogger("django_dqcluster.retry")

#: PostgreSQL's SQLSTATEs for "nothing was committed, run the transaction again".
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
#: SQLite's: the lock stayed busy, or a deferred transaction's snapshot went stale.
RETRYABLE_SQLITE_ERRORS = {"SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_LOCKED"}

DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF = 0.05  # seconds before the second attempt, at most; doubles each time
MAX_BACKOFF = 1.0


def _causes(error):
    # Django raises its own error "from" the driver's: follow __cause__ only
    # (an error's __context__ may be an unrelated one it was raised beside).
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__


def is_retryable(error):
    """Does ``error`` (or the driver error behind it) say the transaction may simply run again?"""
    for cause in _causes(error):
        if getattr(cause, "unknown_outcome", False):
            return False
        if getattr(cause, "retryable", False):
            return True
        if getattr(cause, "sqlstate", None) in RETRYABLE_SQLSTATES:
            return True
        if getattr(cause, "sqlite_errorname", None) in RETRYABLE_SQLITE_ERRORS:
            return True
    return False


def run_in_transaction(func, *args, using=None, attempts=DEFAULT_ATTEMPTS, backoff=DEFAULT_BACKOFF, **kwargs):
    """``func(*args, **kwargs)`` inside ``transaction.atomic(using)``; again if it fails retryably.

    Returns what ``func`` returns; raises its last error. ``backoff``: the
    longest pause before the second attempt (seconds), doubled for each
    next one up to a second; each pause is random below that, so clients
    that failed together do not all come back together.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts!r}")
    alias = using or DEFAULT_DB_ALIAS
    if transaction.get_connection(alias).in_atomic_block:
        # Not ours to retry: the outer transaction is what would have to run again.
        with transaction.atomic(using=alias):
            return func(*args, **kwargs)
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic(using=alias):
                return func(*args, **kwargs)
        except DatabaseError as error:
            if attempt == attempts or not is_retryable(error):
                raise
            pause = random.uniform(0, min(MAX_BACKOFF, backoff * 2 ** (attempt - 1)))
            logger.info("%s on database %r failed retryably (attempt %d of %d: %s); running it again in %.3f s",
                        getattr(func, "__qualname__", func), alias, attempt, attempts, error, pause)
            time.sleep(pause)


def retry_transaction(func=None, *, using=None, attempts=DEFAULT_ATTEMPTS, backoff=DEFAULT_BACKOFF):
    """Decorator: the function runs as :func:`run_in_transaction` runs it."""
    def decorate(inner):
        @functools.wraps(inner)
        def wrapper(*args, **kwargs):
            return run_in_transaction(inner, *args, using=using, attempts=attempts, backoff=backoff, **kwargs)
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
