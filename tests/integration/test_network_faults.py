"""A bad network between a worker pool and Redis: cut connections, stalls, a black hole.

The pool under test (``P``) reaches Redis only through `FaultyProxy`, with a client whose
socket timeout is 1 s so that a stall is noticed; redis-py's default retries are left on,
as a user would have them. The test itself, and any second pool (``D``), talk to Redis
directly. Every scenario ends by checking that P's loops recovered on their own: new
jobs enqueued after the fault are run and written by P.

What must hold whatever the network does (API.md, "Delivery"): every job completes,
``stats().completed_jobs`` counts each job once, a write that arrives after its lease was
taken over is refused by the fence (``rejected_writes``) rather than recorded, and only
lost leases cause second runs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import jobs
from jobs.worker._protocol import Completed, Leased
from tests.helpers import checkout_connection, wait_until
from tests.integration._clients import make_client
from tests.integration._proxy import FaultyProxy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from jobs._embedded import RedisServer

#: The worker's socket timeout (s): how long a stalled command waits before it fails.
SOCKET_TIMEOUT = 1


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[FaultyProxy]:
    """A proxy in front of the session's (flushed) Redis."""
    with FaultyProxy((redis_server.host, redis_server.port)) as faulty:
        yield faulty


def via(proxy: FaultyProxy) -> str:
    return (
        f"redis://127.0.0.1:{proxy.port}/0"
        f"?socket_timeout={SOCKET_TIMEOUT}&socket_connect_timeout={SOCKET_TIMEOUT}"
    )


class Runs:
    """Handlers that count executions per job id and say which pool ran them."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handler(
        self, pool: str, before: Callable[[jobs.JobContext, int], None] | None = None
    ) -> Callable[[jobs.JobContext, Any], Any]:
        def run(ctx: jobs.JobContext, payload: Any) -> dict[str, Any]:
            with self.lock:
                self.counts[ctx.job.id] += 1
                n = sum(self.counts.values())
            if before is not None:
                before(ctx, n)
            return {"by": pool}

        return run

    def registry(
        self, pool: str, before: Callable[[jobs.JobContext, int], None] | None = None
    ) -> jobs.Registry:
        registry = jobs.Registry()
        registry.register_func("work", self.handler(pool, before))
        return registry


def completed(client: jobs.Client, n: int) -> Callable[[], bool]:
    def check() -> bool:
        return client.stats().completed_jobs >= n

    check.__name__ = f"completed_jobs >= {n}"
    return check


def assert_pool_recovered(client: jobs.Client, producer: jobs.Client, pool: str) -> None:
    """New jobs are fetched, run and written by ``client``'s pool; its heartbeat beats."""
    before = producer.stats().completed_jobs
    ids = producer.enqueue_many("work", [{"after": i} for i in range(5)])
    wait_until(completed(producer, before + 5), timeout=20, message="pool did not recover")
    assert {producer.get(i).result["by"] for i in ids} == {pool}
    # The heartbeat loop too: the pool's record was refreshed after the fault.
    since = datetime.now(UTC)
    wait_until(
        lambda: any(w.last_seen >= since for w in client.workers()),
        timeout=5,
        message="the pool's heartbeat did not recover",
    )


def prewarm(client: jobs.Client, connections: int = 6) -> None:
    """Give the pool's Redis client idle, handshaken connections.

    A command that needs a new connection during a stall hangs in the handshake and is
    never sent; one that finds an idle connection goes out into the stall at once, which
    is the case these tests are about.
    """
    redis_client = client.queue.client
    assert isinstance(redis_client, redis.Redis)
    pool = redis_client.connection_pool
    held = [checkout_connection(pool) for _ in range(connections)]
    for connection in held:
        pool.release(connection)


def queue_name() -> str:
    return f"net-{uuid.uuid4().hex[:8]}"


def test_connections_cut_mid_drain_lose_nothing(redis_url: str, proxy: FaultyProxy) -> None:
    total = 300
    cuts_at = set(range(20, total, 20))
    cuts: list[tuple[int, int]] = []  # (connections cut, connections accepted so far)
    runs = Runs()

    def maybe_cut(ctx: jobs.JobContext, n: int) -> None:
        # From inside a handler, so every cut lands mid-drain with jobs in flight.
        if n in cuts_at:
            # Read under the cut's own lock: a client woken by the cut reconnects at
            # once, possibly before this thread reads `accepted` again.
            cuts.append((proxy.cut(), proxy.accepted_at_cut))

    name = queue_name()
    with (
        make_client(redis_url, name=name) as producer,
        make_client(
            via(proxy), runs.registry("P", maybe_cut), name=name, start=False, num_workers=4
        ) as pool,
    ):
        ids = producer.enqueue_many("work", [{"i": i} for i in range(total)])
        pool.start()
        wait_until(completed(producer, total), timeout=40, message="drain did not finish")
        stats = producer.stats()
        assert len(cuts) == len(cuts_at) and sum(n for n, _ in cuts) >= len(cuts_at), cuts
        assert proxy.accepted > cuts[-1][1], "the pool did not reconnect after the last cut"
        assert stats.completed_jobs == total
        assert (stats.pending_jobs, stats.scheduled_jobs, stats.processing_jobs) == (0, 0, 0)
        assert stats.failed_jobs == 0
        assert all(producer.get(i).status is jobs.JobStatus.COMPLETED for i in ids)
        assert set(runs.counts) == set(ids)
        # A job runs twice only after its lease was lost: a fetch whose reply a cut
        # swallowed, or a result that could not be written in time.
        extra_runs = sum(runs.counts.values()) - total
        assert extra_runs <= stats.lost_leases
        print(
            f"\n{total} jobs, cuts of {[n for n, _ in cuts]} connections: {extra_runs} extra runs, "
            f"{stats.lost_leases} lost leases, {stats.rejected_writes} rejected writes"
        )
        assert_pool_recovered(pool, producer, "P")


def test_stall_longer_than_the_lease_is_fenced(
    redis_url: str, proxy: FaultyProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobs")
    runs = Runs()
    entered, release = threading.Event(), threading.Event()

    def first_call_blocks(ctx: jobs.JobContext, n: int) -> None:
        if n == 1:
            entered.set()
            release.wait(30)  # ignores its token: its result comes late

    name = queue_name()
    with (
        make_client(redis_url, name=name) as producer,
        # Lease 2 s: when the stall starts P still holds its lease for 1.5 s at least
        # (heartbeats every 0.5 s), so its write certainly goes out into the stall.
        make_client(
            via(proxy), runs.registry("P", first_call_blocks), name=name, lease=2
        ) as stalled,
        make_client(redis_url, runs.registry("D"), name=name, lease=2, start=False) as direct,
    ):
        try:
            job_id = producer.enqueue("work", {})
            assert entered.wait(10)
            prewarm(stalled)
            proxy.stall()
            # P's result is computed now, while its lease still holds locally, and its
            # write goes out into the stall: it reaches Redis only on resume.
            release.set()
            direct.start()
            # D reaps the expired lease (Redis time: P's heartbeats stopped with the
            # stall) and runs the job again.
            wait_until(
                lambda: producer.get(job_id).status is jobs.JobStatus.COMPLETED,
                timeout=15,
                message="the job was not re-delivered to the other pool",
            )
        finally:
            release.set()
            proxy.resume()
        wait_until(
            lambda: producer.stats().rejected_writes >= 1,
            timeout=20,
            message="P's late write never reached Redis to be refused",
        )
        job = producer.get(job_id)
        stats = producer.stats()
        assert job.result == {"by": "D"}, "the late write overwrote the re-delivered result"
        assert job.attempts == 2
        assert job.lost_leases == 1
        assert runs.counts[job_id] == 2
        assert stats.completed_jobs == 1
        assert stats.lost_leases == 1
        print(f"\nrejected writes after the stall: {stats.rejected_writes}")
        direct.stop()
        assert_pool_recovered(stalled, producer, "P")

        # P learnt its outcome did not count: refused by the fence, or dropped once its
        # lease ran out locally (redis-py may still be retrying it for a while).
        def told() -> bool:
            return any(
                "outcome rejected" in r.getMessage() or "outcome not written" in r.getMessage()
                for r in caplog.records
                if r.name == "jobs.worker"
            )

        wait_until(told, timeout=20, message="P never learnt its write did not count")


def test_result_computed_during_a_short_stall_is_written_after_it(
    redis_url: str, proxy: FaultyProxy
) -> None:
    # Lease 2 s, heartbeats every 0.5 s: when the stall starts, Redis holds the lease
    # for 1.5 s more at least. The stall ends well before that (and before the socket
    # timeout), so the write waiting in the stall lands while the lease still holds.
    runs = Runs()
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def gated(ctx: jobs.JobContext, n: int) -> None:
        entered.set()
        release.wait(30)

    def registry() -> jobs.Registry:
        handler = runs.handler("P", gated)

        def run(ctx: jobs.JobContext, payload: Any) -> Any:
            try:
                return handler(ctx, payload)
            finally:
                returned.set()

        reg = jobs.Registry()
        reg.register_func("work", run)
        return reg

    name = queue_name()
    with (
        make_client(redis_url, name=name) as producer,
        make_client(via(proxy), registry(), name=name, lease=2) as pool,
    ):
        job_id = producer.enqueue("work", {})
        try:
            assert entered.wait(10)
            prewarm(pool)
            proxy.stall()
            release.set()
            assert returned.wait(5)
            # The fault's duration, not a wait for a condition: keep Redis out of reach
            # while the result sits in the pool's outbox.
            time.sleep(0.3)
            assert producer.get(job_id).status is jobs.JobStatus.PROCESSING
        finally:
            release.set()
            proxy.resume()
        wait_until(
            lambda: producer.get(job_id).status is jobs.JobStatus.COMPLETED,
            timeout=10,
            message="the result was not written after the stall",
        )
        job = producer.get(job_id)
        stats = producer.stats()
        assert job.result == {"by": "P"}
        assert job.attempts == 1
        assert job.lost_leases == 0
        assert runs.counts[job_id] == 1
        assert (stats.completed_jobs, stats.lost_leases) == (1, 0)
        assert_pool_recovered(pool, producer, "P")


def test_black_hole_fails_fast_and_heals(redis_url: str, proxy: FaultyProxy) -> None:
    runs = Runs()
    name = queue_name()
    blind = jobs.RedisQueue(
        jobs.RedisQueueConfig(
            client=redis.Redis(
                port=proxy.port,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                retry=Retry(NoBackoff(), 0),
            ),
            name=name,
        )
    )
    try:
        with (
            make_client(redis_url, name=name) as producer,
            make_client(via(proxy), runs.registry("P"), name=name) as pool,
        ):
            assert_pool_recovered(pool, producer, "P")  # it works before the fault
            proxy.blackhole()
            # A producer behind the black hole gets a clear error within its timeout.
            started = time.monotonic()
            with pytest.raises(jobs.RedisUnavailable, match=str(proxy.port)):
                jobs.Client(jobs.ClientConfig(queue=blind)).enqueue("work", {})
            assert time.monotonic() - started < 5
            ids = producer.enqueue_many("work", [{"i": i} for i in range(5)])
            # The fault's duration: past P's socket timeout, so P's commands fail and
            # retry meanwhile. Nothing of them reaches Redis: the jobs stay pending.
            time.sleep(SOCKET_TIMEOUT + 0.5)
            assert producer.stats().pending_jobs == 5
            proxy.resume()
            wait_until(completed(producer, 10), timeout=20, message="P did not heal")
            assert all(producer.get(i).result == {"by": "P"} for i in ids)
            assert producer.stats().completed_jobs == 10
            assert_pool_recovered(pool, producer, "P")
    finally:
        blind.client.close()


def test_a_write_resent_after_its_reply_was_lost_counts_as_recorded(
    redis_client: redis.Redis,
) -> None:
    # What a cut between a write and its reply leads to (seen above: hundreds of
    # "rejected" writes when a cut hits a large batch). Deterministic here: the same
    # fenced write, twice.
    queue = jobs.RedisQueue(jobs.RedisQueueConfig(client=redis_client, name=queue_name()))
    queue.enqueue("work", ["a"], [b"{}"], jobs.JobConfig())
    leased = queue.fetch(1, timedelta(seconds=30)).jobs[0]
    held = Leased("a", leased.token)
    first = queue.write([Completed(held, b"1")])
    again = queue.write([Completed(held, b"1")])
    assert first[0].recorded
    assert again[0].recorded, "the resent write of a recorded outcome was refused"
    assert queue.stats().rejected_writes == 0


def test_a_lost_wake_up_costs_at_most_poll_interval(
    redis_url: str, redis_client: redis.Redis, proxy: FaultyProxy
) -> None:
    # An idle pool blocks on the queue's wake-up list. When the reply to the BLPOP that
    # took a marker is lost, redis-py re-sends the BLPOP and the marker is gone: the pool
    # must still find the job within poll_interval, not at a reap a quarter-minute later.
    runs = Runs()
    name = queue_name()
    lossy = jobs.RedisQueue(
        jobs.RedisQueueConfig(
            client=redis.Redis(port=proxy.port, socket_timeout=5, retry=Retry(NoBackoff(), 3)),
            name=name,
        )
    )
    config = jobs.ClientConfig(
        queue=lossy,
        registry=runs.registry("P"),
        # A 60 s lease: an idle pool's heartbeat (and its reap, which re-arms a lost
        # marker) comes every 15 s, far past the deadline below.
        worker_pool_config=jobs.WorkerPoolConfig(
            num_workers=1, lease=60, poll_interval=2, shutdown_timeout=2
        ),
    )
    wake = lossy.keys.wake

    def blocked_in_blpop() -> bool:
        return any(
            c.get("cmd") == "blpop" and "b" in c.get("flags", "")
            for c in redis_client.client_list()
        )

    try:
        with make_client(redis_url, name=name) as producer, jobs.Client(config):
            # Idle from the start: its first beat is done, the next one 15 s away.
            wait_until(producer.workers, timeout=10)
            wait_until(blocked_in_blpop, timeout=10)
            proxy.stall()
            job_id = producer.enqueue("work", {})
            # The blocked BLPOP took the marker; its reply waits in the stall.
            wait_until(lambda: redis_client.llen(wake) == 0, timeout=5)
            proxy.cut()  # the reply is lost; redis-py re-sends the BLPOP
            proxy.resume()
            wait_until(completed(producer, 1), timeout=6, message="the lost wake-up stalled P")
            assert producer.get(job_id).result == {"by": "P"}
            assert runs.counts == Counter({job_id: 1})
    finally:
        lossy.client.close()
