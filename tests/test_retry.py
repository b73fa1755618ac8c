"""is_retryable: which database errors say "nothing was applied, run the transaction again"."""

import sqlite3

from django.db import utils

from django_dqcluster.dbapi import exceptions as store_errors
from django_dqcluster.retry import is_retryable


def as_django_raises_it(driver_error):
    """Django re-raises a driver's error as its own class, from the driver's."""
    wrapped = getattr(utils, type(driver_error).__name__)(*driver_error.args)
    wrapped.__cause__ = driver_error
    return wrapped


def sqlite_busy_error(tmp_path):
    path = str(tmp_path / "busy.sqlite3")
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiter.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        return error
    finally:
        holder.close()
        waiter.close()
    raise AssertionError("the second writer got the lock")


def test_the_stores_retryable_errors_are_retryable():
    assert is_retryable(as_django_raises_it(store_errors.operational("lost the leader", retryable=True)))


def test_an_unknown_outcome_never_is_even_if_marked_retryable():
    error = store_errors.operational("lost during COMMIT", retryable=True, unknown_outcome=True)
    assert not is_retryable(as_django_raises_it(error))


def test_errors_of_the_transaction_itself_are_not():
    assert not is_retryable(as_django_raises_it(store_errors.IntegrityError("UNIQUE constraint failed: t.id")))
    assert not is_retryable(as_django_raises_it(store_errors.operational("no such table: t")))


def test_the_sqlite3_backends_database_is_locked_is(tmp_path):
    assert is_retryable(as_django_raises_it(sqlite_busy_error(tmp_path)))


def test_only_the_cause_counts_not_an_error_raised_while_handling_another():
    try:
        try:
            raise store_errors.operational("lost the leader", retryable=True)
        except store_errors.OperationalError:
            raise utils.IntegrityError("UNIQUE constraint failed: t.id")  # its __context__ only
    except utils.IntegrityError as error:
        assert not is_retryable(error)
