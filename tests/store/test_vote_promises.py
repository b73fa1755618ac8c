"""A promise to vote for no one, kept on disk so that it outlives the process that made it."""

import pytest

from django_dqcluster.store.vote_promises import MAX_SECONDS, VotePromise


class Host:
    """One host's clocks, set by hand: its boot, the time since boot, the wall clock."""

    def __init__(self):
        self.boot, self.since_boot, self.wall = "boot-1", 1000.0, 1_700_000_000.0

    def promise(self, path):
        return VotePromise(str(path), boot=lambda: self.boot, boot_clock=lambda: self.since_boot,
                           wall_clock=lambda: self.wall)

    def wait(self, seconds):
        self.since_boot += seconds
        self.wall += seconds


@pytest.fixture
def host():
    return Host()


def test_a_node_that_never_promised_is_bound_by_nothing(tmp_path, host):
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == 0.0


def test_a_restarted_process_keeps_what_is_left_of_the_promise(tmp_path, host):
    host.promise(tmp_path / "raft.vote-promise").make(10.0)
    host.wait(4.0)
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == pytest.approx(6.0)
    host.wait(7.0)
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == 0.0


def test_within_one_boot_a_wall_clock_set_back_does_not_stretch_it(tmp_path, host):
    host.promise(tmp_path / "raft.vote-promise").make(10.0)
    host.wall -= 3600.0
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == pytest.approx(10.0)


def test_after_a_reboot_the_wall_clock_judges(tmp_path, host):
    host.promise(tmp_path / "raft.vote-promise").make(10.0)
    host.boot, host.since_boot = "boot-2", 5.0  # back up 3 s later
    host.wall += 3.0
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == pytest.approx(7.0)


def test_no_promise_is_taken_for_longer_than_a_leader_may_ask(tmp_path, host):
    host.promise(tmp_path / "raft.vote-promise").make(10 * MAX_SECONDS)
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == MAX_SECONDS
    host.boot, host.wall = "boot-2", host.wall - 10 * MAX_SECONDS  # a wall clock set far back
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == MAX_SECONDS


def test_a_file_it_cannot_read_binds_it_to_nothing_and_says_so(tmp_path, host, caplog):
    (tmp_path / "raft.vote-promise").write_text("not a promise\n")
    assert host.promise(tmp_path / "raft.vote-promise").seconds_left() == 0.0
    assert "cannot be read" in caplog.text
