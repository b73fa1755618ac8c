"""Several store nodes as separate processes on 127.0.0.1: for tests, benchmarks and demos.

    python -m django_dqcluster.store.local_cluster --nodes 3 --dir var/cluster

starts three nodes on free loopback ports, prints their addresses and the
secret file, and keeps them running until interrupted. Started again on the
same directory, the nodes come back with their data on the same addresses
(``addresses.json``). Tests use :class:`LocalCluster` directly (kill -9,
restart, wipe, join, remove).
"""

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from .. import dbapi, wire


def free_ports(count):
    """Ports the kernel hands out now; they stay free long enough for a test."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NodeProcess:
    def __init__(self, cluster, index, raft, client):
        self.cluster = cluster
        self.index = index
        self.raft = raft
        self.client = client
        self.data_dir = os.path.join(cluster.directory, f"node{index}")
        self.log_path = os.path.join(cluster.directory, f"node{index}.log")
        self.process = None

    def start(self, peers=None, join=None, extra_args=(), command=None):
        """Start the node's process; ``command`` (default: the cluster's) runs other code in its
        place, as a member of another release does in a rolling upgrade."""
        if self.alive:
            # Starting again would orphan the running process: it would keep
            # its ports and data dir, unknown to kill() and stop().
            raise RuntimeError(
                f"node {self.index} ({self.raft}) is already running as pid {self.process.pid}; "
                "a LocalCluster used in a with block is started by it"
            )
        os.makedirs(self.data_dir, exist_ok=True)
        args = [
            self.cluster.python, *(self.cluster.command if command is None else command),
            "--bind", self.raft, "--client", self.client, "--data-dir", self.data_dir,
            "--secret-file", self.cluster.secret_file, "--durability", self.cluster.durability,
            "--election-timeout", ",".join(str(t) for t in self.cluster.election_timeout),
            "--log-level", self.cluster.log_level,
        ]
        if join:
            args += ["--join", join]
        elif peers:
            args += ["--peers", ",".join(peers)]
        for hook in self.cluster.connection_hooks:
            args += ["--connection-hook", hook]
        args += list(self.cluster.extra_args) + list(extra_args)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=self.cluster.env, start_new_session=True,
        )
        log.close()
        return self

    @property
    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive:
            self.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.process.wait(timeout=30)

    def stop(self):
        self.kill(signal.SIGTERM)

    def pause(self):
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def wipe(self):
        import shutil

        shutil.rmtree(self.data_dir, ignore_errors=True)

    def connect(self, **kwargs):
        kwargs.setdefault("secret", self.cluster.secret)
        kwargs.setdefault("isolation_level", None)
        kwargs.setdefault("timeout", 20.0)
        return dbapi.connect(self.client, **kwargs)

    def status(self, timeout=5.0):
        conn = self.connect(timeout=timeout)
        try:
            return conn.status()
        finally:
            conn.close()

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()


class LocalCluster:
    def __init__(self, directory, size=3, *, durability="fsync", election_timeout=(0.4, 1.4),
                 connection_hooks=(), extra_args=(), log_level="WARNING", python=None, env=None,
                 command=("-m", "django_dqcluster.store")):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.secret_file = os.path.join(self.directory, "cluster.secret")
        if not os.path.exists(self.secret_file):
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")  # a line: the next secret goes after it
        with open(self.secret_file) as handle:
            self.secret = wire.secrets_in(handle.read())[0]  # the one to use, should it hold fallbacks
        self.durability = durability
        self.election_timeout = election_timeout
        self.connection_hooks = list(connection_hooks)
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.python = python or sys.executable
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, self.env.get("PYTHONPATH")]))
        # A node's Raft address is its identity in the cluster: a node that
        # came back on another port with the same data would be a new member
        # to the others, and its old address a member that never answers.
        self.addresses_file = os.path.join(self.directory, "addresses.json")
        self._recorded = self._read_addresses()
        self.nodes = []
        for _ in range(size):
            self._new_node()

    def _read_addresses(self):
        try:
            with open(self.addresses_file) as handle:
                return [(node["raft"], node["client"]) for node in json.load(handle)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"cannot read the node addresses of {self.directory} from {self.addresses_file}: "
                               f"{exc}; remove the directory to start a new cluster") from None

    def _new_node(self):
        index = len(self.nodes)
        if index < len(self._recorded):
            raft, client = self._recorded[index]
        else:
            # Ask for all ports while holding the ones already used (every
            # node created so far is recorded), or the kernel may hand the
            # same free port to two nodes.
            used = {int(address.rsplit(":", 1)[1]) for pair in self._recorded for address in pair}
            ports = next(pair for pair in iter(lambda: free_ports(2), None) if not used.intersection(pair))
            raft, client = (f"127.0.0.1:{port}" for port in ports)
        node = NodeProcess(self, index, raft, client)
        self.nodes.append(node)
        self._record_addresses()
        return node

    def _record_addresses(self):
        recorded = [(node.raft, node.client) for node in self.nodes]
        recorded += self._recorded[len(recorded):]  # nodes of an earlier run not created (yet) in this one
        if recorded == self._recorded and os.path.exists(self.addresses_file):
            return
        tmp = self.addresses_file + ".tmp"
        with open(tmp, "w") as handle:
            json.dump([{"raft": raft, "client": client} for raft, client in recorded], handle, indent=1)
        os.replace(tmp, self.addresses_file)
        self._recorded = recorded

    @property
    def clients(self):
        return [node.client for node in self.nodes if node.alive]

    def peers_of(self, node):
        """The Raft addresses of every other member: what ``node`` starts with."""
        return [other.raft for other in self.nodes if other is not node]

    def start(self, timeout=30.0):
        for node in self.nodes:
            node.start(peers=self.peers_of(node))
        self.wait_for_leader(timeout)
        return self

    def add_node(self, timeout=30.0):
        """Start one more node that joins through a running member."""
        node = self._new_node()
        node.start(join=self.leader().client)
        self.wait_for(lambda: all(self._knows(n, node.raft) for n in self.nodes if n.alive), timeout,
                      f"{node.raft} to join")
        return node

    def _knows(self, node, raft):
        try:
            return any(m["raft"] == raft for m in node.status()["members"])
        except dbapi.Error:
            return False

    def leader(self, timeout=30.0):
        self.wait_for_leader(timeout)
        return self._leader

    def wait_for_leader(self, timeout=30.0, exclude=()):
        def found():
            for node in self.nodes:
                if not node.alive or node in exclude:
                    continue
                try:
                    status = node.status(timeout=2.0)
                except dbapi.Error:
                    continue
                if status["role"] == "leader" and status["leader_client"]:
                    # Every live member must know the leader's client address too.
                    self._leader = node
                    return True
            return False

        self.wait_for(found, timeout, "a leader", require_alive=True)
        return self._leader

    def wait_for(self, predicate, timeout, what, require_alive=False):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if require_alive and not any(node.alive for node in self.nodes):
                break  # every node exited: waiting longer cannot help
            time.sleep(0.05)
        logs = "\n".join(f"--- node{n.index} ---\n{n.log()[-3000:]}" for n in self.nodes)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def wait_converged(self, timeout=30.0):
        """Until every live node has applied the same index."""
        def converged():
            try:
                statuses = [n.status() for n in self.nodes if n.alive]
            except dbapi.Error:
                return False
            indexes = {s["applied_index"] for s in statuses}
            return len(indexes) == 1 and all(s["applied_index"] >= s["commit_index"] for s in statuses)

        self.wait_for(converged, timeout, "all nodes to apply the same index")

    def stop(self):
        for node in self.nodes:
            node.stop()

    def __enter__(self):
        return self.start()

    def kill(self):
        """kill -9 every live node (what a test's clean-up needs: no waiting)."""
        for node in self.nodes:
            if node.alive:
                node.kill()

    def __exit__(self, *exc):
        self.kill()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run a local multi-node store on 127.0.0.1.")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--dir", default="var/cluster")
    parser.add_argument("--durability", default="fsync", choices=("fsync", "process"))
    parser.add_argument("--connection-hook", action="append", default=[])
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir, args.nodes, durability=args.durability,
                           connection_hooks=args.connection_hook, log_level="INFO")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with cluster:
        print(f"{args.nodes}-node store running; secret file {cluster.secret_file}")
        for node in cluster.nodes:
            print(f"  node{node.index}: raft {node.raft}  client {node.client}  log {node.log_path}")
        print("clients:", ",".join(cluster.clients), flush=True)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        print("stopping the nodes", flush=True)
        # One by one, each draining its clients and handing leadership over;
        # leaving the with block kills -9 only what did not stop.
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
