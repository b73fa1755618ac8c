"""The floor under one replicated commit on this machine: run by hand, prints one table.

    python bench/commit_floor.py [--ops 5000] [--dir DIR]

What a single-row commit on a 3-node cluster cannot get below here, whatever
the Raft library: a client asks a leader process; the leader sends the record
to two follower processes and appends it to its own file; each follower
appends it and fdatasyncs before it answers; the leader answers the client
once its own flush and one follower's answer are in (a majority of three).
Plain sockets on 127.0.0.1 and a 300-byte record: no serialization, sealing,
SQL, threads or library code, so what is left is the machine's part (four
process wake-ups, three flushes on the one disk the nodes share).

Then the lean chain: the same three processes doing the store's own work
for each commit with the store's real parts (msgpack client frames, the
statement's classification, pickled and sealed AppendEntries and replies,
pysyncobj's journal file, the SQLite apply on every node) and nothing of a
Raft core around them (no tick, timers, queues or thread hand-offs). It is
what a leaner replication core could at best reach on this machine.

In the same run, the store's driver INSERT with one client on a 3-node
LocalCluster connected to the leader, as in bench/store_bench.py: its ratio
to the bare chain says how much of a commit is the store's own software
(pysyncobj's tick and messages, sealing, the session, the SQLite apply)
rather than the machine, and its ratio to the lean chain how much of it is
the Raft core's. Timings here are too noisy for tests.

Each row also gives the CPU time (user + system, from /proc) the run used per
commit: in the server processes (leader and followers together) and in the
client. On a machine with few cores that is the other half of the story: a
commit's steps wait for a core as well as for each other.
"""

import argparse
import multiprocessing
import os
import pickle
import resource
import select
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pysyncobj.journal import FileJournal  # noqa: E402

from django_dqcluster import wire  # noqa: E402
from django_dqcluster.store.cipher import RaftCipher  # noqa: E402
from django_dqcluster.store.classify import Classifier  # noqa: E402
from django_dqcluster.store.determinism import FixedValues  # noqa: E402
from django_dqcluster.store.local_cluster import LocalCluster  # noqa: E402
from django_dqcluster.store.statemachine import TX, StateMachine, encode_entry, new_entry_id  # noqa: E402

RECORD = 300  # bytes: about one single-row INSERT entry
ACK = b"k"
IO_TIMEOUT = 10.0  # seconds: every blocking step of the chain gives up after this
WARM_UP = 200
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _recv_exactly(conn, size):
    """``size`` bytes from ``conn``, or None once the other side closed."""
    chunks, missing = [], size
    while missing:
        try:
            chunk = conn.recv(missing)
        except ConnectionResetError:
            # The leader closes with the slower follower's last ack unread.
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _answer(conn, data):
    """Send a follower's ack; False once the leader has gone (it closes after its last commit,
    while the slower follower may still be answering it)."""
    try:
        conn.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        return False
    return True


def _accept(listener):
    conn, _ = listener.accept()
    conn.settimeout(IO_TIMEOUT)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.close()
    return conn


def _connect(address):
    conn = socket.create_connection(address, timeout=IO_TIMEOUT)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _append(fd, record, flush):
    os.write(fd, record)
    if flush:
        os.fdatasync(fd)


def follower(listener, path, flush):
    """Append each record (and flush it) before answering it."""
    leader = _accept(listener)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (record := _recv_exactly(leader, RECORD)) is not None:
            _append(fd, record, flush)
            if not _answer(leader, ACK):
                break
    finally:
        os.close(fd)
        leader.close()


def leader(listener, follower_addresses, path, flush):
    """Send each record to both followers, append (and flush) it, answer after one follower's ack."""
    followers = [_connect(address) for address in follower_addresses]
    client = _accept(listener)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    acks = {conn: 0 for conn in followers}
    try:
        sent = 0
        while (record := _recv_exactly(client, RECORD)) is not None:
            sent += 1
            for conn in followers:
                conn.sendall(record)
            _append(fd, record, flush)
            # A majority of three: this node plus the first follower to answer.
            # The other one's ack is counted whenever it arrives.
            while max(acks.values()) < sent:
                ready, _, _ = select.select(followers, [], [], IO_TIMEOUT)
                if not ready:
                    raise TimeoutError("no follower answered")
                for conn in ready:
                    data = conn.recv(4096)
                    if not data:
                        raise ConnectionError("a follower closed its connection")
                    acks[conn] += len(data)
            client.sendall(ACK)
    finally:
        os.close(fd)
        client.close()
        for conn in followers:
            conn.close()


def _listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _start_chain(leader_target, follower_target, paths, flush):
    """Fork a chain's leader and two followers; returns (client socket, processes).

    ``paths``: the leader's, then each follower's file or data dir.
    """
    context = multiprocessing.get_context("fork")  # the children inherit their listeners
    listeners = [_listener() for _ in range(3)]
    addresses = [sock.getsockname() for sock in listeners]
    processes = [
        context.Process(target=follower_target, args=(listeners[i], paths[i], flush), daemon=True) for i in (1, 2)
    ]
    processes.append(context.Process(target=leader_target, args=(listeners[0], addresses[1:], paths[0], flush),
                                     daemon=True))
    for process in processes:
        process.start()
    for sock in listeners:
        sock.close()
    return _connect(addresses[0]), processes


def _stop_chain(conn, processes):
    conn.close()
    for process in processes:
        process.join(IO_TIMEOUT)
        if process.is_alive():
            process.kill()


def bare_chain(directory, ops, flush):
    """Latencies (seconds) of ``ops`` commits through the bare three-process chain."""
    tag = "flush" if flush else "noflush"
    paths = [os.path.join(directory, name) for name in (f"l-{tag}", f"f1-{tag}", f"f2-{tag}")]
    conn, processes = _start_chain(leader, follower, paths, flush)
    record = b"r" * RECORD

    def commit():
        conn.sendall(record)
        if _recv_exactly(conn, len(ACK)) != ACK:
            raise ConnectionError("the bare chain's leader stopped answering (see its traceback above)")

    try:
        return _timed(ops, commit, [process.pid for process in processes])
    finally:
        _stop_chain(conn, processes)


# -- the lean chain: the store's own work per commit, in the bare chain's shape ----------------
#
# What a leaner replication core would still have to do for each commit, with
# the store's real parts: the client protocol's msgpack frames, the leader's
# statement classification and entry encoding, pysyncobj's journal file (the
# same FileJournal class) and its pickled AppendEntries and replies, sealed
# with the store's RaftCipher, and the StateMachine applying the entry to
# SQLite (on the leader before it answers; on each follower after its reply,
# once the next message tells it the entry committed). What it leaves out is
# everything a real core also needs between those steps: a Raft thread and
# its tick, elections, timers, leases, queues and hand-offs between threads.
# No Raft state is kept beyond an index; a measurement, not a store.

LEAN_SECRET = "commit-floor lean chain"
LEAN_SQL = "INSERT INTO t (v) VALUES (?)"


def _lean_parts(data_dir, flush):
    """(journal, append(command, index), cipher, state machine) of one lean node."""
    os.makedirs(data_dir, exist_ok=True)
    journal = FileJournal(os.path.join(data_dir, "journal"))
    fd = journal._FileJournal__journalFile._ResizableFile__f.fileno()

    def append(command, index):
        journal.add(command, index, 1)
        if flush:
            os.fdatasync(fd)  # as the store's flush_journal on Linux: covers the mmap's pages

    return journal, append, RaftCipher(LEAN_SECRET), StateMachine(data_dir, fsync=flush)


def _sealed_frame(cipher, message):
    data = cipher.encrypt_at_time(pickle.dumps(message, 4), 0)
    return len(data).to_bytes(4, "big") + data


def _open_frame(cipher, conn):
    header = _recv_exactly(conn, 4)
    if header is None:
        return None
    body = _recv_exactly(conn, int.from_bytes(header, "big"))
    return None if body is None else pickle.loads(cipher.decrypt(body))


def _apply_command(state_machine, command, index):
    _, (payload,) = pickle.loads(command[1:])
    return state_machine.apply(payload, index)


def lean_follower(listener, data_dir, flush):
    journal, append, cipher, state_machine = _lean_parts(data_dir, flush)
    leader = _accept(listener)
    applied = last = 0
    try:
        while (message := _open_frame(cipher, leader)) is not None:
            for command, index, _ in message["entries"]:
                append(command, index)
                last = index
            if not _answer(leader, _sealed_frame(cipher, {
                "type": "next_node_idx", "term": 1, "next_node_idx": last + 1, "success": True,
                "lease_echo": message["lease_ts"],
            })):
                break
            # After the reply, as pysyncobj's tick does: what the leader says is committed.
            while applied < min(message["commit_index"], last):
                applied += 1
                _apply_command(state_machine, journal[applied - 1][0], applied)
    finally:
        leader.close()
        state_machine.close()


def lean_leader(listener, follower_addresses, data_dir, flush):
    _, append, cipher, state_machine = _lean_parts(data_dir, flush)
    classifier = Classifier()
    database = state_machine.databases.get("bench")
    followers = [_connect(address) for address in follower_addresses]
    client = _accept(listener)
    reader = wire.FrameReader(client, wire.DEFAULT_MAX_FRAME)
    read_connection = database.borrow_reader()
    acks = {conn: 0 for conn in followers}
    index = 0
    try:
        while True:
            try:
                request = reader.read()
            except wire.ConnectionClosed:
                return
            sql, params = request["sql"], request["params"]
            info = classifier(read_connection, sql, params, database.path)
            if not info.writes or info.refusal():
                raise RuntimeError(f"the lean chain commits writes only: {sql}")
            values = FixedValues.fresh()
            payload = encode_entry({
                "kind": TX, "id": new_entry_id(), "db": "bench", "now": values.now, "seed": values.seed,
                "pragmas": {}, "stmts": [[0, sql, params, False, False]], "want_result": True,
            })
            command = b"\0" + pickle.dumps((0, (payload,)), 4)
            index += 1
            message = {
                "type": "append_entries", "term": 1, "commit_index": index - 1, "prevLogIdx": index - 1,
                "prevLogTerm": 1, "entries": [(command, index, 1)], "lease_ts": time.monotonic(),
            }
            for conn in followers:
                conn.sendall(_sealed_frame(cipher, message))
            append(command, index)
            while max(acks.values()) < index:
                ready, _, _ = select.select(followers, [], [], IO_TIMEOUT)
                if not ready:
                    raise TimeoutError("no follower answered")
                for conn in ready:
                    reply = _open_frame(cipher, conn)
                    if reply is None:
                        raise ConnectionError("a follower closed its connection")
                    acks[conn] = reply["next_node_idx"] - 1
            result = _apply_command(state_machine, command, index)
            response = {"id": request["id"], "ok": True, "in_tx": False, **result["results"][0]}
            client.sendall(wire.pack(response))
    finally:
        client.close()
        for conn in followers:
            conn.close()
        state_machine.close()


def lean_chain(directory, ops, flush):
    """Latencies of ``ops`` INSERTs through the lean chain (see above), one client sending msgpack frames."""
    tag = "flush" if flush else "noflush"
    paths = [os.path.join(directory, name) for name in (f"lean-l-{tag}", f"lean-f1-{tag}", f"lean-f2-{tag}")]
    conn, processes = _start_chain(lean_leader, lean_follower, paths, flush)
    reader = wire.FrameReader(conn, wire.DEFAULT_MAX_FRAME)
    numbers = iter(range(1, 1 << 62))

    def execute(sql, params):
        conn.sendall(wire.pack({"id": next(numbers), "op": "exec", "sql": sql, "params": params}))
        try:
            response = reader.read()
        except wire.ConnectionClosed:
            raise ConnectionError("the lean chain's leader stopped answering (see its traceback above)") from None
        if not response.get("ok"):
            raise RuntimeError(f"the lean chain failed: {response}")

    try:
        execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)", [])
        return _timed(ops, lambda: execute(LEAN_SQL, ["v" * 200]), [process.pid for process in processes])
    finally:
        _stop_chain(conn, processes)


def lone_flush(directory, ops):
    """Latencies of appending a record to a file and fdatasyncing it, in this process (the "client")."""
    fd = os.open(os.path.join(directory, "lone"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"r" * RECORD
    try:
        return _timed(ops, lambda: _append(fd, record, True))
    finally:
        os.close(fd)


def driver_inserts(directory, ops, durability):
    """Latencies of one client's single-row INSERTs on a 3-node LocalCluster, through the leader."""
    with LocalCluster(os.path.join(directory, f"cluster-{durability}"), 3, durability=durability) as cluster:
        conn = cluster.leader().connect()
        try:
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            return _timed(ops, lambda: conn.execute("INSERT INTO t (v) VALUES (?)", ("v" * 200,)),
                          [node.process.pid for node in cluster.nodes])
        finally:
            conn.close()


def _timed(ops, operation, server_pids=()):
    """(latencies in seconds, server CPU seconds per commit, client CPU seconds per commit)."""
    for _ in range(WARM_UP):
        operation()
    servers_before, client_before = sum(map(_cpu_seconds, server_pids)), _own_cpu_seconds()
    latencies = []
    for _ in range(ops):
        started = time.perf_counter()
        operation()
        latencies.append(time.perf_counter() - started)
    servers = sum(map(_cpu_seconds, server_pids)) - servers_before
    return latencies, servers / ops, (_own_cpu_seconds() - client_before) / ops


def _cpu_seconds(pid):
    """User + system CPU time process ``pid`` (all its threads) has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _own_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000, help="commits per row")
    parser.add_argument("--dir", default=None, help="parent of the temp dir (default: the system's)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="commit-floor-") as directory:
        bare, lean, driver = "bare 3-process chain", "lean chain: the store's work, no Raft core", \
            "dqcluster driver INSERT, 3 nodes"
        steps = [
            # name, durability, the rows this one is compared with (bare chain, lean chain), run
            ("lone append + fdatasync, one process", "fsync", (), lambda: lone_flush(directory, args.ops)),
            (bare, "fsync", (), lambda: bare_chain(directory, args.ops, True)),
            (bare, "none", (), lambda: bare_chain(directory, args.ops, False)),
            (lean, "fsync", ((bare, "fsync"),), lambda: lean_chain(directory, args.ops, True)),
            (lean, "none", ((bare, "none"),), lambda: lean_chain(directory, args.ops, False)),
            (driver, "fsync", ((bare, "fsync"), (lean, "fsync")), lambda: driver_inserts(directory, args.ops, "fsync")),
            (driver, "process", ((bare, "none"), (lean, "none")),
             lambda: driver_inserts(directory, args.ops, "process")),
        ]
        for name, durability, baselines, run in steps:
            print(f"{name} ({durability})", end=" ", flush=True)
            latencies, server_cpu, client_cpu = run()
            rows.append((name, durability, baselines, sorted(latencies), server_cpu, client_cpu))
        print()

    rates = {(name, durability): len(lat) / sum(lat) for name, durability, _, lat, _, _ in rows}
    print(f"\nOne client, commits one after another; {args.ops:,} per row, {os.cpu_count()} CPUs, loopback\n")
    print("| chain | durability | median ms | p90 ms | commits/s | bare chain / this | lean chain / this "
          "| server CPU us/commit | client CPU us/commit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, durability, baselines, latencies, server_cpu, client_cpu in rows:
        median = statistics.median(latencies) * 1e3
        p90 = latencies[int(len(latencies) * 0.9)] * 1e3
        rate = rates[(name, durability)]
        ratios = [f"{rates[baseline] / rate:.1f}x" for baseline in baselines]
        ratios += [""] * (2 - len(ratios))
        servers = f"{server_cpu * 1e6:,.0f}" if server_cpu else ""
        print(f"| {name} | {durability} | {median:.3f} | {p90:.3f} | {rate:,.0f} | {' | '.join(ratios)} "
              f"| {servers} | {client_cpu * 1e6:,.0f} |")
    print("\nbare chain: plain sockets and files, no serialization, sealing, SQL or threads; "
          "lean chain: the store's serialization, sealing, journal and SQLite apply in the same three "
          "processes, without a Raft core; the driver's `process` durability flushes nothing, like the "
          "chains' `none`.\n"
          f"CPU: user + system time per commit ({os.cpu_count()} CPUs here), server processes together "
          "(leader and followers), then the client.")


if __name__ == "__main__":
    main()
