"""The bytes a Raft connection has yet to send, as the frames they were queued in.

pysyncobj keeps them in one ``bytes`` object: each frame queued copies
everything already waiting, and each partial send copies what is left. A
snapshot or a long log sent to a slow follower leaves hundreds of megabytes
waiting, and every send then copied them all: the Raft thread spent its
time moving memory instead of sending heartbeats. Here a frame is queued
as it is and sent from where the last send stopped.
"""

import collections

# Unsent bytes on a connection above which the leader queues nothing more for
# that follower in the current round of sends (a snapshot's next chunk, the
# next entries): enough to keep a fast link busy between two of the leader's
# rounds (every heartbeat period, 0.1 s), little enough that what is queued
# behind it still arrives within an election timeout on a slow one, and that
# a slow follower costs the leader no more memory than this.
UNSENT_LIMIT = 8 * 2 ** 20

# Frames handed to one sendmsg call: a few system calls for a backlog of small
# frames, without building a long list for a long backlog.
FRAMES_PER_SEND = 64


class SendQueue:
    def __init__(self, initial=b""):
        self._frames = collections.deque()
        self._size = 0
        self._offset = 0  # bytes of the first frame already sent
        if initial:
            self.append(initial)

    def __len__(self):
        return self._size

    def __bytes__(self):
        """Everything waiting, in one piece (a copy: for tests and debugging)."""
        waiting = b"".join(self._frames)
        return waiting[self._offset:]

    def append(self, frame):
        self._frames.append(frame)
        self._size += len(frame)

    def send_to(self, sock):
        """One sendmsg of the oldest frames; the number of bytes the socket took."""
        frames = self._frames
        if len(frames) == 1 and not self._offset:
            sent = sock.send(frames[0])  # the usual case: one message, the socket idle
        else:
            views = [memoryview(frames[0])[self._offset:]]
            for index in range(1, min(len(frames), FRAMES_PER_SEND)):
                views.append(frames[index])
            sent = sock.sendmsg(views)
        self._consume(sent)
        return sent

    def _consume(self, count):
        self._size -= count
        frames = self._frames
        if not self._size:
            frames.clear()
            self._offset = 0
            return
        while count:
            left_in_first = len(frames[0]) - self._offset
            if count < left_in_first:
                self._offset += count
                return
            count -= left_in_first
            frames.popleft()
            self._offset = 0
