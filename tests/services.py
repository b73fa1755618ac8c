"""What a test does when a local service it needs (PostgreSQL, Redis) is not running."""

import os

import pytest


def service_unavailable(message):
    """Skip on a developer's machine; fail in CI, where .ci/run starts every service.

    A CI run that silently skipped the PostgreSQL or Redis tests would pass
    without having tested the gate there.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{message} (.ci/run starts it; CI does not skip tests for a missing service)")
    pytest.skip(message)
