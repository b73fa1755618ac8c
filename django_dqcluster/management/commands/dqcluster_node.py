"""``manage.py dqcluster_node``: run this host's store node from its DATABASES entry.

The sidecar for servers with several worker processes (gunicorn -w N): the
workers connect to it through the client address in OPTIONS["address"]
(HOST/PORT, or a unix:/path socket); the node takes ``bind``, ``peers``,
``data_dir``, ``secret``/``secret_file`` and ``durability`` from the same
OPTIONS, and registers Django's SQLite functions on its connections.
"""

import signal
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from ...backend import options as backend_options
from ...backend.sql_functions import django_functions_hook

ENGINE = "django_dqcluster.backend"


class Command(BaseCommand):
    help = "Run this host's django-dqcluster store node, configured from a DATABASES entry."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS,
            help="The DATABASES alias whose OPTIONS describe the node (default: %(default)s).",
        )
        parser.add_argument(
            "--join", metavar="CLIENT_ADDRESS",
            help="Join a running cluster through a member's client address instead of using 'peers'.",
        )

    def handle(self, *args, **options):
        alias = options["database"]
        if alias not in connections.settings:
            raise CommandError(f"No database alias {alias!r} in settings.DATABASES.")
        settings_dict = connections.settings[alias]
        if settings_dict.get("ENGINE") != ENGINE:
            raise CommandError(f"settings.DATABASES[{alias!r}] does not use ENGINE {ENGINE!r}.")
        opts = backend_options.parse(alias, settings_dict)
        config = opts.node_config(connection_hooks=[django_functions_hook])
        if options["join"]:
            config.join = options["join"]
            config.peers = []
            if not config.secret:
                raise CommandError(f"settings.DATABASES[{alias!r}]['OPTIONS']['secret_file'] is required to join a cluster.")
        from ...store.node import Node

        node = Node(config)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            node.start()
        except OSError as exc:  # a port or the data directory another process holds
            raise CommandError(f"the node of alias {alias!r} could not start: {exc}") from None
        verbosity = options["verbosity"]
        if verbosity:
            self.stdout.write(
                f"dqcluster node for alias {alias!r}: Raft on {config.bind}, clients on {config.client}, "
                f"data in {config.data_dir}"
            )
            if config.peers:
                self.stdout.write(f"  peers: {', '.join(config.peers)}")
            self.stdout.write("  Quit with CONTROL-C.")
            self.stdout.flush()
        try:
            while not stop.wait(0.5):
                if node.failed:  # logged already; a supervisor should see the process end
                    raise CommandError(f"node stopped: {node.failed}", returncode=3)
        finally:
            node.stop()
            if verbosity:
                self.stdout.write("node stopped")
