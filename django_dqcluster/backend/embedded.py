"""Embedded nodes: one store node per process per data dir, started lazily and shared.

Every alias and thread whose OPTIONS name the same ``data_dir`` talks to the
same in-process node: two nodes on one data dir would both write its SQLite
files and Raft journal. Another process with the same settings (``manage.py
shell`` or ``dbshell`` beside ``runserver``) finds the data dir locked by the
node running there and becomes that node's client (:func:`connect_params`).
"""

import atexit
import errno
import os
import threading

from django.core.exceptions import ImproperlyConfigured
from django.db.utils import OperationalError

from ..store.datadir import DataDirInUse
from .sql_functions import django_functions_hook

_nodes = {}  # data_dir -> (Node, NodeConfig)
_lock = threading.Lock()


def get_node(options, wait=True):
    """The running node for ``options.data_dir``, started on first use.

    ``wait=False`` returns as soon as the node runs, before it knows a leader
    (to start several members of one cluster in one process).
    """
    from ..store.node import Node

    with _lock:
        known = _nodes.get(os.path.abspath(options.data_dir))
        if known is not None:
            node, config = known
            if config.bind != options.bind or sorted(config.peers) != sorted(options.peers):
                raise ImproperlyConfigured(
                    f"settings.DATABASES[{options.alias!r}]['OPTIONS'] names data_dir "
                    f"{options.data_dir!r}, which an embedded node already uses with bind "
                    f"{config.bind!r} and peers {config.peers!r}; aliases sharing a data dir "
                    "must agree on 'bind' and 'peers'"
                )
            return node if not wait else _ready(node, options)
        config = options.node_config(connection_hooks=[django_functions_hook])
        try:
            node = Node(config).start()
        except DataDirInUse:
            raise  # another process runs this node: connect_params talks to it
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                hint = (" (OPTIONS 'client' sets where the embedded node listens for clients; "
                        "by default on the port after 'bind')")
            raise OperationalError(
                f"settings.DATABASES[{options.alias!r}]: the embedded node could not start: {exc}{hint}"
            ) from exc
        _nodes[os.path.abspath(options.data_dir)] = (node, config)
    # Outside the lock: a multi-node cluster may wait for its peers.
    return _ready(node, options) if wait else node


def connect_params(options):
    """The driver's arguments to reach the embedded node of ``options``.

    ``{"node": node}`` when this process runs it (starting it on first use),
    or what a client of the node another process runs on the same data dir
    needs (its lock says where that node serves clients), with local reads
    as the options ask and Django's SQL functions for them.
    """
    try:
        return {"node": get_node(options)}
    except DataDirInUse as in_use:
        if not in_use.holder:
            raise OperationalError(f"settings.DATABASES[{options.alias!r}]: {in_use}") from None
        return {"addresses": [in_use.holder["client"]], "secret": _secret_of(options, in_use),
                "local_reads": options.local_reads, "configure_replica": django_functions_hook}


def _secret_of(options, in_use):
    if options.secret:
        return options.secret
    from ..store.node import LOCAL_SECRET_FILE

    path = os.path.join(options.data_dir, LOCAL_SECRET_FILE)
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError as exc:
        raise OperationalError(
            f"settings.DATABASES[{options.alias!r}]: {in_use}; cannot read its secret at {path} "
            f"to connect to it instead: {exc.strerror}"
        ) from None


def _ready(node, options):
    node.wait_ready(max(options.timeout, 15.0))
    return node


def stop_all():
    """Stop every embedded node this process started (atexit, and tests)."""
    with _lock:
        nodes = [node for node, _ in _nodes.values()]
        _nodes.clear()
    for node in nodes:
        try:
            node.stop()
        except Exception:  # a node that failed to stop must not keep the others running
            pass


def stop(data_dir):
    with _lock:
        known = _nodes.pop(os.path.abspath(data_dir), None)
    if known is not None:
        known[0].stop()


atexit.register(stop_all)
