import sys

from django.db.backends.base.client import BaseDatabaseClient


class DatabaseClient(BaseDatabaseClient):
    """``manage.py dbshell``: an interactive SQL shell against the store.

    There is no ``sqlite3`` binary that speaks to the store, so the shell is
    our own module (``python -m django_dqcluster.backend.shell``), run with
    this interpreter. The connection settings travel in the environment,
    never on the command line, where the secret would show in ``ps``.
    """

    executable_name = "python -m django_dqcluster.backend.shell"

    @classmethod
    def settings_to_cmd_args_env(cls, settings_dict, parameters):
        from .shell import settings_to_env

        args = [sys.executable, "-m", "django_dqcluster.backend.shell", *parameters]
        return args, settings_to_env(settings_dict)
