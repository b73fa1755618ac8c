"""Django database backend for the Raft-replicated SQLite store.

A thin subclass of Django's sqlite3 backend: every node runs SQLite, so the
SQL Django generates for SQLite is exactly what the store executes. What
changes is how a connection is made (our DB-API driver, ``dbapi``, talking to
this host's node or to a node embedded in this process) and how test
databases are created (inside the store, not as files next to the project).
"""

from collections.abc import Mapping
from itertools import tee

from django.db.backends.sqlite3 import base as sqlite_base
from django.utils.asyncio import async_unsafe
from django.utils.functional import cached_property

from .. import dbapi as Database
from . import options as backend_options
from .client import DatabaseClient
from .creation import DatabaseCreation
from .sql_functions import django_functions_hook
from .features import DatabaseFeatures
from .introspection import DatabaseIntrospection


class DatabaseWrapper(sqlite_base.DatabaseWrapper):
    # Kept deliberately: the store *is* SQLite on every node, so every
    # ``as_sqlite()`` SQL path, every ``connection.vendor == "sqlite"`` branch
    # in Django and third-party apps, and Django's own backends/sqlite tests
    # must apply unchanged. A different vendor would mean reimplementing all
    # of them (the reason django-tidb keeps vendor "mysql").
    vendor = "sqlite"
    # Also kept: Django's version check messages ("SQLite 3.31 or later is
    # required") are about the SQLite library the nodes run, which is what
    # get_database_version() reports.
    display_name = "SQLite"

    Database = Database
    # Operations and the schema editor are sqlite3's own (inherited): the
    # nodes run the same SQL, PRAGMAs and table rebuilds, as one transaction.
    client_class = DatabaseClient
    creation_class = DatabaseCreation
    features_class = DatabaseFeatures
    introspection_class = DatabaseIntrospection

    @cached_property
    def dqcluster_options(self):
        """The validated OPTIONS (ImproperlyConfigured names any bad key)."""
        return backend_options.parse(self.alias, self.settings_dict)

    def get_connection_params(self):
        # Parsed fresh each time: the test runner rewrites NAME in place.
        opts = backend_options.parse(self.alias, self.settings_dict)
        self.__dict__["dqcluster_options"] = opts
        self.transaction_mode = opts.transaction_mode
        self.init_commands = opts.init_command.split(";")
        params = {
            "database": opts.name,
            "consistency": opts.consistency,
            "timeout": opts.timeout,
            # Autocommit, as Django's sqlite3 backend opens its connections;
            # _set_autocommit() switches this like sqlite3's isolation_level.
            "isolation_level": None,
            # Raw cursors get dates, datetimes, times and booleans as with
            # Django's sqlite3 backend (its converters, registered in sqlite3).
            "detect_types": Database.PARSE_DECLTYPES,
        }
        if opts.embedded:
            params["embedded_options"] = opts
        else:
            params["addresses"] = list(opts.addresses)
            # A process that runs no node may hold only the client token:
            # the cluster secret also signs Raft messages. A file is read
            # again whenever the driver reconnects, so that a connection kept
            # open (CONN_MAX_AGE) follows a rotation of the secret.
            if opts.secret_file:
                params["secret_file"] = opts.secret_file
            elif opts.secret:
                params["secret"] = opts.secret
            elif opts.token_file:
                params["token_file"] = opts.token_file
            else:
                params["token"] = opts.token
            params["local_reads"] = opts.local_reads
            params["seal"] = opts.seal
            # A read from this host's replica file runs on our own SQLite
            # connection: it needs the functions every node registers.
            params["configure_replica"] = django_functions_hook
        return params

    @async_unsafe
    def get_new_connection(self, conn_params):
        params = dict(conn_params)
        embedded = params.pop("embedded_options", None)
        if embedded is not None:
            from .embedded import connect_params

            params.update(connect_params(embedded))
        conn = Database.connect(**params)
        # Django's SQL functions are registered on every node's SQLite
        # connections (the node's --connection-hook), not here: statements
        # run on the nodes. These two are per-session settings the node keeps
        # and replays with every transaction this session commits; the
        # driver's ``pragmas`` carries them over a reconnect to another node.
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA legacy_alter_table = OFF")
        conn.pragmas.update({"foreign_keys": 1, "legacy_alter_table": 0})
        for init_command in self.init_commands:
            if init_command := init_command.strip():
                conn.execute(init_command)
        return conn

    def create_cursor(self, name=None):
        return DQClusterCursorWrapper(self.connection)

    def get_database_version(self):
        # The SQLite library of the nodes, not the one this process imported.
        with self.temporary_connection():
            version = self.connection.node_sqlite_version()
        return tuple(int(part) for part in version.split(".")[:3])

    def _savepoint_allowed(self):
        # As in Django's sqlite3 backend: atomic() starts transactions with an
        # explicit BEGIN under autocommit, and savepoints only make sense
        # inside those. The node implements SAVEPOINT/RELEASE/ROLLBACK TO
        # inside the transaction it holds on the leader.
        return self.in_atomic_block

    def is_usable(self):
        if self.connection is None or self.connection.closed:
            return False
        try:
            self.connection.execute("SELECT 1")
        except Database.Error:
            return False
        return True


FORMAT_QMARK_REGEX = sqlite_base.FORMAT_QMARK_REGEX


class DQClusterCursorWrapper(Database.Cursor):
    """Django's "format"/"pyformat" placeholders to the driver's "qmark"/"named".

    The same conversion Django's SQLiteCursorWrapper does, which cannot be
    reused because it subclasses ``sqlite3.Cursor``. A literal "%s" is written
    "%%s", as with sqlite3.
    """

    def execute(self, query, params=None):
        if params is None:
            return super().execute(query)
        param_names = list(params) if isinstance(params, Mapping) else None
        return super().execute(self.convert_query(query, param_names=param_names), params)

    def executemany(self, query, param_list):
        peekable, param_list = tee(iter(param_list))
        if (params := next(peekable, None)) and isinstance(params, Mapping):
            param_names = list(params)
        else:
            param_names = None
        return super().executemany(self.convert_query(query, param_names=param_names), param_list)

    def convert_query(self, query, *, param_names=None):
        if param_names is None:
            return FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")
        return query % {name: f":{name}" for name in param_names}
