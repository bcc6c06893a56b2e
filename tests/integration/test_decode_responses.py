"""A client built with ``decode_responses=True`` (common in applications) works the same."""

from __future__ import annotations

import redis

import jobs
from tests.helpers import wait_until
from tests.integration._clients import FAST_POOL, unique_name, wait_for_status


def test_every_path_works_with_a_decoding_client(redis_url: str) -> None:
    client_redis = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        queue = jobs.RedisQueue(jobs.RedisQueueConfig(client=client_redis, name=unique_name()))
        registry = jobs.Registry()
        registry.register_func("echo", lambda ctx, payload: payload)
        registry.register_func("bad", lambda ctx, payload: 1 / 0)
        client = jobs.Client(
            jobs.ClientConfig(
                queue=queue,
                registry=registry,
                worker_pool_config=jobs.WorkerPoolConfig(**FAST_POOL),
            )
        )
        ok = client.enqueue("echo", {"text": "ü"})
        bad = client.enqueue(
            "bad", None, jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
        )
        with client:
            assert wait_for_status(client, ok, jobs.JobStatus.COMPLETED).result == {"text": "ü"}
            failed = wait_for_status(client, bad, jobs.JobStatus.FAILED)
            assert failed.error == "ZeroDivisionError: division by zero"
            assert failed.attempts == 2
            assert [j.id for j in client.list_jobs("completed")] == [ok]
            assert wait_until(client.workers, timeout=5)[0].num_workers == FAST_POOL["num_workers"]
            scheduler = jobs.Scheduler(client, misfire_grace=0)
            scheduler.register(
                jobs.CronJob(id="tick", schedule=jobs.Every(0.2), job_type="echo", payload=1)
            )
            with scheduler:
                wait_until(lambda: queue.crons() and queue.crons()[0].get("last_fire"))
        stats = client.stats()
        assert stats.completed_jobs >= 1  # the echo job, and the cron fires that ran
        assert stats.failed_jobs == 1
    finally:
        client_redis.close()
