"""Rate limits and concurrency caps per job type, enforced by fetch.lua.

The scripts read the Redis clock, so no test waits for a rate to refill: a test that
needs time to pass rewrites the type's GCRA timestamp (the ``rate`` hash) into the past
and marks the type due in the ``parked`` zset, which is what the passing of time and the
next fetch would have done. Expired leases are made the same way (the processing score
set to 1970), as in test_model.py.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis

import jobs
from jobs import RateLimit, TypeLimits, testing
from jobs.queue.redis_queue import RedisQueue
from jobs.worker._protocol import Completed, Failed, Leased
from tests.helpers import wait_until
from tests.integration._clients import make_client, unique_name
from tests.integration._processes import WorkerProcs, worker_procs
from tests.integration.test_cli import cli
from tests.integration.worker_process import STARTED_KEY

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["worker_procs"]  # the fixture, used by name

LEASE = timedelta(minutes=10)


@pytest.fixture
def queue(redis_url: str) -> Iterator[RedisQueue]:
    """A fresh queue on the test server."""
    q = RedisQueue.from_url(redis_url, name=unique_name("flow"))
    try:
        yield q
    finally:
        q.close()


def enqueue(queue: RedisQueue, job_type: str, n: int = 1) -> list[str]:
    client = jobs.Client(jobs.ClientConfig(queue=queue))
    return [client.enqueue(job_type, {}) for _ in range(n)]


def types_of(leased: list[Leased]) -> list[str]:
    return [jobs._codec.text(j.fields["type"]) for j in leased]


def held(j: Leased) -> Leased:
    return Leased(j.job_id, j.token)


def let_time_pass(queue: RedisQueue, job_type: str) -> None:
    """What the passing of a whole period does: the rate may start jobs again at once."""
    queue.client.hset(queue.keys.rate, job_type, "0")
    queue.client.zadd(queue.keys.parked, {job_type: 0}, xx=True)


# -- declaring and validating -------------------------------------------------------------


def test_limits_are_validated_naming_the_field() -> None:
    registry = jobs.Registry()
    for bad in ("10", "0/s", "10/d", "ten/s", 10, "1/s/s"):
        with pytest.raises(jobs.ConfigError, match="rate_limit"):
            registry.register("a", lambda ctx, p: None, rate_limit=bad)  # type: ignore[arg-type]
    for cap in (0, -1, 1.5, True, "3"):
        with pytest.raises(jobs.ConfigError, match="max_concurrency"):
            registry.register("a", lambda ctx, p: None, max_concurrency=cap)  # type: ignore[arg-type]
    client = redis.Redis()
    with pytest.raises(jobs.ConfigError, match=r"rate_limits\['a'\]"):
        jobs.RedisQueueConfig(client=client, rate_limits={"a": "5/x"})
    with pytest.raises(jobs.ConfigError, match=r"concurrency_limits\['a'\]"):
        jobs.RedisQueueConfig(client=client, concurrency_limits={"a": 0})
    with pytest.raises(jobs.ConfigError, match="concurrency_limits"):
        jobs.RedisQueueConfig(client=client, concurrency_limits=[("a", 1)])
    client.close()


def test_declared_limits_parse_and_print() -> None:
    registry = jobs.Registry()

    @registry.job("resize", timeout=60, max_retries=5, rate_limit="10/s", max_concurrency=3)
    def resize(ctx: jobs.JobContext, payload: Any) -> None: ...

    limits = registry.limits()["resize"]
    assert limits == TypeLimits(RateLimit(10, 1000), 3)
    assert limits.describe() == "10/s, at most 3 at once"
    assert TypeLimits.decode(limits.encode()) == limits
    assert str(RateLimit.parse(" 5 / m ")) == "5/m"
    assert RateLimit.parse("100/h").period_ms == 3_600_000


def test_a_pool_publishes_its_limits_with_the_queue_overrides(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register("a", lambda ctx, p: None, rate_limit="10/s", max_concurrency=3)
    registry.register("b", lambda ctx, p: None, rate_limit="1/h")
    registry.register("c", lambda ctx, p: None)
    options = {"rate_limits": {"a": "5/s", "b": None}, "concurrency_limits": {"z": 2}}
    with make_client(redis_url, registry, queue_options=options) as client:
        queue = client.queue
        wait_until(lambda: "a" in queue.limits(), message="limits never published")
        assert queue.limits() == {
            "a": TypeLimits(RateLimit(5, 1000), 3),
            "z": TypeLimits(None, 2),
        }


# -- rate limits -----------------------------------------------------------------------------


def test_a_rate_limited_job_stays_pending_and_does_not_block_other_types(
    queue: RedisQueue,
) -> None:
    queue.set_type_limits("slow", rate_limit="2/m")
    slow = enqueue(queue, "slow", 3)
    fast = enqueue(queue, "fast", 3)
    fetched = queue.fetch(10, LEASE)
    # FIFO within the priority: the first slow job, then the fast ones past the other two.
    assert types_of(fetched.jobs) == ["slow", "fast", "fast", "fast"]
    assert [j.job_id for j in fetched.jobs] == [slow[0], *fast]
    for job_id in slow[1:]:
        job = queue.get(job_id)
        assert job.status is jobs.JobStatus.PENDING
        assert (job.attempts, job.error) == (0, None)  # no attempt, no retry used
        assert queue.client.hget(queue.keys.job(job_id), "failures") is None
    stats = queue.stats()
    assert (stats.pending_jobs, stats.throttled_jobs) == (2, 2)
    assert queue.held_back() == {"slow": 2}
    assert [j.id for j in queue.list_jobs("pending")] == slow[1:]
    # Everything left is held back: the pool learns when to look again (2/m: 30 s after
    # the first start), and no wake-up marker calls it back before.
    queue.client.delete(queue.keys.wake)
    again = queue.fetch(10, LEASE)
    assert again.jobs == []
    assert again.next_due_ms is not None
    assert 29_000 <= again.next_due_ms - again.now_ms <= 30_000
    assert queue.client.llen(queue.keys.wake) == 0
    # Once the period passed, the next one starts, in FIFO order.
    let_time_pass(queue, "slow")
    assert [j.job_id for j in queue.fetch(10, LEASE).jobs] == [slow[1]]
    assert queue.fetch(10, LEASE).jobs == []


def test_a_rate_limit_spaces_starts_with_a_small_burst(queue: RedisQueue) -> None:
    queue.set_type_limits("r", rate_limit="50/s")  # every 20 ms, burst of 5
    enqueue(queue, "r", 20)
    first = queue.fetch(20, LEASE)
    assert len(first.jobs) == 5
    assert first.next_due_ms is not None
    assert 0 < first.next_due_ms - first.now_ms <= 20


def test_a_rate_and_a_cap_together_name_the_rates_next_start(queue: RedisQueue) -> None:
    # The cap (3) has room left when the rate's burst (2) is used up: the type is looked
    # at again at the rate's next start, not when the cap might free (found by README).
    queue.set_type_limits("both", rate_limit="20/s", max_concurrency=3)
    enqueue(queue, "both", 6)
    first = queue.fetch(10, LEASE)
    assert len(first.jobs) == 2
    assert first.next_due_ms is not None
    assert 0 < first.next_due_ms - first.now_ms <= 50
    # Once the rate allows, the cap binds: one more (3 running), then a slot must free.
    let_time_pass(queue, "both")
    assert len(queue.fetch(10, LEASE).jobs) == 1
    queue.write([Completed(held(first.jobs[0]), b"1")])
    let_time_pass(queue, "both")
    assert len(queue.fetch(10, LEASE).jobs) == 1


def test_a_held_back_job_can_be_cancelled_and_purged(queue: RedisQueue) -> None:
    queue.set_type_limits("slow", rate_limit="1/h")
    ids = enqueue(queue, "slow", 4)
    assert len(queue.fetch(10, LEASE).jobs) == 1
    assert queue.cancel(ids[1]) == 1
    assert queue.held_back() == {"slow": 2}
    assert queue.stats().pending_jobs == 2
    assert queue.purge("pending") == 2
    assert queue.held_back() == {}
    assert queue.stats().pending_jobs == 0
    let_time_pass(queue, "slow")
    assert queue.fetch(10, LEASE).jobs == []
    assert queue.client.zcard(queue.keys.parked) == 0


def test_changing_a_limit_releases_held_jobs(queue: RedisQueue) -> None:
    queue.set_type_limits("slow", rate_limit="1/h")
    enqueue(queue, "slow", 3)
    assert len(queue.fetch(10, LEASE).jobs) == 1
    queue.client.delete(queue.keys.wake)
    queue.set_type_limits("slow")  # no limits any more
    assert queue.client.llen(queue.keys.wake) == 1  # the pools are told
    assert len(queue.fetch(10, LEASE).jobs) == 2
    assert queue.limits() == {}


def test_a_job_held_back_keeps_its_priority_place(queue: RedisQueue) -> None:
    queue.set_type_limits("slow", rate_limit="1/h")
    client = jobs.Client(jobs.ClientConfig(queue=queue))
    client.enqueue("slow", {})
    assert len(queue.fetch(1, LEASE).jobs) == 1
    low = client.enqueue("slow", {}, jobs.JobConfig(priority=0))
    high = client.enqueue("slow", {}, jobs.JobConfig(priority=5))
    assert queue.fetch(10, LEASE).jobs == []
    let_time_pass(queue, "slow")
    queue.set_type_limits("slow", rate_limit="20/h")  # a burst of two
    assert [j.job_id for j in queue.fetch(10, LEASE).jobs] == [high, low]


# -- concurrency caps ----------------------------------------------------------------------


def test_a_cap_holds_and_every_exit_from_processing_gives_the_slot_back(
    queue: RedisQueue,
) -> None:
    queue.set_type_limits("c", max_concurrency=2)
    ids = enqueue(queue, "c", 8)
    enqueue(queue, "free", 2)

    def fetch_c() -> list[Leased]:
        return [j for j in queue.fetch(10, LEASE).jobs if j.fields["type"] in (b"c", "c")]

    running = fetch_c()
    assert [j.job_id for j in running] == ids[:2]
    assert queue.running_by_type("c") == 2
    assert fetch_c() == []

    def swap(gone: Leased) -> Leased:
        """After ``gone`` left processing, exactly one more starts."""
        assert queue.running_by_type("c") == 1
        (started,) = fetch_c()
        assert fetch_c() == []
        assert queue.running_by_type("c") == 2
        return started

    a, b = running
    # complete
    queue.write([Completed(held(a), b"1")])
    a = swap(a)
    # a failure with a retry (the job comes back later, held back itself if need be)
    queue.write([Failed(held(a), "E", "tb", 0, permanent=False)])
    a = swap(a)
    # a failure for good
    queue.write([Failed(held(a), "E", "tb", 0, permanent=True)])
    a = swap(a)
    # cancel while running
    assert queue.cancel(a.job_id) is True
    a = swap(a)
    # requeue (a stopping pool hands it back)
    assert queue.requeue([held(a)]) == 1
    a = swap(a)
    # a lease lost: expired and reaped
    queue.client.zadd(queue.keys.processing, {a.job_id: 1}, xx=True)
    assert queue.reap() == (1, 0)
    a = swap(a)
    # the late result of the reaped attempt is refused and gives nothing back twice
    assert queue.running_by_type("c") == 2
    queue.write([Completed(held(b), b"1")])
    queue.write([Completed(held(b), b"1")])  # sent again after a lost reply
    assert queue.running_by_type("c") == 1


def test_a_slot_whose_record_vanished_is_not_leaked(queue: RedisQueue) -> None:
    queue.set_type_limits("c", max_concurrency=1)
    first, second = enqueue(queue, "c", 2)
    assert [j.job_id for j in queue.fetch(5, LEASE).jobs] == [first]
    queue.client.delete(queue.keys.job(first))  # deleted by hand while running
    queue.client.zadd(queue.keys.processing, {first: 1}, xx=True)
    assert queue.fetch(5, LEASE).jobs == []  # held back by the full cap
    # The passing of the lease: the slot's deadline passes with it.
    queue.client.zadd(queue.keys.running("c"), {first: 1}, xx=True)
    queue.client.delete(queue.keys.wake)
    queue.reap()  # finds the record gone: held-back types are looked at again
    assert queue.client.llen(queue.keys.wake) == 1
    assert [j.job_id for j in queue.fetch(5, LEASE).jobs] == [second]


def test_heartbeats_keep_the_slot_as_long_as_the_lease(queue: RedisQueue) -> None:
    queue.set_type_limits("c", max_concurrency=1)
    enqueue(queue, "c", 2)
    (job,) = queue.fetch(5, timedelta(seconds=30)).jobs
    queue.heartbeat("p", {}, timedelta(seconds=5), [held(job)], LEASE, reap=False)
    deadline = queue.client.zscore(queue.keys.running("c"), job.job_id)
    assert deadline == queue.client.zscore(queue.keys.processing, job.job_id)
    assert deadline is not None
    assert deadline - time.time() * 1000 > 60_000


def test_a_cap_holds_across_two_pools(redis_url: str) -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def handler(ctx: jobs.JobContext, payload: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        ctx.sleep(0.02)
        with lock:
            running -= 1

    name = unique_name("cap")
    registry = jobs.Registry()
    registry.register("c", handler, max_concurrency=3)
    registry.register("free", lambda ctx, p: None)
    with (
        make_client(redis_url, registry, name=name, num_workers=4) as one,
        make_client(redis_url, registry, name=name, num_workers=4),
    ):
        ids = [one.enqueue("c", {}) for _ in range(40)]
        ids += [one.enqueue("free", {}) for _ in range(20)]
        done = one.wait_all(ids, timeout=30)
        assert all(j.status is jobs.JobStatus.COMPLETED for j in done)
    assert peak == 3


def test_a_killed_workers_slot_comes_back_when_its_lease_is_reaped(
    redis_url: str, redis_client: redis.Redis, worker_procs: WorkerProcs
) -> None:
    name = unique_name("kill")
    victim = worker_procs.spawn(redis_url, name, workers=2, lease=1.0, cap=1)
    queue = RedisQueue.from_url(redis_url, name=name)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        first = client.enqueue("capped", {"seconds": 60})  # its first attempt never ends
        second = client.enqueue("capped", {"seconds": 0})
        wait_until(lambda: redis_client.llen(STARTED_KEY) == 1, message="never started")
        assert queue.held_back() == {"capped": 1}
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        # The survivor reaps the dead worker's lease, which gives its slot back: the
        # first job runs again (at the front), then the waiting one.
        worker_procs.spawn(redis_url, name, workers=2, lease=1.0, cap=1)
        done = client.wait_all([first, second], timeout=20)
        assert [j.status for j in done] == [jobs.JobStatus.COMPLETED] * 2
        assert queue.get(first).lost_leases == 1
        started = [json.loads(e) for e in redis_client.lrange(STARTED_KEY, 0, -1)]
        assert [(e["id"], e["attempt"]) for e in started] == [(first, 1), (first, 2), (second, 1)]
        assert queue.running_by_type("capped") == 0
    finally:
        queue.close()


# -- the command line ------------------------------------------------------------------------


def test_the_cli_shows_limits_and_held_back_jobs(queue: RedisQueue, redis_url: str) -> None:
    queue.set_type_limits("slow", rate_limit="1/h", max_concurrency=3)
    first, second = enqueue(queue, "slow", 2)
    assert len(queue.fetch(5, LEASE).jobs) == 1
    options = ("--queue", queue.name)
    stats = cli("stats", *options, "--json", redis_url=redis_url)
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["throttled_jobs"] == 1
    assert data["limits"] == {
        "slow": {"rate_limit": "1/h", "max_concurrency": 3, "held_back": 1, "running": 1}
    }
    text = cli("stats", *options, redis_url=redis_url).stdout
    assert "limit slow: 1/h, at most 3 at once (1 running), 1 held back" in text
    got = json.loads(cli("get", second, *options, "--json", redis_url=redis_url).stdout)
    assert (got["status"], got["limits"], got["held_back"]) == (
        "pending",
        "1/h, at most 3 at once",
        True,
    )
    lines = cli("get", first, *options, redis_url=redis_url).stdout.splitlines()
    assert "limits: 1/h, at most 3 at once" in lines
    assert "held_back: no" in lines
    assert "limits" not in json.loads(
        cli("stats", "--queue", "other", "--json", redis_url=redis_url).stdout
    )


# -- jobs.testing ----------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_drain_applies_rate_limits_on_the_moved_clock(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register("hourly", lambda ctx, p: p, rate_limit="1/h", max_concurrency=1)
    queue = RedisQueue.from_url(redis_url, name=unique_name("drain"))
    try:
        client = testing.TestClient(jobs.ClientConfig(queue=queue, registry=registry))
        client.enqueue_many("hourly", [1, 2, 3])
        # One an hour: the drain moves the clock two hours on instead of waiting for it
        # (the pytest timeout says so).
        ran = client.drain()
        assert [job.result for job in ran] == [1, 2, 3]
        assert queue.limits() == {"hourly": TypeLimits(RateLimit(1, 3_600_000), 1)}
    finally:
        queue.close()
