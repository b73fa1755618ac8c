"""Sealing of Raft messages between nodes: AES-256-GCM-SIV keyed by the cluster secret.

pysyncobj pickles its messages, so a node must never unpickle bytes that did
not come from a member holding the cluster secret (ARCHITECTURE invariant 8).
pysyncobj's own ``password`` does that with Fernet, which costs ~70 us of CPU
per message here (base64, AES-CBC, HMAC, and the token decoded twice on
receipt); every commit sends and receives several messages on each node, all
on two cores. This class plugs into the same hooks (the encryptor interface
of ``pysyncobj.tcp_connection``, called by :class:`.raft.UncompressedConnection`)
with an AEAD that costs ~10 us.

GCM-SIV is used rather than GCM because every node shares one key: a repeated
nonce then reveals only that two messages were identical, instead of
the authentication key.

While the cluster moves to a new secret (README, "Rotating the cluster secret"),
a node also opens messages sealed with its fallback secrets; it always seals
with its own.

A sealed message is ``sequence (8 bytes) | nonce (12 bytes) | ciphertext+tag``.
The connection asks for the sender's "timestamp" and drops a connection whose
messages repeat or go backwards; the sequence, strictly increasing per process
and authenticated as associated data, serves there, and unlike Fernet's whole
seconds it never repeats.
"""

import itertools
import os
import struct
import threading
import time

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

_SALT = b"django-dqcluster raft cipher v1"
# As many as pysyncobj's own key derivation: a node derives its key once, at start.
_KDF_ITERATIONS = 100_000
_SEQUENCE = struct.Struct(">Q")
_NONCE_BYTES = 12
_HEADER_BYTES = _SEQUENCE.size + _NONCE_BYTES


class CipherUnavailable(RuntimeError):
    pass


def derive_key(secret):
    if isinstance(secret, str):
        secret = secret.encode()
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_SALT, iterations=_KDF_ITERATIONS)
    return kdf.derive(secret)


class RaftCipher:
    """The encryptor pysyncobj's connections call: ``encrypt_at_time``, ``extract_timestamp``, ``decrypt``."""

    def __init__(self, secret, fallbacks=()):
        """``fallbacks``: other secrets whose messages this node accepts (a rotation under way)."""
        self.use(secret, fallbacks)
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()
        # Nonces are this random base XOR the message's sequence: never repeated
        # by this process, apart from other processes' (which share the key)
        # but for a 2^-56 chance per pair, and no getrandom() call per message.
        self._nonce_base = int.from_bytes(os.urandom(_NONCE_BYTES), "big")
        #: When (time.monotonic()) a message last opened with a fallback secret only:
        #: some member still seals with it. None: never since this node started.
        self.fallback_used_at = None

    def use(self, secret, fallbacks=()):
        """Seal with ``secret`` and open messages of it or of ``fallbacks`` from now on.

        The sequence numbers go on: a peer's connection keeps ordering this
        node's messages across the change.
        """
        try:
            aead = AESGCMSIV(derive_key(secret))
            fallback_aeads = [AESGCMSIV(derive_key(fallback)) for fallback in fallbacks]
        except UnsupportedAlgorithm:
            raise CipherUnavailable(
                "the store seals Raft messages with AES-GCM-SIV, which this cryptography/OpenSSL build "
                "lacks: install the cryptography wheel from PyPI (it bundles OpenSSL 3.2 or newer)"
            ) from None
        # One assignment: a message in flight on another thread is opened with one set or the other.
        self._aead, self._fallback_aeads = aead, fallback_aeads

    def encrypt_at_time(self, data, current_time):
        # current_time (whole seconds) is ignored: the sequence orders messages instead.
        with self._lock:
            number = next(self._sequence)
        sequence = _SEQUENCE.pack(number)
        nonce = (self._nonce_base ^ number).to_bytes(_NONCE_BYTES, "big")
        return sequence + nonce + self._aead.encrypt(nonce, bytes(data), _SALT + sequence)

    def extract_timestamp(self, token):
        """The sender's sequence number, read before :meth:`decrypt` authenticates it.

        It is not verified here: the connection calls :meth:`decrypt` right after,
        and a message that fails there closes the connection, which also
        forgets the value this returned.
        """
        if len(token) < _HEADER_BYTES:
            raise ValueError("sealed message too short")
        return _SEQUENCE.unpack_from(token)[0]

    def decrypt(self, token):
        """The plaintext, or an exception (the connection is then dropped)."""
        token = bytes(token)
        if len(token) < _HEADER_BYTES:
            raise ValueError("sealed message too short")
        sequence = token[:_SEQUENCE.size]
        nonce = token[_SEQUENCE.size:_HEADER_BYTES]
        aead, fallback_aeads = self._aead, self._fallback_aeads
        try:
            return aead.decrypt(nonce, token[_HEADER_BYTES:], _SALT + sequence)
        except InvalidTag:
            for aead in fallback_aeads:
                try:
                    plain = aead.decrypt(nonce, token[_HEADER_BYTES:], _SALT + sequence)
                except InvalidTag:
                    continue
                self.fallback_used_at = time.monotonic()
                return plain
            raise
