"""A writer told "database is locked" is told who holds the lock, and for how long.

Transactions on a database run one at a time on the leader; a writer that
waits longer than the node's busy timeout gets a retryable "database is
locked". Saying which client's transaction holds it (and through which node,
when a follower forwards it) tells the operator where to look; the node's
status lists the locks held, for cluster_status.
"""

import re
import time

import pytest

from django_dqcluster import dbapi

from .conftest import EMBEDDED_SECRET, followers, start_embedded_node


@pytest.fixture
def node(tmp_path):
    running = start_embedded_node(tmp_path / "node", busy_timeout=0.5)
    yield running
    running.stop()


def connect(node, **kwargs):
    # Not retrying: "database is locked" comes back once, after the node's busy timeout.
    return dbapi.connect(node.config.client, secret=EMBEDDED_SECRET, isolation_level=None, timeout=5,
                         retry_timeout=0, **kwargs)


def test_database_is_locked_names_the_transaction_that_holds_it_and_for_how_long(node):
    holder, waiter = connect(node), connect(node)
    holder.execute("CREATE TABLE t (v)")
    holder.execute("BEGIN")
    holder.execute("INSERT INTO t VALUES (1)")
    holder_address = holder._transport.sock.getsockname()
    time.sleep(0.3)
    with pytest.raises(dbapi.OperationalError) as info:
        waiter.execute("INSERT INTO t VALUES (2)")
    message = str(info.value)
    assert re.search(rf"database is locked: a transaction of client {holder_address[0]}:{holder_address[1]} "
                     r"has held it for \d+\.\d s \(waited 0\.5 s\)", message), message
    assert info.value.retryable and info.value.sqlite_errorname == "SQLITE_BUSY"
    held = float(re.search(r"held it for (\d+\.\d) s", message).group(1))
    assert held >= 0.8  # the 0.3 s before, and the 0.5 s the write waited

    status = waiter.status()["write_locks"]
    assert set(status) == {"default"}
    assert status["default"]["holder"] == f"a transaction of client {holder_address[0]}:{holder_address[1]}"
    holder.execute("COMMIT")
    assert waiter.status()["write_locks"] == {}
    holder.close()
    waiter.close()


@pytest.mark.cluster
def test_a_transaction_forwarded_by_a_follower_is_named_with_the_follower(cluster):
    leader = cluster.leader()
    follower = followers(cluster, leader)[0]
    holder = dbapi.connect(follower.client, secret=cluster.secret, isolation_level=None, timeout=5)
    holder.execute("CREATE TABLE t (v)")
    holder.execute("BEGIN")
    holder.execute("INSERT INTO t VALUES (1)")
    holder_address = holder._transport.sock.getsockname()
    watcher = leader.connect()
    (held,) = watcher.status()["write_locks"].values()
    assert held["holder"] == (f"a transaction of client {holder_address[0]}:{holder_address[1]} "
                              f"through node {follower.client}")
    holder.execute("ROLLBACK")
    holder.close()
    watcher.close()
