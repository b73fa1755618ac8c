"""Waiting in tests for what another thread or process does, with a bound that fails the test."""

import time


def wait_for(condition, timeout=30.0, what="the condition"):
    """Return once ``condition()`` holds; AssertionError naming ``what`` if not within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
