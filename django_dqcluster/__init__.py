"""django-dqcluster: one Django project on several hosts over a Raft-replicated SQLite store."""

__version__ = "0.1.0"
