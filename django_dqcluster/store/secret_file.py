"""Following the secret file, so that rotating the cluster secret needs no restart.

A node started from a secret file reads it again every few seconds. A
change is applied only once two reads in a row agree: a file caught while
it is being written (an editor saving it, ``echo new >> secret``) is never
taken for the new secret. A file that cannot be read, or holds no secret,
leaves the node on the secrets it has and says why, in its status and its
log: a node that lost its secret would be cut off from its peers. So does a
change that drops the secret the node uses now: no step of a rotation does
(each keeps it, first or as a fallback), and a new secret appended to the
old one's line instead of on a line of its own (``echo new >> secret`` on a
file that did not end with a newline) reads as just that.
"""

import logging
import threading
import time

from .. import wire

logger = logging.getLogger("django_dqcluster.store")

#: Seconds between two reads of the file: a rotation step reaches every node within two of them.
CHECK_INTERVAL = 2.0


class SecretFileWatch:
    """Reads ``path`` every ``interval`` seconds and calls ``apply(secret, fallbacks)`` when it changed.

    ``current``: the secrets the node runs with, the first the one it uses.
    """

    def __init__(self, path, current, apply, interval=CHECK_INTERVAL):
        self.path = path
        self.interval = interval
        self._apply = apply
        self._applied = tuple(current)
        self._last_read = self._applied
        #: Why the file's content is not in use (unreadable, empty, refused), or None.
        self.error = None
        #: When (time.monotonic()) the node last took new secrets from the file; None: not since it started.
        self.changed_at = None
        #: How many times the node took new secrets from the file since it started.
        self.changes = 0
        self._stopping = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="dqcluster-secret-file", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self):
        while not self._stopping.wait(self.interval):
            try:
                self.check()
            except Exception:  # keep watching: the next rotation step must still reach this node
                logger.exception("checking the secret file %s failed", self.path)

    def check(self):
        """Read the file once; True when its secrets were applied just now."""
        try:
            with open(self.path) as handle:
                read = tuple(wire.secrets_in(handle.read()))
        except OSError as exc:
            return self._keep_current(f"cannot read {self.path}: {exc.strerror}")
        if not read:
            return self._keep_current(f"{self.path} holds no secret")
        settled, self._last_read = read == self._last_read, read
        if read == self._applied:
            self.error = None
            return False
        if not settled:
            return False  # it may be half-written: apply it if the next read finds the same
        if self._applied[0] not in read:
            return self._keep_current(
                f"{self.path} no longer holds the secret this node uses: each step of a rotation keeps it "
                "(first or on a later line) and adds or drops another line; to change it at once, restart the node")
        try:
            self._apply(read[0], read[1:])
        except Exception as exc:
            logger.exception("the secrets of %s could not be put in use", self.path)
            return self._keep_current(f"the secrets of {self.path} could not be put in use: {exc}")
        self._applied, self.error, self.changed_at = read, None, time.monotonic()
        self.changes += 1
        logger.info("secret file %s changed: this node now uses its first line and accepts %d fallback(s)",
                    self.path, len(read) - 1)
        return True

    def _keep_current(self, reason):
        if reason != self.error:
            logger.error("%s; this node keeps the secrets it has", reason)
        self.error = reason
        self._last_read = None  # whatever comes next must be read twice
        return False

    def status(self):
        changed_ago = None if self.changed_at is None else round(time.monotonic() - self.changed_at, 1)
        return {"path": self.path, "error": self.error, "changes": self.changes, "changed_seconds_ago": changed_ago}
