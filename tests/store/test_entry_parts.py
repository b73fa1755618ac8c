"""A large entry is encoded to msgpack's own bytes, its large values copied by a join that releases the GIL."""

import msgpack
import pytest

from django_dqcluster import dbapi
from django_dqcluster.store import entry_parts, group_commit
from django_dqcluster.store.entry_parts import LARGE_VALUE, pack_in_parts
from django_dqcluster.store.group_commit import LARGE_ENTRY, CommitQueue
from django_dqcluster.store.large_entries import BUSY_FROM
from django_dqcluster.store.statemachine import decode_entry, encode_entry

from .conftest import start_embedded_node

BLOB = bytes(range(256)) * (LARGE_VALUE // 256 + 1)
SHAPES = [
    {"kind": "tx", "id": "0" * 32, "db": "app", "now": 1.5, "seed": 7, "want_result": True,
     "stmts": [[0, "INSERT INTO t VALUES (?, ?)", [1, BLOB], False, False],
               [1, "INSERT INTO t VALUES (:a, :b)", {"a": 2, "b": "é" * LARGE_VALUE}, False, False],
               [2, "INSERT INTO t VALUES (?)", [[bytearray(BLOB)], [memoryview(BLOB)]], True, False]]},
    {"just under": [b"x" * (LARGE_VALUE - 1), "y" * (LARGE_VALUE - 1)], "empty": [b"", "", {}, []]},
    {"scalars": [None, True, False, 0, -1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, 1.25], "tuple": (1, "two")},
    {"wide": {index: index for index in range(2 ** 16 + 1)}, "long": list(range(2 ** 16 + 1))},
    ["a list at the top", BLOB],
]


@pytest.mark.parametrize("value", SHAPES, ids=["transaction", "small values", "scalars", "wide", "list"])
def test_the_bytes_are_msgpacks_own(value):
    assert pack_in_parts(value) == msgpack.packb(value, use_bin_type=True)


def test_text_msgpack_refuses_is_refused_alike():
    with pytest.raises(UnicodeEncodeError):
        msgpack.packb({"sql": "\ud800" * LARGE_VALUE}, use_bin_type=True)
    with pytest.raises(UnicodeEncodeError):
        pack_in_parts({"sql": "\ud800" * LARGE_VALUE})


def test_no_large_value_is_handed_to_msgpack(monkeypatch):
    packed = []

    class RecordingPacker(msgpack.Packer):
        def pack(self, value):
            packed.append(value)
            return super().pack(value)

    monkeypatch.setattr(entry_parts.msgpack, "Packer", RecordingPacker)
    pack_in_parts(SHAPES[0])

    assert packed and all(len(value) < LARGE_VALUE for value in packed if isinstance(value, (bytes, str)))


def test_a_large_transaction_is_encoded_in_parts_and_a_small_one_in_one_call(monkeypatch):
    calls = []
    monkeypatch.setattr(group_commit, "pack_in_parts", lambda entry: calls.append(entry) or pack_in_parts(entry))
    queue = CommitQueue()
    small = {"kind": "tx", "id": "1" * 32, "stmts": [[0, "INSERT INTO t VALUES (1)", None, False, False]]}

    queue.put(SHAPES[0], pending=None, size=LARGE_ENTRY)
    queue.put(small, pending=None, size=30)

    assert calls == [SHAPES[0]]
    payloads = [payload for payload, _ in queue.take()]
    assert payloads == [encode_entry(SHAPES[0]), encode_entry(small)]
    assert decode_entry(payloads[0])["stmts"][0][2][1] == BLOB


def test_a_large_autocommit_write_is_announced_and_encoded_in_parts_as_a_large_transaction_is(tmp_path, monkeypatch):
    encoded, announced = [], []
    monkeypatch.setattr(group_commit, "pack_in_parts", lambda entry: encoded.append(entry) or pack_in_parts(entry))
    node = start_embedded_node(tmp_path / "node")
    try:
        # (Alone, the node has nobody to tell: what matters is that it is asked to.)
        monkeypatch.setattr(node.engine, "announce_large_entry", lambda size, wait=0.2: announced.append(size))
        conn = dbapi.connect(node=node, isolation_level=None)
        conn.execute("CREATE TABLE t (v BLOB)")
        insert = "INSERT INTO t VALUES (?)"
        conn.execute(insert, (b"a" * 10,))
        conn.execute(insert, (b"b" * BUSY_FROM,))
        conn.execute("BEGIN")
        conn.execute(insert, (b"c" * BUSY_FROM,))
        conn.execute("COMMIT")

        assert [entry["stmts"][0][2][0][:1] for entry in encoded] == [b"b", b"c"]
        assert [size for size in announced if size >= BUSY_FROM] == [len(insert) + BUSY_FROM] * 2
        assert conn.execute("SELECT substr(v, 1, 1), length(v) FROM t ORDER BY rowid").fetchall() == [
            (b"a", 10), (b"b", BUSY_FROM), (b"c", BUSY_FROM)]
        conn.close()
    finally:
        node.stop()
