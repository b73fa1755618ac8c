"""Client sessions: what a connected client's requests mean on this node.

A session belongs to one client connection. If this node leads, the
session's transactions run here; otherwise they are forwarded to the leader
over one connection per session, so the transaction lives where it can be
committed. Reads with consistency ``none`` are answered from this node's own
replica.

On the leader, a transaction holds its database's write lock from BEGIN
until its entry is applied: one write transaction at a time (SQLite's rule),
which makes transactions serializable. A deferred one (BEGIN DEFERRED) takes
it at its first write instead, if nothing was committed since it began
reading (see .transactions). Its statements run on the scratch
connection so its reads see its own writes; at COMMIT the scratch work is
rolled back and the recorded statements become ONE log entry (concurrent
clients' entries may travel in one group entry, see .group_commit); the
client is answered once a majority committed it and this node applied it,
by the Raft thread itself when the server gave the session a way to answer
later (``Session.handle``).
"""

import contextlib
import logging
import re
import sqlite3
import threading
import time

from .. import wire
from . import errors
from .bound_values import binds_long_values, holds_long_values
from .classify import SESSION_PRAGMAS, session_pragma
from .databases import InvalidDatabaseName, applied_index_of
from .determinism import FixedValues
from .large_entries import BUSY_FROM, leader_busy_seconds, over_the_limit, statement_bytes
from .parameters import unbindable
from .parsed_schema import make_schema_current
from .read_only import ReadOnlyClient
from .result_pages import OpenResult, OpenResults
from .statemachine import (
    CLONE_DB, DROP_DB, FIRST_FORMAT, LENGTH_FORMAT, STEPS_FORMAT, TX, error_to_wire, is_environmental, new_entry_id,
    rollback_quietly, run_statement,
)
from .statement_steps import cancel_statement_of
from .statements import (
    BEGIN, COMMIT, RELEASE, ROLLBACK, ROLLBACK_TO, SAVEPOINT, savepoint_name, split_script, transaction_control,
)
from .transactions import Transaction, aborted_error as _aborted

logger = logging.getLogger("django_dqcluster.store")

STRONG, WEAK, NONE = "strong", "weak", "none"
CONSISTENCY_LEVELS = (STRONG, WEAK, NONE)
# Statements whose result columns may have declared types (see Session._paged).
_TYPED_STATEMENT = re.compile(r"\s*(SELECT|WITH)\b", re.I)
MAX_FORWARD_HOPS = 2
#: Seconds a node waits to apply a reconnecting ``none`` client's last write (see _wait_for_clients_writes).
CATCH_UP_FOR_CLIENT = 2.0
#: What Session.handle returns when the response goes out through ``answer_later``.
ANSWERED_LATER = object()


# Answered by a node that serves no clients now (Node.serving_problem): its
# status says why, and a driver opens its session before its first request is
# turned away to another node.
ANSWERED_WHEN_NOT_SERVING = frozenset({"status", "servers", "ping", "open"})


class Session:
    def __init__(self, node, peer="local", read_only=False):
        """``read_only``: the client authenticated with a read-only token (see .read_only)."""
        self.node = node
        self.peer = peer
        self.read_only = ReadOnlyClient() if read_only else None
        self.client = f"client {peer}"  # who this session serves, in messages about it
        self.db_name = "default"
        self.consistency = STRONG
        self.pragmas = {}
        self.tx = None  # a Transaction when it runs here
        self.forward = None  # a transport to the leader when it runs there
        self.forward_in_tx = False
        self.hops = 0
        self._answer_later = None
        # Reads a page at a time, when the client can fetch (see .result_pages).
        self.page_bytes = None
        self.results = OpenResults()
        # The client converts values by their column's declared type (see .declared_types).
        self.declared_types = False
        self._readers = {}  # database name -> (Database, the read connection it lent this session)
        # The thread handling the current request, None between requests, and
        # the lock that makes checking it and cancelling one step (see cancel).
        self._thread_id = None
        self._request_lock = threading.Lock()

    # -- entry point -------------------------------------------------------------------------

    def handle(self, request, answer_later=None):
        """Answer one request; StoreError becomes an error response, anything else a bug report.

        ``answer_later``: a callable that sends a response to this client from
        any thread without blocking. Given one, a statement that commits may
        return ANSWERED_LATER and have its response sent through it.
        """
        self._answer_later = answer_later if request.get("op") in ("exec", "commit") else None
        with self._request_lock:
            self._thread_id = threading.get_ident()
        try:
            discard = request.get("discard")
            if isinstance(discard, list):
                self.results.discard(discard)
            return self._dispatch(request)
        except errors.StoreError as exc:
            return {"ok": False, "error": exc.to_wire(), "in_tx": self.in_transaction}
        except InvalidDatabaseName as exc:
            return {"ok": False, "error": errors.programming(str(exc)).to_wire(), "in_tx": self.in_transaction}
        except sqlite3.Error as exc:
            payload = error_to_wire(exc)
            if is_environmental(exc):
                payload["retryable"] = getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            return {"ok": False, "error": payload, "in_tx": self.in_transaction}
        finally:
            with self._request_lock:
                self._thread_id = None

    @property
    def in_transaction(self):
        return self.tx is not None or self.forward_in_tx

    def cancel(self, reason):
        """From another thread: stop the request this session runs, for a client that is gone.

        A statement on the session's own connections (a read, a statement of
        a transaction on the leader) stops with an error saying ``reason``; a
        request forwarded to the leader loses its connection there, and the
        leader's session is cancelled in turn. An entry already in the log is
        not: it commits or not as it would have.
        """
        # Under the lock the request cannot end meanwhile: its thread, alive
        # and serving this session, cannot have handed its id to another
        # client's new thread, whose statement would have been cancelled.
        with self._request_lock:
            if self._thread_id is not None:
                cancel_statement_of(self._thread_id, reason)
        forward = self.forward
        if forward is not None:
            forward.abort()

    def close(self):
        self.results.close_all()
        if self.tx is not None:
            self._end_local(rollback=True)
        if self.forward is not None:
            self.forward.close()
            self.forward = None
        for database, conn in self._readers.values():
            database.return_reader(conn)
        self._readers = {}

    def _reader(self, database):
        """This session's read connection to ``database``, borrowed until the session closes."""
        held = self._readers.get(database.name)
        if held is not None and held[0] is database and database.lends(held[1]):
            return held[1]
        conn = database.borrow_reader()
        self._readers[database.name] = (database, conn)
        return conn

    def _dispatch(self, request):
        op = request.get("op")
        handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            raise errors.programming(f"unknown request {op!r}")
        if op not in ANSWERED_WHEN_NOT_SERVING:
            self.node.check_serving()
        if self.read_only is not None:
            self.read_only.check_request(op)
        return handler(request)

    # -- session settings ----------------------------------------------------------------------

    def _op_open(self, request):
        from .databases import check_name

        name = request.get("db", self.db_name)
        try:
            check_name(name)
        except ValueError as exc:
            raise errors.programming(str(exc)) from None
        consistency = request.get("consistency", self.consistency)
        if consistency not in CONSISTENCY_LEVELS:
            raise errors.programming(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {consistency!r}"
            )
        if self.in_transaction and name != self.db_name:
            raise errors.programming("cannot switch databases inside a transaction")
        self.db_name, self.consistency = name, consistency
        pragmas = request.get("pragmas") or {}
        if not isinstance(pragmas, dict) or not all(isinstance(v, int) for v in pragmas.values()):
            raise errors.programming("open needs pragmas as a mapping of names to 0 or 1")
        self.pragmas.update({k: int(v) for k, v in pragmas.items() if k in SESSION_PRAGMAS})
        hops = request.get("hops", 0)
        if isinstance(hops, bool) or not isinstance(hops, int):
            raise errors.programming(f"open needs hops as a whole number, not {hops!r}"[:200])
        self.hops = hops
        origin = request.get("client")
        if self.hops and isinstance(origin, str):
            self.client = origin[:300]  # the client a follower forwards for
        if "declared_types" in request:
            self.declared_types = bool(request["declared_types"])
        page_bytes = request.get("page_bytes")
        if page_bytes is not None:
            if isinstance(page_bytes, bool) or not isinstance(page_bytes, int) or page_bytes < 1:
                raise errors.programming(f"page_bytes must be a positive number of bytes, not {page_bytes!r}")
            self.page_bytes = page_bytes
        if self.forward is not None:
            self._forward_settings()
        after = request.get("after")
        if consistency == NONE and isinstance(after, int) and not isinstance(after, bool):
            self._wait_for_clients_writes(after)
        response = {"ok": True, "node": self.node.config.bind, "servers": self.node.servers()}
        if request.get("replica") and consistency == NONE:
            # None once the node withdrew its files (it is stopping, or diverged).
            response["replica"] = self.node.state_machine.databases.replica_offer(name)
        return response

    def _wait_for_clients_writes(self, index):
        """A ``none`` client back after a failover reads its own writes here too.

        ``index`` is the newest entry the client's writes were answered with,
        maybe by another node: this node's replica must hold it before the
        client reads from it (through this node or from its file). A node
        that cannot catch up within a moment (cut off from the leader) says
        so, retryably, rather than serve a read that misses the client's
        own write.
        """
        if not self.node.wait_applied(index, min(self.node.config.commit_timeout, CATCH_UP_FOR_CLIENT)):
            raise errors.retryable(
                f"node {self.node.config.bind} has not yet applied entry {index}, the newest this client "
                f"wrote (it applied up to {self.node.engine.raftLastApplied}); retry"
            )

    def _op_ping(self, request):
        return {"ok": True, "role": self.node.role()}

    def _op_status(self, request):
        if request.get("of") == "leader" and not self.node.is_leader():
            return self._forwarded(request)  # e.g. who holds the write locks: transactions run there
        return {"ok": True, "status": self.node.status()}

    def _op_servers(self, request):
        return {"ok": True, "servers": self.node.servers(), "leader": self.node.leader_client_address()}

    # -- statements ------------------------------------------------------------------------------

    def _op_exec(self, request):
        sql = request.get("sql")
        if not isinstance(sql, str):
            raise errors.programming("exec needs the SQL text as a string")
        params = request.get("params")
        many = bool(request.get("many"))
        problem = unbindable(params, many)
        if problem:
            raise errors.programming(problem)
        if many and not params:
            # As sqlite3: executemany() over no parameter sets runs nothing
            # (and there is nothing to bind when classifying the statement).
            return self._result({"columns": None, "rows": [], "rowcount": 0, "lastrowid": None})
        control = transaction_control(sql)
        if control is None and not many:
            pragma = session_pragma(sql)
            if pragma is not None and not self.in_transaction:
                return self._session_pragma(*pragma)
        if self.read_only is not None:
            sql = self.read_only.statement(sql, params, many, control, self.in_transaction, self._classify)
            if sql is None:
                return self._result(None)
            request = {**request, "sql": sql}
        if self.tx is not None:
            # The transaction runs here; if leadership was lost it is aborted,
            # never continued elsewhere (but one begun on this follower moves
            # to the leader at its first write: _move_to_leader).
            if control is not None:
                return self._transaction_control(control, sql)
            return self._in_transaction(sql, params, many)
        if self.forward_in_tx:
            return self._forwarded(request)
        if request.get("begin_deferred") is True and control is None and not many and self.node.is_leader():
            # The first read of a deferred transaction begun on a follower (_first_read_on_follower).
            self._begin_deferred(follower_applied=request.get("applied_here"))
            return self._in_transaction(sql, params, many)
        local_read = None
        if not self.node.is_leader():
            if control == BEGIN and _DEFERRED.match(sql) and self._reads_transactions_here():
                return self._transaction_control(control, sql)
            local_read = self._local_read(sql, params, control)
            if local_read is None:
                return self._forwarded(request)
            if self.consistency != NONE:
                answer = self._read_on_follower(request)
                if answer is not None:
                    return answer
        if control is not None:
            return self._transaction_control(control, sql, request.get("read_at"))
        return self._autocommit(sql, params, many, local_read, request.get("applied_here"))

    def _op_script(self, request):
        """Several statements in one string: one transaction unless the script manages its own."""
        script = request.get("sql") or ""
        if not isinstance(script, str):
            raise errors.programming("script needs the SQL text as a string")
        statements = split_script(script)
        manages_own = any(transaction_control(s) for s in statements)
        wrap = not manages_own and not self.in_transaction and len(statements) > 1
        if wrap:
            self._ok_or_raise(self._op_exec({"op": "exec", "sql": "BEGIN"}))
        try:
            for statement in statements:
                self._ok_or_raise(self._op_exec({"op": "exec", "sql": statement}))
        except (errors.StoreError, sqlite3.Error):
            if wrap and self.in_transaction:
                self._op_exec({"op": "exec", "sql": "ROLLBACK"})
            raise
        if wrap:
            self._ok_or_raise(self._op_exec({"op": "exec", "sql": "COMMIT"}))
        return {"ok": True, "columns": None, "rows": [], "rowcount": -1, "lastrowid": None, "in_tx": self.in_transaction}

    def _op_commit(self, request):
        return self._op_exec({"op": "exec", "sql": "COMMIT"}) if self.in_transaction else self._result(None)

    def _op_rollback(self, request):
        return self._op_exec({"op": "exec", "sql": "ROLLBACK"}) if self.in_transaction else self._result(None)

    @staticmethod
    def _ok_or_raise(response):
        if not response.get("ok"):
            error = response["error"]
            raise errors.StoreError(
                error["kind"], error["message"], retryable=error.get("retryable", False),
                unknown_outcome=error.get("unknown_outcome", False), code=error.get("code"),
            )
        return response

    def _session_pragma(self, name, value):
        if value is None:
            current = self.pragmas.get(name, 1 if name == "foreign_keys" else 0)
            return self._result({"columns": [name], "rows": [[current]], "rowcount": -1, "lastrowid": None})
        self.pragmas[name] = value
        if self.forward is not None:
            self._forward_settings()
        return self._result(None)

    def _classify(self, sql, params):
        """What ``sql`` does, compiled against this node's copy of the session's database."""
        database = self.node.state_machine.databases.get(self.db_name)
        try:
            return self.node.leader_state.classifier(self._reader(database), sql, params, database.path)
        except sqlite3.Error:
            if self.node.is_leader():
                raise
            # Maybe a table this replica has not applied yet: catch up, once.
            self._wait_applied()
            return self.node.leader_state.classifier(self._reader(database), sql, params, database.path)

    def _local_read(self, sql, params, control):
        """On a follower: the statement's classification if this replica may answer it, else None.

        With ``none``, it answers every read; with ``strong`` and ``weak``, the
        reads the leader lets it answer (see _read_on_follower).
        """
        if control is not None:
            return None
        database = self.node.state_machine.databases.get(self.db_name)
        try:
            info = self.node.leader_state.classifier(self._reader(database), sql, params, database.path)
        except sqlite3.Error:
            return None  # let the leader report the error (or it has a table this replica has not yet)
        return None if info.writes or info.problem is not None else info

    def _read_on_follower(self, request):
        """A strong or weak read on a follower: the leader's answer, or None when this replica may answer it.

        The read goes to the leader with this replica's applied index. A
        strong read's leader first proves it leads (its lease, else a read
        barrier), and then knows every write answered so far is within its
        own applied state; a weak read is of that state as the leader has it,
        unproven. Either way, if this replica has applied the leader's last
        entry that changed data (barriers, such as the one a read barrier may
        have added, change none), the leader says so instead of running the
        read, and the read runs here, on this host's CPU, not on the leader's
        one Raft process, which otherwise runs every host's reads; what it
        sees is what the leader would have seen, or newer. Either way one
        round trip. A replica behind (the last commit not known here yet:
        with steady writes, often) has the leader run it, as a leader of an
        older release always does (it ignores the index).
        """
        reads = self.node.follower_reads[self.consistency]
        response = self._forwarded(dict(request, applied_here=self.node.state_machine.last_index))
        if response.get("read_here"):
            reads.answered_here.add()
            return None
        reads.sent_to_leader.add()
        return response

    def _result(self, result):
        response = {"ok": True, "in_tx": self.in_transaction}
        if result is None:
            response.update(columns=None, rows=[], rowcount=-1, lastrowid=None)
        else:
            response.update(result)
        return response

    # -- on the leader: autocommit ---------------------------------------------------------------

    def _autocommit(self, sql, params, many, info=None, applied_there=None):
        """``info``: the statement's classification when the caller already has it.

        ``applied_there``: for a strong or weak read a follower sent, the
        index its replica has applied (see _read_on_follower).
        """
        database = self.node.state_machine.databases.get(self.db_name)
        reader = self._reader(database)
        if info is None:
            first_params = (params[0] if params else None) if many else params
            info = self.node.leader_state.classifier(reader, sql, first_params, database.path)
        problem = info.refusal()
        if problem:
            raise errors.operational(problem)
        if not info.writes:
            if many:
                raise errors.programming("executemany() can only run statements that write")
            if self.node.is_leader() and self.consistency != NONE:
                if self.consistency == STRONG:
                    self.node.read_barrier()
                if (self.hops and isinstance(applied_there, int)
                        and applied_there >= self.node.state_machine.last_data_index):
                    return {"ok": True, "in_tx": False, "read_here": True}
            return self._result(self._read(database, reader, sql, params))
        size = statement_bytes(sql, params, many)
        limit = self.node.config.max_transaction_bytes
        if limit < self.node.config.max_frame:  # (else the frame it came in kept it within the limit)
            problem = over_the_limit(0, size, limit, False)
            if problem:
                raise errors.operational(problem)
        if info.timed and self.node.config.max_regexp_seconds:
            return self._run_first(sql, params, many)
        entry = self._entry(database, [[0, sql, params, many, False]], FixedValues.fresh(), want_result=True)
        if self._answer_later is not None:
            return self._append(database, entry, on_outcome=self._answer_with(self._statement_outcome), size=size)
        return self._applied(self._statement_outcome, self._append(database, entry, size=size))

    def _run_first(self, sql, params, many):
        """An autocommit write that may call REGEXP: run here first, as a transaction of its own.

        Applied straight from the log, its matching could not be held to
        max_regexp_seconds (regexp_time.py). Run on the scratch connection
        first, a statement over the limit fails before anything reaches the
        log; one within it is committed as a transaction's statements are,
        and answered with what it returned here (what every node's apply
        returns too).
        """
        self._begin()
        try:
            response = self._in_transaction(sql, params, many)
        except BaseException:
            self._end_local(rollback=True)
            raise
        # Committed from this thread: the answer is the statement's, not the COMMIT's.
        answer_later, self._answer_later = self._answer_later, None
        try:
            committed = self._commit()
        finally:
            self._answer_later = answer_later
        response["in_tx"] = False
        response["index"] = committed.get("index")
        return response

    def _statement_outcome(self, result):
        _raise_entry_error(result)
        return self._result(result["results"][0] if result.get("results") else None)

    def _answer_with(self, respond):
        """An entry's ``on_outcome``: send ``respond(result)``, or the error, through answer_later.

        The Raft thread runs it as it applies the entry, while this session's
        thread is already back to reading the next request: a commit then
        wakes no session thread at all. With many clients those wake-ups
        (each a contended GIL hand-over) were most of the leader's time:
        8 clients committed ~35% more per second without them.

        Both callers (an autocommit statement, a COMMIT) end outside a
        transaction, and the answer says so: it must not read the session's
        state, which its own thread may not have updated yet.
        """
        answer = self._answer_later

        def deliver(pending):
            try:
                response = self._applied(respond, pending)
            except errors.StoreError as exc:
                response = {"ok": False, "error": exc.to_wire()}
            response["in_tx"] = False
            answer(response)

        return deliver

    @staticmethod
    def _applied(respond, pending):
        """The answer ``respond`` makes of an applied entry's outcome, with the entry's Raft index.

        A follower that forwarded the request answers its client only once
        it has applied that index itself (see _forwarded).
        """
        response = respond(pending.outcome())
        response["index"] = pending.index
        return response

    def _entry(self, database, statements, values, want_result=False):
        entry = {
            "kind": TX,
            "id": new_entry_id(),
            "db": database.name,
            "now": values.now,
            "seed": values.seed,
            "pragmas": dict(self.pragmas),
            "stmts": statements,
            "want_result": want_result,
        }
        # Every node holds the statements to the leader's limits (value_size.py,
        # statement_steps.py), those every member's code knows: while one runs
        # an older release, an entry carrying a limit it does not know would
        # stop it (see statemachine.writable_entry_format).
        entry_format = self.node.writable_entry_format()
        if entry_format >= LENGTH_FORMAT:
            entry["length"] = self.node.config.max_frame
        if entry_format >= STEPS_FORMAT and self.node.config.max_statement_steps:
            entry["steps"] = self.node.config.max_statement_steps
        if entry_format > FIRST_FORMAT:
            entry["format"] = entry_format
        return entry

    def _append(self, database, entry, on_outcome=None, size=0):
        """Append one entry for ``database`` in write-lock order and wait until it is applied
        (its PendingEntry; raises if it failed), or, given ``on_outcome``, return
        ANSWERED_LATER at once. ``size``: as for _enqueue_locked."""
        self._require_leader()
        self._acquire(database, "a write")
        try:
            # Encoding a large entry holds up the Raft thread (large_entries.LEADER_BUSY).
            self.node.engine.announce_large_entry(size)
            pending = self._enqueue_locked(database, entry, on_outcome, size)
        finally:
            database.write_lock.release()
        if on_outcome is not None:
            return ANSWERED_LATER
        pending.wait()
        return pending

    def _enqueue_locked(self, database, entry, on_outcome=None, size=0):
        """``size``: about how many bytes the entry's statements take (a large one is waited for longer)."""
        # Called with the database's write lock held: enqueue order is log order.
        database.entry_started()
        try:
            return self.node.enqueue(entry, on_done=database.entry_finished, on_outcome=on_outcome,
                                     announce=self._follower_waits,
                                     patience=leader_busy_seconds(size) if size >= BUSY_FROM else 0.0, size=size)
        except BaseException:
            database.entry_finished()
            raise

    def _require_leader(self):
        if not self.node.is_leader():
            raise errors.retryable("this node stopped being the leader; retry (the driver finds the new one)")

    def _acquire(self, database, what):
        """Take ``database``'s write lock for ``what`` this client runs; after busy_timeout, say who holds it."""
        waited = self.node.config.busy_timeout
        if not database.write_lock.acquire(f"{what} of {self.client}", timeout=waited):
            holder = database.write_lock.holder()
            held = f"{holder[0]} has held it for {holder[1]:.1f} s" if holder else "another transaction held it"
            raise errors.StoreError(
                wire.OPERATIONAL, f"database is locked: {held} (waited {waited:g} s)", retryable=True,
                code="SQLITE_BUSY",
            )

    # -- on the leader: transactions -------------------------------------------------------------

    def _transaction_control(self, control, sql, read_at=None):
        """``read_at``: with BEGIN DEFERRED on the leader, a follower's transaction moved here (_move_to_leader)."""
        if control == BEGIN:
            if self.tx is not None:
                raise errors.operational("cannot start a transaction within a transaction")
            if not _DEFERRED.match(sql):
                self._begin()
                return self._result(None)
            if self.node.is_leader():
                if read_at is not None and (isinstance(read_at, bool) or not isinstance(read_at, int)):
                    raise errors.programming(f"read_at must be an index, not {read_at!r}"[:200])
                self._begin_deferred(read_at=read_at)
                # Said back, so that the follower knows this leader checks it.
                return dict(self._result(None), read_at=read_at) if read_at is not None else self._result(None)
            self._begin_on_follower()
            return self._result(None)
        if control == SAVEPOINT and self.tx is None:
            self._begin(started_by_savepoint=savepoint_name(sql))
        if self.tx is None:
            if control in (COMMIT, ROLLBACK):
                raise errors.operational(f"cannot {control} - no transaction is active")
            raise errors.operational(f"no such savepoint: {savepoint_name(sql)}")
        if control == COMMIT:
            return self._commit()
        if control == ROLLBACK:
            self._end_local(rollback=True)
            return self._result(None)
        if control == RELEASE and self.tx.started_by_savepoint and \
                savepoint_name(sql).lower() == self.tx.started_by_savepoint.lower():
            return self._commit()  # releasing the outermost savepoint commits, as in SQLite
        return self._in_transaction(sql, None, False, control=control)

    def _begin(self, started_by_savepoint=None):
        self._require_leader()
        database = self.node.state_machine.databases.get(self.db_name)
        self._acquire(database, "a transaction")
        try:
            self._catch_up(database)
            tx = Transaction(database, self.pragmas, started_by_savepoint, results=self.results)
            _start_scratch(database, tx.pragmas)
        except BaseException:
            database.write_lock.release()
            raise
        self.tx = tx
        self.node.leader_state.register(tx)

    def _begin_deferred(self, read_at=None, follower_applied=None):
        """BEGIN DEFERRED: a read snapshot at its first read, the write lock at its first write (see Transaction).

        ``read_at`` and ``follower_applied``: a follower's transaction, moved
        here (_move_to_leader) or at its first read (_first_read_on_follower).
        """
        self._require_leader()
        database = self.node.state_machine.databases.get(self.db_name)
        tx = Transaction(database, self.pragmas, deferred=True, results=self.results)
        tx.read_at, tx.follower_applied = read_at, follower_applied
        self.tx = tx
        self.node.leader_state.register(tx)

    def _take_snapshot(self, tx, proven=False):
        """A deferred transaction's first read: the state its reads see from now on.

        ``proven``: the caller made sure this node's state holds what the read
        needs (else _read_barrier does).
        """
        database = tx.database
        # Every write answered before it (Node.read_barrier); should the
        # transaction write later, _upgrade finds any entry applied since.
        if not proven:
            self._read_barrier()
        conn = database.borrow_reader()
        try:
            conn.execute("BEGIN")
            # The first read starts the snapshot; the applied index is
            # stored in the same file, so this is the index it reflects.
            tx.snapshot = (conn, applied_index_of(conn))
        except BaseException:
            rollback_quietly(conn)
            database.return_reader(conn)
            raise
        if tx.read_at is not None and tx.snapshot[1] != tx.read_at:
            # Moved from a follower, it read there what this state no longer
            # is: no snapshot here shows what it saw (nor does this one stay).
            self._end_snapshot(tx)
            tx.snapshot = None
            raise _busy_snapshot()
        return conn

    def _deferred_statement(self, sql, params, many, control):
        """A statement of a deferred transaction: its result if it only reads, else None once it holds the lock."""
        tx = self.tx
        if tx.aborted:
            self._end_local(rollback=True)
            raise _aborted(tx.aborted)
        if tx.on_follower:
            return self._follower_statement(tx, sql, params, many, control)
        if control in (SAVEPOINT, RELEASE, ROLLBACK_TO):
            # Nothing it did needs undoing yet: kept by name, lock-free, until its first write.
            tx.savepoints.run(control, sql)
            return self._result(None)
        if control is None and not many and session_pragma(sql) is None:
            # Before its first read, compile on the session's own read
            # connection: a snapshot taken only to classify a first write
            # could go stale and fail it for nothing.
            conn = tx.snapshot[0] if tx.snapshot is not None else self._reader(tx.database)
            info = self.node.leader_state.classifier(conn, sql, params, tx.database.path)
            problem = info.refusal()
            if problem:
                raise errors.operational(problem)
            if not info.writes:
                if tx.snapshot is None:
                    self._read_barrier()
                    applied_there, tx.follower_applied = tx.follower_applied, None
                    if isinstance(applied_there, int) and applied_there >= self.node.state_machine.last_data_index:
                        # The follower holds every answered write: its
                        # replica takes the snapshot (as _autocommit's reads).
                        self._end_local(rollback=True)
                        return {"ok": True, "in_tx": False, "read_here": True}
                    self._take_snapshot(tx, proven=True)
                return self._snapshot_read(tx, sql, params)
        self._upgrade(tx)
        return None

    def _snapshot_read(self, tx, sql, params):
        """A read of a deferred transaction, from its snapshot."""
        conn = tx.snapshot[0]
        tx.bound_long_values = tx.bound_long_values or holds_long_values(params)
        with conn.steps_limited(self.node.config.max_statement_steps):
            make_schema_current(conn, sql)
            if not self.page_bytes:
                return self._result(run_statement(conn, sql, params, False))
            cursor = conn.execute(sql, params if params is not None else ())
        result = OpenResult(cursor, owner=tx, steps=self.node.config.max_statement_steps)
        return self._result(self._paged(cursor, result, tx.database, sql))

    # -- on a follower: deferred transactions that read here -----------------------------------

    def _reads_transactions_here(self):
        """Does a BEGIN DEFERRED on this follower run here (until its first write), not on the leader?

        Not for a session the leader forwards for another follower (that
        follower would have run it itself), nor while the leader is one that
        cannot continue such a transaction (_move_to_leader).
        """
        return self.hops == 0 and self.node.leader_continues_follower_transactions()

    def _begin_on_follower(self):
        """BEGIN DEFERRED on a follower: nothing to ask anyone until its first statement."""
        database = self.node.state_machine.databases.get(self.db_name)
        tx = Transaction(database, self.pragmas, deferred=True, results=self.results)
        tx.on_follower = True
        self.tx = tx
        self.node.follower_transactions.begun_here.add()

    def _follower_statement(self, tx, sql, params, many, control):
        """A statement of a deferred transaction begun on this follower: read here, or moved to the leader.

        Its reads see one snapshot of this replica, as a deferred
        transaction's on the leader see one of the leader's: taken at its
        first read, once the leader said this replica holds every answered
        write (strong and weak; ``none`` reads the replica as it is). Its
        savepoints are kept by name. Its first write, or anything but a read,
        moves it to the leader, which takes the write lock only if nothing
        was committed to the database since the snapshot.
        """
        if control in (SAVEPOINT, RELEASE, ROLLBACK_TO):
            tx.savepoints.run(control, sql)
            return self._result(None)
        if control is None and not many and session_pragma(sql) is None:
            conn = tx.snapshot[0] if tx.snapshot is not None else self._reader(tx.database)
            try:
                info = self.node.leader_state.classifier(conn, sql, params, tx.database.path)
            except sqlite3.Error:
                if tx.snapshot is not None:
                    raise  # what the leader's snapshot, the same state, would say
                info = None  # maybe a table this replica has not applied yet: the leader will say
            problem = info.refusal() if info is not None else None
            if problem:
                raise errors.operational(problem)
            if info is not None and not info.writes:
                if tx.snapshot is None:
                    answer = self._first_read_on_follower(tx, sql, params)
                    if answer is not None:
                        return answer
                return self._snapshot_read(tx, sql, params)
        return self._move_to_leader(tx, sql, params, many)

    def _first_read_on_follower(self, tx, sql, params):
        """Take the transaction's snapshot here; or the leader's answer, the transaction now running there.

        As a strong or weak read outside a transaction (_read_on_follower),
        one round trip: the leader proves it leads (strong) and, if this
        replica has applied its last entry that changed data, says so, and
        the snapshot is taken here. Otherwise it begins the transaction
        itself with this read, and the rest of it is forwarded.
        """
        if self.consistency == NONE:
            self._take_snapshot(tx, proven=True)  # this replica as it is, as any read with none
            return None
        response = self._read_on_follower({"op": "exec", "sql": sql, "params": params, "begin_deferred": True})
        if response is None:
            self._take_snapshot(tx, proven=True)
            return None
        if not response.get("ok") and not response.get("in_tx"):
            # Nothing began there: the transaction is still this node's.
            response["in_tx"] = self.in_transaction
            return response
        self.node.follower_transactions.run_by_leader.add()
        self._end_local(rollback=True)
        if response.get("in_tx"):
            return response  # the transaction runs on the leader from now on (forward_in_tx)
        # A leader of an older release ran the read alone, not as a
        # transaction's first read: the transaction begins there anew.
        self._ok_or_raise(self._forwarded({"op": "exec", "sql": "BEGIN DEFERRED"}))
        return self._forwarded({"op": "exec", "sql": sql, "params": params})

    def _move_to_leader(self, tx, sql, params, many):
        """The transaction writes (or runs anything but a read): it goes on on the leader.

        The leader begins it deferred, told the applied index of the database
        its snapshot here saw (``read_at``); the first write there takes the
        write lock only if the database is still at that index, else fails
        with "database is locked" (SQLITE_BUSY_SNAPSHOT), as on the leader.
        Its open savepoints are opened there too. Until the leader confirmed
        the BEGIN, the transaction is still this node's: a lost connection
        leaves it open here, for the client to retry the statement.
        """
        begin = {"op": "exec", "sql": "BEGIN DEFERRED"}
        if tx.snapshot is not None:
            begin["read_at"] = tx.snapshot[1]
        response = self._forwarded(begin)
        if not response.get("ok"):  # nothing began there: the transaction is still this node's
            response["in_tx"] = self.in_transaction
            return response
        if "read_at" in begin and response.get("read_at") != begin["read_at"]:
            # A leader of an older release began a transaction that would
            # not check what this one read: it could write over a commit it
            # never saw. Until the leader changes, this node's deferred
            # transactions begin on the leader.
            self._drop_forward()  # (the leader's session rolls back what it began)
            self.node.leader_cannot_continue_follower_transactions()
            self._end_local(rollback=True)
            raise errors.retryable(
                "the leader runs an older release of django-dqcluster, which cannot go on with a transaction "
                "that read on a follower; it was rolled back, retry it (it will run on the leader)"
            )
        savepoints = tx.savepoints.statements()
        self.node.follower_transactions.moved_to_leader.add()
        self._end_local(rollback=True)  # its snapshot here; the transaction is the leader's now
        for savepoint in savepoints:
            self._ok_or_raise(self._forwarded({"op": "exec", "sql": savepoint}))
        return self._forwarded({"op": "exec", "sql": sql, "params": params, "many": many})

    def _upgrade(self, tx):
        """A deferred transaction's first write: take the write lock, if its snapshot is still current."""
        database = tx.database
        self._require_leader()
        self._acquire(database, "a transaction")
        try:
            self._catch_up(database)
            if tx.aborted:
                raise _aborted(tx.aborted)
            read_at = tx.snapshot[1] if tx.snapshot is not None else tx.read_at
            if read_at is not None and database.applied_index != read_at:
                raise _busy_snapshot()
            _start_scratch(database, tx.pragmas)
        except BaseException:
            database.write_lock.release()
            raise
        if tx.snapshot is not None:
            self._end_snapshot(tx)
        tx.took_lock()
        if tx.aborted:  # leadership was lost while it took the lock
            self._end_local(rollback=True)
            raise _aborted(tx.aborted)
        # The savepoints it opened while it only read, open now as a
        # transaction's statements (recorded, to be replayed in its entry).
        for savepoint in tx.savepoints.statements():
            self._in_transaction(savepoint, None, False, control=SAVEPOINT)

    def _end_snapshot(self, tx):
        conn = tx.snapshot[0]
        self.results.read_rest_of(tx, _unreadable_after(tx))
        rollback_quietly(conn)
        if tx.bound_long_values:  # (see .bound_values)
            tx.database.close_reader(conn)
        else:
            tx.database.return_reader(conn)

    def _read_barrier(self):
        """Make this node's state hold what a read needs at the session's consistency."""
        if self.consistency == STRONG:
            self.node.read_barrier()
        else:
            self._wait_applied()

    def _catch_up(self, database):
        """With ``database``'s write lock: its state holds every commit, ours included."""
        if self.consistency == STRONG:
            self.node.barrier()  # more than a read needs: what it writes is applied after them all
        else:
            self._wait_applied()
        if not database.wait_entries_applied(self.node.config.commit_timeout):
            # A callback that never came (its entry lost with a leader
            # change): a barrier proves everything before it is resolved.
            self.node.barrier()
            database.forget_entries_in_flight()

    def _wait_applied(self):
        engine = self.node.engine
        deadline = time.monotonic() + self.node.config.commit_timeout
        while engine.raftLastApplied < engine.raftCommitIndex:
            if time.monotonic() > deadline:
                raise errors.retryable("this node is still applying committed entries")
            time.sleep(0.001)

    def _in_transaction(self, sql, params, many, control=None):
        tx = self.tx
        if tx.deferred:
            result = self._deferred_statement(sql, params, many, control)
            if result is not None:
                return result
        database = tx.database
        scratch = database.scratch_connection()
        # Everything from here runs on the scratch connection, where an abort's
        # interrupt may land anywhere: in the classifier's PRAGMA and EXPLAIN
        # as much as in the statement itself.
        with tx.running, _abort_reported(tx):
            if tx.aborted:
                self._end_local(rollback=True)
                raise _aborted(tx.aborted)
            if control is None:
                first = (params[0] if params else None) if many else params
                info = self.node.leader_state.classifier(scratch, sql, first, database.path)
                problem = info.refusal()
                if problem:
                    raise errors.operational(problem)
                writes = info.writes
                added = statement_bytes(sql, params, many) if writes else 0
                problem = over_the_limit(tx.entry_bytes, added, self.node.config.max_transaction_bytes, True)
                if problem:
                    raise errors.operational(problem)
                if not tx.bound_long_values:
                    tx.bound_long_values = (binds_long_values(params, many, added) if writes
                                            else holds_long_values(params))
            else:
                writes = True  # savepoints must be replayed to reproduce partial rollbacks
                added = len(sql)
            ordinal = tx.ordinal
            tx.ordinal += 1
            tx.values.start_statement(ordinal)
            tx.values.writing = writes
            functions = database.scratch_functions
            functions.values = tx.values
            steps = self.node.config.max_statement_steps
            try:
                with scratch.steps_limited(steps):
                    make_schema_current(scratch, sql)
                    if writes or control is not None or many or not self.page_bytes:
                        result = run_statement(scratch, sql, params, many)
                    else:
                        cursor = scratch.execute(sql, params if params is not None else ())
                        result = OpenResult(cursor, guard=tx.running, owner=tx, steps=steps)
                        result = self._paged(cursor, result, database, sql)
            except sqlite3.Error as exc:
                if writes and not is_environmental(exc):
                    tx.statements.append([ordinal, sql, params, many, True])
                    tx.entry_bytes += added
                if not scratch.in_transaction:
                    # Some errors make SQLite roll the whole transaction back.
                    self._end_local(rollback=True)
                if tx.values.error:
                    raise sqlite3.OperationalError(tx.values.error) from None
                raise
            finally:
                functions.values = None
            if writes:
                tx.writes = tx.writes or control is None
                tx.statements.append([ordinal, sql, params, many, False])
                tx.entry_bytes += added
        return self._result(result)

    def _commit(self):
        """COMMIT the transaction: one log entry; the response (or ANSWERED_LATER)."""
        tx = self.tx
        if tx.deferred:  # it never wrote
            aborted = tx.aborted
            self._end_local(rollback=True)
            if aborted:
                raise _aborted(aborted)
            return self._result(None)
        database = tx.database
        scratch = database.scratch_connection()
        with database.scratch_mutex:
            aborted = tx.aborted
            if not aborted:  # else whoever aborted it rolled it back
                # It holds the lock until its entry is enqueued, in log order.
                tx.committing = True
                self.results.read_rest_of(tx, _unreadable_after(tx))
                rollback_quietly(scratch)
        if aborted:
            self._end_local(rollback=True)
            raise _aborted(aborted)
        if not tx.writes:
            self._end_local(rollback=True)
            return self._result(None)
        on_outcome = None
        if self._answer_later is not None:
            on_outcome = self._answer_with(self._commit_outcome)
        try:
            self._require_leader()
            # Encoding a large entry holds up the Raft thread (large_entries.LEADER_BUSY).
            self.node.engine.announce_large_entry(tx.entry_bytes)
            pending = self._enqueue_locked(database, self._entry(database, tx.statements, tx.values), on_outcome,
                                           tx.entry_bytes)
        finally:
            self._end_local(rollback=False)
        if on_outcome is not None:
            return ANSWERED_LATER
        pending.wait()
        return self._applied(self._commit_outcome, pending)

    # -- reads a page at a time ---------------------------------------------------------------

    def _read(self, database, reader, sql, params):
        """A read outside a transaction on the session's read connection, paged if the client fetches."""
        # One that binds a long value keeps a copy of it as long as the
        # connection lives (see .bound_values): the connection is closed after it.
        kept = not holds_long_values(params)
        stepping = False
        try:
            with reader.steps_limited(self.node.config.max_statement_steps):
                make_schema_current(reader, sql)
                if not self.page_bytes:
                    return run_statement(reader, sql, params, False)
                cursor = reader.execute(sql, params if params is not None else ())
            result = OpenResult(cursor, steps=self.node.config.max_statement_steps)
            response = self._paged(cursor, result, database, sql)
            if result.stepping:
                # The statement keeps stepping on this connection, with its read
                # snapshot: the session's later reads get another connection.
                # (Only while it steps: rows over a page but all read with the
                # first one have ended their cursor already, and a connection
                # handed to such a result went to no one, open for good.)
                self._readers.pop(database.name, None)
                result.release = database.return_reader if kept else database.close_reader
                stepping = True
            return response
        finally:
            if not kept and not stepping:
                self._close_reader(database, reader)

    def _close_reader(self, database, reader):
        if self._readers.get(database.name, (None, None))[1] is reader:
            del self._readers[database.name]
        database.close_reader(reader)

    def _paged(self, cursor, result, database, sql):
        """The answer to a statement ``cursor`` has just run: its first page, and with it,
        for a client that converts by it, the declared type of each column."""
        if cursor.description is None:
            result.close()
            return {"columns": None, "rows": [], "rowcount": cursor.rowcount, "lastrowid": None}
        types = self._declared_types(database, cursor.connection, sql)
        response = {"columns": [d[0] for d in cursor.description], "rowcount": cursor.rowcount, "lastrowid": None}
        response = self.results.first_page(response, result, self.page_bytes)
        if types is not None and response["rows"]:
            response["types"] = types
        return response

    def _declared_types(self, database, conn, sql):
        """The declared type of each column of the statement ``conn`` is running, if the client wants them.

        Asked while the statement's read transaction is open (sqlite3 steps a
        statement once as it executes it), so the schema version read is the
        one its rows come from. Only SELECTs: a PRAGMA's columns have no
        declared type, and an autocommit write's RETURNING rows come from
        the apply connection, alike for every client.
        """
        if not self.declared_types or not _TYPED_STATEMENT.match(sql):
            return None
        try:
            schema_version = conn.execute("PRAGMA schema_version").fetchone()[0]
        except sqlite3.Error:
            return None  # the statement ran: its values are answered as stored
        return database.declared_types.of(sql, schema_version)

    def _op_fetch(self, request):
        """The next page of an open result (its answer has ``more`` while rows are left)."""
        result_id = _text(request, "result")
        if result_id not in self.results and self.forward is not None:
            return self._forwarded(request)  # the leader ran the statement
        if self.tx is not None and self.tx.aborted:
            aborted = self.tx.aborted
            self._end_local(rollback=True)
            raise _aborted(aborted)
        with _abort_reported(self.tx):
            return self._result(self.results.fetch(result_id, self.page_bytes or 1))

    def _commit_outcome(self, result):
        _raise_entry_error(result)
        return self._result(None)

    def _end_local(self, rollback):
        tx = self.tx
        if tx is None:
            return
        self.tx = None
        database = tx.database
        if tx.deferred:
            if tx.snapshot is not None:
                self._end_snapshot(tx)
        else:
            with database.scratch_mutex:
                if tx.holds_lock:
                    if rollback:
                        self.results.read_rest_of(tx, _unreadable_after(tx))
                else:
                    # Aborted: its work is rolled back, and the scratch
                    # connection may be another transaction's by now.
                    self.results.drop_owned_by(tx, _unreadable_after(tx))
                tx.end(rollback_scratch=rollback)
        self.node.leader_state.unregister(tx)

    # -- databases ---------------------------------------------------------------------------

    def _op_list_databases(self, request):
        return {"ok": True, "databases": self.node.state_machine.databases.names()}

    def _op_drop_database(self, request):
        if not self.node.is_leader():
            return self._forwarded(request)
        database = self.node.state_machine.databases.get(_text(request, "db"))
        pending = self._append(database, {"kind": DROP_DB, "db": database.name})
        return {"ok": True, "index": pending.index}

    def _op_clone_database(self, request):
        if not self.node.is_leader():
            return self._forwarded(request)
        databases = self.node.state_machine.databases
        source_name, target = _text(request, "src"), databases.get(_text(request, "dst"))
        if source_name == target.name:
            # The clone replaces its target's files: it wiped the database.
            raise errors.programming(f"cannot clone database {source_name!r} onto itself")
        if not databases.exists(source_name):
            raise errors.programming(f"cannot clone database {source_name!r}: there is no such database")
        source = databases.get(source_name)
        pending = self._append(source, {"kind": CLONE_DB, "src": source.name, "dst": target.name})
        return {"ok": True, "index": pending.index}

    def _op_entry_applied(self, request):
        """Was the entry with this id applied? Resolves an unknown commit outcome."""
        if self.node.is_leader():
            self.node.barrier()
        elif self.consistency != NONE:
            return self._forwarded(request)
        from .databases import entry_was_applied

        database = self.node.state_machine.databases.get(_text(request, "db"))
        return {"ok": True, "applied": entry_was_applied(self._reader(database), _text(request, "entry_id"))}

    def _op_compact(self, request):
        """Take a snapshot now and drop the journal before it (tests, operators)."""
        self.node.engine.forceLogCompaction()
        return {"ok": True}

    # -- membership -----------------------------------------------------------------------------

    def _op_add_member(self, request):
        if not self.node.is_leader():
            return self._forwarded(request)
        self.node.add_member(_text(request, "raft"), _text(request, "client"))
        return {"ok": True, "servers": self.node.servers()}

    def _op_remove_member(self, request):
        if not self.node.is_leader():
            return self._forwarded(request)
        self.node.remove_member(_text(request, "raft"))
        return {"ok": True, "servers": self.node.servers()}

    # -- forwarding to the leader ---------------------------------------------------------------

    def _forwarded(self, request):
        if self.hops >= MAX_FORWARD_HOPS:
            raise errors.retryable("no stable leader: the request was forwarded too many times")
        transport = self._leader_transport()
        forwarded = {key: value for key, value in request.items() if key != "id"}
        try:
            response = transport.request(forwarded, raise_errors=False)
        except (OSError, wire.ProtocolError) as exc:
            was_in_tx = self.forward_in_tx
            sent = transport.request_sent
            self._drop_forward()
            if sent and _may_commit(request, was_in_tx):
                # The leader may have committed it before the connection broke.
                raise errors.unknown_outcome(
                    f"lost the leader while it ran the request ({exc}); its outcome is unknown"
                ) from None
            if was_in_tx:
                raise errors.retryable(
                    f"lost the leader in the middle of the transaction ({exc}); it was rolled back, retry it"
                ) from None
            raise errors.retryable(f"lost the connection to the leader ({exc}); retry") from None
        except wire.Refused as refused:
            # The leader refused it unread (its goodbye as it stops, or a
            # frame it would not take): nothing ran there.
            was_in_tx = self.forward_in_tx
            self._drop_forward()
            message = refused.payload.get("message", "the leader refused the request")
            if was_in_tx:
                message += "; the open transaction was rolled back"
            raise errors.StoreError(
                refused.payload.get("kind", wire.OPERATIONAL), message,
                retryable=bool(refused.payload.get("retryable")),
            ) from None
        self.forward_in_tx = bool(response.get("in_tx"))
        response["in_tx"] = self.forward_in_tx
        index = response.get("index")
        if self._follower_waits and response.get("ok") and isinstance(index, int):
            self._wait_applied_here(index)
        return response

    @property
    def _follower_waits(self):
        """Does a follower answer this session's writes only once it applied them (_wait_applied_here)?

        With ``none`` the client's reads come from the follower's replica
        (through it, or from its file): without the wait, a write's answer
        could come before the replica has it, and the client's next read
        would not see its own write. Other consistencies read on the leader.
        """
        return self.consistency == NONE and (self.hops > 0 or not self.node.is_leader())

    def _wait_applied_here(self, index):
        """Answer a write the leader applied only once this node applied it too.

        Then whatever reads this node's replica next (this client, another
        ``none`` client on this host, a local read of the file) sees the
        write it was told is done. The leader announces such entries at once
        (``announce``), so this takes a message, not a heartbeat period. If
        it still takes longer than the commit timeout the write is committed
        all the same: answer, and say so in the log.
        """
        if not self.node.wait_applied(index, self.node.config.commit_timeout):
            logger.warning("node %s has not applied entry %d within %g s of the leader's answer; "
                           "answering %s without it", self.node.config.bind, index,
                           self.node.config.commit_timeout, self.client)

    def _leader_transport(self):
        leader = self.node.leader_client_address()
        if self.forward is not None and (self.forward_in_tx or self.forward.address == leader):
            return self.forward
        self._drop_forward()
        if leader is None:
            raise errors.retryable("no leader is known right now (election in progress); retry")
        from ..dbapi.transport import SocketTransport

        try:
            self.forward = SocketTransport([leader], token=self.node.token, timeout=self.node.config.commit_timeout + 5)
        except (OSError, wire.ProtocolError, wire.RemoteError) as exc:
            raise errors.retryable(f"cannot reach the leader at {leader}: {exc}") from None
        self._forward_settings()
        return self.forward

    def _forward_settings(self):
        settings = {
            "op": "open", "db": self.db_name, "consistency": self.consistency,
            "pragmas": self.pragmas, "hops": self.hops + 1, "declared_types": self.declared_types,
        }
        if self.page_bytes:
            settings["page_bytes"] = self.page_bytes
        settings["client"] = f"{self.client} through node {self.node.config.client}"
        was_in_tx = self.forward_in_tx
        try:
            self.forward.request(settings)
        except wire.RemoteError as error:
            # Refused: the leader's goodbye as it stops (retryable: another
            # leader takes over), or a frame it would not take. Or its session
            # refused the settings. Either way the forward connection is done.
            self._drop_forward()
            message = error.payload.get("message", "the leader refused the session's settings")
            raise errors.StoreError(
                error.payload.get("kind", wire.OPERATIONAL), _rolled_back_if(message, was_in_tx),
                retryable=bool(error.payload.get("retryable")), code=error.payload.get("code"),
            ) from None
        except (OSError, wire.ProtocolError) as exc:
            self._drop_forward()
            raise errors.retryable(
                _rolled_back_if(f"lost the connection to the leader ({exc})", was_in_tx, otherwise="; retry")
            ) from None

    def _drop_forward(self):
        if self.forward is not None:
            self.forward.close()
        self.forward = None
        self.forward_in_tx = False


def _busy_snapshot():
    return errors.StoreError(
        wire.OPERATIONAL, "database is locked: another transaction committed since this deferred "
        "transaction (BEGIN DEFERRED) began reading, so it may not write; roll it back and retry it",
        retryable=True, code="SQLITE_BUSY_SNAPSHOT",
    )


def _rolled_back_if(message, was_in_tx, otherwise=""):
    """``message`` about a lost forward connection, saying what became of the transaction it carried."""
    return message + ("; the open transaction was rolled back, retry it" if was_in_tx else otherwise)


def _raise_entry_error(result):
    """An applied entry's deterministic SQL error, raised as the client should see it."""
    if "error" in result:
        error = result["error"]
        raise errors.StoreError(error["kind"], error["message"], code=error.get("code"))


def _start_scratch(database, pragmas):
    """Begin a transaction on the scratch connection (the caller holds the write lock)."""
    scratch = database.scratch_connection()
    with database.scratch_mutex:
        for name, value in pragmas.items():
            scratch.execute(f"PRAGMA {name} = {int(value)}")
        scratch.execute("BEGIN")


@contextlib.contextmanager
def _abort_reported(tx):
    """Raise the abort's own error if an abort from outside stops what ``tx`` runs inside.

    Leadership lost, or the node stopping: LeaderState.abort_all interrupts
    the statement, then waits for it to end to roll the transaction back. The
    client must hear that (retryable), not SQLite's bare "interrupted".
    """
    try:
        yield
    except sqlite3.Error as exc:
        if (tx is not None and tx.interrupted_because is not None
                and getattr(exc, "sqlite_errorname", None) == "SQLITE_INTERRUPT"):
            raise _aborted(tx.interrupted_because) from None
        raise


def _unreadable_after(tx):
    """What fetching the unread rows of ``tx``'s results says if they could not be kept."""
    if tx.aborted:
        return _aborted(tx.aborted)
    return errors.operational("the rest of this result could not be read when its transaction ended; "
                              "run the query again")


_DEFERRED = re.compile(r"^\s*BEGIN\s+DEFERRED\b", re.I)
_READ_ONLY_SQL = re.compile(r"^\s*(SELECT|PRAGMA|EXPLAIN|VALUES)\b", re.I)
_READ_ONLY_OPS = {"open", "ping", "status", "servers", "list_databases", "entry_applied", "fetch"}


def _may_commit(request, in_transaction):
    """Could the leader have committed something for this request?"""
    op = request.get("op")
    if op in _READ_ONLY_OPS:
        return False
    if op == "exec":
        sql = request.get("sql") or ""
        if transaction_control(sql) == COMMIT or transaction_control(sql) == RELEASE:
            return True
        # Inside a transaction nothing commits before COMMIT.
        return not in_transaction and not _READ_ONLY_SQL.match(sql)
    return True  # script, commit, drop/clone, membership


def _text(request, name):
    """The request's ``name`` field, which must be a string (a client speaking the protocol may send anything)."""
    value = request.get(name)
    if not isinstance(value, str):
        raise errors.programming(f"{request.get('op')} needs {name} as a string, not {value!r}"[:200])
    return value
