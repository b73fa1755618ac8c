from django.db.backends.sqlite3.features import DatabaseFeatures as SQLiteDatabaseFeatures
from django.utils.functional import cached_property


class DatabaseFeatures(SQLiteDatabaseFeatures):
    # Test databases live inside the store and are copied there by a
    # replicated clone entry (creation._clone_test_db), so --parallel works.
    can_clone_databases = True

    @cached_property
    def django_test_skips(self):
        skips = dict(super().django_test_skips)
        # Reasons that only hold for in-memory SQLite were added by the parent
        # for a file database (NAME is never in memory here); they still apply.
        return skips

    @cached_property
    def django_test_expected_failures(self):
        return set(super().django_test_expected_failures)
