"""django-dqcluster: one Django project on several hosts over a Raft-replicated SQLite store."""

__version__ = "0.1.0"


def _register_environ_scheme():
    # django-environ's env.db() maps a URL scheme to an ENGINE through
    # Env.DB_SCHEMES; an unknown scheme silently becomes ENGINE "dqcluster".
    # Registered on import so that `import django_dqcluster` in settings.py
    # is enough (django_dqcluster.conf.parse_url handles several hosts).
    try:
        import environ
    except ImportError:
        return
    environ.Env.DB_SCHEMES.setdefault("dqcluster", "django_dqcluster.backend")


_register_environ_scheme()
