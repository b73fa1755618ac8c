"""A member's promise to vote for no one until a given time, kept across a restart.

A follower told that its leader is busy with a large entry (LEADER_BUSY,
see .large_entries) votes for no one until then, and tells the leader so.
The leader counts on that promise to go on answering strong reads from its
own state while its Raft thread is busy writing or applying the entry (its
lease, SafeSyncObj.lease_valid). A promise a leader counts on must outlive
the follower's process: restarted with it forgotten, the follower could help
elect a second leader while the first still answers reads. So it is on disk
before it is given, and a node that starts keeps what is left of it.

The time is kept by two clocks: CLOCK_BOOTTIME, which runs on through a
restart of the process (and a suspended host) within one boot of the host,
and the wall clock, the only one left to judge by once the host has
rebooted (its boot id differs), which may have been set since; a promise
is never taken for longer than MAX_SECONDS either way.
"""

import logging
import time

from .files import write_durably
from .large_entries import MAX_BUSY_SECONDS as MAX_SECONDS  # what a leader may ask for at most

logger = logging.getLogger(__name__)

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def boot_id():
    """This boot of the host ("" where the kernel does not say)."""
    try:
        with open(BOOT_ID_FILE) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _boot_clock():
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class VotePromise:
    """The promise a node keeps in the file ``path``."""

    def __init__(self, path, *, boot=boot_id, boot_clock=_boot_clock, wall_clock=time.time):
        self.path = path
        self._boot, self._boot_clock, self._wall_clock = boot, boot_clock, wall_clock

    def make(self, seconds):
        """Promise to vote for no one for ``seconds`` from now: on disk when this returns."""
        seconds = min(max(seconds, 0.0), MAX_SECONDS)
        write_durably(self.path, f"{self._boot()} {self._boot_clock() + seconds!r} {self._wall_clock() + seconds!r}\n")

    def seconds_left(self):
        """How long a promise made before this process started still holds (0.0: none)."""
        try:
            with open(self.path) as handle:
                boot, until_boot, until_wall = handle.read().split()
                until_boot, until_wall = float(until_boot), float(until_wall)
        except FileNotFoundError:
            return 0.0
        except (OSError, ValueError) as exc:
            # Written whole or not at all (a rename): only another program could have made it so.
            logger.warning("ignoring the vote promise file %s, which cannot be read: %s", self.path, exc)
            return 0.0
        current = self._boot()
        if boot and boot == current:
            left = until_boot - self._boot_clock()
        else:
            left = until_wall - self._wall_clock()
        return min(max(left, 0.0), MAX_SECONDS)
