"""A node's settings, validated once, with errors that name the setting."""

import dataclasses
import ipaddress
import os

from .. import wire
from .regexp_time import DEFAULT_MAX_REGEXP_SECONDS
from .statement_steps import DEFAULT_MAX_STATEMENT_STEPS

FSYNC = "fsync"
PROCESS = "process"
DURABILITY_MODES = (FSYNC, PROCESS)

# MiB of entries in the Raft log above which a node compacts it (a snapshot,
# then the log cut to it). pysyncobj compacts after 20,000 entries or 10
# minutes and holds every entry of the log in memory: 300 MB written in large
# transactions took each node from 35 MB to 670 MB resident, for ten minutes.
DEFAULT_MAX_LOG_MB = 256

# MiB of statements and parameters one transaction may write (its log entry).
# Every node holds an entry several times over while it takes it in (256 MB
# took each node here to ~1.7 GB at its peak) and its Raft thread stands
# still for seconds over it (large_entries.py); a commit of 256 MB took 14 s.
DEFAULT_MAX_TRANSACTION_MB = 256


class ConfigError(ValueError):
    """A node setting is missing or wrong; the message names it."""


@dataclasses.dataclass
class NodeConfig:
    #: Raft address of this node, HOST:PORT.
    bind: str
    #: Data directory: SQLite files, Raft journal, snapshots, known servers.
    data_dir: str
    #: Raft addresses of the other members (empty for a one-node cluster).
    peers: list = dataclasses.field(default_factory=list)
    #: Where clients connect: HOST:PORT, or unix:/path. None = Raft port + 1.
    client: str = None
    #: Shared cluster secret. Required when there are peers.
    secret: str = None
    #: Secrets accepted from members and clients besides ``secret``, which alone
    #: seals and signs: the old one (or the next one) while the cluster moves to a new secret.
    secret_fallbacks: tuple = ()
    #: The file the secret and its fallbacks come from (read here when ``secret``
    #: is not given). The node reads it again while it runs, so moving the
    #: cluster to a new secret needs no restart (store/secret_file.py).
    secret_file: str = None
    #: Seconds between two reads of ``secret_file``.
    secret_check_interval: float = 2.0
    #: ``fsync`` (journal flushed before any acknowledgement) or ``process``.
    durability: str = FSYNC
    #: Election timeout range in seconds.
    election_timeout: tuple = (0.4, 1.4)
    #: How long a transaction waits for the database's write lock.
    busy_timeout: float = 5.0
    #: How long a commit waits for the cluster before reporting an unknown outcome.
    commit_timeout: float = 10.0
    #: Largest client frame accepted, in bytes.
    max_frame: int = wire.DEFAULT_MAX_FRAME
    #: Allow binding to addresses other than loopback.
    allow_remote: bool = False
    #: Client address of a running member to join through (dynamic membership).
    join: str = None
    #: Callables ``f(sqlite3_connection)`` run on every SQLite connection the node opens.
    connection_hooks: list = dataclasses.field(default_factory=list)
    #: Append a checkpoint hash entry after this many entries.
    checkpoint_every: int = 1000
    #: On a graceful stop, how long open transactions and running requests may take to finish.
    drain_timeout: float = 5.0
    #: Abort a transaction that holds a write lock and sent nothing for this long (seconds); None: never.
    idle_transaction_timeout: float = None
    #: The most SQLite steps one statement may take (statement_steps.py); 0: no limit.
    #: The leader's value travels in each entry, so every node stops a statement alike.
    max_statement_steps: int = DEFAULT_MAX_STATEMENT_STEPS
    #: Seconds of REGEXP matching one client statement may take, held by the
    #: node that runs it first (the leader, for writes: regexp_time.py); 0: no limit.
    max_regexp_seconds: float = DEFAULT_MAX_REGEXP_SECONDS
    #: MiB of entries the Raft log (in memory and on disk) may hold before it is
    #: compacted, however few its entries: about the memory a node needs beyond its data.
    max_log_mb: int = DEFAULT_MAX_LOG_MB
    #: MiB of statements and parameters one transaction (or one statement outside any) may write.
    max_transaction_mb: int = DEFAULT_MAX_TRANSACTION_MB

    def __post_init__(self):
        self.peers = [p for p in (self.peers or []) if p and p != self.bind]
        _check_hostport("bind", self.bind)
        for peer in self.peers:
            _check_hostport("peers", peer)
        if not self.data_dir:
            raise ConfigError("data_dir: a node needs a data directory")
        self.data_dir = os.path.abspath(self.data_dir)
        derived = self.client is None
        if derived:
            host, port = wire.parse_address(self.bind)
            self.client = f"{host}:{port + 1}"
        try:
            wire.parse_address(self.client)
        except ValueError as exc:
            hint = " (the bind port + 1, the default: set client)" if derived else ""
            raise ConfigError(f"client: {exc}{hint}") from None
        if self.durability not in DURABILITY_MODES:
            raise ConfigError(f"durability: {self.durability!r} is not one of {', '.join(DURABILITY_MODES)}")
        low, high = self.election_timeout
        if not 0 < low < high:
            raise ConfigError(f"election_timeout: need 0 < low < high, got {self.election_timeout!r}")
        if not (isinstance(self.drain_timeout, (int, float)) and self.drain_timeout >= 0):
            raise ConfigError(f"drain_timeout: need a number of seconds >= 0, got {self.drain_timeout!r}")
        idle = self.idle_transaction_timeout
        if idle is not None and not (isinstance(idle, (int, float)) and not isinstance(idle, bool) and idle > 0):
            raise ConfigError(f"idle_transaction_timeout: need a number of seconds > 0 (or none), got {idle!r}")
        steps = self.max_statement_steps
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0):
            raise ConfigError(f"max_statement_steps: need a whole number of steps >= 0 (0: no limit), got {steps!r}")
        regexp = self.max_regexp_seconds
        if not (isinstance(regexp, (int, float)) and not isinstance(regexp, bool) and regexp >= 0):
            raise ConfigError(f"max_regexp_seconds: need a number of seconds >= 0 (0: no limit), got {regexp!r}")
        for name in ("max_log_mb", "max_transaction_mb"):
            mib = getattr(self, name)
            if not (isinstance(mib, int) and not isinstance(mib, bool) and mib >= 1):
                raise ConfigError(f"{name}: need a whole number of MiB >= 1, got {mib!r}")
        if self.secret_file:
            self.secret_file = os.path.abspath(os.fspath(self.secret_file))
            if not self.secret:
                self.secret, self.secret_fallbacks = read_secrets(secret_file=self.secret_file)
        if (self.peers or self.join) and not self.secret:
            raise ConfigError(
                "secret: a multi-node store needs a cluster secret. Raft messages are pickled, so "
                "unauthenticated Raft traffic would let anyone who can reach the port run code on this host"
            )
        self.secret_fallbacks = tuple(self.secret_fallbacks or ())
        if self.secret_fallbacks and not self.secret:
            raise ConfigError("secret_fallbacks: fallbacks are accepted besides a secret; give the secret too")
        if not all(isinstance(fallback, str) and fallback for fallback in self.secret_fallbacks):
            raise ConfigError("secret_fallbacks: each fallback must be a non-empty string")
        if not self.allow_remote:
            for name, address in (("bind", self.bind), ("client", self.client)):
                target = wire.parse_address(address)
                if isinstance(target, tuple) and not _is_loopback(target[0]):
                    raise ConfigError(
                        f"{name}: {address} is not a loopback address; set allow_remote "
                        "(--allow-remote) to listen beyond this host"
                    )

    @property
    def max_log_bytes(self):
        return self.max_log_mb * 2 ** 20

    @property
    def max_transaction_bytes(self):
        return self.max_transaction_mb * 2 ** 20

    @property
    def durable(self):
        return self.durability == FSYNC

    @property
    def journal_file(self):
        return os.path.join(self.data_dir, "raft.journal")

    @property
    def snapshot_file(self):
        return os.path.join(self.data_dir, "raft.snapshot")

    @property
    def servers_file(self):
        return os.path.join(self.data_dir, "servers.json")

    @property
    def catching_up_file(self):
        return os.path.join(self.data_dir, "raft.catching-up")

    @property
    def vote_promise_file(self):
        return os.path.join(self.data_dir, "raft.vote-promise")


def _check_hostport(name, address):
    if not isinstance(address, str) or address.startswith(("unix:", "/")):
        raise ConfigError(f"{name}: Raft addresses must be HOST:PORT, not {address!r}")
    try:
        wire.parse_host_port(address)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_secrets(secret=None, secret_file=None):
    """``(secret, fallbacks)`` from a secret (or a list: the secret, then its fallbacks) or a secret file.

    A secret file holds one secret per line; lines after the first are
    fallbacks, there only while the cluster moves to a new secret.
    ``(None, ())`` when neither is given.
    """
    if secret and secret_file:
        raise ConfigError("secret: give either a secret or a secret file, not both")
    if secret_file:
        try:
            with open(secret_file) as handle:
                values = wire.secrets_in(handle.read())
        except OSError as exc:
            raise ConfigError(f"secret_file: cannot read {secret_file}: {exc.strerror}") from None
        if not values:
            raise ConfigError(f"secret_file: {secret_file} is empty")
    elif isinstance(secret, (list, tuple)):
        values = list(secret)
        if not values or not all(isinstance(value, str) and value.strip() for value in values):
            raise ConfigError("secret: a list of secrets must hold non-empty strings, the one to use first")
    else:
        values = [secret] if secret else []
    return (values[0], tuple(values[1:])) if values else (None, ())


def readable_by_others(path):
    """Whether users other than ``path``'s owner may read it (its group, or anyone).

    A cluster secret lets whoever holds it send Raft messages, which are
    pickled: it should be readable by the service user alone (``chmod 600``).
    """
    try:
        return bool(os.stat(path).st_mode & 0o044)
    except OSError:
        return False  # unreadable or missing: read_secrets says so
