"""A tiny app whose migrations play "this code's version" for the gate tests.

``migrations_v1`` has one migration, ``migrations_v2`` the same plus a second one; a
host process picks one with ``MIGRATION_MODULES`` (see ``tests/gate/settings.py``), which
is how two hosts run two code versions against one database.
"""
