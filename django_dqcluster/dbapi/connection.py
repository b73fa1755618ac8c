"""PEP 249 connection and cursor for the replicated store."""

import datetime
import decimal
import re
import sqlite3
import threading
import time
import weakref

from .. import wire
from ..store import statements
from ..store.statements import transaction_control
from . import exceptions as exc
from .declared import PARSE_DECLTYPES, convert_rows, converters_for
from .replica import LocalResult, ReplicaFile
from .transport import LocalTransport, SocketTransport

CONSISTENCY_LEVELS = ("strong", "weak", "none")
_DML = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.I)
_READ_ONLY = re.compile(r"^\s*(SELECT|PRAGMA|EXPLAIN|VALUES)\b", re.I)
# What may be read from this host's replica file: plain SELECTs (a PRAGMA may
# be a session setting the node keeps, a WITH may write).
_SELECT = re.compile(r"^\s*SELECT\b", re.I)
_INT64 = (-(1 << 63), (1 << 63) - 1)
# A query's rows come a page at a time, each page at most this much msgpack
# (or a quarter of max_frame, leaving room for the rest of the answer).
PAGE_BYTES = 1024 * 1024


class Connection:
    """A session with the store.

    ``isolation_level=None`` (what Django uses) means autocommit: each
    statement outside an explicit BEGIN is its own replicated transaction.
    Any other value behaves like :mod:`sqlite3`'s legacy mode: an implicit
    BEGIN before INSERT/UPDATE/DELETE/REPLACE, ended by :meth:`commit`.

    With consistency ``none`` and ``local_reads`` (the default), SELECTs
    outside a transaction are read from the node's replica file when the
    node runs on this host (see :mod:`.replica`); ``configure_replica`` is
    called with that local SQLite connection to register the SQL functions
    the node's connections have.

    Frames to a node on another host are always sealed (encrypted and
    authenticated, see wire.SealedChannel); ``seal=True`` seals them over
    loopback and unix sockets too.
    """

    def __init__(self, addresses=None, *, database="default", token=None, secret=None, secret_file=None,
                 token_file=None, node=None,
                 consistency="strong", timeout=10.0, retry_timeout=None, isolation_level="",
                 max_frame=wire.DEFAULT_MAX_FRAME, local_reads=True, configure_replica=None, detect_types=0,
                 seal=False):
        if consistency not in CONSISTENCY_LEVELS:
            raise exc.ProgrammingError(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {consistency!r}")
        if node is None and not addresses:
            raise exc.InterfaceError("connect() needs node addresses (HOST:PORT or unix:/path) or an embedded node")
        if isinstance(addresses, str):
            addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        self._addresses = list(addresses or [])
        self._node = node
        given = [name for name, value in (("secret", secret), ("secret_file", secret_file), ("token", token),
                                          ("token_file", token_file)) if value is not None]
        if len(given) > 1:
            raise exc.ProgrammingError("give one of secret, secret_file, token and token_file, "
                                       f"not {' and '.join(given)}")
        # A file is read again at each reconnection: a long-lived connection
        # follows a rotation of the cluster secret (README) without a restart.
        self._secret_file, self._token_file = secret_file, token_file
        self._token = self._token_from_files() if secret_file or token_file else \
            wire.client_token(secret) if secret is not None else token
        self.database = database
        self.consistency = consistency
        self.timeout = timeout
        self.retry_timeout = timeout if retry_timeout is None else retry_timeout
        self.isolation_level = isolation_level
        self.seal = bool(seal)
        self.max_frame = max_frame
        self.page_bytes = max(1, min(PAGE_BYTES, max_frame // 4))
        self._discarded = []  # ids of open results on the node nobody will read
        self.local_reads = local_reads and consistency == "none"
        self._configure_replica = configure_replica
        # As sqlite3's: with PARSE_DECLTYPES, values are converted by their
        # column's declared type with sqlite3's registered converters (.declared).
        self.detect_types = detect_types
        self._replica = None
        self.replica_reads = 0  # statements read from the replica file on this host
        self._local_results = weakref.WeakSet()  # local reads still stepping (see .replica)
        self._transport = None
        self._in_tx = False
        # The savepoint whose SAVEPOINT began the open transaction (releasing
        # it commits, as in SQLite), or None when BEGIN did.
        self._outer_savepoint = None
        # Set when an interruption ended the transaction (see _interrupted): the
        # name of what interrupted it, until the caller rolls back.
        self._interrupted_tx = None
        self._closed = False
        self.pragmas = {}
        # The newest Raft entry this connection's writes were answered with:
        # with ``none``, a node it reconnects to must have applied it (it
        # reads its own writes on another node after a failover too).
        self._written_index = 0
        # Threads sharing a connection take turns: two requests interleaved on
        # one socket would each read the other's answer (a SELECT getting a
        # COMMIT's empty result), so a request and its answer go together.
        self._turn = threading.RLock()
        self._request({"op": "ping"})

    # -- PEP 249 ------------------------------------------------------------------------------

    def cursor(self):
        self._check_open()
        return Cursor(self)

    def commit(self):
        self._check_open()
        if self._in_tx:
            self._request({"op": "commit"}, may_write=True)

    def rollback(self):
        self._check_open()
        if self._in_tx:
            self._request({"op": "rollback"})

    def close(self):
        if self._closed:
            return
        self._forget_replica()
        for result in list(self._local_results):
            result.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._discarded = []
        self._closed = True

    # -- sqlite3-style conveniences ----------------------------------------------------------

    def execute(self, sql, parameters=()):
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql, seq_of_parameters):
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, script):
        return self.cursor().executescript(script)

    @property
    def in_transaction(self):
        return self._in_tx

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        return False

    # -- store-specific -------------------------------------------------------------------------

    def status(self, of=None):
        """This node's status; ``of="leader"``: the leader's (asked through this node)."""
        return self._request({"op": "status", "of": of} if of else {"op": "status"})["status"]

    def servers(self):
        return self._request({"op": "servers"})["servers"]

    def list_databases(self):
        return self._request({"op": "list_databases"})["databases"]

    def drop_database(self, name):
        self._request({"op": "drop_database", "db": name})

    def clone_database(self, source, target):
        self._request({"op": "clone_database", "src": source, "dst": target})

    def entry_applied(self, entry_id, database=None):
        return self._request({"op": "entry_applied", "db": database or self.database, "entry_id": entry_id})["applied"]

    def compact(self):
        """Ask the node to snapshot its databases and truncate its Raft journal."""
        self._request({"op": "compact"})

    def add_member(self, raft_address, client_address):
        return self._request({"op": "add_member", "raft": raft_address, "client": client_address})["servers"]

    def remove_member(self, raft_address):
        return self._request({"op": "remove_member", "raft": raft_address})["servers"]

    @property
    def node_address(self):
        return self._transport.address if self._transport is not None else None

    def node_sqlite_version(self):
        """The SQLite library version of the node (never of this process: no local read)."""
        response = self._request({"op": "exec", "sql": "SELECT sqlite_version()", "params": []})
        return response["rows"][0][0]

    # -- plumbing -------------------------------------------------------------------------------

    def _check_open(self):
        if self._closed:
            raise exc.ProgrammingError("Cannot operate on a closed connection.")

    def _token_from_files(self):
        path = self._secret_file or self._token_file
        what = "cluster secret" if self._secret_file else "client token"
        try:
            with open(path) as handle:
                # The first line: others are fallbacks only nodes accept.
                lines = wire.secrets_in(handle.read())
        except OSError as error:
            raise exc.InterfaceError(f"cannot read the {what} from {path}: {error.strerror}") from None
        if not lines:
            raise exc.InterfaceError(f"the {what} file {path} is empty")
        return wire.client_token(lines[0]) if self._secret_file else lines[0]

    def _connect(self):
        if self._secret_file or self._token_file:
            try:
                self._token = self._token_from_files()
            except exc.InterfaceError:
                pass  # being rewritten, or gone: the token it held is the best guess
        if self._node is not None:
            self._transport = LocalTransport(self._node)
        else:
            try:
                self._transport = SocketTransport(self._addresses, self._token, self.timeout, self.max_frame,
                                                  seal=self.seal)
            except wire.AuthenticationFailed as error:
                raise exc.InterfaceError(f"the store refused this client: {error}") from None
            except ConnectionRefusedError as error:
                raise exc.operational(str(error), retryable=True) from None
        offer_replica = self.local_reads and isinstance(self._transport, SocketTransport)
        settings = {"op": "open", "db": self.database, "consistency": self.consistency, "pragmas": self.pragmas,
                    "replica": offer_replica, "page_bytes": self.page_bytes,
                    "declared_types": bool(self.detect_types & PARSE_DECLTYPES)}
        if self._written_index and self.consistency == "none":
            settings["after"] = self._written_index
        opened = self._transport.request(settings, raise_errors=False)
        if not opened.get("ok"):
            self._transport.close()
            self._transport = None
            raise exc.from_payload(opened["error"])
        self._forget_replica()
        if offer_replica:
            self._replica = ReplicaFile.offered(opened.get("replica"), self._configure_replica,
                                                self.detect_types & PARSE_DECLTYPES)
        # The seed's ServerStore: remember every member's client address so a
        # later failure can fail over to them.
        for server in opened.get("servers", []):
            client = server.get("client")
            if client and client not in self._addresses:
                self._addresses.append(client)

    def _try_last(self, address):
        """Connect to ``address`` only once the others failed: it just said goodbye.

        A node that cannot apply entries (a full disk) still accepts
        connections, for its status: first in the list, it would be where
        every reconnection lands.
        """
        if address in self._addresses and self._addresses[-1] != address:
            self._addresses.remove(address)
            self._addresses.append(address)

    def _read_locally(self, sql, params):
        """The result of a SELECT read from the replica file on this host, or None to ask the node."""
        with self._turn:
            return self._read_replica(sql, params)

    def _read_replica(self, sql, params):
        replica = self._replica
        if replica is None or self._in_tx or self._transport is None or not _SELECT.match(sql):
            return None
        if replica.withdrawn or self._transport.peer_closed():
            # The node stopped, died or stopped serving: its file may be
            # stale for good. The node (or the next one) answers from now on.
            self._forget_replica()
            return None
        response = replica.query(sql, params)
        if response is not None:
            self.replica_reads += 1
            if response["more"] is not None:
                self._local_results.add(response["more"])
        return response

    def _fetch(self, result):
        """The next page of an open result: on the node (its id), or of a local read."""
        if isinstance(result, LocalResult):
            try:
                rows, more = result.next_page()
            except sqlite3.Error as error:
                raise exc.operational(
                    f"reading the rest of a result from this host's replica file failed: {error}"
                ) from None
            return {"rows": rows, "more": result if more else None}
        return self._request({"op": "fetch", "result": result})

    def _discard(self, result):
        """A result with rows left that nobody will read: the node is told with the next request."""
        if isinstance(result, LocalResult):
            result.close()
        else:
            self._discarded.append(result)

    def _forget_replica(self):
        if self._replica is not None:
            self._replica.close()
            self._replica = None

    def _request(self, message, may_write=False):
        with self._turn:
            if self._interrupted_tx is not None:
                answer = self._in_interrupted_transaction(message)
                if answer is not None:
                    return answer
            in_tx = self._in_tx
            try:
                return self._exchange(message, may_write)
            except exc.Error:
                raise
            except BaseException as error:
                # An interrupted COMMIT ends the transaction either way (its
                # outcome unknown, like that of any write interrupted).
                self._interrupted(error, in_tx and not self._may_commit(message))
                raise

    def _may_commit(self, message):
        """Could this request, in the open transaction, commit it?

        A COMMIT (request or statement, alone or in a script), or the RELEASE
        of the savepoint that began the transaction. Lost on its way, its
        outcome is unknown; any other request's, the transaction rolled back.
        """
        op = message.get("op")
        if op == "commit":
            return True
        if op == "exec":
            sqls = [message.get("sql") or ""]
        elif op == "script":
            sqls = statements.split_script(message.get("sql") or "")
        else:
            return False
        outer = self._outer_savepoint
        for sql in sqls:
            control = transaction_control(sql)
            if control == statements.COMMIT:
                return True
            if (control == statements.RELEASE and outer is not None
                    and statements.savepoint_name(sql).lower() == outer.lower()):
                return True
        return False

    def _interrupted(self, error, in_tx):
        """An exception not of the driver's making (Ctrl-C, a task's time limit) stopped a request.

        The session it ran in is closed: its answer may still be on its way,
        and would be read as the next request's. The node cancels what it
        was running, and rolls back the session's transaction; a write
        already in the log stays. The next request opens a new session; in a
        transaction, statements fail until the caller rolls back.
        """
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._discarded = []
        if in_tx:
            self._interrupted_tx = type(error).__name__
        else:
            self._in_tx = False

    def _in_interrupted_transaction(self, message):
        """The answer to ``message`` in a transaction an interruption ended, or None to send it."""
        control = _control_of(message)
        if control == statements.ROLLBACK:
            self._interrupted_tx = None
            self._in_tx = False
            return {"ok": True, "in_tx": False, "rows": [], "columns": None, "rowcount": -1}
        if message.get("op") not in ("exec", "script", "commit", "fetch"):
            return None
        problem = (f"the transaction was interrupted ({self._interrupted_tx} while a request ran) and "
                   "rolled back on the store")
        if control == statements.COMMIT:
            self._interrupted_tx = None
            self._in_tx = False
            raise exc.operational(f"{problem}: nothing of it was committed; retry it", retryable=True)
        raise exc.operational(f"{problem}; roll back before running more statements", retryable=True)

    def _exchange(self, message, may_write):
        self._check_open()
        deadline = time.monotonic() + self.retry_timeout
        delay = 0.02
        while True:
            in_tx_before = self._in_tx
            if self._transport is not None and getattr(self._transport, "peer_closed", bool)():
                # The node went away while this connection was idle: nothing
                # of this request was sent, so reconnecting is safe (inside a
                # transaction, the transaction is lost and reported as such).
                self._transport.close()
                self._transport = None
                self._in_tx = False
                if in_tx_before:
                    raise exc.operational(
                        "lost the connection to the store in the middle of a transaction "
                        "(the node closed it); it was rolled back on the leader, retry it", retryable=True,
                    )
            try:
                if self._transport is None:
                    self._connect()
                    self._discarded = []  # they were the old session's
                if self._discarded:
                    message = dict(message, discard=self._discarded)
                    self._discarded = []
                response = self._transport.request(message, raise_errors=False)
            except wire.Refused as refused:
                # Nothing ran: not an unknown outcome.
                self._in_tx = False
                shutting_down = refused.payload.get("retryable", False)
                if shutting_down:
                    self._try_last(getattr(self._transport, "address", None))
                self._transport = None
                if shutting_down and not in_tx_before and time.monotonic() + delay < deadline:
                    # A node's goodbye (it stops, or serves no clients now):
                    # run the request on another node.
                    time.sleep(delay)
                    continue
                # Otherwise (too large, malformed) retrying cannot help.
                payload = dict(refused.payload, retryable=shutting_down, unknown_outcome=False)
                if in_tx_before:
                    payload["message"] += "; the open transaction was rolled back"
                raise exc.from_payload(payload) from None
            except wire.FrameTooLarge as error:
                # The node answered: only its answer is more than this
                # connection accepts, so asking again (what a lost connection
                # calls for) would fetch the same answer until the deadline.
                # Its unread body leaves the connection unusable.
                if self._transport is not None:
                    self._transport.close()
                    self._transport = None
                self._in_tx = False
                problem = (f"the store's answer is too large for this connection: {error} (max_frame); "
                           "fetch fewer rows at a time (LIMIT, or a range of primary keys)")
                if in_tx_before:
                    raise exc.operational(f"{problem}; the open transaction was rolled back") from None
                if may_write:
                    raise exc.operational(f"{problem}; the statement ran, its outcome is unknown",
                                          unknown_outcome=True) from None
                raise exc.operational(problem) from None
            except (OSError, wire.ProtocolError) as error:
                if self._transport is not None:
                    self._transport.close()
                    self._transport = None
                self._in_tx = False
                if in_tx_before and self._may_commit(message):
                    raise exc.operational(
                        f"lost the connection to the store during COMMIT ({error}); "
                        "the transaction's outcome is unknown", unknown_outcome=True,
                    ) from None
                if in_tx_before:
                    raise exc.operational(
                        f"lost the connection to the store in the middle of a transaction ({error}); "
                        "it was rolled back on the leader, retry it", retryable=True,
                    ) from None
                if may_write:
                    raise exc.operational(
                        f"lost the connection to the store while a statement ran ({error}); "
                        "its outcome is unknown", unknown_outcome=True,
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise exc.operational(f"cannot reach the store: {error}", retryable=True) from None
            except exc.OperationalError as error:
                # Nobody reachable yet: retry until the deadline.
                if not error.retryable or time.monotonic() + delay > deadline:
                    raise
            else:
                self._in_tx = bool(response.get("in_tx"))
                if self._in_tx and not in_tx_before:
                    self._outer_savepoint = _savepoint_beginning(message)
                if response.get("ok"):
                    index = response.get("index")
                    if type(index) is int and index > self._written_index:
                        self._written_index = index
                    return response
                error = exc.from_payload(response["error"])
                if not (error.retryable and not in_tx_before and message.get("op") != "commit"
                        and time.monotonic() + delay < deadline):
                    raise error
            time.sleep(delay)
            # An election takes 0.4-1.4 s (the default election timeout): a
            # retry every 0.1 s at most finds the new leader soon after it is
            # elected, where 0.5 s steps added up to half a second to a failover.
            delay = min(delay * 2, 0.1)


def _savepoint_beginning(message):
    """The savepoint a request's first statement opens, if it is a SAVEPOINT (else None)."""
    sql = message.get("sql") or ""
    if message.get("op") == "script":
        sql = next(iter(statements.split_script(sql)), "")
    if transaction_control(sql) == statements.SAVEPOINT:
        return statements.savepoint_name(sql)
    return None


def _control_of(message):
    """The transaction control a request is: a ROLLBACK or COMMIT statement, or a rollback or commit request."""
    op = message.get("op")
    if op == "commit":
        return statements.COMMIT
    if op == "rollback":
        return statements.ROLLBACK
    return transaction_control(message.get("sql") or "") if op == "exec" else None


class Cursor:
    arraysize = 1

    def __init__(self, connection):
        self.connection = connection
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self._rows = []
        self._position = 0
        self._more = None  # the id of the node's open result while it has rows left
        self._converters = None  # per column, by declared type (see .declared)
        self._closed = False

    def execute(self, sql, parameters=()):
        self._prepare()
        params = _adapt_parameters(parameters)
        self._implicit_begin(sql)
        response = self.connection._read_locally(sql, params)
        if response is None:
            response = self.connection._request(
                {"op": "exec", "sql": sql, "params": params}, may_write=not _READ_ONLY.match(sql)
            )
        self._load(response)
        return self

    def executemany(self, sql, seq_of_parameters):
        self._prepare()
        params = [_adapt_parameters(p) for p in seq_of_parameters]
        self._implicit_begin(sql)
        response = self.connection._request({"op": "exec", "sql": sql, "params": params, "many": True}, may_write=True)
        self._load(response)
        return self

    def executescript(self, script):
        self._prepare()
        if self.connection.in_transaction and self.connection.isolation_level is not None:
            self.connection.commit()  # as sqlite3 does
        response = self.connection._request({"op": "script", "sql": script}, may_write=True)
        self._load(response)
        return self

    def fetchone(self):
        self._check_open()
        if self._position >= len(self._rows) and not self._next_page():
            return None
        row = self._rows[self._position]
        self._position += 1
        return row

    def fetchmany(self, size=None):
        self._check_open()
        size = self.arraysize if size is None else size
        rows = self._rows[self._position:self._position + size]
        self._position += len(rows)
        while len(rows) < size and self._next_page():
            more = self._rows[:size - len(rows)]
            self._position = len(more)
            rows += more
        return rows

    def fetchall(self):
        self._check_open()
        rows = self._rows[self._position:]
        while self._next_page():
            rows += self._rows
        self._position = len(self._rows)
        return rows

    def __iter__(self):
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self):
        if not self._closed:
            self._drop_result()
        self._closed = True
        self._rows = []

    def setinputsizes(self, sizes):
        pass

    def setoutputsize(self, size, column=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        # A cursor dropped unclosed with rows left: free them on the node too.
        if getattr(self, "_more", None) is not None:
            self._drop_result()

    # -- internals --------------------------------------------------------------------------------

    def _check_open(self):
        if self._closed:
            raise exc.ProgrammingError("Cannot operate on a closed cursor.")
        self.connection._check_open()

    def _prepare(self):
        self._check_open()
        self._drop_result()
        self.description = None
        self.rowcount = -1
        self._rows = []
        self._position = 0

    def _implicit_begin(self, sql):
        conn = self.connection
        if conn.isolation_level is not None and not conn.in_transaction and _DML.match(sql):
            conn._request({"op": "exec", "sql": f"BEGIN {conn.isolation_level}".strip()})

    def _load(self, response):
        columns = response.get("columns")
        self.description = tuple((name, None, None, None, None, None, None) for name in columns) if columns else None
        self._converters = converters_for(response.get("types"))
        self._rows = self._tuples(response.get("rows") or [])
        self._more = response.get("more")
        self.rowcount = response.get("rowcount", -1)
        if response.get("lastrowid") is not None:
            self.lastrowid = response["lastrowid"]

    def _next_page(self):
        """Replace the rows read with the node's next page; False once there is none."""
        while self._more is not None:
            result_id, self._more = self._more, None
            response = self.connection._fetch(result_id)
            self._rows = self._tuples(response.get("rows") or [])
            self._position = 0
            self._more = response.get("more")
            if self._rows:
                return True
        return False

    def _tuples(self, rows):
        if self._converters is not None:
            return convert_rows(rows, self._converters)
        return [tuple(row) for row in rows]

    def _drop_result(self):
        if self._more is not None:
            if not self.connection.closed:
                self.connection._discard(self._more)
            self._more = None


def _adapt(value, position):
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise exc.ProgrammingError(
        f"Error binding parameter {position}: type '{type(value).__name__}' is not supported"
    )


def _adapt_parameters(parameters):
    if parameters is None:
        return []
    if isinstance(parameters, dict):
        return {key: _adapt(value, key) for key, value in parameters.items()}
    if isinstance(parameters, (str, bytes)):
        raise exc.ProgrammingError("parameters must be a sequence or a mapping, not a string")
    return [_adapt(value, index + 1) for index, value in enumerate(parameters)]
