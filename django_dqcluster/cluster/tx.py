"""One transaction on a DB-API connection, whatever the driver's transaction mode.

PEP 249 drivers disagree on when a transaction starts, and the schema engine needs *one*
transaction that also covers DDL (CREATE TABLE must roll back with everything else). The
connection's mode is read, not changed:

===================================  =========================================================
connection                           what ``transaction()`` does
===================================  =========================================================
``autocommit`` is True               (sqlite3 ≥ 3.12 ``autocommit=True``, psycopg
                                     ``autocommit=True``) sends BEGIN, and COMMIT/ROLLBACK as
                                     statements (sqlite3's ``commit()`` is a no-op there).
``autocommit`` is False              (PEP 249 mode: psycopg default, sqlite3 ≥ 3.12
                                     ``autocommit=False``) the driver already opened a
                                     transaction; uses ``commit()`` / ``rollback()``.
has ``isolation_level`` (legacy      (sqlite3 default, sqlite3 ``isolation_level=None``, and
sqlite3 style)                       sqlite3-like drivers) sends BEGIN itself — legacy sqlite3
                                     only opens transactions before DML, so DDL would
                                     otherwise autocommit — then ``commit()`` / ``rollback()``.
anything else                        treated as PEP 249 mode.
===================================  =========================================================

Both sqlite3 defaults work (``sqlite3.connect(path)`` and ``isolation_level=None``); on
sqlite3 the engine sends ``BEGIN IMMEDIATE`` to take the write lock up front. A connection
that already has a transaction open is refused (TransactionStateError) rather than having
the caller's pending work committed by us.
"""

from __future__ import annotations

import contextlib
import enum
from typing import Any, Iterator, Sequence

from .dialect import Dialect, dialect_for
from .errors import ClusterError, TransactionStateError


class Style(enum.Enum):
    EXPLICIT = "explicit"  # driver in autocommit: we send BEGIN/COMMIT/ROLLBACK
    IMPLICIT = "implicit"  # PEP 249: driver keeps a transaction open; commit()/rollback()
    LEGACY = "legacy"  # sqlite3 legacy: we send BEGIN, then commit()/rollback()


def transaction_style(connection: Any) -> Style:
    """How transactions are begun and ended on ``connection`` (see the module table)."""
    autocommit = getattr(connection, "autocommit", None)
    if autocommit is True:
        return Style.EXPLICIT
    if autocommit is False:
        return Style.IMPLICIT
    if hasattr(connection, "isolation_level"):
        return Style.LEGACY
    return Style.IMPLICIT


class Tx:
    """A running transaction: SQL in the seed's SQLite/qmark form, translated as needed.

    Updates, checks and hooks receive one of these. ``execute`` returns the number of rows
    affected; ``query`` returns all rows; ``script`` runs several statements.
    """

    def __init__(self, connection: Any, dialect: Dialect):
        self.connection = connection
        self.dialect = dialect
        self.cursor = connection.cursor()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        if params is None:
            self.cursor.execute(self.dialect.translate(sql, has_params=False))
        else:
            self.cursor.execute(self.dialect.translate(sql, has_params=True), tuple(params))
        return self.cursor.rowcount

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        self.execute(sql, params)
        return [tuple(row) for row in self.cursor.fetchall()]

    def script(self, sql: str) -> None:
        self.dialect.run_script(self.cursor, sql)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.close()


def _begin(tx: Tx, style: Style, write: bool) -> None:
    """Open the transaction; a failure here leaves nothing to roll back."""
    if style is not Style.IMPLICIT:
        tx.execute(tx.dialect.begin_write if write else tx.dialect.begin_read)


def _lock(tx: Tx, write: bool) -> None:
    """Serialise writers where BEGIN alone does not (PostgreSQL)."""
    lock = tx.dialect.write_lock_sql() if write else None
    if lock:
        tx.query(lock)


def _commit(tx: Tx, style: Style) -> None:
    if style is Style.EXPLICIT:
        tx.execute("COMMIT")
    else:
        tx.connection.commit()


def _rollback(tx: Tx, style: Style) -> None:
    if style is Style.EXPLICIT:
        tx.execute("ROLLBACK")
    else:
        tx.connection.rollback()


def _rollback_quietly(tx: Tx, style: Style, error: BaseException) -> None:
    """Roll back after ``error``; a rollback failure is noted on ``error``, never raised.

    As in the seed's ``query.Transaction``, the error that made us roll back is the one
    the caller needs to see.
    """
    try:
        _rollback(tx, style)
    except Exception as rollback_error:  # noqa: BLE001 - reported on the original error
        error.add_note(f"rollback failed too: {rollback_error}")


@contextlib.contextmanager
def transaction(
    connection: Any,
    dialect: Dialect | None = None,
    *,
    write: bool = True,
) -> Iterator[Tx]:
    """Run the block in one transaction: commit if it returns, roll back if it raises.

    ``write=False`` opens a plain (deferred) read transaction and takes no lock.
    """
    dialect = dialect or dialect_for(connection)
    style = transaction_style(connection)
    if dialect.has_open_transaction(connection, driver_opens_transactions=style is Style.IMPLICIT):
        raise TransactionStateError(
            "connection already has an open transaction: commit or roll it back first"
        )
    tx = Tx(connection, dialect)
    try:
        _begin(tx, style, write)
        try:
            _lock(tx, write)
            yield tx
        except BaseException as error:
            _rollback_quietly(tx, style, error)
            raise
        try:
            _commit(tx, style)
        except BaseException as error:
            # A failed COMMIT (e.g. SQLITE_BUSY) leaves the transaction open: end it.
            _rollback_quietly(tx, style, error)
            raise
    finally:
        tx.close()


@contextlib.contextmanager
def using(connection_or_tx: Any, *, write: bool = False) -> Iterator[Tx]:
    """Use ``connection_or_tx`` as is if it is a running ``Tx``, else open a transaction.

    Lets the node helpers run inside the ensure transaction or on their own.
    """
    if isinstance(connection_or_tx, Tx):
        yield connection_or_tx
        return
    with transaction(connection_or_tx, write=write) as tx:
        yield tx


def select_count(tx: Tx, sql: str, params: Sequence[Any] | None = None) -> int:
    """Run a query that must return exactly one integer (the seed's ``query.Count``)."""
    rows = tx.query(sql, params)
    if not rows:
        raise ClusterError("no rows returned")
    try:
        count = int(rows[0][0])
    except (TypeError, ValueError, IndexError) as error:
        raise ClusterError("failed to scan count column") from error
    if len(rows) > 1:
        raise ClusterError("more than one row returned")
    return count


def ping(connection: Any) -> None:
    """One trivial read, in a transaction of its own so that nothing is left open."""
    with transaction(connection, write=False) as tx:
        tx.query("SELECT 1")
