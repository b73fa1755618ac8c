from django.db.backends.sqlite3.introspection import DatabaseIntrospection as SQLiteDatabaseIntrospection

from ..store.databases import INTERNAL_TABLE_PREFIX


class DatabaseIntrospection(SQLiteDatabaseIntrospection):
    def get_table_list(self, cursor):
        # Hide the store's own tables (applied Raft index, recent entry ids)
        # from inspectdb, flush, migrate's table checks and the test runner:
        # they belong to the node, not to Django.
        return [
            info for info in super().get_table_list(cursor)
            if not info.name.startswith(INTERNAL_TABLE_PREFIX)
        ]
