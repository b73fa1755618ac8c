"""Frames read from a stream: whole, in order, however the bytes arrive."""

import socket
import threading

import pytest

from django_dqcluster import wire


def test_frames_split_across_reads_or_sharing_one_arrive_whole_and_in_order():
    ours, theirs = socket.socketpair()
    reader = wire.FrameReader(ours)
    frames = [{"n": n, "pad": "x" * (n * 7000)} for n in range(12)]
    stream = b"".join(wire.pack(frame) for frame in frames)

    def trickle():
        # Pieces that cut headers and bodies anywhere, and hold several frames.
        for start in range(0, len(stream), 1013):
            theirs.sendall(stream[start:start + 1013])

    writer = threading.Thread(target=trickle)
    writer.start()
    assert [reader.read() for _ in frames] == frames
    writer.join()
    ours.close()
    theirs.close()


def test_a_frame_over_the_limit_is_refused_before_its_body_is_read():
    ours, theirs = socket.socketpair()
    theirs.sendall(wire.HEADER.pack(10_000) + b"\0" * 10)
    with pytest.raises(wire.FrameTooLarge):
        wire.FrameReader(ours, max_frame=4096).read()
    ours.close()
    theirs.close()


def test_a_connection_closed_mid_frame_says_so():
    ours, theirs = socket.socketpair()
    theirs.sendall(wire.pack({"ok": True})[:-2])
    theirs.close()
    with pytest.raises(wire.ConnectionClosed):
        wire.FrameReader(ours).read()
    ours.close()
