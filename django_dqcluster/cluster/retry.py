"""Retrying database work that failed for a transient reason (LXD semantics).

The seed's ``query.Retry`` had its predicate inverted (seed-behaviour.md §2.8): it retried
every *non*-transient error ten times and reported a transient one as success, so
``EnsureSchema`` could answer "ready" without having ensured anything. Here (§4.8 #65):

* only errors for which ``is_transient_error`` is true are retried;
* at most ``attempts`` calls in total, with ``sleeper(delay)`` between them;
* gate decisions and graceful aborts are final, whatever their text says;
* when the attempts run out, the last transient error is raised — never swallowed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from .dialect import is_transient_error
from .errors import GateError, GracefulAbort

T = TypeVar("T")

logger = logging.getLogger("django_dqcluster.cluster")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. Defaults: LXD's 5 attempts, 250 ms apart."""

    attempts: int = 5
    delay: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if self.delay < 0:
            raise ValueError("a retry delay cannot be negative")


NEVER_RETRIED: tuple[type[BaseException], ...] = (GateError, GracefulAbort)


def retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy = RetryPolicy(),
    sleeper: Callable[[float], None] = time.sleep,
    is_transient: Callable[[BaseException], bool] = is_transient_error,
    before_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Call ``fn`` until it returns, a non-transient error occurs, or attempts run out.

    ``before_retry(error)`` runs before each sleep (e.g. to drop a broken connection).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except NEVER_RETRIED:
            raise
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == policy.attempts:
                error.add_note(f"still failing after {attempt} attempts")
                raise
            logger.debug("transient database error (attempt %d): %s", attempt, error)
            if before_retry is not None:
                before_retry(error)
            sleeper(policy.delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
