"""Run one store node: ``python -m django_dqcluster.store --bind HOST:PORT --data-dir DIR ...``.

Examples::

    # a one-node store (grows later with --join)
    python -m django_dqcluster.store --bind 127.0.0.1:7001 --data-dir var/n1 --secret-file secret

    # three nodes started together
    python -m django_dqcluster.store --bind 127.0.0.1:7001 --client 127.0.0.1:7101 \\
        --peers 127.0.0.1:7002,127.0.0.1:7003 --data-dir var/n1 --secret-file secret

    # a fourth node joining a running cluster through any member's client address
    python -m django_dqcluster.store --bind 127.0.0.1:7004 --join 127.0.0.1:7101 ...
"""

import argparse
import faulthandler
import importlib
import logging
import signal
import sys
import threading

from .config import DEFAULT_MAX_LOG_MB, DEFAULT_MAX_TRANSACTION_MB, FSYNC, PROCESS, ConfigError, NodeConfig, read_secrets, readable_by_others
from .regexp_time import DEFAULT_MAX_REGEXP_SECONDS
from .statement_steps import DEFAULT_MAX_STATEMENT_STEPS


def _addresses(text):
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _timeout_range(text):
    low, _, high = text.partition(",")
    return float(low), float(high or float(low) * 3.5)


def load_hook(dotted):
    """'package.module:callable' -> the callable (run on every SQLite connection the node opens)."""
    module_name, _, attribute = dotted.partition(":")
    if not attribute:
        raise ConfigError(f"connection hook {dotted!r}: expected 'module:callable'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"connection hook {dotted!r}: {exc}") from None


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m django_dqcluster.store", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="this node's Raft address, HOST:PORT")
    parser.add_argument("--data-dir", required=True, help="SQLite files, Raft journal and snapshots")
    parser.add_argument("--peers", default="", help="Raft addresses of the other members, comma-separated")
    parser.add_argument("--client", help="client address, HOST:PORT or unix:/path (default: Raft port + 1)")
    parser.add_argument("--join", help="client address of a running member to join through")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--secret-file", help="file holding the cluster secret (preferred); while the cluster "
                        "moves to a new secret, more lines hold fallbacks the node also accepts")
    secret.add_argument("--secret", help="the cluster secret (visible in the process list; prefer --secret-file)")
    parser.add_argument("--durability", choices=(FSYNC, PROCESS), default=FSYNC)
    parser.add_argument("--election-timeout", type=_timeout_range, default=(0.4, 1.4), metavar="LOW,HIGH")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding to non-loopback addresses")
    parser.add_argument("--connection-hook", action="append", default=[], metavar="MODULE:CALLABLE",
                        help="run on every SQLite connection (e.g. to register SQL functions)")
    parser.add_argument("--checkpoint-every", type=int, default=1000, metavar="ENTRIES",
                        help="append a history-hash checkpoint after this many entries")
    parser.add_argument("--idle-transaction-timeout", type=float, default=None, metavar="SECONDS",
                        help="abort a transaction that holds a database's write lock and sent nothing for this long "
                             "(default: never)")
    parser.add_argument("--max-statement-steps", type=int, default=DEFAULT_MAX_STATEMENT_STEPS, metavar="STEPS",
                        help="stop a statement after this many SQLite steps, on every node alike, so that one that "
                             f"never ends cannot hold up the cluster (default {DEFAULT_MAX_STATEMENT_STEPS:,}; "
                             "0: no limit)")
    parser.add_argument("--max-regexp-seconds", type=float, default=DEFAULT_MAX_REGEXP_SECONDS, metavar="SECONDS",
                        help="stop a client statement whose REGEXP matching takes longer, before it reaches the log "
                             f"(default {DEFAULT_MAX_REGEXP_SECONDS:g}; 0: no limit)")
    parser.add_argument("--max-log-mb", type=int, default=DEFAULT_MAX_LOG_MB, metavar="MIB",
                        help="compact the Raft log once its entries take this many MiB, which this node also "
                             f"holds in memory (default {DEFAULT_MAX_LOG_MB})")
    parser.add_argument("--max-transaction-mb", type=int, default=DEFAULT_MAX_TRANSACTION_MB, metavar="MIB",
                        help="refuse the statement that would take a transaction's statements and parameters "
                             f"past this many MiB (default {DEFAULT_MAX_TRANSACTION_MB})")
    parser.add_argument("--drain-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, how long clients' running requests and open transactions "
                             "may take to finish before the node stops (default 5)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        secret, secret_fallbacks = read_secrets(args.secret, args.secret_file)
        config = NodeConfig(
            bind=args.bind,
            data_dir=args.data_dir,
            peers=_addresses(args.peers),
            client=args.client,
            join=args.join,
            secret=secret,
            secret_fallbacks=secret_fallbacks,
            secret_file=args.secret_file,
            durability=args.durability,
            election_timeout=args.election_timeout,
            allow_remote=args.allow_remote,
            connection_hooks=[load_hook(hook) for hook in args.connection_hook],
            checkpoint_every=args.checkpoint_every,
            drain_timeout=args.drain_timeout,
            idle_transaction_timeout=args.idle_transaction_timeout,
            max_statement_steps=args.max_statement_steps,
            max_regexp_seconds=args.max_regexp_seconds,
            max_log_mb=args.max_log_mb,
            max_transaction_mb=args.max_transaction_mb,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.secret_file and readable_by_others(args.secret_file):
        logging.getLogger("django_dqcluster.store").warning(
            "the secret file %s is readable by other users than its owner: chmod 600 it (whoever reads "
            "the cluster secret can send this node Raft messages, which are pickled)", args.secret_file)
    from .node import Node

    # A crash below Python (a signal from a C library) then leaves its
    # traceback in the node's log instead of nothing.
    faulthandler.enable()
    node = Node(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node.start()
    except OSError as exc:  # a port or the data directory another process holds
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"node {config.bind} serving clients on {config.client}", flush=True)
    try:
        while not stop.wait(0.5):
            if node.failed:  # logged already; a supervisor should see the process end
                return 3
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
