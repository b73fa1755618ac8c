"""Entry ids: unique in the cluster's history, including across processes forked from one parent."""

import os
import re

from django_dqcluster.store.databases import DatabaseSet, entry_was_applied, record_applied
from django_dqcluster.store.statemachine import new_entry_id


def test_ids_of_one_process_are_distinct_and_all_32_hex_digits():
    ids = [new_entry_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    # One length and no space: inside the space-separated ids of a group, a
    # match is then always a whole id (what entry_was_applied relies on).
    assert all(re.fullmatch(r"[0-9a-f]{32}", entry_id) for entry_id in ids)


def test_an_id_never_applied_is_not_found_among_the_ids_that_follow_it(tmp_path):
    ids = [new_entry_id() for _ in range(5_000)]
    database = DatabaseSet(str(tmp_path)).get("app")
    conn = database.apply_connection()
    conn.execute("BEGIN IMMEDIATE")
    record_applied(conn, " ".join(ids[1:]), 7)  # one group holding every id but the first
    conn.execute("COMMIT")
    assert not entry_was_applied(conn, ids[0])
    assert all(entry_was_applied(conn, entry_id) for entry_id in (ids[1], ids[16], ids[-1]))
    database.close()


def test_a_forked_child_draws_ids_the_parent_never_will():
    before = new_entry_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its next ids and leaves at once
        os.close(read_end)
        os.write(write_end, " ".join(new_entry_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_entry_id() for _ in range(100)}
    assert len(child) == 100
    assert not child & parent
    assert before not in child
