"""An idle pool of one queue waits for work and fetches it in one round trip.

The pool sends its BLPOP on the wake-up lists and the fetch in one pipeline
(`jobs.queue._idle.IdleWaits._wait_then`): Redis runs the fetch as soon as the wait
ends. That is while jobs keep coming; a wait that ends with nothing makes the next ones
bare BLPOPs (one command per poll). What must hold beyond the pickup tests elsewhere:
the fetch also runs when the server lost its scripts meanwhile, and a pool that found
nothing goes cold.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis

import jobs
from tests.helpers import wait_until
from tests.integration._clients import DoomedPool, make_client, unique_name, wait_for_status

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest


def _noop(ctx: jobs.JobContext, payload: Any) -> Any:
    return payload


@contextlib.contextmanager
def _hot_pool(redis_url: str) -> Iterator[jobs.Client]:
    """A client whose pool just ran a job, and now waits with its next fetch sent along."""
    registry = jobs.Registry()
    registry.register_func("t", _noop)
    with make_client(redis_url, registry, poll_interval=30) as client:
        wait_for_status(client, client.enqueue("t", "before"), jobs.JobStatus.COMPLETED)
        pool: Any = client._pool
        wait_until(lambda: pool._hot and pool._fetch_until is not None, timeout=5)
        yield client


def _runs(client: jobs.Client, payload: str) -> None:
    job_id = client.enqueue("t", payload)
    assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == payload


def test_an_idle_pool_wakes_on_a_server_that_lost_its_scripts(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with _hot_pool(redis_url) as client:
        redis_client.script_flush()
        # A bare wake-up marker: the pool's fetch meets NOSCRIPT, loads the scripts and
        # runs again (finding nothing), then waits again.
        redis_client.rpush(client.queue.keys.wake, "1")
        wait_until(lambda: redis_client.script_exists(client.queue._scripts.fetch.sha)[0])
        _runs(client, "after")


def test_a_pool_that_found_nothing_waits_with_a_bare_blpop(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("t", _noop)
    with make_client(redis_url, registry, poll_interval=0.2) as client:
        wait_for_status(client, client.enqueue("t", 1), jobs.JobStatus.COMPLETED)
        pool: Any = client._pool
        # Its next wait fetches too, finds nothing within a poll, and the pool goes cold.
        wait_until(lambda: not pool._hot, timeout=5)
        job_id = client.enqueue("t", 2)
        assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == 2
        assert pool._hot


def test_a_wait_whose_connection_is_killed_goes_on(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with _hot_pool(redis_url) as client, caplog.at_level(logging.WARNING, logger="jobs"):
        # The wait's connection (and every other but this test's) dropped: the fetch
        # that was to follow the wait runs on its own, the generic way, and the pool
        # waits again, with no error to report (nor a backed-off retry of its loop).
        wait_until(lambda: redis_client.client_kill_filter(_type="normal", skipme=True) >= 1)
        _runs(client, "after")
    worker = [r for r in caplog.records if r.name.startswith("jobs.worker")]
    assert [r.getMessage() for r in worker if r.levelno >= logging.WARNING] == []


def test_a_wait_whose_connection_and_the_next_one_are_killed_fetches(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The kill that ends the wait's connection also closes the one its fetch then takes
    # from redis-py's pool (a restart closes them one after the other): one more try.
    pool = DoomedPool.from_url(redis_url)
    queue = jobs.RedisQueue(
        jobs.RedisQueueConfig(client=redis.Redis(connection_pool=pool), name=unique_name())
    )
    try:
        producer = jobs.Client(jobs.ClientConfig(queue=queue))
        lease = timedelta(seconds=30)
        first = producer.enqueue("t", 1)
        assert [j.job_id for j in queue.wait_and_fetch("p", 1, 1, lease, "r1")[1].jobs] == [first]
        second = producer.enqueue("t", 2)
        assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
        pool.doomed = 1
        fetched = queue.wait_and_fetch("p", 1, 1, lease, "r2")[1]
        assert pool.doomed == 0
        assert [j.job_id for j in fetched.jobs] == [second]
    finally:
        queue.close()
        pool.disconnect()
