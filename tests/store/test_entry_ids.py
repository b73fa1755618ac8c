"""Entry ids: unique in the cluster's history, including across processes forked from one parent."""

import os

from django_dqcluster.store.statemachine import new_entry_id


def test_ids_of_one_process_are_distinct_and_carry_no_space():
    ids = [new_entry_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert not any(" " in entry_id for entry_id in ids)  # the applied row joins ids with spaces


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
