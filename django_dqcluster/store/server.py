"""The node's client listener: sockets, the handshake, framing; one thread per connection.

Untrusted input stops here: a frame over the size limit or one that does not
decode is answered with an error and the connection is closed; the node
keeps serving everyone else.

A node that stops gracefully drains its clients first (:meth:`ClientServer.drain`):
each finishes what it started, then gets a *goodbye*, a retryable error frame
saying that nothing it sends from then on runs here. The driver reads it as the
answer to its next request and runs that request on another node.
"""

import logging
import os
import socket
import threading
import time

from .. import wire
from .session import ANSWERED_LATER, ANSWERED_WHEN_NOT_SERVING, Session

logger = logging.getLogger("django_dqcluster.store")

#: How often the server looks for clients that closed their connection while
#: a request of theirs ran (see _cancel_for_departed_clients).
DEPARTED_CLIENT_CHECK = 0.25


class ClientServer:
    def __init__(self, node):
        self.node = node
        self.address = node.config.client
        self.max_frame = node.config.max_frame
        self._listener = None
        self._thread = None
        self._connections = set()
        self._clients = set()  # the _Client of every connection past its handshake
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._draining = False

    def start(self):
        target = wire.parse_address(self.address)
        if isinstance(target, str):
            if os.path.exists(target):
                os.remove(target)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(target)
            if isinstance(target, str):
                os.chmod(target, 0o600)
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise OSError(exc.errno, f"cannot listen for clients on {self.address}: {exc.strerror}") from None
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                        name=f"dqcluster-accept-{self.address}", daemon=True)
        self._thread.start()
        if _PEEK_WITHOUT_WAITING is not None:
            threading.Thread(target=self._cancel_for_departed_clients, name=f"dqcluster-departed-{self.address}",
                             daemon=True).start()

    def _cancel_for_departed_clients(self):
        """Cancel the running request of each client that closed its connection meanwhile.

        A session thread does not read its socket while it runs a request,
        so it would not notice: a read (up to max_statement_steps of work)
        would run on for a client that will never read its answer. That
        happens when a web request times out, a Celery task hits its time
        limit, or someone presses Ctrl-C in dbshell: the driver closes a
        connection whose answer it will not read (dbapi SocketTransport).
        """
        while not self._stopping.wait(DEPARTED_CLIENT_CHECK):
            with self._lock:
                running = [client for client in self._clients if client.busy and not client.cancelled]
            for client in running:
                if _closed_by_peer(client.conn):
                    client.cancelled = True
                    logger.info("%s closed its connection while its request ran: cancelling it",
                                client.session.client)
                    client.session.cancel(f"{client.session.client} closed its connection while it ran")

    def drain(self, timeout):
        """Stop taking work, let every client finish what it started, and send each a goodbye.

        New connections are refused at once. A client between requests and
        outside a transaction gets its goodbye now; one whose request is
        running, whose commit is still to be answered, or whose transaction is
        open gets it as soon as that is over. Returns how many clients were
        still busy after ``timeout`` seconds (stop() then cuts them off, and
        their open transactions roll back).
        """
        self._draining = True
        self._close_listener()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                clients = list(self._clients)
            for client in clients:
                self._say_goodbye_if_idle(client)
            busy = sum(1 for client in clients if not client.goodbye_sent)
            if not busy or time.monotonic() >= deadline:
                return busy
            time.sleep(0.01)

    def _say_goodbye_if_idle(self, client):
        if not self._draining:  # every request passes here: no lock until a drain begins
            return
        with client.lock:
            session = client.session
            # An open transaction, or a result with pages left to fetch, is
            # let finish (up to the drain timeout), as is a running request.
            if client.goodbye_sent or client.busy or client.answers_due or session.in_transaction or session.results:
                return
            client.goodbye_sent = True
        message = (f"node {self.node.config.bind} is shutting down: nothing sent to it from now on runs; "
                   "retry on another node")
        client.sender.send_without_blocking(_refusal(wire.OPERATIONAL, message, retryable=True))

    def _turned_away(self, client, request):
        """Answer an idle client's request with a goodbye while this node serves none (see Node.serving_problem).

        Its driver then runs the request on another node. Status requests are
        answered (they say why), and a client in the middle of a transaction
        or of a result gets the error of each request instead (check_serving).
        """
        if request.get("op") in ANSWERED_WHEN_NOT_SERVING:
            return False
        problem = self.node.serving_problem()
        if problem is None:
            return False
        with client.lock:
            session = client.session
            if client.goodbye_sent or client.answers_due or session.in_transaction or session.results:
                return False
            client.goodbye_sent = True
        message = f"node {self.node.config.bind} serves no clients now: {problem}; retry on another node"
        client.sender.send_without_blocking(_refusal(wire.OPERATIONAL, message, retryable=True))
        return True

    def _close_listener(self):
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def stop(self):
        self._stopping.set()
        self._close_listener()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        target = wire.parse_address(self.address)
        if isinstance(target, str) and os.path.exists(target):
            os.remove(target)

    def _accept_loop(self, listener):
        while not self._stopping.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                if self._stopping.is_set() or self._draining:
                    return
                continue
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(
                target=self._serve, args=(conn, peer), name=f"dqcluster-client-{peer}", daemon=True
            ).start()

    def _serve(self, conn, peer):
        session = client = None
        try:
            conn.settimeout(10.0)
            accepted, channel = self._handshake(conn, peer)
            if accepted is None:
                return
            conn.settimeout(None)
            session = Session(self.node, peer=_peer_text(peer), read_only=accepted.read_only)
            client = _Client(session, ResponseSender(conn, channel), conn, accepted.token)
            with self._lock:
                self._clients.add(client)
            if not self._accepts(client):
                return  # its secret was dropped while it shook hands
            reader = wire.FrameReader(conn, self.max_frame, channel)
            while not self._stopping.is_set():
                self._say_goodbye_if_idle(client)
                try:
                    request = reader.read()
                except wire.ConnectionClosed:
                    return
                except wire.FrameTooLarge as exc:
                    self._refuse(conn, f"request refused: {exc}", client.sender)
                    return
                except wire.ProtocolError as exc:
                    self._refuse(conn, f"malformed request: {exc}", client.sender)
                    return
                if self._turned_away(client, request):
                    continue
                with client.lock:
                    if client.goodbye_sent:
                        # Sent before it read the goodbye, which it takes as
                        # this request's answer: it must not run.
                        continue
                    client.busy = True
                try:
                    response = self._answer(client, request)
                    if response is not None:
                        client.sender.send(response)
                finally:
                    with client.lock:
                        client.busy = False
        except OSError:
            pass
        except Exception:
            logger.exception("client connection %s failed", peer)
        finally:
            if session is not None:
                try:
                    session.close()
                except Exception:
                    logger.exception("closing session of %s failed", peer)
            with self._lock:
                self._connections.discard(conn)
                self._clients.discard(client)
            conn.close()

    def _accepts(self, client):
        return any(accepted.token == client.token for accepted in self.node.accepted_tokens)

    def close_sessions_not_accepted(self):
        """End the sessions opened with a secret the node no longer accepts (a rotation's last step).

        Their drivers reconnect with what they hold now; holding only the
        dropped secret, they are refused. An open transaction rolls back, as
        when the node restarts.
        """
        with self._lock:
            dropped = [client for client in self._clients if not self._accepts(client)]
        for client in dropped:
            try:
                client.conn.shutdown(socket.SHUT_RDWR)  # its session thread sees the end and cleans up
            except OSError:
                pass
        if dropped:
            logger.info("closed %d client session(s) opened with a secret no longer accepted", len(dropped))

    def _answer(self, client, request):
        """The response to send now, or None when it will be sent as the request's entry commits."""
        request_id = request.get("id")

        def answer_later(response):
            # On the Raft thread, possibly before handle() below has returned.
            response["id"] = request_id
            client.sender.send_without_blocking(response)
            with client.lock:
                client.answers_due -= 1
            self._say_goodbye_if_idle(client)

        try:
            response = client.session.handle(request, answer_later)
        except Exception as exc:  # a bug must not take the node down
            logger.exception("request %r failed", request.get("op"))
            response = {"ok": False, "error": wire.error_payload(wire.INTERNAL, f"internal error in the node: {exc}")}
        if response is ANSWERED_LATER:
            with client.lock:
                client.answers_due += 1
            return None
        response["id"] = request_id
        return response

    def _handshake(self, conn, peer):
        """(the node's AcceptedToken the client proved it holds, or None; the session's SealedChannel or None)."""
        nonce = wire.new_nonce()
        wire.send_frame(conn, {"t": "hello", "v": wire.PROTOCOL_VERSION, "nonce": nonce, "node": self.node.config.bind})
        try:
            auth = wire.recv_frame(conn, 4096)
        except wire.ProtocolError as exc:
            self._refuse(conn, f"malformed handshake: {exc}")
            return None, None
        seal = auth.get("seal") is True
        accepted = self._token_of(auth, nonce, seal)
        if accepted is None:
            logger.warning("refused client %s: wrong token", peer)
            self._refuse(conn, "authentication failed: wrong cluster token")
            return None, None
        client_nonce = auth.get("nonce")
        if not isinstance(client_nonce, (bytes, bytearray)) or len(client_nonce) != wire.NONCE_BYTES:
            self._refuse(conn, "malformed handshake: missing nonce")
            return None, None
        if not seal and not self.plain_allowed(peer):
            logger.warning("refused client %s: an unsealed session from another host", peer)
            self._refuse(conn, "a session from another host must be sealed (encrypted): this client is "
                               "older than the node, or asked for plain frames")
            return None, None
        if accepted.fallback:
            self.node.client_fallback_used_at = time.monotonic()
        # Answered with the token the client holds, which alone it can check.
        wire.send_frame(conn, {"t": "welcome", "mac": wire.mac(accepted.token, client_nonce, b"node")})
        channel = wire.SealedChannel.for_session(accepted.token, nonce, client_nonce, "node") if seal else None
        return accepted, channel

    def _token_of(self, auth, nonce, seal):
        """The node's AcceptedToken the client's MAC was made with (None: none of them)."""
        if auth.get("t") != "auth":
            return None
        for accepted in self.node.accepted_tokens:
            if wire.macs_equal(auth.get("mac"), wire.mac(accepted.token, nonce, wire.client_role(seal))):
                return accepted
        return None

    @staticmethod
    def plain_allowed(peer):
        """May this peer's frames travel unsealed? Only if they never leave this host."""
        return wire.is_local(peer)

    @staticmethod
    def _refuse(conn, message, sender=None):
        """Send a refusal frame (through the session's sender once there is one: it may seal)."""
        try:
            if sender is not None:
                sender.send(_refusal(wire.INTERFACE, message))
            else:
                wire.send_frame(conn, _refusal(wire.INTERFACE, message))
        except OSError:
            pass


def _refusal(kind, message, retryable=False):
    """The frame of a request refused unread; the driver raises wire.Refused for it."""
    return {"t": "error", "ok": False, "message": message,
            "error": wire.error_payload(kind, message, retryable=retryable)}


class _Client:
    """One client past its handshake: what a draining server must know about it."""

    def __init__(self, session, sender, conn, token):
        self.session = session
        self.sender = sender
        self.conn = conn
        self.token = token  # the client token it authenticated with
        self.lock = threading.Lock()
        self.busy = False  # a request of it is being handled
        self.answers_due = 0  # its commits the Raft thread has still to answer
        self.goodbye_sent = False
        self.cancelled = False  # it left while a request ran, which was cancelled


class ResponseSender:
    """Sends one client's responses, from its session thread or from the Raft thread.

    The Raft thread must never wait for a client: it sends what the socket
    takes at once, and a helper thread sends the rest (a large result, or a
    client that stopped reading). The lock keeps each response's bytes
    together on the stream, whichever thread sends them.
    """

    _DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)

    def __init__(self, conn, channel=None):
        self._conn = conn
        self._channel = channel  # sealed frames are sealed in the order they go out: under the lock
        self._lock = threading.Lock()

    def send(self, response):
        """From the session's own thread, which may block until the client reads."""
        with self._lock:
            self._conn.sendall(wire.pack(response, self._channel))  # sealing numbers frames: in send order

    def send_without_blocking(self, response):
        if self._DONTWAIT is None or not self._lock.acquire(blocking=False):
            self._finish_in_background(response, locked=False)
            return
        data = wire.pack(response, self._channel)
        try:
            sent = self._conn.send(data, self._DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lock.release()  # the client is gone; its session thread cleans up
            return
        if sent == len(data):
            self._lock.release()
        else:
            self._finish_in_background(data[sent:], locked=True)

    def _finish_in_background(self, pending, locked):
        """``pending``: the bytes left of a frame (lock held), or a response to send whole."""
        threading.Thread(target=self._send_rest, args=(pending, locked), name="dqcluster-send", daemon=True).start()

    def _send_rest(self, pending, locked):
        if not locked:
            self._lock.acquire()
        try:
            self._conn.sendall(pending if locked else wire.pack(pending, self._channel))
        except OSError:
            pass
        finally:
            self._lock.release()


_PEEK_WITHOUT_WAITING = (socket.MSG_PEEK | socket.MSG_DONTWAIT) if hasattr(socket, "MSG_DONTWAIT") else None


def _closed_by_peer(conn):
    """Has the other end closed ``conn``? (Looks without taking anything from it.)"""
    try:
        return conn.recv(1, _PEEK_WITHOUT_WAITING) == b""
    except BlockingIOError:
        return False  # open, with nothing to read
    except OSError:
        return True  # reset by the peer, or closed here already


def _peer_text(peer):
    """A client's address as messages show it: HOST:PORT, or the Unix socket."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return peer or "on the Unix socket"
