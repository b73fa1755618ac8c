"""The Raft-replicated SQLite store: one node per host, or embedded in a process.

No Django here. ``Node`` and ``NodeConfig`` are the public entry points;
``python -m django_dqcluster.store`` runs a node from the command line.
"""

from .config import ConfigError, NodeConfig, read_secrets


def __getattr__(name):
    # Importing the node pulls in pysyncobj; keep `config` importable without it.
    if name == "Node":
        from .node import Node

        return Node
    raise AttributeError(name)


__all__ = ["Node", "NodeConfig", "ConfigError", "read_secrets"]
