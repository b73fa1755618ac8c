"""How requests reach a node: over a socket, or by a direct call to an embedded node."""

import itertools
import select
import socket

from .. import wire


class SocketTransport:
    """One authenticated connection to the first reachable node of ``addresses``.

    Its frames are sealed (encrypted, see wire.SealedChannel) when the node is
    on another host, or whenever ``seal`` is true.
    """

    def __init__(self, addresses, token, timeout=10.0, max_frame=wire.DEFAULT_MAX_FRAME, seal=False):
        self._ids = itertools.count(1)
        self.sock = None
        self.address = None
        self.channel = None
        self.request_sent = False  # did the last request leave (so the node may have run it)?
        failures = []
        for address in addresses:
            try:
                sock = wire.open_socket(address, timeout)
            except (OSError, ValueError) as exc:
                failures.append(f"{address} ({_reason(exc)})")
                continue
            try:
                sock.settimeout(timeout)
                _, channel = wire.open_session(sock, token, max_frame, seal=seal or not wire.is_local(address))
            except wire.AuthenticationFailed:
                sock.close()
                raise
            except (OSError, wire.ProtocolError) as exc:
                sock.close()
                failures.append(f"{address} ({_reason(exc)})")
                continue
            # A commit may legitimately wait for an election plus the commit
            # timeout; the node answers every request, so no read timeout.
            sock.settimeout(None)
            self.sock, self.address, self.channel = sock, address, channel
            self._reader = wire.FrameReader(sock, max_frame, channel)
            return
        raise ConnectionRefusedError(
            "no store node reachable; tried " + (", ".join(failures) if failures else "no addresses")
        )

    def request(self, message, raise_errors=True):
        message = dict(message, id=next(self._ids))
        self.request_sent = False
        try:
            response = self._send_and_read(message)
        except BaseException:
            # Whatever stopped this thread between sending the request and
            # reading its whole answer (a lost connection, or an exception a
            # signal raised here: Ctrl-C, a Celery task's time limit) left
            # the answer, or the rest of it, on the socket, where the next
            # request would read it as its own. So the connection is done;
            # closing it also tells the node to cancel what it runs for us.
            self.close()
            raise
        if response.get("t") == "error":
            # The node refused the request unread and is closing the connection.
            self.close()
            raise wire.Refused(response.get("error") or wire.error_payload(
                wire.INTERFACE, response.get("message", "the node closed the session")))
        if raise_errors and not response.get("ok"):
            raise wire.RemoteError(response["error"])
        return response

    def _send_and_read(self, message):
        try:
            wire.send_frame(self.sock, message, self.channel)
            self.request_sent = True
        except OSError as send_error:
            # The node may have refused a too-large frame and closed before we
            # finished sending it: its refusal is the better explanation.
            try:
                return self._reader.read()
            except (OSError, wire.ProtocolError):
                raise send_error from None
        return self._reader.read()

    def abort(self):
        """From another thread: end the connection, so that a request waiting on it fails at once."""
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def peer_closed(self):
        """Did the node close this connection while it sat idle (e.g. the node died)?

        Between requests a node sends nothing but a refusal or its goodbye,
        both read by the next request as its answer; so a socket at EOF with
        nothing received means the node went away: a request sent now could
        not have been received, and the driver may reconnect instead of
        reporting an unknown outcome.
        """
        if self.sock is None:
            return True
        if self._reader.pending:
            # The node spoke, and its frame came in with the previous answer:
            # a refusal (a tampered frame, or its goodbye as it stops) that
            # the next request reads as its answer. The socket behind it may
            # well be closed; reconnecting here would hide the refusal.
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


class LocalTransport:
    """Requests handed straight to a node running in this process (embedded mode)."""

    def __init__(self, node):
        from ..store.session import Session

        self.node = node
        self.address = f"embedded:{node.config.bind}"
        self.session = Session(node, peer="embedded in this process")

    def request(self, message, raise_errors=True):
        response = self.session.handle(dict(message))
        if raise_errors and not response.get("ok"):
            raise wire.RemoteError(response["error"])
        return response

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None


def _reason(exc):
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
