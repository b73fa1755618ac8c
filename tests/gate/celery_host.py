"""A simulated host's Celery worker: ``python tests/gate/celery_host.py QUEUE[,QUEUE...]``.

Configures Django from the host's environment (see ``settings.py``), builds the project's
Celery app the way a project does (``config_from_object("django.conf:settings",
namespace="CELERY")``), starts a real embedded worker (``start_worker``, solo pool) on the
given queues, prints ``WORKER READY`` and runs until its standard input is closed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.gate.settings")

import django  # noqa: E402

django.setup()

from tests.gate.celery_app import app  # noqa: E402 - the project's app, as gateapp loads it

import celery.contrib.testing.tasks  # noqa: E402,F401 - registers celery.ping for start_worker

import django_dqcluster.tasks  # noqa: E402,F401 - the shared tasks bind to this app
from celery.contrib.testing.worker import start_worker  # noqa: E402


def main():
    queues = sys.argv[1].split(",")
    with start_worker(app, pool="solo", perform_ping_check=True, shutdown_timeout=10, loglevel="WARNING", queues=queues):
        print("WORKER READY", flush=True)
        sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
