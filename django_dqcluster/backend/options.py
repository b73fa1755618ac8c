"""Parse and validate a DATABASES entry for the dqcluster backend.

Everything a connection needs is read here, once, so that a wrong or missing
setting fails with an ``ImproperlyConfigured`` that names the key, instead of
surfacing later as a socket error. Two modes:

* **client** (the default): this host's node runs in its own process
  (``manage.py dqcluster_node`` or ``python -m django_dqcluster.store``) and
  Django talks to it over TCP or a unix socket. The node's client address comes
  from ``OPTIONS["address"]`` or from HOST/PORT (which may be comma lists, the
  shape django-environ produces).
* **embedded** (``OPTIONS["embedded"] = True``): the node runs inside this
  process, started on first use and shared by every alias and thread that
  names the same ``data_dir``.

``peers`` are the Raft addresses of the other members; they matter to whoever
*runs* the node (embedded mode and ``dqcluster_node``). A client only needs
one reachable node: it learns the other members' client addresses from it.
"""

import dataclasses
import os

from django.core.exceptions import ImproperlyConfigured

from ..store.config import DURABILITY_MODES, FSYNC, ConfigError, read_secrets

CONSISTENCY_LEVELS = ("strong", "weak", "none")
DEFAULT_TIMEOUT = 10.0

#: Every key OPTIONS may hold, with the default used when it is absent.
KNOWN_OPTIONS = {
    "address": None,         # client address(es) of this host's node
    "embedded": False,       # run the node inside this process
    "data_dir": None,        # node data directory (embedded mode, dqcluster_node)
    "bind": None,            # this node's Raft address HOST:PORT (embedded, dqcluster_node)
    "client": None,          # where the node listens for clients (default: Raft port + 1)
    "peers": [],             # Raft addresses of the other members
    "secret": None,          # the cluster secret (a list while rotating it: the secret, then fallbacks) ...
    "secret_file": None,     # ... or a file holding it (preferred; fallbacks on the next lines)
    "token": None,           # or, for a process that runs no node, only the client token ...
    "token_file": None,      # ... or a file holding it (manage.py dqcluster_client_token writes one)
    "consistency": "strong",  # strong | weak | none
    "local_reads": True,     # with none: SELECTs read this host's replica file directly
    "seal": False,           # encrypt client frames over loopback too (to other hosts they always are)
    "durability": FSYNC,     # fsync | process (whoever runs the node)
    "timeout": DEFAULT_TIMEOUT,  # seconds to connect and to keep retrying retryable errors
    "allow_remote": False,   # let the node listen beyond loopback
    "idle_transaction_timeout": None,  # seconds; the node aborts transactions idle this long (whoever runs it)
    "max_statement_steps": None,  # the node stops a statement after this many SQLite steps (None: its default)
    "max_regexp_seconds": None,  # the node stops a statement whose REGEXP matching takes longer (None: its default)
    "max_log_mb": None,      # MiB of Raft log the node holds before compacting it (None: its default)
    "max_transaction_mb": None,  # MiB of statements one transaction may write (None: the node's default)
    "transaction_mode": None,  # as Django's sqlite3 backend: DEFERRED/IMMEDIATE/EXCLUSIVE
    "init_command": "",      # as Django's sqlite3 backend: statements run on each new connection
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclasses.dataclass
class BackendOptions:
    alias: str
    name: str
    addresses: list
    embedded: bool
    data_dir: str
    bind: str
    client: str
    peers: list
    secret: str
    secret_fallbacks: tuple  # other secrets the node accepts while the cluster moves to a new one
    secret_file: str  # where they came from (a node follows its changes), or None
    token: str  # the client token given instead of the secret (None when the secret is)
    token_file: str  # where it came from, or None
    consistency: str
    local_reads: bool
    seal: bool
    durability: str
    timeout: float
    allow_remote: bool
    idle_transaction_timeout: float
    max_statement_steps: int  # None: the node's default
    max_regexp_seconds: float  # None: the node's default
    max_log_mb: int  # None: the node's default
    max_transaction_mb: int  # None: the node's default
    transaction_mode: str
    init_command: str

    def node_config(self, connection_hooks=()):
        """The :class:`~django_dqcluster.store.NodeConfig` for running this host's node."""
        from ..store.config import NodeConfig

        if not self.data_dir:
            raise self.error("data_dir", "is required to run a node (embedded mode or dqcluster_node)")
        if not self.bind:
            raise self.error("bind", "is required to run a node: this node's Raft address, HOST:PORT")
        if self.token and not self.secret:
            raise self.error("token", "only lets this process in as a client of a node; running one needs the "
                             "cluster secret ('secret_file' or 'secret') instead")
        try:
            return NodeConfig(
                bind=self.bind,
                data_dir=self.data_dir,
                # A client-mode entry names this host's node by its client
                # address; that is where the node listens.
                client=self.client or (self.addresses[0] if self.addresses else None),
                peers=list(self.peers),
                secret=self.secret,
                secret_fallbacks=self.secret_fallbacks,
                secret_file=self.secret_file,
                durability=self.durability,
                allow_remote=self.allow_remote,
                idle_transaction_timeout=self.idle_transaction_timeout,
                **({} if self.max_statement_steps is None else {"max_statement_steps": self.max_statement_steps}),
                **({} if self.max_regexp_seconds is None else {"max_regexp_seconds": self.max_regexp_seconds}),
                **({} if self.max_log_mb is None else {"max_log_mb": self.max_log_mb}),
                **({} if self.max_transaction_mb is None else {"max_transaction_mb": self.max_transaction_mb}),
                connection_hooks=list(connection_hooks),
            )
        except ConfigError as exc:
            # NodeConfig's messages start with the setting's name.
            key = str(exc).split(":", 1)[0]
            raise self.error(key, str(exc).split(":", 1)[-1].strip()) from None

    def error(self, key, message):
        return ImproperlyConfigured(
            f"settings.DATABASES[{self.alias!r}]['OPTIONS'][{key!r}] {message}"
        )


def _error(alias, key, message, top_level=False):
    where = f"settings.DATABASES[{alias!r}][{key!r}]" if top_level else \
        f"settings.DATABASES[{alias!r}]['OPTIONS'][{key!r}]"
    return ImproperlyConfigured(f"{where} {message}")


def split_list(value):
    """'a,b' / ['a', 'b'] / None -> ['a', 'b'] (django-environ hands over comma strings)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value if str(item).strip()]
    raise TypeError(type(value).__name__)


def _as_bool(alias, key, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _error(alias, key, f"must be a boolean, not {value!r}")


def _addresses_from_host_port(alias, host, port):
    """HOST='a,b' PORT='1,2' (or one shared port) -> ['a:1', 'b:2']; a unix socket path as HOST."""
    hosts = split_list(host) if host else []
    ports = split_list(str(port)) if port not in (None, "") else []
    if not hosts:
        if ports:
            raise _error(alias, "HOST", "is required when PORT is set", top_level=True)
        return []
    for item in ports:
        if not (item.isdigit() and 0 < int(item) <= 65535):
            raise _error(alias, "PORT", f"must be a port number (1-65535) or a comma list of them, not {port!r}",
                         True)
    if len(ports) > 1 and len(ports) != len(hosts):
        raise _error(alias, "PORT", f"lists {len(ports)} ports for {len(hosts)} hosts in HOST", True)
    addresses = []
    for index, item in enumerate(hosts):
        if item.startswith(("/", "unix:")):
            addresses.append(item)
        elif ":" in item and not item.startswith("["):
            addresses.append(item)  # HOST already carries its port
        elif ports:
            addresses.append(f"{item}:{ports[index] if len(ports) > 1 else ports[0]}")
        else:
            raise _error(alias, "PORT", f"is required: HOST {item!r} has no port", True)
    return addresses


def _check_address(alias, key, address):
    from ..wire import parse_address

    try:
        parse_address(address)
    except ValueError as exc:
        raise _error(alias, key, f"holds an invalid address: {exc}") from None


def _read_token(alias, token, token_file):
    """The client token from OPTIONS ``token`` or ``token_file`` (None if neither), checked for its shape."""
    key = "token_file" if token_file else "token"
    if token_file:
        try:
            with open(os.fspath(token_file)) as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise _error(alias, key, f"cannot be read ({os.fspath(token_file)}: {exc.strerror})") from None
    if not token:
        return None
    token = token.strip()
    if len(token) != 64 or any(char not in "0123456789abcdef" for char in token):
        raise _error(alias, key, "must hold a client token, the 64 hex digits `manage.py dqcluster_client_token` "
                     "prints (not the cluster secret itself)")
    return token


def _whole_number(alias, opts, key, unit, least, least_text):
    """OPTIONS[key] as an int of at least ``least`` (a URL gives a string), or None when not given."""
    value = opts[key]
    if value is None:
        return None
    try:
        if isinstance(value, (bool, float)):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise _error(alias, key, f"must be a whole number of {unit}, not {value!r}") from None
    if number < least:
        raise _error(alias, key, f"must be {least_text}, not {value!r}")
    return number


def _seconds(alias, opts, key, least_text, zero):
    """OPTIONS[key] as a number of seconds, above 0 (or 0 too, given ``zero``), or None when not given."""
    value = opts[key]
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        seconds = float(value)  # a URL gives a string
    except (TypeError, ValueError):
        raise _error(alias, key, f"must be a number of seconds, not {value!r}") from None
    if not (seconds >= 0 if zero else seconds > 0):
        raise _error(alias, key, f"must be {least_text}, not {value!r}")
    return seconds


def parse(alias, settings_dict):
    """Validate ``settings_dict`` (one DATABASES entry) and return :class:`BackendOptions`."""
    name = settings_dict.get("NAME")
    if not name:
        raise _error(alias, "NAME", "is required: the name of the database inside the store", True)
    from ..store.databases import InvalidDatabaseName, check_name

    try:
        check_name(str(name))
    except InvalidDatabaseName as exc:
        raise _error(alias, "NAME", str(exc), True) from None

    raw = dict(settings_dict.get("OPTIONS") or {})
    unknown = sorted(set(raw) - set(KNOWN_OPTIONS))
    if unknown:
        raise _error(alias, unknown[0], f"is not a dqcluster option; known options: {', '.join(sorted(KNOWN_OPTIONS))}")
    opts = {**KNOWN_OPTIONS, **raw}

    embedded = _as_bool(alias, "embedded", opts["embedded"])
    allow_remote = _as_bool(alias, "allow_remote", opts["allow_remote"])
    local_reads = _as_bool(alias, "local_reads", opts["local_reads"])
    seal = _as_bool(alias, "seal", opts["seal"])

    try:
        addresses = split_list(opts["address"])
    except TypeError:
        raise _error(alias, "address", "must be a string or a list of HOST:PORT / unix:/path") from None
    host_addresses = _addresses_from_host_port(alias, settings_dict.get("HOST"), settings_dict.get("PORT"))
    if addresses and host_addresses:
        raise _error(alias, "address", "and HOST/PORT both name the node; give one of them")
    addresses = addresses or host_addresses
    for address in addresses:
        _check_address(alias, "address", address)

    try:
        peers = split_list(opts["peers"])
    except TypeError:
        raise _error(alias, "peers", "must be a comma-separated string or a list of HOST:PORT") from None
    for peer in peers:
        _check_address(alias, "peers", peer)

    for key in ("data_dir", "bind", "client", "secret", "secret_file", "token", "token_file", "transaction_mode",
                "init_command"):
        if key == "secret" and isinstance(opts[key], (list, tuple)):
            continue  # the secret and its fallbacks, checked by read_secrets
        if opts[key] is not None and not isinstance(opts[key], (str, os.PathLike)):
            raise _error(alias, key, f"must be a string, not {type(opts[key]).__name__}")
    data_dir = os.fspath(opts["data_dir"]) if opts["data_dir"] else None
    if opts["bind"]:
        _check_address(alias, "bind", opts["bind"])
    if opts["client"]:
        _check_address(alias, "client", opts["client"])

    given = [key for key in ("secret", "secret_file", "token", "token_file") if opts[key]]
    if len(given) > 1:
        raise _error(alias, given[0], f"and {given[1]!r} are both set; give one of them")
    try:
        secret, secret_fallbacks = read_secrets(opts["secret"],
                                                os.fspath(opts["secret_file"]) if opts["secret_file"] else None)
    except ConfigError as exc:
        # read_secrets' messages start with the key they are about.
        key, _, message = str(exc).partition(":")
        raise _error(alias, key, message.strip()) from None
    token = _read_token(alias, opts["token"], opts["token_file"])

    consistency = opts["consistency"]
    if consistency not in CONSISTENCY_LEVELS:
        raise _error(alias, "consistency", f"must be one of {', '.join(CONSISTENCY_LEVELS)}, not {consistency!r}")
    durability = opts["durability"]
    if durability not in DURABILITY_MODES:
        raise _error(alias, "durability", f"must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
    try:
        timeout = float(opts["timeout"])
    except (TypeError, ValueError):
        raise _error(alias, "timeout", f"must be a number of seconds, not {opts['timeout']!r}") from None
    if not timeout > 0:
        raise _error(alias, "timeout", f"must be positive, not {opts['timeout']!r}")

    idle = _seconds(alias, opts, "idle_transaction_timeout", "positive (or None: never)", zero=False)
    steps = _whole_number(alias, opts, "max_statement_steps", "steps", 0, "0 (no limit) or more")
    regexp_seconds = _seconds(alias, opts, "max_regexp_seconds", "0 (no limit) or more", zero=True)
    log_mb = _whole_number(alias, opts, "max_log_mb", "MiB", 1, "1 or more (MiB)")
    transaction_mb = _whole_number(alias, opts, "max_transaction_mb", "MiB", 1, "1 or more (MiB)")

    transaction_mode = opts["transaction_mode"]
    if transaction_mode is not None:
        if transaction_mode.upper() not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            # Word for word the message of Django's sqlite3 backend.
            raise _error(alias, "transaction_mode", f"is improperly configured to '{transaction_mode}'. "
                         "Use one of 'DEFERRED', 'EXCLUSIVE', 'IMMEDIATE', or None.")
        transaction_mode = transaction_mode.upper()

    if embedded:
        if addresses:
            raise _error(alias, "embedded", "is set, so the node runs in this process: remove 'address' and HOST/PORT")
        if token:
            raise _error(alias, given[0], "only lets a process in as a client; with 'embedded' this process runs "
                         "the node, which needs the cluster secret ('secret_file' or 'secret')")
        if not data_dir:
            raise _error(alias, "data_dir", "is required when 'embedded' is set")
        if not opts["bind"]:
            raise _error(alias, "bind", "is required when 'embedded' is set: this node's Raft address, HOST:PORT")
        if peers and not secret:
            raise _error(alias, "secret", "is required with 'peers': Raft traffic must be authenticated "
                         "(give 'secret' or, better, 'secret_file')")
    else:
        if not addresses:
            raise _error(alias, "address", "is required: the client address of this host's node "
                         "(HOST:PORT or unix:/path; or set HOST/PORT; or 'embedded': True with 'data_dir')")
        if not secret and not token:
            raise _error(alias, "secret_file", "is required: the file holding the cluster secret "
                         "(or 'secret'), or 'token_file' with the client token; the node refuses "
                         "unauthenticated clients")

    return BackendOptions(
        alias=alias, name=str(name), addresses=addresses, embedded=embedded, data_dir=data_dir,
        bind=opts["bind"], client=opts["client"], peers=peers, secret=secret, secret_fallbacks=secret_fallbacks,
        secret_file=os.fspath(opts["secret_file"]) if opts["secret_file"] else None, token=token,
        token_file=os.fspath(opts["token_file"]) if opts["token_file"] else None, consistency=consistency,
        durability=durability, timeout=timeout, allow_remote=allow_remote, local_reads=local_reads, seal=seal,
        idle_transaction_timeout=idle, max_statement_steps=steps,
        max_regexp_seconds=regexp_seconds, max_log_mb=log_mb, max_transaction_mb=transaction_mb,
        transaction_mode=transaction_mode, init_command=opts["init_command"] or "",
    )
