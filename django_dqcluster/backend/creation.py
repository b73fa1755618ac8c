"""Test databases inside the store.

Django's sqlite3 creation makes test databases as files (or in memory) in the
test process. Here a test database is a named database of the store: created
on first use, dropped through a replicated ``drop_db`` entry, and cloned for
``--parallel`` workers through a replicated ``clone_db`` entry, so every
node holds every test database and a failover in the middle of a run is
invisible to the tests.
"""

import multiprocessing
import os
import sys

from django.db.backends.base.creation import BaseDatabaseCreation
from django.db.backends.sqlite3.creation import DatabaseCreation as SQLiteDatabaseCreation

from .. import dbapi


class DatabaseCreation(SQLiteDatabaseCreation):
    @staticmethod
    def is_in_memory_db(database_name):
        # A store database is never an in-memory SQLite database, whatever
        # its name looks like.
        return False

    def _get_test_db_name(self):
        return self.connection.settings_dict["TEST"]["NAME"] or "test_" + self.connection.settings_dict["NAME"]

    def _store(self):
        """A driver connection for store-level operations (list, drop, clone)."""
        return self.connection.get_new_connection(self.connection.get_connection_params())

    def _exists(self, store, name):
        return name in store.list_databases()

    def _create_test_db(self, verbosity, autoclobber, keepdb=False):
        test_database_name = self._get_test_db_name()
        if keepdb:
            return test_database_name
        store = self._store()
        try:
            if self._exists(store, test_database_name):
                if not autoclobber:
                    confirm = input(
                        "Type 'yes' if you would like to try deleting the test "
                        f"database '{test_database_name}', or 'no' to cancel: "
                    )
                    if confirm != "yes":
                        self.log("Tests cancelled.")
                        sys.exit(1)
                if verbosity >= 1:
                    self.log(
                        "Destroying old test database for alias %s..."
                        % (self._get_database_display_str(verbosity, test_database_name),)
                    )
                try:
                    store.drop_database(test_database_name)
                except dbapi.Error as exc:
                    self.log(f"Got an error deleting the old test database: {exc}")
                    sys.exit(2)
        finally:
            store.close()
        # The store creates a database on first use: migrate creates it.
        return test_database_name

    def get_test_db_clone_settings(self, suffix):
        # Named like sqlite3's file clones ("test.db" -> "test_1.db"), as
        # databases inside the store.
        orig_settings_dict = self.connection.settings_dict
        root, ext = os.path.splitext(orig_settings_dict["NAME"])
        return {**orig_settings_dict, "NAME": f"{root}_{suffix}{ext}"}

    def _clone_test_db(self, suffix, verbosity, keepdb=False):
        source_database_name = self.connection.settings_dict["NAME"]
        target_database_name = self.get_test_db_clone_settings(suffix)["NAME"]
        store = self._store()
        try:
            if self._exists(store, target_database_name):
                if keepdb:
                    return
                if verbosity >= 1:
                    self.log(
                        "Destroying old test database for alias %s..."
                        % (self._get_database_display_str(verbosity, target_database_name),)
                    )
            # One replicated entry: every node copies the source file with
            # SQLite's backup API at the same point of the log.
            try:
                store.clone_database(source_database_name, target_database_name)
            except dbapi.Error as exc:
                self.log(f"Got an error cloning the test database: {exc}")
                sys.exit(2)
        finally:
            store.close()

    def _destroy_test_db(self, test_database_name, verbosity):
        store = self._store()
        try:
            store.drop_database(test_database_name)
        finally:
            store.close()

    def setup_worker_connection(self, _worker_id):
        # The sqlite3 version special-cases in-memory databases under fork
        # and spawn; a store database is reached by name from any process.
        BaseDatabaseCreation.setup_worker_connection(self, _worker_id)
        # Under spawn the worker imported Django afresh: re-apply the
        # backend's skips and expected failures.
        if multiprocessing.get_start_method() == "spawn" and os.environ.get("RUNNING_DJANGOS_TEST_SUITE") == "true":
            self.mark_expected_failures_and_skips()
