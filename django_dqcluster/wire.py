"""The client protocol between the DB-API driver and a store node.

Framing: a 4-byte big-endian length, then one msgpack map. Never pickle: the
client port may be reachable by processes that hold no cluster secret, and a
frame must never be able to execute code. Frames above ``max_frame`` bytes are
refused before they are read into memory.

Authentication is a mutual HMAC challenge-response keyed with a *client token*
derived from the cluster secret, so the secret itself never crosses the socket:

    node   -> client  {"t": "hello", "nonce": N1, "node": ...}
    client -> node    {"t": "auth", "mac": HMAC(token, N1 + b"client"), "nonce": N2}
    node   -> client  {"t": "welcome", "mac": HMAC(token, N2 + b"node")}

After that every request is ``{"id": n, "op": ..., ...}`` and every response
``{"id": n, "ok": True, ...}`` or ``{"id": n, "ok": False, "error": {...}}``.

Sealed sessions. A client that asks for it (``"seal": true`` in its auth
frame, covered by the MAC, so nobody in between can take it out) gets every
later frame sealed with AES-256-GCM, one key per direction derived from the
token and both nonces (:class:`SealedChannel`): unreadable and unalterable on
the way, and replayed, dropped or reordered frames fail to open. Clients seal
whenever the node's address is not on this host (:func:`is_local`), and a
node refuses an unsealed session from another host; over loopback and unix
sockets frames stay plain unless the client asks.

This module imports neither Django nor pysyncobj: both the driver and the
node use it.
"""

import hashlib
import hmac
import ipaddress
import os
import socket
import struct
import threading

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct(">I")
NONCE_BYTES = 16

_TOKEN_LABEL = b"django-dqcluster client token v1"
_READ_ONLY_TOKEN_LABEL = b"django-dqcluster read-only client token v1"
_SESSION_LABEL = b"django-dqcluster client session v1"
#: What sealing adds to a frame's body (GCM's tag).
SEAL_OVERHEAD = 16


class ProtocolError(Exception):
    """A peer sent something that is not a valid frame of this protocol."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size, limit):
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class ConnectionClosed(ProtocolError):
    """The peer closed the socket (possibly in the middle of a frame)."""


def secrets_in(text):
    """The secrets a secret file holds: one per line, the first the one to use.

    More than one only while the cluster moves to a new secret: the others
    are fallbacks a node still accepts (README, "Rotating the cluster secret").
    """
    return [line.strip() for line in text.splitlines() if line.strip()]


def client_token(secret, read_only=False):
    """The token clients present; derived so that it cannot be turned back into the secret.

    A ``read_only`` token lets its holder read, never write (store/read_only.py);
    neither token can be turned into the other.
    """
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.new(secret, _READ_ONLY_TOKEN_LABEL if read_only else _TOKEN_LABEL, hashlib.sha256).hexdigest()


def mac(token, nonce, role):
    if isinstance(token, str):
        token = token.encode()
    return hmac.new(token, bytes(nonce) + role, hashlib.sha256).digest()


def client_role(seal):
    """What the client's MAC proves besides the token: that it asked for a sealed session, or not."""
    return b"client sealed" if seal else b"client"


def is_local(address):
    """Is ``address`` ("HOST:PORT", "unix:/path", or an accepted peer's (host, port)) on this host only?"""
    if isinstance(address, tuple):
        host = address[0] if address else ""
    elif not isinstance(address, str) or not address or address.startswith(("unix:", "/")):
        return True  # a unix socket (whose peers have no address, "" or b"")
    else:
        host = address.rpartition(":")[0].strip("[]")
    if host in ("", "localhost"):
        return True  # a unix socket's peer has no address
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is another host


class SealedChannel:
    """AES-256-GCM for one session's frames: a key and a frame counter per direction.

    The counter is the nonce, so each frame has one place in the stream: a
    frame replayed, dropped or moved does not open. ``seal`` is called in
    the order frames go out (under the sender's lock), ``open`` in the order
    they arrive.
    """

    def __init__(self, send_key, receive_key):
        self._send, self._receive = AESGCM(send_key), AESGCM(receive_key)
        self._sent = self._received = 0
        self._lock = threading.Lock()

    @classmethod
    def for_session(cls, token, node_nonce, client_nonce, side):
        """The channel of one side ("client" or "node") of the session the handshake opened."""
        if isinstance(token, str):
            token = token.encode()
        keys = HKDF(algorithm=hashes.SHA256(), length=64, salt=bytes(node_nonce) + bytes(client_nonce),
                    info=_SESSION_LABEL).derive(token)
        to_node, to_client = keys[:32], keys[32:]
        return cls(to_node, to_client) if side == "client" else cls(to_client, to_node)

    def seal(self, body):
        with self._lock:
            number, self._sent = self._sent, self._sent + 1
        return self._send.encrypt(number.to_bytes(12, "big"), bytes(body), None)

    def open(self, body):
        number, self._received = self._received, self._received + 1
        try:
            return self._receive.decrypt(number.to_bytes(12, "big"), bytes(body), None)
        except InvalidTag:
            raise ProtocolError("a sealed frame did not open: altered, replayed or out of order") from None


def new_nonce():
    return os.urandom(NONCE_BYTES)


def macs_equal(a, b):
    return isinstance(a, (bytes, bytearray)) and hmac.compare_digest(bytes(a), b)


def pack(message, channel=None):
    body = msgpack.packb(message, use_bin_type=True)
    if channel is not None:
        body = channel.seal(body)
    return HEADER.pack(len(body)) + body


def unpack(body):
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated classes
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame must hold a map")
    return message


def _recv_exactly(sock, size):
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionClosed("connection closed by peer")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def send_frame(sock, message, channel=None):
    sock.sendall(pack(message, channel))


def recv_frame(sock, max_frame=DEFAULT_MAX_FRAME):
    (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if size > max_frame:
        raise FrameTooLarge(size, max_frame)
    return unpack(_recv_exactly(sock, size))


class FrameReader:
    """Reads one peer's frames, usually with one recv call each.

    recv_frame asks for the header and then the body: two system calls per
    frame, and each lets another thread take the GIL. This keeps whatever
    arrived beyond a frame for the next one.
    """

    def __init__(self, sock, max_frame=DEFAULT_MAX_FRAME, channel=None):
        self.sock = sock
        self.max_frame = max_frame
        self.channel = channel  # a SealedChannel: frames are opened before they are decoded
        self._buffer = bytearray()

    @property
    def pending(self):
        """Bytes received beyond the frames read: the peer's next frame, or part of it."""
        return len(self._buffer)

    def read(self):
        buffer = self._buffer
        limit = self.max_frame + (SEAL_OVERHEAD if self.channel is not None else 0)
        while True:
            if len(buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer)
                if size > limit:
                    raise FrameTooLarge(size, limit)
                end = HEADER.size + size
                if len(buffer) >= end:
                    body = buffer[HEADER.size:end]  # one copy; msgpack reads a bytearray
                    del buffer[:end]
                    if self.channel is not None:
                        body = self.channel.open(body)
                    return unpack(body)
                missing = end - len(buffer)
            else:
                missing = HEADER.size - len(buffer)
            chunk = self.sock.recv(min(max(missing, 1 << 16), 1 << 20))
            if not chunk:
                raise ConnectionClosed("connection closed by peer")
            buffer += chunk


def parse_address(address):
    """'host:port' -> ('host', port); 'unix:/path' or '/path' -> '/path'."""
    if address.startswith("unix:"):
        return address[len("unix:"):]
    if address.startswith("/"):
        return address
    return parse_host_port(address, expected="HOST:PORT or unix:/path")


def parse_host_port(address, expected="HOST:PORT"):
    """'host:port' -> ('host', port), for addresses that must be TCP (Raft's)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"invalid node address {address!r}: expected {expected}")
    if not 0 < int(port) <= 65535:
        # Caught here, the error names the setting; later it would be an
        # OverflowError from bind() or connect() with a traceback.
        raise ValueError(f"invalid node address {address!r}: port {int(port)} is not in 1-65535")
    return host.strip("[]"), int(port)


def open_socket(address, timeout):
    target = parse_address(address)
    if isinstance(target, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def client_handshake(sock, token, max_frame=DEFAULT_MAX_FRAME):
    """Run the client side of the handshake for a plain session; return the node's hello map."""
    return open_session(sock, token, max_frame, seal=False)[0]


def open_session(sock, token, max_frame=DEFAULT_MAX_FRAME, seal=False):
    """The client side of the handshake: (the node's hello map, a SealedChannel or None)."""
    hello = recv_frame(sock, max_frame)
    if hello.get("t") == "error":
        raise AuthenticationFailed(hello.get("message", "refused"))
    if hello.get("t") != "hello" or hello.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unexpected greeting from node: {hello!r:.200}")
    our_nonce = new_nonce()
    send_frame(sock, {"t": "auth", "mac": mac(token or "", hello["nonce"], client_role(seal)), "nonce": our_nonce,
                      "seal": bool(seal)})
    reply = recv_frame(sock, max_frame)
    if reply.get("t") != "welcome":
        raise AuthenticationFailed(reply.get("message", "authentication refused by node"))
    if not macs_equal(reply.get("mac"), mac(token or "", our_nonce, b"node")):
        raise AuthenticationFailed("node failed to prove it holds the cluster secret")
    channel = SealedChannel.for_session(token or "", hello["nonce"], our_nonce, "client") if seal else None
    return hello, channel


class AuthenticationFailed(ProtocolError):
    pass


# Error kinds carried in responses; the driver maps them onto PEP 249 classes.
INTEGRITY = "IntegrityError"
OPERATIONAL = "OperationalError"
PROGRAMMING = "ProgrammingError"
DATA = "DataError"
NOT_SUPPORTED = "NotSupportedError"
INTERFACE = "InterfaceError"
INTERNAL = "InternalError"
DATABASE = "DatabaseError"


def error_payload(kind, message, *, retryable=False, unknown_outcome=False, code=None):
    return {
        "kind": kind,
        "message": message,
        "retryable": retryable,
        "unknown_outcome": unknown_outcome,
        "code": code,
    }


class RemoteError(Exception):
    """An error response from a node, carried with its payload (kind, message, flags)."""

    def __init__(self, payload):
        super().__init__(payload.get("message", "error"))
        self.payload = payload


class Refused(RemoteError):
    """The node refused a request without executing it (too large, malformed) and closed the connection."""
