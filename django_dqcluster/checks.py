"""System checks for the cluster settings (ids ``dqcluster.W001`` …, ``dqcluster.E001`` …).

* ``W001`` a dqcluster alias on a multi-node setup has no ``secret``/``secret_file``:
  Raft messages are pickled, so unauthenticated traffic is remote code execution.
* ``W002`` an app listed before ``django_dqcluster`` in INSTALLED_APPS ships its own
  ``migrate`` command: Django runs the first one listed, so ours (and the version gate)
  would never run and new migrations could run under old code.
* ``W003`` a dqcluster alias's ``secret_file`` or ``token_file`` is readable by other users than its owner.
* ``W004`` a dqcluster alias runs a node whose peers are on other hosts, but its Raft or
  client address is on loopback (or a unix socket): they cannot reach it.
* ``E001`` ``DQCLUSTER_API_EXTENSIONS`` is not a list/tuple.
* ``E002`` ``DQCLUSTER_GATE_ENABLED`` is not True, False or None.
* ``E003`` ``DQCLUSTER_NODE_ADDRESS`` is not a non-empty string or dict of them.

No check opens a database connection: they run for every management command.
"""

import os

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.management import find_commands

from .wire import is_local

DQCLUSTER_ENGINE = "django_dqcluster.backend"
APP_NAME = "django_dqcluster"


def _split(value):
    if not value:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value if str(item).strip()]
    return [value]


def _cluster_databases():
    """(alias, DATABASES entry) of every alias on our ENGINE."""
    return [(alias, entry) for alias, entry in settings.DATABASES.items() if entry.get("ENGINE") == DQCLUSTER_ENGINE]


@register(Tags.security, Tags.database)
def check_cluster_secret(app_configs=None, **kwargs):
    """W001: a multi-node dqcluster alias without a secret."""
    messages = []
    for alias, entry in _cluster_databases():
        options = entry.get("OPTIONS") or {}
        peers = _split(options.get("peers"))
        addresses = _split(options.get("address")) or _split(entry.get("HOST"))
        multi_node = bool(peers) or len(addresses) > 1
        # An entry with a client token runs no node (the backend refuses to), so it needs no secret.
        credentials = ("secret", "secret_file", "token", "token_file")
        if multi_node and not any(options.get(key) for key in credentials):
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] is a multi-node dqcluster setup without a cluster secret.",
                    hint=(
                        "Set OPTIONS['secret_file'] (a file readable only by the service user, "
                        "the same secret on every member) or OPTIONS['secret']. Raft messages "
                        "are pickled: a node that accepts unauthenticated traffic runs whatever "
                        "it is sent."
                    ),
                    obj=f"DATABASES[{alias!r}]",
                    id="dqcluster.W001",
                )
            )
    return messages


@register(Tags.security, Tags.database)
def check_secret_file_permissions(app_configs=None, **kwargs):
    """W003: a secret or token file other users can read."""
    from .store.config import readable_by_others

    why = {
        "secret_file": "Whoever reads the cluster secret can send the nodes Raft messages, which are pickled: "
                       "it runs code on every member.",
        "token_file": "Whoever reads the client token can read and write every database of the store.",
    }
    messages = []
    for alias, entry in _cluster_databases():
        for key, consequence in why.items():
            path = (entry.get("OPTIONS") or {}).get(key)
            if path and readable_by_others(os.fspath(path)):
                messages.append(
                    Warning(
                        f"DATABASES[{alias!r}]['OPTIONS'][{key!r}] ({path}) is readable by users other than its owner.",
                        hint=f"chmod 600 {path}. {consequence}",
                        obj=f"DATABASES[{alias!r}]",
                        id="dqcluster.W003",
                    )
                )
    return messages


def reachability_problems(options):
    """[(OPTIONS key, what is wrong)] that keep peers on other hosts from reaching this alias's node."""
    bind = options.get("bind")
    remote_peers = [peer for peer in _split(options.get("peers")) if not is_local(peer)]
    if not bind or not remote_peers:
        return []
    others = ", ".join(remote_peers)
    problems = []
    if is_local(bind):
        problems.append(("bind", f"this node's Raft address {bind} is on loopback: its peers on other hosts "
                                 f"({others}) cannot reach it"))
    client = options.get("client") or next(iter(_split(options.get("address"))), None)
    if client and is_local(client):
        problems.append(("client", f"this node's client address {client} is on loopback or a unix socket: "
                                   "followers on other hosts pass writes on to the leader's client address, "
                                   "and would reach their own host instead"))
    return problems


@register(Tags.database)
def check_node_reachable(app_configs=None, **kwargs):
    """W004: a node with peers on other hosts that listens where only its own host can reach it."""
    messages = []
    for alias, entry in _cluster_databases():
        options = dict(entry.get("OPTIONS") or {})
        hosts = _split(entry.get("HOST"))
        if not options.get("address") and hosts:
            # django-environ puts a URL's host and port there, not in OPTIONS.
            ports = _split(str(entry.get("PORT") or ""))
            options["address"] = hosts[0] if ":" in hosts[0] or not ports else f"{hosts[0]}:{ports[0]}"
        for key, problem in reachability_problems(options):
            messages.append(
                Warning(
                    problem[0].upper() + problem[1:] + ".",
                    hint=(f"Use this host's network address for OPTIONS[{key!r}]"
                          + (" (or the database URL's host)" if key == "client" else "")
                          + " and set allow_remote; README, 'Running on several hosts'."),
                    obj=f"DATABASES[{alias!r}]",
                    id="dqcluster.W004",
                )
            )
    return messages


@register()
def check_migrate_not_hidden(app_configs=None, **kwargs):
    """W002: an app before ours ships ``migrate``, so the gated ``migrate`` never runs."""
    from django.apps import apps

    messages = []
    for app_config in apps.get_app_configs():
        if app_config.name == APP_NAME:
            break
        if "migrate" in find_commands(os.path.join(app_config.path, "management")):
            messages.append(
                Warning(
                    f"The app {app_config.name!r} is listed before {APP_NAME!r} in "
                    "INSTALLED_APPS and ships a 'migrate' command, which hides the "
                    "cluster-gated one.",
                    hint=(
                        f"Move {APP_NAME!r} above {app_config.name!r} in INSTALLED_APPS "
                        "(Django runs the command of the app listed first). Without the gate, "
                        "a host could run new migrations while other hosts still run old code."
                    ),
                    obj=app_config.name,
                    id="dqcluster.W002",
                )
            )
    return messages


@register()
def check_gate_settings(app_configs=None, **kwargs):
    """E001-E003: the gate's own settings have the right shape."""
    messages = []
    extensions = getattr(settings, "DQCLUSTER_API_EXTENSIONS", [])
    if extensions is not None and (isinstance(extensions, (str, bytes)) or not isinstance(extensions, (list, tuple))):
        messages.append(
            Error(
                f"DQCLUSTER_API_EXTENSIONS must be a list of extension names, not {type(extensions).__name__}.",
                hint="Only its length counts: append one name per API extension a release adds.",
                id="dqcluster.E001",
            )
        )
    enabled = getattr(settings, "DQCLUSTER_GATE_ENABLED", None)
    if enabled not in (None, True, False, "auto"):
        messages.append(
            Error(
                f"DQCLUSTER_GATE_ENABLED must be True, False or None (automatic), not {enabled!r}.",
                id="dqcluster.E002",
            )
        )
    address = getattr(settings, "DQCLUSTER_NODE_ADDRESS", None)
    values = list(address.values()) if isinstance(address, dict) else [address]
    if address is not None and not all(isinstance(v, str) and v.strip() and v.strip() != "0.0.0.0" for v in values):
        messages.append(
            Error(
                f"DQCLUSTER_NODE_ADDRESS must be a non-empty address or a dict {{alias: address}}, not {address!r}.",
                hint="It names this host's row in the nodes table; '0.0.0.0' is reserved.",
                id="dqcluster.E003",
            )
        )
    return messages
