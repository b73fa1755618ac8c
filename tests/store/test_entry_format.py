"""A node that meets an entry written by a newer django-dqcluster stops there and names the upgrade.

In a rolling upgrade of the store, a newer leader may write entries an older
member does not know (a new kind, or a newer format of a known one). Applying
such an entry as nothing, as this code once did for any kind it did not know,
would leave that member's files different from everyone else's without a
word. Instead it applies nothing from there on, says why in its status (and so
in the health check and the metrics), and goes on from that entry once it
runs code that knows it.
"""

import time
import uuid

import pytest

from django_dqcluster import dbapi
from django_dqcluster.health import judge
from django_dqcluster.store import statemachine
from django_dqcluster.store.statemachine import ApplyFailed, StateMachine, encode_entry

from .conftest import start_embedded_node
from .test_group_commit import group, rows, tx


@pytest.fixture
def machine(tmp_path):
    machine = StateMachine(str(tmp_path / "data"), fsync=False)
    machine.apply(encode_entry(tx("CREATE TABLE t (n INTEGER)")), 1)
    yield machine
    machine.close()


def from_the_future(**fields):
    return encode_entry({"id": uuid.uuid4().hex, **fields})


@pytest.mark.parametrize("entry, named", [
    ({"kind": "compact_db", "db": "app"}, "kind 'compact_db'"),
    ({**tx("INSERT INTO t VALUES (2)"), "format": statemachine.ENTRY_FORMAT + 1},
     f"format {statemachine.ENTRY_FORMAT + 1}"),
])
def test_an_entry_a_newer_version_wrote_is_not_applied_and_the_node_says_to_upgrade(machine, entry, named):
    payload = encode_entry({**entry, "id": uuid.uuid4().hex})
    expected = (rf"entry 2 was written by a newer django-dqcluster \({named}; "
                rf"this node applies entries of format {statemachine.ENTRY_FORMAT}, .*\): upgrade this node")
    for attempt in range(2):  # pysyncobj retries the same entry on its next tick: the same answer
        with pytest.raises(ApplyFailed, match=expected):
            machine.apply(payload, 2)
    assert machine.last_index == 1  # not chained as if applied
    assert "upgrade this node" in machine.fatal
    assert rows(machine, "SELECT n FROM t") == []
    assert machine.databases.get("app").applied_index == 1


def test_once_upgraded_it_goes_on_from_that_entry(machine, monkeypatch):
    future = from_the_future(kind="compact_db", db="app")
    with pytest.raises(ApplyFailed):
        machine.apply(future, 2)
    monkeypatch.setattr(statemachine, "KNOWN_KINDS", statemachine.KNOWN_KINDS | {"compact_db"})  # the new code
    machine.apply(future, 2)
    machine.apply(encode_entry(tx("INSERT INTO t VALUES (3)")), 3)
    assert machine.fatal is None and machine.last_index == 3
    assert rows(machine, "SELECT n FROM t") == [(3,)]


def test_a_group_with_one_part_from_the_future_applies_none_of_its_parts(machine):
    payload = group(tx("INSERT INTO t VALUES (1)"), {**tx("INSERT INTO t VALUES (2)"),
                                                      "format": statemachine.ENTRY_FORMAT + 1})
    with pytest.raises(ApplyFailed, match="entry 2 was written by a newer django-dqcluster"):
        machine.apply(payload, 2)
    assert rows(machine, "SELECT n FROM t") == []


def test_a_running_node_reports_it_where_operators_look(tmp_path):
    node = start_embedded_node(tmp_path / "node")
    try:
        conn = dbapi.connect(node=node, isolation_level=None)
        conn.execute("CREATE TABLE t (n INTEGER)")
        node.engine.apply_entry(from_the_future(kind="compact_db", db="default"), callback=lambda *_: None)
        deadline = time.monotonic() + 10
        while not conn.status().get("fatal") and time.monotonic() < deadline:
            time.sleep(0.02)
        status = conn.status()
        assert "was written by a newer django-dqcluster (kind 'compact_db'" in status["fatal"]
        healthy, report = judge(status)
        assert not healthy and report["problem"].startswith("the node stopped serving: entry ")
        assert report["problem"].endswith("upgrade this node; it goes on from this entry once upgraded")
        conn.close()
    finally:
        node.stop()
