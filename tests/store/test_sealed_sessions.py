"""Sealed client sessions: frames to a node on another host are encrypted and cannot be altered.

A proxy between the driver and an embedded node sees every byte, frame by
frame: with a sealed session it never sees the rows, and a frame it alters,
replays or drops makes the node close the session with nothing run. A node
refuses an unsealed session from another host (simulated here by telling
both sides that loopback is "another host").
"""

import socket
import struct
import threading

import pytest

from django_dqcluster import dbapi, wire
from django_dqcluster.store.local_cluster import free_ports
from django_dqcluster.store.server import ClientServer

from .conftest import EMBEDDED_SECRET

SECRET_VALUE = "row-value-nobody-on-the-wire-may-read"
HEADER = struct.Struct(">I")


class FrameProxy:
    """Passes one connection's frames on, recording them; may alter or replay the client's Nth frame.

    Once it has tampered, it holds what the node sends until the node closes,
    then passes it all on at once: the client receives its answer and the
    node's refusal together, as a busy network may deliver them.
    """

    def __init__(self, target, alter_client_frame=None, replay_client_frame=None):
        self.target = wire.parse_address(target)
        self.alter, self.replay = alter_client_frame, replay_client_frame
        self.client_frames, self.node_frames = [], []
        self._tampered = False
        self._held = []
        self.closed = threading.Event()  # set once the node closed and the client was told
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self._listener.accept()
        self._listener.close()  # one connection: a driver reconnecting is refused, not left hanging
        node = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(node, client, self.node_frames, False), daemon=True).start()
        self._pump(client, node, self.client_frames, True)

    def _pump(self, source, sink, record, from_client):
        try:
            while True:
                header = self._read(source, HEADER.size)
                body = self._read(source, HEADER.unpack(header)[0])
                index = len(record)
                record.append(body)
                if from_client and index in (self.alter, self.replay):
                    self._tampered = True
                if from_client and index == self.alter:
                    body = body[:-1] + bytes([body[-1] ^ 1])
                if not from_client and self._tampered:
                    self._held.append(header + body)
                    continue
                sink.sendall(header + body)
                if from_client and index == self.replay:
                    sink.sendall(header + body)
        except OSError:
            pass
        finally:
            if not from_client and self._held:
                try:
                    sink.sendall(b"".join(self._held))
                except OSError:
                    pass
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if not from_client:
                self.closed.set()

    @staticmethod
    def _read(sock, size):
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def wire_bytes(self):
        return b"".join(self.client_frames + self.node_frames)


@pytest.fixture
def node_client(embedded_node):
    return embedded_node.config.client


def connect(address, **kwargs):
    kwargs.setdefault("timeout", 5)
    return dbapi.connect(address, secret=EMBEDDED_SECRET, isolation_level=None, **kwargs)


def count(node_client, sql="SELECT count(*) FROM t"):
    conn = connect(node_client)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def test_a_sealed_session_works_as_a_plain_one_and_the_wire_never_shows_its_rows(node_client):
    proxy = FrameProxy(node_client)
    conn = connect(proxy.address, seal=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (v, b) VALUES (?, ?)", [(SECRET_VALUE, bytes(range(256)))] * 3)
    conn.execute("COMMIT")  # answered from the node's Raft thread
    rows = conn.execute("SELECT v, b FROM t").fetchall()
    assert [tuple(row) for row in rows] == [(SECRET_VALUE, bytes(range(256)))] * 3
    many = conn.execute("SELECT zeroblob(1000) FROM t, t AS a, t AS b, t AS c, t AS d, t AS e").fetchall()
    assert len(many) == 3 ** 6  # more than one page
    conn.close()
    assert SECRET_VALUE.encode() not in proxy.wire_bytes()
    assert b"CREATE TABLE" not in proxy.wire_bytes() and b"INSERT" not in proxy.wire_bytes()


def test_a_plain_session_over_loopback_shows_them(node_client):
    # What the proxy would read without sealing (so the test above can fail).
    proxy = FrameProxy(node_client)
    conn = connect(proxy.address)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (SECRET_VALUE,))
    conn.close()
    assert SECRET_VALUE.encode() in proxy.wire_bytes()


@pytest.mark.parametrize("tamper", ["alter", "replay"])
def test_an_altered_or_replayed_frame_closes_the_session_with_nothing_run(node_client, tamper):
    conn = connect(node_client)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.close()
    proxy = FrameProxy(node_client)
    sealed = connect(proxy.address, seal=True)
    # The next frame the client sends is the INSERT (counted now: how many frames a
    # connection sends before it depends on what the driver asks at connect time).
    if tamper == "alter":
        proxy.alter = len(proxy.client_frames)
    else:
        proxy.replay = len(proxy.client_frames)
    # The client hears of it, at the latest on its next statement (the node's
    # refusal may come after the INSERT's answer): a driver that took the
    # closed socket for a node gone away would reconnect and carry on.
    with pytest.raises(dbapi.InterfaceError, match="a sealed frame did not open"):
        sealed.execute("INSERT INTO t VALUES ('once')")
        assert proxy.closed.wait(5)
        sealed.execute("INSERT INTO t VALUES ('twice?')")
    sealed.close()
    assert count(node_client) == (0 if tamper == "alter" else 1)


def test_a_node_refuses_an_unsealed_session_from_another_host_and_a_client_seals_on_its_own(node_client, monkeypatch):
    # Loopback plays "another host" for both ends.
    monkeypatch.setattr(wire, "is_local", lambda address: False)
    monkeypatch.setattr(ClientServer, "plain_allowed", staticmethod(lambda peer: False))
    sock = wire.open_socket(node_client, 5)
    try:
        with pytest.raises(wire.AuthenticationFailed, match="a session from another host must be sealed"):
            wire.open_session(sock, wire.client_token(EMBEDDED_SECRET), seal=False)
    finally:
        sock.close()
    conn = connect(node_client)  # no seal asked: the driver seals for another host by itself
    assert conn._transport.channel is not None
    assert conn.execute("SELECT 41 + 1").fetchone()[0] == 42
    conn.close()


def test_the_seal_is_bound_to_the_handshake_nobody_in_between_can_take_it_out(node_client):
    # The MAC covers the client's choice: an auth frame whose "seal" was flipped is refused.
    sock = wire.open_socket(node_client, 5)
    try:
        hello = wire.recv_frame(sock)
        token = wire.client_token(EMBEDDED_SECRET)
        wire.send_frame(sock, {"t": "auth", "mac": wire.mac(token, hello["nonce"], wire.client_role(True)),
                               "nonce": wire.new_nonce(), "seal": False})
        reply = wire.recv_frame(sock)
        assert reply.get("t") == "error" and "authentication failed" in reply["message"]
    finally:
        sock.close()


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1:7001", True), ("127.0.0.2:7001", True), ("[::1]:7001", True), ("localhost:7001", True),
    ("unix:/run/dq.sock", True), ("/run/dq.sock", True), (("127.0.0.1", 5000), True), ("", True),
    ("10.0.0.2:7001", False), ("node2.internal:7001", False), (("192.168.1.9", 5000), False),
])
def test_what_counts_as_this_host(address, local):
    assert wire.is_local(address) is local


def test_a_follower_passes_writes_on_to_a_leader_on_another_host_sealed(tmp_path, monkeypatch):
    # Two nodes in this process; loopback plays "another host", so the leader
    # refuses plain sessions and the follower's forwarding connection must seal.
    from django_dqcluster.store import Node, NodeConfig

    monkeypatch.setattr(wire, "is_local", lambda address: False)
    ports = free_ports(4)
    rafts = [f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[2]}"]
    nodes = [Node(NodeConfig(bind=rafts[i], client=f"127.0.0.1:{ports[2 * i + 1]}", data_dir=str(tmp_path / f"n{i}"),
                             peers=[rafts[1 - i]], secret=EMBEDDED_SECRET)).start() for i in (0, 1)]
    try:
        for node in nodes:
            node.wait_ready(15)
        follower = next(node for node in nodes if not node.is_leader())
        conn = connect(follower.config.client, timeout=15)
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (SECRET_VALUE,))
        assert conn.execute("SELECT v FROM t").fetchall()[0][0] == SECRET_VALUE
        session_forward = [c for c in follower.server._clients if c.session.forward is not None]
        assert session_forward and all(c.session.forward.channel is not None for c in session_forward)
        conn.close()
    finally:
        for node in nodes:
            node.stop()
