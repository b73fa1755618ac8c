#!/usr/bin/env python
"""A store node process with a crash-point injection, for the crash-window test.

Run like ``python -m django_dqcluster.store`` plus:

``--stock-append-entries``  use pysyncobj's own AppendEntries handling (the bug);
``--trigger FILE``          when FILE appears (it holds a follower's Raft
                            address), the leader sends that follower one
                            *shortening re-send* built from its own log (what
                            pysyncobj's stale-reply handling produces under
                            load), holds back every later message to it, and
                            SIGKILLs itself shortly after.

Every step stays inside Raft's fault model (a delayed network, a crash), so a
correct follower must not lose acknowledged writes.
"""

import os
import signal
import sys
import threading
import time

from pysyncobj import SyncObj

from django_dqcluster.store import __main__ as cli
from django_dqcluster.store import node as node_module
from django_dqcluster.store.raft import FlushingTransport, SafeSyncObj

RESEND_LENGTH = 3
RESEND_BELOW_END = 6


class StockAppendEntries(SafeSyncObj):
    """Our node, but with pysyncobj 0.3.17's follower behaviour put back."""

    def _SyncObj__onMessageReceived(self, node, message):
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _SyncObj__deleteEntriesFrom(self, fromIDx):
        SyncObj._SyncObj__deleteEntriesFrom(self, fromIDx)

    def _start_catching_up(self, path, fresh_member=False):
        SafeSyncObj._start_catching_up(self, None)  # nor does pysyncobj keep a node without its log from voting


class InjectingTransport(FlushingTransport):
    trigger_file = None
    fired = False
    victim = None

    def send(self, node, message):
        if self.fired:
            if node.address == self.victim:
                return True  # "still in flight": never delivered
            return super().send(node, message)
        engine = self._syncObj
        if (
            self.trigger_file
            and message.get("type") == "append_entries"
            and engine._isLeader()
            and os.path.exists(self.trigger_file)
        ):
            with open(self.trigger_file) as handle:
                victim = handle.read().strip()
            if node.address == victim:
                self._send_shortening_resend(engine, node, message)
                return True
        return super().send(node, message)

    def _send_shortening_resend(self, engine, node, template):
        log = engine._SyncObj__raftLog
        first = log[0][1]
        end = log[-1][1] - RESEND_BELOW_END
        start = end - RESEND_LENGTH + 1
        prev = log[start - 1 - first]
        resend = {
            "type": "append_entries",
            "term": engine.raftCurrentTerm,
            "commit_index": engine.raftCommitIndex,
            "prevLogIdx": prev[1],
            "prevLogTerm": prev[2],
            "entries": [log[i - first] for i in range(start, end + 1)],
        }
        super().send(node, resend)
        self.fired = True
        self.victim = node.address
        with open(self.trigger_file + ".fired", "w") as handle:
            handle.write(f"{prev[1]} {end} {log[-1][1]} {engine.raftCommitIndex}\n")
        # Crash once the victim had time to process the re-send.
        threading.Thread(target=_die_soon, daemon=True).start()


def _die_soon():
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    stock = "--stock-append-entries" in argv
    argv = [a for a in argv if a != "--stock-append-entries"]
    if "--trigger" in argv:
        position = argv.index("--trigger")
        InjectingTransport.trigger_file = argv[position + 1]
        del argv[position:position + 2]
    engine_class = StockAppendEntries if stock else SafeSyncObj
    original = node_module.Node

    class InjectingNode(original):
        def __init__(self, config, **kwargs):
            super().__init__(config, engine_class=engine_class, transport_class=InjectingTransport)

    node_module.Node = InjectingNode
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
