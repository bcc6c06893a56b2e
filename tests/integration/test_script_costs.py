"""What a batch of jobs costs Redis inside the scripts: index writes per call, not per job.

A job's life is a fetch, then a completion or a failure; the pool sends them in batches.
Each job needs its own record reads and writes, but the queue's indexes (processing,
completed, failed) take one command per script call whatever the batch size, and so do
the records a count bound drops. Counted with ``INFO commandstats`` on a private server
(commands run by scripts are counted there too), for a batch of 1 and a batch of 16: the
difference is what each more job costs. Exact counts, no timings.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import redis

from jobs import JobConfig, RedisQueueConfig
from jobs.queue.redis_queue import RedisQueue
from jobs.worker._protocol import Completed, Failed, Leased

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs._embedded import RedisServer

LEASE = timedelta(minutes=5)


def _calls(r: redis.Redis) -> Counter[str]:
    stats = r.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def _batch_costs(r: redis.Redis, n: int, kind: str, bound: bool) -> dict[str, Counter[str]]:
    """Commands by phase for n jobs fetched together then finished together."""
    name = f"costs-{kind}-{n}"
    config = RedisQueueConfig(client=r, name=name)
    if bound:  # fewer than the jobs already finished: each call drops some
        config = RedisQueueConfig(client=r, name=name, max_completed_jobs=1, max_failed_jobs=1)
    queue = RedisQueue(config)
    job_config = JobConfig(max_retries=0)
    # Jobs finished earlier, so that a count bound has records to drop.
    for round_ in range(2):
        ids = [f"old-{round_}-{i}" for i in range(n)]
        queue.enqueue("t", ids, [b"{}"] * n, job_config)
        fetched = queue.fetch(n, LEASE)
        queue.write([_outcome(kind, j) for j in fetched.jobs])
    queue.enqueue("t", [f"job-{i}" for i in range(n)], [b"{}"] * n, job_config)
    costs: dict[str, Counter[str]] = {}
    r.config_resetstat()
    fetched = queue.fetch(n, LEASE)
    costs["fetch"] = _calls(r)
    assert len(fetched.jobs) == n
    r.config_resetstat()
    written = queue.write([_outcome(kind, j) for j in fetched.jobs])
    costs["finish"] = _calls(r)
    assert all(o.recorded for o in written)
    return costs


def _outcome(kind: str, leased: Leased) -> Completed | Failed:
    if kind == "complete":
        return Completed(leased, b'"ok"')
    return Failed(leased, error="boom", traceback="Traceback: ...", delay_ms=0, permanent=False)


@pytest.mark.parametrize("bound", [False, True])
@pytest.mark.parametrize("kind", ["complete", "fail"])
def test_index_writes_are_per_call_not_per_job(
    redis_factory: Callable[..., RedisServer], kind: str, bound: bool
) -> None:
    server = redis_factory()
    r = redis.Redis.from_url(server.url)
    one, many = _batch_costs(r, 1, kind, bound), _batch_costs(r, 16, kind, bound)
    # Into processing with one ZADD, and the request's record with one HSET, per fetch.
    assert many["fetch"]["zadd"] == one["fetch"]["zadd"] == 1
    # Out of processing with one ZREM, into the final index with one ZADD, the records
    # past the count bound dropped with one DEL, however many jobs the call finishes.
    for command in ("zadd", "zrem", "del"):
        assert many["finish"][command] == one["finish"][command], command
    # What each job costs on its own: the fence's read, one HSET of its final state, the
    # lease's removal and the record's expiry; nothing else.
    per_job = {
        command: (many["finish"][command] - one["finish"][command]) / 15
        for command in many["finish"]
        if many["finish"][command] != one["finish"][command]
    }
    assert per_job == {"hmget": 1, "hset": 1, "hdel": 1, "pexpire": 1}
    per_fetched = {
        command: (many["fetch"][command] - one["fetch"][command]) / 15
        for command in many["fetch"]
        if many["fetch"][command] != one["fetch"][command]
    }
    # The read that also makes the reply, and the lease's one HSET (the request's record
    # takes every job in its one HSET).
    assert per_fetched == {"hmget": 1, "hset": 1}
    assert many["fetch"]["hset"] - 16 == one["fetch"]["hset"] - 1 == 1
