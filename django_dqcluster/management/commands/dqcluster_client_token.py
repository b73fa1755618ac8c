"""``manage.py dqcluster_client_token``: the client token of an alias's cluster secret.

The cluster secret does two jobs: it authenticates clients, and it signs the
Raft messages the nodes exchange, which are pickled (whoever holds it can run
code on every member). A process that runs no node, such as a gunicorn worker
beside ``manage.py dqcluster_node``, needs only the first: give it OPTIONS
``token_file`` with what this command writes, and keep ``secret_file`` for the
node's service alone. The token is derived one way from the secret; it cannot
be turned back into it. With ``--read-only``, the token lets its holder read
and never write (reporting jobs, an operator's ``dbshell``): the node refuses
its writes, and its transactions take no write lock.
"""

import os

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from ...backend import options as backend_options
from ...gate import DQCLUSTER_ENGINE
from ...wire import client_token
from .ensure_cluster_schema import check_alias


class Command(BaseCommand):
    help = "Print (or write to a file readable by its owner only) the client token of an alias's cluster secret."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help='The alias whose OPTIONS hold the cluster secret (default: "default").')
        parser.add_argument("--read-only", action="store_true",
                            help="A token that lets its holder read, never write.")
        parser.add_argument("--write", metavar="PATH",
                            help="Write the token to PATH (created with mode 600; an existing file is replaced) "
                                 "instead of printing it.")

    def handle(self, *args, **options):
        alias = options["database"]
        check_alias(alias)
        settings_dict = connections.settings[alias]
        if settings_dict.get("ENGINE") != DQCLUSTER_ENGINE:
            raise CommandError(f"settings.DATABASES[{alias!r}] does not use ENGINE {DQCLUSTER_ENGINE!r}.")
        opts = backend_options.parse(alias, settings_dict)
        if not opts.secret:
            raise CommandError(
                f"settings.DATABASES[{alias!r}] holds no cluster secret ('secret_file' or 'secret') to derive a "
                "token from; run this where the node's settings are"
            )
        read_only = options["read_only"]
        token = client_token(opts.secret, read_only=read_only)
        path = options["write"]
        if not path:
            self.stdout.write(token)
            return
        partial = f"{path}.partial"
        try:
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                os.fchmod(handle.fileno(), 0o600)  # whatever the umask, and an old partial file's mode
                handle.write(token + "\n")
            os.replace(partial, path)
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror}") from None
        if options["verbosity"] >= 1:
            kind = "read-only client token" if read_only else "client token"
            self.stdout.write(
                f"Wrote the {kind} to {path} (mode 600). Give web workers and other processes that run no "
                f"node OPTIONS 'token_file': '{path}' instead of the secret."
            )
