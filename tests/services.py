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


def reachable_redis(url):
    """A Redis client of ``url`` that answered a ping (else the test skips, or fails in CI)."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        client.close()
        service_unavailable(f"Redis unreachable at {url}: {error}")
    return client
