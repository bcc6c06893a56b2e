"""Unique jobs: JobConfig(unique_key=..., unique_for=...).

While a job enqueued with a key is pending, scheduled or running (and for ``unique_for``
after it finished), enqueueing another with that key creates nothing and returns the id
of the one that exists. The check is inside the enqueue script, so it holds across
threads and processes.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from tests.integration._clients import Gate, make_client

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration._topologies import ClusterTopology


def _registry(**handlers: Callable[[jobs.JobContext, Any], Any]) -> jobs.Registry:
    registry = jobs.Registry()
    for name, handler in handlers.items():
        registry.register_func(name, handler)
    return registry


def test_a_second_enqueue_returns_the_live_job(redis_url: str) -> None:
    key = jobs.JobConfig(unique_key="order-42")
    with make_client(redis_url) as client:
        first = client.enqueue("charge", {"n": 1}, key)
        again = client.enqueue("charge", {"n": 2}, key)
        assert again == first
        assert client.get(first).payload == {"n": 1}
        assert client.stats().total_jobs == 1
        other = client.enqueue("charge", {"n": 3}, jobs.JobConfig(unique_key="order-43"))
        assert other != first
        # enqueue_many honours it too: one job per key, whatever the batch.
        batch = client.enqueue_many("charge", [1, 2, 3], jobs.JobConfig(unique_key="b"))
        assert len(set(batch)) == 1
        assert client.stats().total_jobs == 3


def test_the_key_is_released_when_the_job_finishes(redis_url: str) -> None:
    gate = Gate(result="done")
    key = jobs.JobConfig(unique_key="k")
    with make_client(redis_url, _registry(t=gate)) as client:
        first = client.enqueue("t", None, key)
        assert gate.entered.wait(10)
        assert client.enqueue("t", None, key) == first  # running: still held
        gate.release.set()
        assert client.wait(first, timeout=10).status is jobs.JobStatus.COMPLETED
        second = client.enqueue("t", None, key)
        assert second != first
        assert client.wait(second, timeout=10).status is jobs.JobStatus.COMPLETED


def test_unique_for_keeps_the_key_after_the_job(redis_url: str) -> None:
    key = jobs.JobConfig(unique_key="report", unique_for=timedelta(hours=1))
    with make_client(redis_url, _registry(t=lambda ctx, p: "ok")) as client:
        first = client.enqueue("t", None, key)
        assert client.wait(first, timeout=10).status is jobs.JobStatus.COMPLETED
        assert client.enqueue("t", None, key) == first
        ttl = client.queue.client.pttl(client.queue.keys.unique("report"))
        assert 0 < ttl <= 3_600_000


def test_a_cancelled_or_purged_holder_frees_the_key(redis_url: str) -> None:
    key = jobs.JobConfig(unique_key="k", delay=3600)
    with make_client(redis_url) as client:
        first = client.enqueue("t", None, key)
        assert client.cancel(first)
        second = client.enqueue("t", None, key)
        assert second != first
        assert client.purge("scheduled") == 1
        assert client.enqueue("t", None, key) not in (first, second)


def test_bad_unique_settings_are_config_errors() -> None:
    with pytest.raises(jobs.ConfigError, match="unique_key"):
        jobs.JobConfig(unique_key="")
    with pytest.raises(jobs.ConfigError, match="unique_for"):
        jobs.JobConfig(unique_for=5)
    with pytest.raises(jobs.ConfigError, match="unique_for"):
        jobs.JobConfig(unique_key="k", unique_for=-1)
    with pytest.raises(jobs.ConfigError, match="unique_key"):
        jobs.JobConfig(unique_key="x" * 513)


RACER = """
import sys, threading, jobs
queue = jobs.RedisQueue.from_url(sys.argv[1], name=sys.argv[2])
client = jobs.Client(jobs.ClientConfig(queue=queue))
config = jobs.JobConfig(unique_key="race")
ids, start = [], threading.Barrier(8)
def race():
    start.wait()
    ids.append(client.enqueue("t", None, config))
threads = [threading.Thread(target=race) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(" ".join(sorted(set(ids))))
queue.close()
"""


def test_threads_in_processes_racing_on_one_key_create_one_job(redis_url: str) -> None:
    with make_client(redis_url) as client:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, redis_url, client.queue.name],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        seen = set()
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            seen.update(out.split())
        assert len(seen) == 1
        assert client.stats().total_jobs == 1


@pytest.mark.slow
def test_unique_jobs_on_a_cluster(cluster: ClusterTopology) -> None:
    with make_client(cluster.url) as client:
        config = jobs.JobConfig(unique_key="c")
        assert client.enqueue("t", 1, config) == client.enqueue("t", 2, config)


def test_wait_for_the_unique_job(redis_url: str) -> None:
    gate = Gate(result=5)
    with make_client(redis_url, _registry(t=gate)) as client:
        handle = client.enqueue("t", 5, jobs.JobConfig(unique_key="w"))
        assert gate.entered.wait(10)  # running: it holds the key
        again = client.enqueue("t", 6, jobs.JobConfig(unique_key="w"))
        assert again == handle
        gate.release.set()
        assert again.result(timeout=10) == 5
        assert handle.result(timeout=10) == 5
