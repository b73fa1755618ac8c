"""Settings of one simulated host whose ``default`` is a client of one node of a store cluster.

Everything else (apps, MIGRATION_MODULES from ``DQ_GATE_VERSION``, API extensions from
``DQ_GATE_API``, ...) is ``tests/gate/settings.py``; only the database and the host's
address differ:

* ``DQ_E2E_CLIENT``       the client address of this host's node (``HOST:PORT``)
* ``DQ_E2E_SECRET_FILE``  the cluster's secret file
* ``DQ_E2E_NAME``         the database inside the store (the same on every host)
* ``DQ_GATE_NODE``        this host's address in the ``nodes`` table: its node's Raft address
"""

import os

from tests.gate.settings import *  # noqa: F401,F403

DATABASES = {
    "default": {
        "ENGINE": "django_dqcluster.backend",
        "NAME": os.environ.get("DQ_E2E_NAME", "app"),
        "OPTIONS": {
            "address": os.environ["DQ_E2E_CLIENT"],
            "secret_file": os.environ["DQ_E2E_SECRET_FILE"],
            "timeout": 30,
        },
    }
}
DQCLUSTER_NODE_ADDRESS = os.environ["DQ_GATE_NODE"]
