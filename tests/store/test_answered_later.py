"""A commit's answer is sent as its entry is applied, without a session thread waiting for it."""

import socket
import threading
import time
import types

import pytest

from django_dqcluster import dbapi, wire
from django_dqcluster.store import errors
from django_dqcluster.store.node import PendingEntry, _DeadlineWatch
from django_dqcluster.store.server import ResponseSender
from django_dqcluster.store.session import Session

from .conftest import EMBEDDED_SECRET


def fake_node(commit_timeout=10.0):
    return types.SimpleNamespace(
        config=types.SimpleNamespace(commit_timeout=commit_timeout),
        engine=types.SimpleNamespace(flush_journal=lambda: None),
        state_machine=types.SimpleNamespace(last_index=7),  # what it applied last: this entry
        _stopping=threading.Event(),
    )


def test_the_outcome_is_delivered_once_as_the_entry_resolves():
    delivered = []
    pending = PendingEntry(fake_node(), "e1", on_outcome=lambda p: delivered.append(p.outcome()))
    pending.resolve({"results": []}, 0)
    pending.expire()  # the deadline passing afterwards changes nothing
    assert delivered == [{"results": []}]
    assert pending.index == 7  # where it was applied: a forwarding follower waits for that index


def test_an_entry_with_no_outcome_within_the_commit_timeout_is_answered_outcome_unknown():
    node = fake_node(commit_timeout=0.2)
    answers = []

    def deliver(pending):
        try:
            answers.append(pending.outcome())
        except errors.StoreError as exc:
            answers.append(exc)

    watch = _DeadlineWatch(node)
    watch.start()
    pending = PendingEntry(node, "e2", on_outcome=deliver)
    watch.watch(pending)
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        time.sleep(0.02)
    node._stopping.set()

    [answer] = answers
    assert answer.unknown_outcome and "did not answer within 0.2s" in str(answer)
    pending.resolve({"results": []}, 0)  # a late outcome is not sent a second time
    assert len(answers) == 1


def test_a_large_entry_given_more_time_neither_expires_at_the_commit_timeout_nor_holds_up_the_others():
    """A large transaction takes every node longer (store/large_entries.py); the others' deadlines stay in order."""
    node = fake_node(commit_timeout=0.2)
    answers = {}

    def deliver(pending):
        try:
            answers[pending.entry_id] = pending.outcome()
        except errors.StoreError as exc:
            answers[pending.entry_id] = exc

    watch = _DeadlineWatch(node)
    watch.start()
    large = PendingEntry(node, "large", on_outcome=deliver, patience=30.0)
    small = PendingEntry(node, "small", on_outcome=deliver)
    watch.watch(large)
    watch.watch(small)
    deadline = time.monotonic() + 10
    while "small" not in answers and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # past the commit timeout for the large one too
    node._stopping.set()

    assert answers["small"].unknown_outcome
    assert "large" not in answers, "still waited for"
    assert large.timeout == 30.2


def test_a_client_that_stops_reading_never_blocks_the_thread_that_answers_it():
    server_side, client_side = socket.socketpair()
    sender = ResponseSender(server_side)
    big = {"ok": True, "rows": [["x" * 100]] * 100_000}  # ~10 MB, far beyond the socket buffers

    sender.send_without_blocking(big)  # returns although the client has read nothing
    sender.send_without_blocking({"ok": True, "after": 1})

    assert wire.recv_frame(client_side, 1 << 30) == big
    assert wire.recv_frame(client_side) == {"ok": True, "after": 1}
    sender.send({"ok": True, "after": 2})
    assert wire.recv_frame(client_side) == {"ok": True, "after": 2}
    server_side.close()
    client_side.close()


@pytest.mark.timeout(60)
def test_other_clients_commit_while_one_client_leaves_a_large_answer_unread(embedded_node):
    setup = dbapi.connect(node=embedded_node, isolation_level=None)
    setup.execute("CREATE TABLE big (v TEXT)")
    setup.execute("CREATE TABLE small (v INTEGER)")

    # A raw client: authenticates, asks for a ~10 MB RETURNING result, reads nothing.
    host, port = embedded_node.config.client.rsplit(":", 1)
    stalled = socket.create_connection((host, int(port)))
    wire.client_handshake(stalled, wire.client_token(EMBEDDED_SECRET))
    wire.send_frame(stalled, {
        "op": "exec", "id": 1,
        "sql": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
               "INSERT INTO big SELECT printf('%0100d', i) FROM n RETURNING v",
    })

    for n in range(20):
        setup.execute("INSERT INTO small VALUES (?)", (n,))
    assert setup.execute("SELECT count(*) FROM small").fetchone() == (20,)

    answer = wire.recv_frame(stalled, 1 << 30)
    assert answer["ok"] and answer["id"] == 1 and len(answer["rows"]) == 100_000
    stalled.close()
    setup.close()


def test_a_commit_answered_before_its_session_thread_finished_it_leaves_no_transaction_open(
    embedded_node, monkeypatch
):
    finish = Session._end_local

    def finish_slowly(session, rollback):
        time.sleep(0.2)  # the Raft thread answers the client meanwhile
        finish(session, rollback)

    monkeypatch.setattr(Session, "_end_local", finish_slowly)
    conn = dbapi.connect(embedded_node.config.client, secret=EMBEDDED_SECRET, isolation_level=None)
    conn.execute("CREATE TABLE t (v)")
    for statement in ("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT"):
        conn.execute(statement)
    assert not conn.in_transaction
    conn.execute("BEGIN")  # refused if the COMMIT's answer had said a transaction was still open
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    conn.close()
