from django.db.backends.sqlite3.features import DatabaseFeatures as SQLiteDatabaseFeatures
from django.utils.functional import cached_property


class DatabaseFeatures(SQLiteDatabaseFeatures):
    # Test databases live inside the store and are copied there by a
    # replicated clone entry (creation._clone_test_db), so --parallel works.
    can_clone_databases = True

    @cached_property
    def django_test_skips(self):
        skips = dict(super().django_test_skips)
        skips["The dbshell is this backend's own SQL shell, not the sqlite3 program; the test mocks "
              "sqlite3's DatabaseClient.runshell, which ours does not call."] = {
            "dbshell.test_sqlite.SqliteDbshellCommandTestCase.test_non_zero_exit_status_when_path_to_db_is_path",
        }
        skips["The test keeps the main thread's connection open only if it was open when the test began, as "
              "Django's in-memory SQLite connection always is. Ours is a server connection, which Django closes "
              "between TransactionTestCases: then the test's clean-up closes the main thread's own connection and "
              "every later test in that process fails on it (seen when the test order put it first)."] = {
            "backends.sqlite.tests.ThreadSharing.test_database_sharing_in_threads",
        }
        return skips

    @cached_property
    def django_test_expected_failures(self):
        expected = set(super().django_test_expected_failures)
        # From the settings: the connection learns its mode only as it connects.
        if (self.connection.settings_dict.get("OPTIONS") or {}).get("transaction_mode"):
            # With OPTIONS transaction_mode set (the suite's DEFERRED run),
            # every BEGIN names the mode; these two assert a plain BEGIN, and
            # fail so on Django's sqlite3 backend configured the same way.
            expected.update({
                "backends.base.test_base.DatabaseWrapperLoggingTests.test_commit_debug_log",
                "backends.sqlite.tests.TestTransactionMode.test_default_transaction_mode",
            })
        return expected
