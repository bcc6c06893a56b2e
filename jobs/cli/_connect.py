"""Connecting the command line to Redis: the queue the options name, and access checks."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import attrs

from jobs._client_config import ClientConfig
from jobs.client import Client
from jobs.errors import (
    CliError,
    ConfigError,
    UsageError,
)
from jobs.queue._acl import missing_permissions
from jobs.queue._urls import redacted, scrub
from jobs.queue.redis_queue import RedisQueue

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence


#: Where the command line looks when neither --redis-url nor $REDIS_URL is given.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def redis_url(args: argparse.Namespace) -> str | None:
    """The URL given with --redis-url or $REDIS_URL, or None when neither was."""
    return getattr(args, "redis_url", None) or os.environ.get("REDIS_URL") or None


def open_queue(args: argparse.Namespace) -> RedisQueue:
    """The queue the options name (no connection is made yet)."""
    url = redis_url(args) or DEFAULT_REDIS_URL
    try:
        return RedisQueue.from_url(url, name=args.queue, prefix=args.prefix)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # redis-py's URL parser
        raise UsageError(f"--redis-url {redacted(url)!r}: {scrub(str(exc), url)}") from None


def ping(queue: RedisQueue) -> None:
    # The queue's own mapping: refused credentials are said to be, not "cannot reach".
    with queue._unavailable_as_error():
        queue.client.ping()


def check_access(queue: RedisQueue, names: Sequence[str] = ()) -> None:
    """Reach Redis, and make sure its user may run everything on the queues it will serve.

    ``names``: those queues (default: ``queue`` alone). A missing permission is one line
    and exit 1 now, rather than NOPERM retried for ever once running.
    """
    ping(queue)
    for name in names or [queue.name]:
        served = queue if name == queue.name else RedisQueue(attrs.evolve(queue.config, name=name))
        missing = missing_permissions(served)
        if missing:
            raise CliError(
                f"the Redis user at {queue.address} lacks what queue {name!r} "
                f"(prefix {queue.config.prefix!r}) needs: {' '.join(missing)} "
                "(see the ACL rule in docs/operations/security.rst)"
            )


@contextlib.contextmanager
def producer(args: argparse.Namespace) -> Iterator[Client]:
    queue = open_queue(args)
    try:
        yield Client(ClientConfig(queue=queue))
    finally:
        queue.close()
