"""A store node: Raft engine + state machine + client server, started and stopped as one.

Run one per host (``python -m django_dqcluster.store``, or ``manage.py
dqcluster_node``), or embedded in a process (``Node(config).start()``) for
single-process use and tests.
"""

import collections
import json
import logging
import os
import secrets
import socket
import threading
import time
import typing

from pysyncobj import FAIL_REASON

from .. import wire
from . import errors, raft, statemachine
from .config import NodeConfig
from .datadir import DataDirLock
from .group_commit import CommitQueue
from .secret_file import SecretFileWatch
from .server import ClientServer
from .transactions import LeaderState
from .statemachine import BARRIER, CHECKPOINT, MEMBER, StateMachine, encode_entry, new_entry_id

logger = logging.getLogger("django_dqcluster.store")

LOCAL_SECRET_FILE = "cluster.secret"  # in the data dir of a one-node store given no secret

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2
ROLE_NAMES = {FOLLOWER: "follower", CANDIDATE: "candidate", LEADER: "leader"}


class AcceptedToken(typing.NamedTuple):
    """A client token a node lets in: what its sessions may do, and whether it comes from a fallback secret."""

    token: str
    read_only: bool
    fallback: bool


class Node:
    def __init__(self, config: NodeConfig, *, engine_class=None, transport_class=None):
        """``engine_class``/``transport_class`` replace the Raft engine or its transport
        (fault-injection tests do); the defaults are the safe subclass and its
        journal-flushing TCP transport."""
        self.config = config
        self._engine_class = engine_class or raft.SafeSyncObj
        self._transport_class = transport_class
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
        self._take_secrets(config.secret or self._local_secret(), config.secret_fallbacks)
        self._secret_watch = None
        self.client_fallback_used_at = None  # time.monotonic() of the last session opened with a fallback
        self.state_machine = StateMachine(
            config.data_dir,
            configure_connection=self._configure_connection,
            busy_timeout=config.busy_timeout,
            fsync=config.durable,
            max_value_bytes=config.max_frame,
            max_regexp_seconds=config.max_regexp_seconds,
        )
        self.state_machine.listeners.append(self._on_applied)
        self.leader_state = LeaderState(self)
        self.engine = None
        self.server = None
        self._barriers = _BarrierGroup(self)
        self._applied = _AppliedWatch(self.state_machine)
        # A follower's strong and weak reads: answered from its replica when
        # the leader said it holds every answered write, or run by the leader
        # (Session._read_on_follower).
        self.follower_reads = {level: FollowerReads() for level in ("strong", "weak")}
        self.follower_transactions = FollowerTransactions()
        # The term whose leader could not go on with a transaction that read
        # here (an older release; Session._move_to_leader).
        self._term_without_follower_transactions = None
        self.state_machine.listeners.append(self._applied.on_applied)
        self.commit_queue = CommitQueue()
        self._deadlines = _DeadlineWatch(self)
        self._stopping = threading.Event()
        self._housekeeper = None
        self._entries_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._servers_written = None
        # A full disk fails this write every housekeeping turn (4 a second).
        self._servers_file_unwritable = raft.RateLimitedWarning(
            "cannot write the member list ({reason}); restarts use the last one written", interval=60.0)
        self._datadir_lock = DataDirLock(config.data_dir)
        self.started_at = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        # Before anything reads or writes the journal or the databases.
        self._datadir_lock.acquire(self.config.bind, self.config.client)
        try:
            self._check_raft_port()
            peers = self._start_engine()
        except BaseException:
            self._datadir_lock.release()
            raise
        self.state_machine.databases.publish_instance()
        self.server = ClientServer(self)
        try:
            self.server.start()
        except BaseException:
            # Leave nothing running on this data dir: a later start (in an
            # embedded process, the next connection attempt) opens it again.
            self.server = None  # it never listened
            self.stop()
            self.engine = None
            raise
        self.started_at = time.time()
        if self.config.secret_file:
            self._secret_watch = SecretFileWatch(self.config.secret_file, (self.secret, *self.secret_fallbacks),
                                                 self.use_secrets, self.config.secret_check_interval).start()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="dqcluster-housekeeping", daemon=True)
        self._housekeeper.start()
        self._deadlines.start()
        if self.config.join and self.config.bind not in peers:
            # Our engine runs first, so the leader can replicate to us as soon
            # as it adds us: growing from one node to two needs both to commit
            # the change itself.
            self._request_membership(self.config.join)
        logger.info("node %s started (client %s, data %s)", self.config.bind, self.config.client, self.config.data_dir)
        return self

    def _check_raft_port(self):
        """Fail now, naming the address, if another process holds the Raft port.

        pysyncobj retries a failed bind forever and says nothing: the node
        would serve its clients and never hear from its peers.
        """
        host, port = wire.parse_host_port(self.config.bind)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pysyncobj binds it
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen for Raft on {self.config.bind}: {exc.strerror}") from None

    def _start_engine(self):
        """Create the Raft engine (it opens the journal and starts ticking); returns its peers."""
        peers = list(self.config.peers)
        fresh_member = False
        if self.config.join:
            peers = self._members_via(self.config.join)
            # Asking to be added, it never acknowledged anything before: its
            # empty log is all it ever held, and it votes as any member does.
            # (A member coming back through --join after losing its disk is
            # already listed: it catches up first, see raft.SafeSyncObj.)
            fresh_member = self.config.bind not in peers
        elif not peers:
            peers = self._known_servers()
        conf = raft.make_conf(
            journal_file=self.config.journal_file,
            dump_file=self.config.snapshot_file,
            serializer=self.state_machine.write_snapshot,
            deserializer=lambda filename: self.state_machine.read_snapshot(filename, raft.make_node),
            on_state_changed=self._on_state_changed,
            election_timeout=self.config.election_timeout,
            bind_address="{}:{}".format(*wire.parse_host_port(self.config.bind)),
        )
        extra = {"transportClass": self._transport_class} if self._transport_class else {}
        self.engine = self._engine_class(
            self.config.bind, peers, conf, self.state_machine, secret=self.secret,
            secret_fallbacks=self.secret_fallbacks, durable=self.config.durable,
            catching_up_file=self.config.catching_up_file, fresh_member=fresh_member,
            vote_promise_file=self.config.vote_promise_file,
            max_log_bytes=self.config.max_log_bytes, **extra
        )
        self.engine.command_source = self.commit_queue.take
        return peers

    def stop(self):
        """Stop gracefully: drain the clients, hand leadership over, then shut down.

        Clients finish what they started (up to ``drain_timeout``) and are
        told to go elsewhere; a leader then makes its most caught-up follower
        leader at once (Raft's TimeoutNow), so writes pause for one round of
        votes instead of an election timeout. A killed node does neither: the
        others elect a leader when they miss it.
        """
        # First of all: clients on this host stop reading our files, which
        # stop being kept up to date.
        self.state_machine.databases.withdraw_instance()
        if (self.server is not None and self.engine is not None and not self._stopping.is_set()
                and not self.failed):  # a node that stopped on its own has no Raft left to finish with
            still_busy = self.server.drain(self.config.drain_timeout)
            if still_busy:
                logger.warning("node %s: %d client(s) still busy after %gs; their open transactions roll back",
                               self.config.bind, still_busy, self.config.drain_timeout)
            self._hand_over_leadership(timeout=2 * self.config.election_timeout[1])
        self._stopping.set()
        if self._secret_watch is not None:
            self._secret_watch.stop()
        if self.server is not None:
            self.server.stop()
        if self.engine is not None:
            self.engine.destroy_synchronous()
            # A snapshot still being written would be put in place after the
            # data directory is released, under a node started on it next.
            self.engine.finish_snapshot_writing(timeout=10.0)
        self.leader_state.abort_all("the node is shutting down")
        self.state_machine.close()
        self._datadir_lock.release()

    # -- the cluster secret ------------------------------------------------------------------------

    def _take_secrets(self, secret, fallbacks):
        self.secret, self.secret_fallbacks = secret, tuple(fallbacks)
        # Clients present the token of the secret (forwarding sessions too) or,
        # while the cluster moves to a new secret, of a fallback.
        self.token = wire.client_token(secret)
        self.accepted_tokens = tuple(
            AcceptedToken(wire.client_token(one, read_only), read_only, fallback=index > 0)
            for index, one in enumerate((secret, *fallbacks))
            for read_only in (False, True)
        )

    def use_secrets(self, secret, fallbacks):
        """Seal and sign with ``secret`` from now on, and accept ``fallbacks`` besides it.

        What a changed secret file leads to, one step of a rotation. Raft
        messages are sealed with the new keys from the next one on; client
        sessions opened with a secret no longer accepted are closed (their
        drivers reconnect with what they hold now, or are refused).
        """
        cipher = getattr(self.engine, "encryptor", None)
        if cipher is not None:
            # It derives the keys, then swaps them in: the Raft thread never waits for PBKDF2.
            cipher.use(secret, fallbacks)
        self._take_secrets(secret, fallbacks)
        if self.server is not None:
            self.server.close_sessions_not_accepted()

    def _hand_over_leadership(self, timeout):
        engine = self.engine
        if not self.is_leader() or not any(engine.isNodeConnected(raft.make_node(address))
                                           for address in engine.other_member_addresses()):
            return  # nobody to hand over to (the last member of a cluster being stopped)
        engine.request_handover()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            successor = self.leader_address()
            if not self.is_leader() and successor not in (None, self.config.bind):
                logger.info("node %s handed leadership to %s", self.config.bind, successor)
                return
            time.sleep(0.005)
        engine.cancel_handover()
        logger.warning("node %s could not hand leadership over within %gs; the others will elect a leader "
                       "when they miss it", self.config.bind, timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_ready(self, timeout=30.0):
        """Block until this node knows a leader and has applied what it committed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leader_address() and self.engine.raftLastApplied >= self.engine.raftCommitIndex:
                if self.is_leader() or self.leader_client_address():
                    return True
            time.sleep(0.02)
        raise TimeoutError(f"node {self.config.bind}: no leader within {timeout}s")

    # -- identity and roles ------------------------------------------------------------------

    def is_leader(self):
        return self.engine is not None and self.engine._isLeader()

    def role(self):
        if self.engine is None:
            return "stopped"
        return ROLE_NAMES.get(self.engine._SyncObj__raftState, "unknown")

    def leader_address(self):
        leader = self.engine._getLeader() if self.engine is not None else None
        return leader.address if leader is not None else None

    def leader_client_address(self):
        leader = self.leader_address()
        if leader is None:
            return None
        if leader == self.config.bind:
            return self.config.client
        return self.state_machine.members.get(leader)

    def writable_entry_format(self):
        """The entry format this node writes as leader: the newest every member applies (see statemachine)."""
        return statemachine.writable_entry_format(self.state_machine.entry_formats,
                                                  self.engine.other_member_addresses())

    def servers(self):
        """The known servers (the seed's ServerStore): Raft and client addresses of every member.

        The Raft configuration says who is a member; the members' announcements
        only add their client addresses. An announcement outlives its member
        when a node comes back under another Raft address with the same data (a
        local cluster restarted on other ports, a re-addressed host): listing
        it would send clients, and restarts without --peers, to an address
        nobody serves.
        """
        members = dict(self.state_machine.members)
        members[self.config.bind] = self.config.client
        if self.engine is None:
            return [{"raft": r, "client": c} for r, c in sorted(members.items())]
        raft_members = [self.config.bind, *self.engine.other_member_addresses()]  # (all of them, even mid-round)
        return [{"raft": r, "client": members.get(r)} for r in sorted(set(raft_members))]

    def serving_problem(self):
        """Why this node turns clients away now (their drivers go to another node), or None."""
        if self.state_machine.diverged:
            return self.state_machine.diverged
        if self.failed:
            return self.failed
        stall = getattr(self.engine, "apply_stall", None)
        if stall is not None and stall.stuck:
            # Its replica stays behind: strong reads and the answers to
            # forwarded writes would wait for it.
            return f"it cannot apply entry {stall.index}: {stall.reason}"
        return None

    def check_serving(self):
        problem = self.serving_problem()
        if problem is not None:
            # Diverged or stopped: for good. Stuck on an entry: until there is room.
            for_now = not (self.state_machine.diverged or self.failed)
            raise errors.StoreError(wire.OPERATIONAL, f"node {self.config.bind} stopped serving: {problem}",
                                    retryable=for_now)

    @property
    def failed(self):
        """Why this node stopped on its own (its Raft journal could not be written), or None."""
        return getattr(self.engine, "failed", None)

    # -- replication --------------------------------------------------------------------------

    def submit(self, entry, timeout=None):
        """Append ``entry`` to the log and wait until it is committed and applied here."""
        return self.enqueue(entry).wait(timeout)

    def enqueue(self, entry, on_done=None, on_outcome=None, announce=False, patience=0.0, size=0):
        """Hand ``entry`` to Raft and return at once; entries are appended in the order enqueued.

        That order is what lets a session release its database's write lock
        before the entry commits: the next writer's entry lands after it in
        the log, so several clients' commits travel together (pipelining).
        ``on_outcome``: called with the PendingEntry once its outcome is known
        (or the commit timeout passed), instead of a thread waiting for it.
        ``announce``: tell the followers it is committed as soon as it is
        (a follower that forwarded it waits for that, see wait_applied).
        ``patience``: seconds to wait for its outcome beyond the commit
        timeout (a large entry takes every node longer: .large_entries).
        ``size``: about how many bytes its statements take (see CommitQueue.put).
        """
        entry.setdefault("id", new_entry_id())
        pending = PendingEntry(self, entry["id"], on_done, on_outcome, announce, patience)
        if on_outcome is not None:
            self._deadlines.watch(pending)
        if self.commit_queue.put(entry, pending, size):
            self.engine.wake()
        return pending

    def wait_applied(self, index, timeout):
        """Wait until this node has applied Raft entry ``index``; False if ``timeout`` passed first."""
        return self._applied.wait(index, timeout)

    def barrier(self, timeout=None):
        """Return once everything committed before the call is applied here.

        What a transaction's start needs: its statements are applied after
        every committed entry, so it must see them all.
        """
        engine = self.engine
        if engine.lease_valid() and engine.raftLastApplied >= engine.raftCommitIndex:
            # A leader holding its lease (alone, or confirmed by a majority
            # within the election timeout) has applied every commit: no round trip.
            return
        self._barriers.wait(self.config.commit_timeout if timeout is None else timeout)

    def read_barrier(self, timeout=None):
        """Return once a read here sees every write answered before the call (linearizable reads).

        On a leader holding its lease that is at once, even while it applies
        entries committed a moment ago (SafeSyncObj.answers_reads_locally):
        under a steady stream of writes, strong reads used to wait for a log
        round trip whenever one was being applied.
        """
        if self.engine.answers_reads_locally():
            return
        self._barriers.wait(self.config.commit_timeout if timeout is None else timeout)

    # -- membership ----------------------------------------------------------------------------

    def add_member(self, raft_address, client_address, timeout=30.0):
        self._membership_change(self.engine.addNodeToCluster, raft_address, timeout)
        self.submit({"kind": MEMBER, "raft": raft_address, "client": client_address})

    def remove_member(self, raft_address, timeout=30.0):
        if raft_address == self.config.bind and self.is_leader():
            # pysyncobj's leader refuses its own removal: the request was
            # retried for 30 s and ended "refused by the leader until the
            # timeout (is it a member already, or not one any more?)".
            raise errors.programming(
                f"{raft_address} is the leader: stop its node first (another member takes over), then remove it"
            )
        self._membership_change(self.engine.removeNodeFromCluster, raft_address, timeout)
        self.submit({"kind": MEMBER, "raft": raft_address, "remove": True})

    def _membership_change(self, change, raft_address, timeout):
        if not self.is_leader():
            raise errors.retryable("membership changes go through the leader")
        deadline = time.monotonic() + timeout
        while True:
            done = threading.Event()
            box = {}
            change(raft_address, callback=lambda result, error: (box.update(error=error), done.set()))
            if not done.wait(max(0.1, deadline - time.monotonic())):
                raise errors.unknown_outcome(f"membership change for {raft_address} timed out")
            if box["error"] == FAIL_REASON.SUCCESS:
                return
            # REQUEST_DENIED: a previous change is not committed yet; retry.
            if box["error"] != FAIL_REASON.REQUEST_DENIED or time.monotonic() > deadline:
                raise _membership_failure(raft_address, box["error"])
            time.sleep(0.1)

    def _members_via(self, client_address):
        """The Raft members a running member knows (we start our engine with them)."""
        from ..dbapi.transport import SocketTransport  # the node is a client of its peers here

        transport = SocketTransport([client_address], token=self.token, timeout=30.0)
        try:
            reply = transport.request({"op": "servers"})
        finally:
            transport.close()
        return [server["raft"] for server in reply["servers"]]

    def _request_membership(self, client_address, timeout=60.0):
        """Ask the cluster (through any member) to add this node, retrying while it elects."""
        from ..dbapi.transport import SocketTransport

        deadline = time.monotonic() + timeout
        while True:
            transport = None
            try:
                transport = SocketTransport([client_address], token=self.token, timeout=30.0)
                transport.request({"op": "add_member", "raft": self.config.bind, "client": self.config.client})
                return
            except (OSError, wire.ProtocolError, wire.RemoteError) as exc:
                if time.monotonic() > deadline:
                    raise errors.operational(f"could not join the cluster through {client_address}: {exc}") from None
                logger.warning("joining through %s: %s; retrying", client_address, exc)
                time.sleep(0.5)
            finally:
                if transport is not None:
                    transport.close()

    # -- status ----------------------------------------------------------------------------------

    def _fallback_status(self):
        """While the cluster moves to a new secret: is the old one still in use here, and by whom?

        Seconds since a peer's Raft message, or a client session, last needed a
        fallback secret (None: not since this node started); None when this
        node has no fallbacks.
        """
        if not self.secret_fallbacks:
            return None
        now = time.monotonic()
        cipher = getattr(self.engine, "encryptor", None)

        def ago(moment):
            return None if moment is None else round(now - moment, 1)

        return {"count": len(self.secret_fallbacks),
                "raft_seconds_ago": ago(cipher.fallback_used_at if cipher is not None else None),
                "clients_seconds_ago": ago(self.client_fallback_used_at)}

    def leader_continues_follower_transactions(self):
        """May a deferred transaction begin on this follower (Session._begin_on_follower)?"""
        return self._term_without_follower_transactions != self.engine.raftCurrentTerm

    def leader_cannot_continue_follower_transactions(self):
        """This term's leader runs an older release: its transactions begin there (until the leader changes)."""
        self._term_without_follower_transactions = self.engine.raftCurrentTerm

    def status(self):
        engine = self.engine
        raw = engine.getStatus()
        members = []
        for server in self.servers():
            address = server["raft"]
            entry = {"raft": address, "client": server["client"],
                     # The newest entry format its code applies (None: not said; UNANNOUNCED_FORMAT then).
                     "applies": self.state_machine.entry_formats.get(address)}
            if address == self.config.bind:
                entry["role"] = self.role()
                entry["connected"] = True
            else:
                entry["role"] = "leader" if address == self.leader_address() else "follower"
                entry["connected"] = raw.get(f"partner_node_status_server_{address}") == 2
                if self.is_leader():
                    entry["match_index"] = raw.get(f"match_idx_server_{address}")
            members.append(entry)
        return {
            "node": self.config.bind,
            "client": self.config.client,
            "role": self.role(),
            "leader": self.leader_address(),
            "leader_client": self.leader_client_address(),
            "term": engine.raftCurrentTerm,
            "commit_index": engine.raftCommitIndex,
            "applied_index": engine.raftLastApplied,
            "log_length": raw.get("log_len"),
            "has_quorum": raw.get("has_quorum"),
            # Lost entries it had acknowledged (an emptied or restored data
            # directory): no vote until it holds what the leader had committed.
            "catching_up": engine.catching_up,
            "catching_up_to": engine.catching_up_to,
            # Sent the leader's snapshot (it fell behind the leader's log): its databases are being replaced.
            "installing_snapshot": engine.installing_snapshot,
            "durability": self.config.durability,
            "diverged": self.state_machine.diverged,
            "last_checkpoint": self.state_machine.last_checkpoint,
            "fatal": self.failed or self.state_machine.fatal,
            "databases": self.state_machine.databases.names(),
            # On the leader: who holds each database's write lock, and for how
            # long (what a writer told "database is locked" waits for).
            "write_locks": {name: {"holder": holder, "seconds": round(seconds, 1)}
                            for name, (holder, seconds) in self.state_machine.databases.write_lock_holders().items()},
            "members": members,
            # On a follower: the strong and weak reads it answered itself, and
            # those the leader ran (this replica had not applied every answered
            # write yet, or the leader runs an older release).
            "follower_reads": {level: reads.counts() for level, reads in self.follower_reads.items()},
            # On a follower: the deferred transactions begun here, those moved
            # to the leader at their first write, and those the leader ran
            # from their first read (this replica had not applied every
            # answered write yet).
            "follower_transactions": self.follower_transactions.counts(),
            # What it would write as leader: below its own format while a member runs an older release.
            "entry_format": self.writable_entry_format(),
            "uptime": time.time() - self.started_at if self.started_at else 0,
            "secret_fallbacks": self._fallback_status(),
            # Started from a secret file: whether its content is in use, and when it last changed.
            "secret_file": self._secret_watch.status() if self._secret_watch is not None else None,
        }

    # -- internals -------------------------------------------------------------------------------

    def _local_secret(self):
        """A one-node store without a configured secret makes its own, readable only by its owner."""
        path = os.path.join(self.config.data_dir, LOCAL_SECRET_FILE)
        try:
            with open(path) as handle:
                return handle.read().strip()
        except FileNotFoundError:
            value = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(value + "\n")
            return value

    def _configure_connection(self, conn):
        for hook in self.config.connection_hooks:
            hook(conn)

    def _on_state_changed(self, old, new):
        if new == LEADER:
            logger.info("node %s is the leader", self.config.bind)
        if old == LEADER and new != LEADER:
            logger.warning("node %s lost leadership", self.config.bind)
            self.leader_state.abort_all("leadership was lost in the middle of the transaction")

    def _on_applied(self, kind, entry):
        # (the housekeeping thread persists member changes to servers.json)
        if kind not in (BARRIER, CHECKPOINT):
            self._entries_since_checkpoint += 1

    def _known_servers(self):
        """Raft addresses this node last knew (the seed's ServerStore), for a restart without --peers."""
        try:
            with open(self.config.servers_file) as handle:
                known = json.load(handle)
        except (OSError, ValueError):
            return []
        return [server["raft"] for server in known if server["raft"] != self.config.bind]

    def _write_servers_file(self):
        """Persist the member list: Raft membership as the engine knows it, plus client addresses."""
        if self.engine is None:
            return
        servers = self.servers()
        if servers == self._servers_written:
            return
        path = self.config.servers_file
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as handle:
                json.dump(servers, handle)
            os.replace(tmp, path)
        except OSError as exc:
            self._servers_file_unwritable.report(f"{path}: {exc.strerror or exc}")
            return
        self._servers_written = servers

    def _housekeeping(self):
        """Announce our client address; as leader, append checkpoint hashes and abort idle transactions."""
        while not self._stopping.wait(0.25):
            try:
                if self.config.idle_transaction_timeout and self.is_leader():
                    self.leader_state.abort_idle(self.config.idle_transaction_timeout)
                self._write_servers_file()
                if self.engine.raftLastApplied < self.engine.raftCommitIndex:
                    continue
                if self._announcement_outdated() and self.leader_address():
                    self.submit({"kind": MEMBER, "raft": self.config.bind, "client": self.config.client,
                                 "applies": statemachine.ENTRY_FORMAT}, timeout=5)
                if self.is_leader() and (
                    self._entries_since_checkpoint >= self.config.checkpoint_every
                    or (self._entries_since_checkpoint and time.monotonic() - self._last_checkpoint > 10)
                ):
                    self._entries_since_checkpoint = 0
                    self._last_checkpoint = time.monotonic()
                    machine = self.state_machine
                    self.submit({"kind": CHECKPOINT, "upto": machine.last_index, "hash": machine.hash}, timeout=5)
            except errors.StoreError as exc:
                logger.debug("housekeeping: %s", exc)
            except Exception:  # keep the thread alive: it is what makes the node discoverable
                logger.exception("housekeeping failed")

    def _announcement_outdated(self):
        """Whether the cluster's record of this member (client address, entry formats it applies) is not what it runs."""
        machine, bind = self.state_machine, self.config.bind
        return (machine.members.get(bind) != self.config.client
                or machine.entry_formats.get(bind) != statemachine.ENTRY_FORMAT)


def _membership_failure(raft_address, reason):
    """The client's error for a membership change pysyncobj failed with ``reason``: retryable if not applied."""
    if reason == FAIL_REASON.REQUEST_DENIED:  # after retrying it for the whole timeout
        return errors.operational(f"membership change for {raft_address} was refused by the leader until the "
                                  "timeout (is it a member already, or not one any more? dqcluster_members lists "
                                  "them)")
    if reason in raft.NOT_APPLIED:
        return errors.retryable(f"membership change for {raft_address} was not applied: "
                                f"{raft.NOT_APPLIED[reason]}; retry it")
    if reason in raft.OUTCOME_UNKNOWN:
        return errors.unknown_outcome(f"membership change for {raft_address}: {raft.OUTCOME_UNKNOWN[reason]}; "
                                      "list the members to see whether it happened")
    return errors.operational(f"membership change for {raft_address} failed (pysyncobj error {reason})")


class PendingEntry:
    """An entry handed to Raft whose outcome a client waits for.

    Either a thread waits for it (``wait``), or ``on_outcome`` is called
    once with it: on the Raft thread as soon as the outcome is known, or by
    the node's deadline watch when none arrived within the commit timeout.
    """

    def __init__(self, node, entry_id, on_done=None, on_outcome=None, announce=False, patience=0.0):
        self._node = node
        self.entry_id = entry_id
        #: Seconds its outcome is waited for.
        self.timeout = node.config.commit_timeout + patience
        self._announce = announce
        self.index = None  # the Raft index it was applied at
        self._on_done = on_done
        self._on_outcome = on_outcome
        # Nobody waits on an entry answered by callback: no Event to build
        # (a Condition and two locks, a measurable share of a commit's cost).
        self._done = threading.Event() if on_outcome is None else None
        self._resolved = False
        self._delivered = False
        self._delivery_lock = threading.Lock()
        self.result = None
        self.error = None

    def resolve(self, result, error):
        # Runs on the Raft thread.
        if error == FAIL_REASON.SUCCESS:
            # Acknowledge only what the journal holds on disk (fsync mode).
            self._node.engine.flush_journal()
            # Called right after the state machine applied it.
            self.index = self._node.state_machine.last_index
            if self._announce:
                self._node.engine.announce_commit()
        self.result, self.error = result, error
        if self._on_done is not None:
            self._on_done()
        self._resolved = True
        if self._done is not None:
            self._done.set()
        if self._on_outcome is not None:
            self._deliver()

    def expire(self):
        """The commit timeout passed: deliver "outcome unknown" unless the outcome came first."""
        self._deliver()

    def _deliver(self):
        with self._delivery_lock:
            if self._delivered:
                return
            self._delivered = True
        try:
            self._on_outcome(self)
        except Exception:  # on the Raft thread: never let a client's answer break the tick
            logger.exception("answering entry %s failed", self.entry_id)
        finally:
            # The deadline watch holds every answered entry for the commit
            # timeout: keep it from holding the result and the session too.
            self._on_outcome = self.result = None

    def wait(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        if self._done is None:
            raise RuntimeError("an entry answered by on_outcome cannot be waited for")
        if not self._done.wait(timeout):
            raise self._no_answer(timeout)
        return self.outcome()

    def outcome(self):
        """The entry's result; raises if it failed or its outcome is not known (yet)."""
        if not self._resolved:
            raise self._no_answer(self.timeout)
        if self.error == FAIL_REASON.SUCCESS:
            return self.result
        if self.error in raft.NOT_APPLIED:
            raise errors.retryable(f"transaction not committed, safe to retry: {raft.NOT_APPLIED[self.error]}")
        raise errors.unknown_outcome(
            f"commit outcome unknown: {raft.OUTCOME_UNKNOWN.get(self.error, f'pysyncobj error {self.error}')} "
            f"(entry {self.entry_id})"
        )

    def _no_answer(self, timeout):
        return errors.unknown_outcome(
            f"commit outcome unknown: the cluster did not answer within {timeout:g}s "
            f"(entry {self.entry_id}); check whether the transaction's effects are present before retrying"
        )


class _DeadlineWatch:
    """Expires entries whose outcome is delivered by callback (no thread waits for them with a timeout)."""

    def __init__(self, node):
        self._node = node
        # (deadline, pending): entries with the commit timeout, in increasing
        # order; those given more (rare: large entries), in any order.
        self._watched = collections.deque()
        self._patient = collections.deque()
        self._thread = None

    def watch(self, pending):
        # deque.append is atomic: no lock on the commit path.
        watched = self._watched if pending.timeout == self._node.config.commit_timeout else self._patient
        watched.append((time.monotonic() + pending.timeout, pending))

    def start(self):
        self._thread = threading.Thread(target=self._run, name="dqcluster-commit-deadlines", daemon=True)
        self._thread.start()

    def _run(self):
        watched = self._watched
        while not self._node._stopping.wait(0.1):
            now = time.monotonic()
            while watched and watched[0][0] <= now:
                _, pending = watched.popleft()
                pending.expire()  # logs, never raises
            for _ in range(len(self._patient)):
                deadline, pending = self._patient.popleft()
                if deadline <= now:
                    pending.expire()
                else:
                    self._patient.append((deadline, pending))


class Counter:
    """A count many threads add to (``+= 1`` on an attribute can lose additions between threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.value = 0

    def add(self):
        with self._lock:
            self.value += 1


class FollowerReads:
    """The reads of one consistency a follower answered itself, and those it had the leader run."""

    def __init__(self):
        self.answered_here = Counter()
        self.sent_to_leader = Counter()

    def counts(self):
        return {"answered_here": self.answered_here.value, "sent_to_leader": self.sent_to_leader.value}


class FollowerTransactions:
    """What became of the deferred transactions clients began on this follower (Session._begin_on_follower)."""

    def __init__(self):
        self.begun_here = Counter()
        self.moved_to_leader = Counter()
        self.run_by_leader = Counter()

    def counts(self):
        return {"begun_here": self.begun_here.value, "moved_to_leader": self.moved_to_leader.value,
                "run_by_leader": self.run_by_leader.value}


class _AppliedWatch:
    """Lets threads wait until the state machine has applied a given Raft index.

    The state machine calls ``on_applied`` after every entry, on the Raft
    thread; it only takes the lock when somebody waits.
    """

    def __init__(self, state_machine):
        self._state_machine = state_machine
        self._cond = threading.Condition()
        self._waiting = 0

    def on_applied(self, kind, entry):
        if self._waiting:
            with self._cond:
                self._cond.notify_all()

    def wait(self, index, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            try:
                while self._state_machine.last_index < index:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1
        return True


class _BarrierGroup:
    """Coalesces concurrent read barriers: one log round trip serves every reader waiting for it.

    A barrier proves leadership and that every entry committed before it is
    applied. A reader may use any barrier *submitted after it arrived*, so
    readers arriving while one is in flight wait for the next one, and that
    next one serves all of them.
    """

    def __init__(self, node):
        self._node = node
        self._cond = threading.Condition()
        self._submitted = 0  # generation of the latest submitted barrier
        self._completed = 0  # generation of the latest finished barrier
        self._in_flight = False
        self._in_flight_since = 0.0
        self._waiting = 0
        self._wanted = 0  # highest generation a waiting reader needs
        self._errors = {}  # generation -> StoreError

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted + 1
            self._wanted = max(self._wanted, target)
            if not self._in_flight:
                self._submit_locked()
            self._waiting += 1
            try:
                while self._completed < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if time.monotonic() - self._in_flight_since > timeout:
                            # Its callback may never come (the entry was lost
                            # with a leadership change): let the next reader start afresh.
                            self._in_flight = False
                        raise errors.retryable(f"read barrier timed out after {timeout:g}s: no leader confirmed")
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1
            error = self._errors.get(target)
        if error is not None:
            raise error

    def _submit_locked(self):
        self._submitted += 1
        self._in_flight = True
        self._in_flight_since = time.monotonic()
        generation = self._submitted
        payload = encode_entry({"kind": BARRIER, "id": new_entry_id()})

        def on_result(result, error):
            with self._cond:
                if error != FAIL_REASON.SUCCESS:
                    reason = raft.NOT_APPLIED.get(error) or raft.OUTCOME_UNKNOWN.get(error, str(error))
                    self._errors[generation] = errors.retryable(f"cannot confirm leadership for a read: {reason}")
                self._errors.pop(generation - 64, None)
                self._completed = generation
                self._in_flight = False
                if self._wanted > generation:
                    # Readers arrived while this one was in flight.
                    self._submit_locked()
                self._cond.notify_all()

        self._node.engine.apply_entry(payload, callback=on_result)
