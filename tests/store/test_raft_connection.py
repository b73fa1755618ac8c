"""The Raft connection's framing, as a specification: messages leave as sealed pickles without
zlib, pysyncobj's own compressed frames are still read, and a replayed, forged or garbled frame
drops the connection instead of being delivered.
"""

import logging
import pickle
import struct
import zlib

import pytest
from pysyncobj.tcp_connection import CONNECTION_STATE

from django_dqcluster.store.cipher import RaftCipher
from django_dqcluster.store.raft import RateLimitedWarning, UncompressedConnection

SECRET = "raft-connection-secret"
MESSAGE = {"type": "append_entries", "term": 3, "entries": [(b"\x00payload", 7, 3)]}


def connection(secret=SECRET):
    conn = UncompressedConnection(poller=None, timeout=10.0)
    conn.encryptor = RaftCipher(secret) if secret else None
    conn._TcpConnection__state = CONNECTION_STATE.CONNECTED  # as once its socket connected
    return conn


def sent_frames(conn, *messages):
    """What ``conn`` writes for ``messages`` (its socket-less write buffer)."""
    conn._TcpConnection__trySendBuffer = lambda: None
    for message in messages:
        conn.send(message)
    return bytes(conn._TcpConnection__writeBuffer)


def received(conn, data):
    """The messages ``conn`` parses out of ``data``, until it has no complete frame or drops."""
    conn._TcpConnection__readBuffer = data
    messages = []
    while (message := conn._TcpConnection__processParseMessage()) is not None:
        messages.append(message)
    return messages


def frame(payload):
    return struct.pack("i", len(payload)) + payload


def test_a_message_leaves_as_a_sealed_pickle_with_no_compression():
    data = sent_frames(connection(), MESSAGE)
    (length,) = struct.unpack_from("i", data)
    assert len(data) == 4 + length
    plaintext = RaftCipher(SECRET).decrypt(data[4:])
    assert plaintext[:1] == pickle.PROTO
    assert pickle.loads(plaintext) == MESSAGE


def test_messages_round_trip_in_order():
    messages = [MESSAGE, {"type": "next_node_idx", "success": True}, ["status"]]
    assert received(connection(), sent_frames(connection(), *messages)) == messages


def test_a_zlib_compressed_frame_from_stock_pysyncobj_is_still_read():
    sealed = RaftCipher(SECRET).encrypt_at_time(zlib.compress(pickle.dumps(MESSAGE), 3), 0)
    assert received(connection(), frame(sealed)) == [MESSAGE]


def test_a_partial_frame_waits_for_the_rest():
    data = sent_frames(connection(), MESSAGE)
    conn = connection()
    assert received(conn, data[:-1]) == []
    assert conn.state != CONNECTION_STATE.DISCONNECTED
    assert received(conn, data) == [MESSAGE]


def test_a_replayed_frame_drops_the_connection():
    data = sent_frames(connection(), MESSAGE)
    conn = connection()
    assert received(conn, data + data) == [MESSAGE]
    assert conn.state == CONNECTION_STATE.DISCONNECTED


def test_frames_sealed_out_of_order_drop_the_connection():
    sender = connection()
    first = sent_frames(sender, MESSAGE)
    sender._TcpConnection__writeBuffer = b""
    second = sent_frames(sender, ["later"])
    conn = connection()
    assert received(conn, second + first) == [["later"]]
    assert conn.state == CONNECTION_STATE.DISCONNECTED


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda data: data[:-1] + bytes([data[-1] ^ 1]), id="flipped-bit"),
    pytest.param(lambda data: sent_frames(connection("another-secret"), MESSAGE), id="other-secret"),
    pytest.param(lambda data: frame(pickle.dumps(MESSAGE)), id="unsealed"),
])
def test_a_forged_or_garbled_frame_is_not_delivered_and_drops_the_connection(tamper):
    conn = connection()
    assert received(conn, tamper(sent_frames(connection(), MESSAGE))) == []
    assert conn.state == CONNECTION_STATE.DISCONNECTED


def test_a_message_for_another_connection_is_refused():
    sender, conn = connection(), connection()
    sender.sendRandKey = b"k" * 32
    conn.recvRandKey = b"x" * 32
    assert received(conn, sent_frames(sender, MESSAGE)) == []
    assert conn.state == CONNECTION_STATE.DISCONNECTED


def test_the_connection_key_is_stripped_from_each_message():
    sender, conn = connection(), connection()
    sender.sendRandKey = conn.recvRandKey = b"k" * 32
    assert received(conn, sent_frames(sender, MESSAGE)) == [MESSAGE]


def test_unreadable_messages_are_reported_once_then_once_per_interval_with_a_count(caplog):
    # A peer holding another secret is redialed every heartbeat: each attempt is
    # one more unreadable message, and the log must not get one line for each.
    now = [100.0]
    warning = RateLimitedWarning("unreadable message ({reason})", interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="django_dqcluster.store.raft"):
        warning.report("InvalidTag")
        for _ in range(24):
            now[0] += 0.1
            warning.report("InvalidTag")
        now[0] += 10.0
        warning.report("ValueError")
    assert [record.getMessage() for record in caplog.records] == [
        "unreadable message (InvalidTag)",
        "unreadable message (ValueError) (24 more like it in the last 12 s)",
    ]


class RecordingConnection:
    def __init__(self, send_rand_key):
        self.state = CONNECTION_STATE.CONNECTED
        self.sendRandKey = send_rand_key
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def sealing_transport(connections):
    from types import SimpleNamespace

    from django_dqcluster.store.raft import FlushingTransport

    transport = object.__new__(FlushingTransport)
    transport._syncObj = SimpleNamespace(encryptor=RaftCipher(SECRET))
    transport._connections = connections
    transport._send_random_sleep_duration = 0
    return transport


def test_nothing_is_sent_on_a_connection_whose_keys_are_still_being_exchanged():
    """pysyncobj sent vote requests there: unsealed for it, the other end dropped the new connection."""
    exchanging, ready = RecordingConnection(None), RecordingConnection(b"k" * 32)
    transport = sealing_transport({"exchanging": exchanging, "ready": ready})
    vote = {"type": "request_vote", "term": 6, "last_log_index": 14, "last_log_term": 5}

    assert transport.send("exchanging", vote) is False
    assert transport.send("ready", vote) is True
    assert (exchanging.sent, ready.sent) == ([], [vote])


def test_what_the_socket_could_not_take_leaves_as_soon_as_it_has_room():
    """pysyncobj sent the rest only with the connection's next message: a 4 MiB entry took 1.5 s to a follower."""
    import socket
    import threading

    from pysyncobj.poller import createPoller

    from django_dqcluster.store.raft import _PICKLE_PROTOCOL

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    poller = createPoller("auto")
    conn = UncompressedConnection(poller=poller, socket=ours, timeout=60.0)
    poller.poll(0)  # its first write event: pysyncobj stops asking for more
    conn.encryptor = None
    big = {"type": "append_entries", "data": b"x" * (8 * 2 ** 20)}
    expected = len(pickle.dumps(big, _PICKLE_PROTOCOL)) + 4  # one frame
    arrived = bytearray()

    def read_everything():
        theirs.settimeout(10)
        while len(arrived) < expected:
            chunk = theirs.recv(1 << 20)
            if not chunk:
                break
            arrived.extend(chunk)

    reader = threading.Thread(target=read_everything)
    reader.start()
    conn.send(big)  # the socket takes a part
    for _ in range(500):  # the Raft thread's polls, and nothing more sent
        if len(arrived) >= expected:
            break
        poller.poll(0.01)
    reader.join(10)
    ours.close()
    theirs.close()
    assert len(arrived) == expected
