"""Idle Raft connections are kept alive, so the first message after a quiet spell arrives.

pysyncobj drops a connection on which nothing arrived for connectionTimeout, but
checks only when it next sends on it, and the message it was sending is lost.
Followers say nothing to each other until the leader fails: that message was a
candidate's vote request to the other follower, and every failover after a quiet
spell took a second election round (~2 s instead of ~1 s). Every node now sends a
keepalive on a connection it has not used for a quarter of the timeout.
"""

import socket
import time
from types import SimpleNamespace

import pytest
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from django_dqcluster.store.raft import KEEPALIVE, FlushingTransport

from .test_raft_safety import LEADER, safe_follower

TIMEOUT = 4.0


class NoPoller:
    def subscribe(self, *args):
        pass

    def unsubscribe(self, *args):
        pass


def test_stock_pysyncobj_loses_the_first_message_sent_after_its_connection_timeout():
    ours, theirs = socket.socketpair()
    connection = TcpConnection(NoPoller(), socket=ours, timeout=TIMEOUT)
    connection._TcpConnection__lastReadTime = raft_clock() - TIMEOUT - 1  # a quiet spell
    connection.send({"type": "request_vote", "term": 2})
    assert connection.state == CONNECTION_STATE.DISCONNECTED
    assert theirs.recv(65536) == b""  # closed, and the request never left
    theirs.close()


class FakeConnection:
    def __init__(self, state, idle_for):
        self.state = state
        self.last_sent = time.monotonic() - idle_for


@pytest.fixture
def transport(monkeypatch):
    # Only the keepalive part of the tick: no binding, no dialing.
    monkeypatch.setattr(TCPTransport, "_onTick", lambda self: None)
    transport = object.__new__(FlushingTransport)
    transport._syncObj = SimpleNamespace(conf=SimpleNamespace(connectionTimeout=TIMEOUT))
    transport.sent = []
    transport.send = lambda node, message: transport.sent.append((node, message))
    return transport


def test_a_connection_unused_for_a_quarter_of_the_timeout_gets_a_keepalive(transport):
    transport._connections = {
        "quiet": FakeConnection(CONNECTION_STATE.CONNECTED, idle_for=TIMEOUT / 4 + 0.1),
        "busy": FakeConnection(CONNECTION_STATE.CONNECTED, idle_for=0.05),
        "down": FakeConnection(CONNECTION_STATE.DISCONNECTED, idle_for=60.0),
    }
    transport._onTick()
    assert transport.sent == [("quiet", KEEPALIVE)]


def test_ticks_in_between_look_at_the_connections_only_every_eighth_of_the_timeout(transport):
    transport._connections = {"quiet": FakeConnection(CONNECTION_STATE.CONNECTED, idle_for=60.0)}
    transport._onTick()
    transport._connections["quiet"].last_sent = time.monotonic() - 60.0  # as if still unused
    transport._onTick()
    assert transport.sent == [("quiet", KEEPALIVE)]


def test_a_keepalive_changes_nothing_on_the_node_that_receives_it():
    follower = safe_follower()
    follower._SyncObj__raftCurrentTerm = 3
    deadline = follower._SyncObj__raftElectionDeadline
    follower._SyncObj__onMessageReceived(LEADER, dict(KEEPALIVE))
    assert follower._SyncObj__raftState == _RAFT_STATE.FOLLOWER
    assert follower._SyncObj__raftCurrentTerm == 3
    assert follower._SyncObj__raftElectionDeadline == deadline  # it is not a heartbeat
    assert follower._SyncObj__transport.sent == []
