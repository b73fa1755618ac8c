"""Opening the cluster database: drivers, their names, the one-connection handle.

The seed built a dqlite ``database/sql`` driver from a server store, registered it under
a unique name and opened ``db.bin?_foreign_keys=1`` through it with a pool of ONE
connection, opened lazily at the first transaction. The same shape here, on DB-API:

* a *driver* (``Driver``) is a DB-API ``connect`` callable bound to the server store and
  the driver options;
* ``DBAPIDatabaseIO`` creates drivers, keeps the process-wide name → driver registry
  (names cannot be reused, as in ``database/sql``) and opens a ``Database`` for a name;
* ``Database`` holds at most one connection, made on first use, and can drop it when it
  breaks so that the next attempt reconnects (what database/sql's pool did for the seed).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from .dialect import Dialect, dialect_for
from .errors import ClusterError

CLUSTER_DSN = "db.bin?_foreign_keys=1"


@dataclass(frozen=True)
class ServerInfo:
    """A known server of the cluster (the seed's ``ServerInfo{ID, Address}``)."""

    id: int
    address: str


class ServerStore(Protocol):
    """Where a client finds candidate servers, and records the leader's latest list."""

    def get(self) -> list[ServerInfo]: ...

    def set(self, servers: Sequence[ServerInfo]) -> None: ...


class MemoryServerStore:
    """A ``ServerStore`` kept in memory (tests, single-process tools)."""

    def __init__(self, servers: Sequence[ServerInfo] = ()):
        self._servers = list(servers)
        self._lock = threading.Lock()

    def get(self) -> list[ServerInfo]:
        with self._lock:
            return list(self._servers)

    def set(self, servers: Sequence[ServerInfo]) -> None:
        with self._lock:
            self._servers = list(servers)


class NameProvider(Protocol):
    def driver_name(self) -> str: ...


_name_counter = itertools.count()
_name_lock = threading.Lock()


class DQClusterNameProvider:
    """Unique driver names ``dqcluster-0``, ``dqcluster-1``, … for the whole process.

    Names are never reused because a registered driver cannot be unregistered, and tests
    open many clusters in one process.
    """

    prefix = "dqcluster"

    def driver_name(self) -> str:
        with _name_lock:
            number = next(_name_counter)
        return f"{self.prefix}-{number}"


class Database:
    """The cluster database handle: at most one DB-API connection, opened on first use.

    ``Database(connect)`` reconnects after ``discard()``; ``Database.of(connection)`` wraps
    a connection somebody else owns (it is never closed or replaced here).
    """

    def __init__(self, connect: Callable[[], Any] | None = None, *, connection: Any = None):
        if connect is None and connection is None:
            raise ValueError("Database needs a connect callable or a connection")
        self._connect = connect
        self._connection = connection
        self._lock = threading.Lock()

    @classmethod
    def of(cls, connection_or_database: Any) -> "Database":
        if isinstance(connection_or_database, Database):
            return connection_or_database
        return cls(connection=connection_or_database)

    @property
    def reconnects(self) -> bool:
        return self._connect is not None

    def connection(self) -> Any:
        with self._lock:
            if self._connection is None:
                self._connection = self._connect()
            return self._connection

    @property
    def dialect(self) -> Dialect:
        return dialect_for(self.connection())

    def discard(self) -> None:
        """Forget a broken connection so the next ``connection()`` opens a new one."""
        with self._lock:
            if self._connect is None or self._connection is None:
                return
            connection, self._connection = self._connection, None
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - it is broken already
            pass

    def discard_if_broken(self) -> None:
        """``discard()`` if the current connection can no longer be used."""
        connection = self._connection
        if connection is not None and dialect_for(connection).connection_is_broken(connection):
            self.discard()

    def close(self) -> None:
        """Close the connection if this handle opened it."""
        self.discard()


@dataclass
class Driver:
    """A DB-API ``connect`` bound to the server store and driver options."""

    connect: Callable[..., Any]
    server_store: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def open_connection(self, dsn: str) -> Any:
        return self.connect(dsn, server_store=self.server_store, **self.options)


class DatabaseIO(Protocol):
    """The three I/O steps of ``Cluster.open`` (create, register, open), injectable."""

    def create(self, server_store: Any, **driver_options: Any) -> Any: ...

    def register(self, name: str, driver: Any) -> None: ...

    def drivers(self) -> list[str]: ...

    def open(self, name: str, dsn: str) -> Any: ...


_registry: dict[str, Driver] = {}
_registry_lock = threading.Lock()


def _default_connect() -> Callable[..., Any]:
    """Our own driver's ``connect``, imported only when a cluster is really opened."""
    try:
        from django_dqcluster import dbapi
    except ImportError as error:  # pragma: no cover - the package ships it
        raise ClusterError(f"cannot import django_dqcluster.dbapi: {error}") from error
    connect = getattr(dbapi, "connect", None)
    if connect is None:
        raise ClusterError(
            "django_dqcluster.dbapi has no connect(); pass DBAPIDatabaseIO(connect=...)"
        )
    return connect


class DBAPIDatabaseIO:
    """The real ``DatabaseIO``: drivers are DB-API ``connect`` callables.

    ``connect(dsn, server_store=store, **driver_options)`` must return a DB-API
    connection. By default it is ``django_dqcluster.dbapi.connect``; ``sqlite_connect``
    below gives a local-file equivalent.
    """

    def __init__(self, connect: Callable[..., Any] | None = None):
        self._connect = connect

    def create(self, server_store: Any, **driver_options: Any) -> Driver:
        connect = self._connect if self._connect is not None else _default_connect()
        return Driver(connect, server_store, dict(driver_options))

    def register(self, name: str, driver: Any) -> None:
        if driver is None:
            raise ValueError("Register driver is nil")
        with _registry_lock:
            if name in _registry:
                raise ValueError(f"Register called twice for driver {name}")
            _registry[name] = driver

    def drivers(self) -> list[str]:
        with _registry_lock:
            return sorted(_registry)

    def open(self, name: str, dsn: str) -> Database:
        with _registry_lock:
            driver = _registry.get(name)
        if driver is None:
            raise ClusterError(f'unknown driver "{name}" (forgotten import?)')
        return Database(lambda: driver.open_connection(dsn))


def sqlite_connect(directory: str) -> Callable[..., sqlite3.Connection]:
    """A ``connect`` for ``DBAPIDatabaseIO`` that opens the DSN as a file in ``directory``.

    ``db.bin?_foreign_keys=1`` becomes ``<directory>/db.bin`` with foreign keys on (the
    seed's DSN flag); the server store is ignored; driver options go to
    ``sqlite3.connect``.
    """

    def connect(dsn: str, server_store: Any = None, **options: Any) -> sqlite3.Connection:
        path, _, query = dsn.partition("?")
        flags = urllib.parse.parse_qs(query)
        connection = sqlite3.connect(os.path.join(directory, path), **options)
        if flags.get("_foreign_keys", ["0"])[-1] in ("1", "true"):
            connection.execute("PRAGMA foreign_keys = ON")
        return connection

    return connect
