"""Client.retry_failed: every failed job (of a type, since a time) back in the queue.

API.md "Results, job types, flow control, observability".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

import jobs
from jobs.queue import _admin
from tests.helpers import wait_until
from tests.integration._clients import make_client

if TYPE_CHECKING:
    import redis


def _boom(ctx: jobs.JobContext, payload: object) -> object:
    raise ValueError("boom")


def _failed_jobs(client: jobs.Client, counts: dict[str, int]) -> dict[str, list[str]]:
    """Run ``counts[type]`` jobs of each type to failure (no retries); their ids by type."""
    once = jobs.JobConfig(max_retries=0)
    ids = {t: client.enqueue_many(t, list(range(n)), once) for t, n in counts.items()}
    every = [i for group in ids.values() for i in group]
    assert all(job.status is jobs.JobStatus.FAILED for job in client.wait_all(every, timeout=30))
    return ids


@pytest.mark.parametrize("batch", [7, 500])
def test_retry_failed_by_type_through_ties(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(_admin, "RETRY_BATCH", batch)
    registry = jobs.Registry()
    registry.register_func("a", _boom)
    registry.register_func("b", _boom)
    with make_client(redis_url, registry, num_workers=4) as client:
        ids = _failed_jobs(client, {"a": 40, "b": 25})
        client.stop()
        # Many failures share a millisecond under load: make every score tie, the
        # hardest case for walking the index while it shrinks.
        failed_key = client.queue.keys.failed
        redis_client.zadd(failed_key, dict.fromkeys(ids["a"] + ids["b"], 1000), xx=True)
        assert client.retry_failed(job_type="b") == 25
        assert {client.get(i).status for i in ids["b"]} == {jobs.JobStatus.PENDING}
        assert {client.get(i).status for i in ids["a"]} == {jobs.JobStatus.FAILED}
        assert client.retry_failed(job_type="nope") == 0
        assert client.retry_failed() == 40
        assert client.retry_failed() == 0
        assert redis_client.zcard(failed_key) == 0


def test_retried_jobs_run_again_with_a_fresh_budget(redis_url: str) -> None:
    calls: list[int] = []

    def flaky(ctx: jobs.JobContext, payload: int) -> int:
        calls.append(payload)
        if len(calls) <= 3:
            raise ValueError("not yet")
        return payload

    registry = jobs.Registry()
    registry.register_func("flaky", flaky)
    with make_client(redis_url, registry, num_workers=1) as client:
        ids = _failed_jobs(client, {"flaky": 3})["flaky"]
        assert client.retry_failed() == 3
        assert [job.result for job in client.wait_all(ids, timeout=30)] == [0, 1, 2]


def test_retry_failed_since(redis_url: str, redis_client: redis.Redis) -> None:
    registry = jobs.Registry()
    registry.register_func("a", _boom)
    with make_client(redis_url, registry) as client:
        old, new = _failed_jobs(client, {"a": 2})["a"]
        client.stop()
        day_ago = (datetime.now(UTC) - timedelta(days=1)).timestamp() * 1000
        redis_client.zadd(client.queue.keys.failed, {old: day_ago}, xx=True)
        assert client.retry_failed(since=timedelta(hours=1)) == 1
        assert client.get(new).status is jobs.JobStatus.PENDING
        assert client.retry_failed(since=datetime.now(UTC) - timedelta(days=2)) == 1
        assert client.get(old).status is jobs.JobStatus.PENDING
        with pytest.raises(jobs.ConfigError):
            client.retry_failed(since=datetime(2024, 1, 1))  # naive
        wait_until(lambda: client.stats().pending_jobs == 2)
