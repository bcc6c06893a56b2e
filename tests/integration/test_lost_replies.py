"""A command that ran but whose reply was lost, then sent again: it must not act twice.

redis-py's ``redis.Redis(host, port)`` (the form README and API.md show) retries a
command that failed with a connection error or a timeout, up to 10 times, by sending it
again; a reset, a failover or a Redis stall past the socket timeout can hit after the
script ran, so the second copy finds its work done. The worker pool likewise tries a
fetch again after an error. Every script that acts must then give the first run's answer
(fetch.lua, cancel.lua, retry.lua: per request id; complete.lua and fail.lua: per lease
token), not act again: a second fetch would lease a batch to nobody (it waits a lease,
is charged a lost lease and an attempt no handler ran), a second cancel would answer
"already finished".

`FaultyProxy.drop_reply_to` stages the loss: the command reaches Redis, its reply and
connection are lost.
"""

from __future__ import annotations

import collections
import threading
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import jobs
from jobs.queue._scripts import scripts
from jobs.worker._protocol import Completed, Failed, Fetched, Leased
from tests.helpers import wait_until
from tests.integration._proxy import FaultyProxy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jobs._embedded import RedisServer

LEASE = timedelta(seconds=30)


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[FaultyProxy]:
    """A proxy in front of the session's (flushed) Redis."""
    with FaultyProxy((redis_server.host, redis_server.port)) as faulty:
        yield faulty


@pytest.fixture
def resending(proxy: FaultyProxy) -> Iterator[redis.Redis]:
    """A client through the proxy that sends a command again after a lost reply.

    What ``redis.Redis(host, port)`` does by default from redis-py 6 on; set here
    explicitly so that every supported redis-py (5.0 did not retry by default) re-sends.
    """
    client = redis.Redis(
        port=proxy.port,
        socket_timeout=0.5,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 3),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    try:
        yield client
    finally:
        client.close()


def make_queue(client: redis.Redis) -> jobs.RedisQueue:
    return jobs.RedisQueue(
        jobs.RedisQueueConfig(client=client, name=f"lost-{uuid.uuid4().hex[:8]}")
    )


def sha(name: str) -> bytes:
    """What marks a call of one script on the wire."""
    script: Any = getattr(scripts(), name)
    return str(script.sha).encode()


def leased(direct: redis.Redis, queue: jobs.RedisQueue) -> set[str]:
    """The ids in the queue's processing index."""
    members = cast("list[bytes]", direct.zrange(queue.keys.processing, 0, -1))
    return {m.decode() for m in members}


def held_by_nobody(direct: redis.Redis, queue: jobs.RedisQueue, holders: set[str]) -> list[str]:
    """Leased job ids nobody was told about."""
    return sorted(leased(direct, queue) - holders)


def warm_up(pool: jobs.Client) -> None:
    """Run one job: the pool's next fetch is then the one a new job wakes it for."""
    job_id = pool.enqueue("warm", None)
    wait_until(lambda: pool.get(job_id).status is jobs.JobStatus.COMPLETED, timeout=10)


def warmed_pool(
    proxy: FaultyProxy, handler: Any, num_workers: int, *, shutdown_timeout: float
) -> jobs.Client:
    """A started pool through the proxy, with no client retries, past its warm-up job.

    Its handler for ``t`` is ``handler``; the caller stops it and closes its client.
    """
    client = redis.Redis(port=proxy.port, retry=Retry(NoBackoff(), 0), socket_timeout=5)
    registry = jobs.Registry()
    registry.register_func("t", handler)
    registry.register_func("warm", lambda ctx, payload: None)
    pool = jobs.Client(
        jobs.ClientConfig(
            queue=make_queue(client),
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(
                num_workers=num_workers,
                lease=60,
                poll_interval=0.1,
                shutdown_timeout=shutdown_timeout,
            ),
        )
    )
    pool.start()
    warm_up(pool)
    return pool


def settle(pool: jobs.Client) -> None:
    """Wait until the pool waits with a bare BLPOP, so that its next fetch is sent after it.

    A pool that just ran jobs sends its fetch together with its wait
    (`jobs.queue._idle`), before the test could arm the proxy for it; one poll later it
    no longer does.
    """
    running: Any = pool._pool
    wait_until(lambda: not running._hot, timeout=10)


# -- fetch ---------------------------------------------------------------------------------


def test_a_fetch_sent_again_after_its_reply_was_lost_leases_nothing_new(
    proxy: FaultyProxy, resending: redis.Redis, redis_client: redis.Redis
) -> None:
    queue = make_queue(resending)
    queue.enqueue("t", ["a", "b"], [b"{}", b"{}"], jobs.JobConfig())
    proxy.drop_reply_to(sha("fetch"))
    fetched = queue.fetch(1, LEASE)
    assert proxy.dropped_replies == 1
    assert [j.job_id for j in fetched.jobs] == ["a"]
    assert held_by_nobody(redis_client, queue, {"a"}) == []
    b = queue.get("b")
    assert (b.status, b.attempts) == (jobs.JobStatus.PENDING, 0)
    a = queue.get("a")
    assert (a.status, a.attempts) == (jobs.JobStatus.PROCESSING, 1)
    # The caller's token is the live one: its completion is recorded.
    done = queue.write([Completed(Leased("a", fetched.jobs[0].token), b'"ok"')])
    assert done[0].recorded


def test_an_exchange_sent_again_after_its_reply_was_lost_leases_nothing_new(
    proxy: FaultyProxy, resending: redis.Redis, redis_client: redis.Redis
) -> None:
    # The pool's hot path: the previous outcomes and the next fetch in one pipeline.
    queue = make_queue(resending)
    ids = [f"j{i}" for i in range(5)]
    queue.enqueue("t", ids, [b"{}"] * 5, jobs.JobConfig())
    first = queue.fetch(1, LEASE).jobs[0]
    proxy.drop_reply_to(sha("fetch"))
    outcome = [Completed(first, b'"r"')]
    try:
        done, fetched = queue.exchange(outcome, 2, LEASE, request="r1")
    except redis.ConnectionError:
        # redis-py before 6 does not send a pipeline again by itself: the pool then sends
        # the same exchange again, with the same request id. So does the test.
        done, fetched = queue.exchange(outcome, 2, LEASE, request="r1")
    assert proxy.dropped_replies == 1
    assert fetched is not None
    assert [o.recorded for o in done] == [True]
    got = {j.job_id for j in fetched.jobs}
    assert len(got) == 2
    assert held_by_nobody(redis_client, queue, got) == []
    stats = queue.stats()
    assert (stats.pending_jobs, stats.processing_jobs, stats.completed_jobs) == (2, 2, 1)
    assert stats.rejected_writes == 0


def test_a_fetch_stalled_past_the_socket_timeout_leases_once(
    proxy: FaultyProxy, resending: redis.Redis, redis_client: redis.Redis
) -> None:
    # No reply is lost on the wire: Redis (here the link) stalls longer than the client's
    # socket timeout, redis-py gives up on the connection and sends the fetch again, and
    # every copy runs once the stall ends.
    queue = make_queue(resending)
    queue.enqueue("t", [f"j{i}" for i in range(10)], [b"{}"] * 10, jobs.JobConfig())
    queue.fetch(1, LEASE)  # a connection and the scripts ready
    accepted = proxy.accepted
    result: list[Fetched] = []
    proxy.stall()
    fetcher = threading.Thread(target=lambda: result.append(queue.fetch(1, LEASE)))
    fetcher.start()
    try:
        # A new connection: redis-py timed out and is sending the fetch again.
        wait_until(lambda: proxy.accepted > accepted, timeout=10, message="no re-send")
    finally:
        proxy.resume()
        fetcher.join(20)
    assert not fetcher.is_alive()
    (fetched,) = result
    got = {j.job_id for j in fetched.jobs}
    assert len(got) == 1
    held = leased(redis_client, queue)
    assert len(held) == 2  # the warm-up fetch's job, and this one's
    assert got <= held


def test_a_pool_sends_an_unanswered_fetch_again_with_its_request_id(
    proxy: FaultyProxy, redis_url: str
) -> None:
    # No retries in the client: the error reaches the pool's fetcher, whose next try must
    # be the same fetch, not a new one.
    ran: list[str] = []
    pool = warmed_pool(proxy, lambda ctx, payload: ran.append(ctx.job.id), 3, shutdown_timeout=2)
    try:
        settle(pool)
        proxy.drop_reply_to(sha("fetch"))
        ids = pool.enqueue_many("t", [1, 2, 3])
        wait_until(lambda: pool.stats().completed_jobs == 4, timeout=20)  # and the warm-up
        assert proxy.dropped_replies == 1
        assert sorted(ran) == sorted(ids)
        assert [pool.get(i).attempts for i in ids] == [1, 1, 1]
        assert pool.stats().lost_leases == 0
    finally:
        pool.stop()
        pool.queue.client.close()


def test_a_fetch_lost_while_the_pool_fetches_ahead_is_sent_again(proxy: FaultyProxy) -> None:
    # A backlog of short jobs: the pool sends each exchange before it takes the jobs of
    # the one before (`Fetching._pipelined`). A reply lost then, with jobs of the last
    # exchange still to take, must cost nothing: the same fetch again, each job run once.
    runs: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handler(ctx: jobs.JobContext, payload: int) -> None:
        with lock:
            runs[ctx.job.id] += 1
        if payload == 150:
            proxy.drop_reply_to(sha("fetch"))

    pool = warmed_pool(proxy, handler, 4, shutdown_timeout=2)
    try:
        ids = pool.enqueue_many("t", list(range(600)))
        wait_until(lambda: pool.stats().completed_jobs == len(ids) + 1, timeout=30)
        assert proxy.dropped_replies == 1
        assert set(runs) == set(ids) and set(runs.values()) == {1}
        assert {job.attempts for job in pool.queue.get_many(ids) if job is not None} == {1}
        stats = pool.stats()
        assert (stats.lost_leases, stats.rejected_writes, stats.processing_jobs) == (0, 0, 0)
    finally:
        pool.stop()
        pool.queue.client.close()


def test_stop_hands_back_the_jobs_of_a_fetch_left_unanswered(
    proxy: FaultyProxy, redis_url: str, redis_client: redis.Redis
) -> None:
    # The pool stops right after a fetch failed, before trying it again: what that fetch
    # leased goes back to the queue now, not after a lease.
    pool = warmed_pool(proxy, lambda ctx, payload: ctx.sleep(60), 2, shutdown_timeout=0)
    try:
        settle(pool)
        proxy.drop_reply_to(sha("fetch"))
        ids = pool.enqueue_many("t", [1, 2])
        wait_until(lambda: proxy.dropped_replies == 1, timeout=10)
        pool.stop()
        for job_id in ids:
            job = pool.get(job_id)
            assert (job.status, job.attempts) == (jobs.JobStatus.PENDING, 0), job
        assert redis_client.zcard(pool.queue.keys.processing) == 0
    finally:
        pool.stop()
        pool.queue.client.close()


# -- cancel and retry ----------------------------------------------------------------------


def test_cancel_and_retry_sent_again_after_their_replies_were_lost_answer_true(
    proxy: FaultyProxy, resending: redis.Redis
) -> None:
    queue = make_queue(resending)
    client = jobs.Client(jobs.ClientConfig(queue=queue))
    job_id = client.enqueue("t", 1)
    proxy.drop_reply_to(sha("cancel"))
    assert client.cancel(job_id) is True
    assert client.get(job_id).status is jobs.JobStatus.CANCELLED
    proxy.drop_reply_to(sha("retry"))
    assert client.retry(job_id) is True
    assert client.get(job_id).status is jobs.JobStatus.PENDING
    assert proxy.dropped_replies == 2
    # Each acted once: cancelled once, then out of the cancelled count again.
    assert client.stats().cancelled_jobs == 0
    assert client.stats().pending_jobs == 1


def test_a_request_id_makes_cancel_and_retry_answer_once(redis_client: redis.Redis) -> None:
    # Sent again later, a request gives its first answer and changes nothing: not "already
    # finished", and no second requeue of a job that failed again in between.
    queue = make_queue(redis_client)
    queue.enqueue("t", ["a"], [b"{}"], jobs.JobConfig(max_retries=0))
    assert queue.cancel("a", request="c1") is True
    assert queue.cancel("a", request="c1") is True
    assert queue.cancel("a", request="c2") is False
    assert queue.retry("a", request="r1") is True
    leased = queue.fetch(1, LEASE).jobs[0]
    queue.write([Failed(leased, "E: x", "", 0, permanent=True)])
    assert queue.get("a").status is jobs.JobStatus.FAILED
    assert queue.retry("a", request="r1") is True
    assert queue.get("a").status is jobs.JobStatus.FAILED  # not requeued again
    assert queue.retry("a", request="r2") is True
    assert queue.get("a").status is jobs.JobStatus.PENDING


def test_a_large_fetch_sent_again_returns_the_same_jobs(redis_client: redis.Redis) -> None:
    # A pool may fetch thousands at once (num_workers + prefetch): the record holds them all.
    queue = make_queue(redis_client)
    ids = [f"j{i:04d}" for i in range(4500)]
    queue.enqueue("t", ids, [b"{}"] * len(ids), jobs.JobConfig())
    first = queue.fetch(len(ids), LEASE, request="big")
    again = queue.fetch(len(ids), LEASE, request="big")
    assert [j.job_id for j in first.jobs] == ids
    assert [(j.job_id, j.token) for j in again.jobs] == [(j.job_id, j.token) for j in first.jobs]
    assert all(int(j.fields["attempts"]) == 1 for j in again.jobs)
    assert 0 < redis_client.pttl(queue.keys.request("big")) <= LEASE.total_seconds() * 1000 + 1000
