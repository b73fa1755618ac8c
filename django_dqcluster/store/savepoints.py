"""The savepoints of a transaction that has only read, kept by name.

Nothing such a transaction did needs undoing, so its SAVEPOINT, RELEASE and
ROLLBACK TO are answered by bookkeeping alone: run as statements on the
leader, a savepoint would take the database's write lock (it is recorded
with a transaction's writes). A read-only client's transactions keep them
this way (.read_only), and so does a deferred transaction reading on a
follower, which replays the ones still open on the leader should it write
(Session._move_to_leader).
"""

from . import errors
from .statements import RELEASE, ROLLBACK_TO, SAVEPOINT, savepoint_name


class OpenSavepoints:
    """The savepoints open in one transaction, in order, with the statement that opened each."""

    def __init__(self):
        self._open = []  # (name, the SAVEPOINT statement)

    def run(self, control, sql):
        """Answer a SAVEPOINT, RELEASE or ROLLBACK TO statement (``control``: which) as SQLite would."""
        name = savepoint_name(sql)
        if control == SAVEPOINT:
            self._open.append((name, sql))
            return
        assert control in (RELEASE, ROLLBACK_TO), control
        for position in range(len(self._open) - 1, -1, -1):
            if self._open[position][0].lower() == name.lower():
                break
        else:
            raise errors.operational(f"no such savepoint: {name}")
        # RELEASE forgets it and those after it; ROLLBACK TO keeps it, as in SQLite.
        del self._open[position + (control == ROLLBACK_TO):]

    def statements(self):
        """The SAVEPOINT statements that would open the same savepoints again, outermost first."""
        return [sql for _, sql in self._open]
