"""Waiting for jobs: Client.wait/result/wait_all/as_completed and JobHandle.

API.md "Results, job types, flow control, observability". The waits are woken by the
scripts' ``finished`` announcement: these tests make the waiters' own re-read interval
(`RECHECK`) far longer than the test timeout, so only the announcement can wake them.
"""

from __future__ import annotations

import json
import pickle
import threading
from typing import TYPE_CHECKING, Any

import pytest
import redis

import jobs
from jobs.queue import _waiter
from tests.helpers import wait_until
from tests.integration._clients import Gate, make_client, unique_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from jobs._embedded import RedisServer
    from tests.integration._topologies import ClusterTopology, SentinelTopology


@pytest.fixture(autouse=True)
def _no_rereads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_waiter, "RECHECK", 3600.0)
    monkeypatch.setattr("jobs.queue._reader.RECHECK", 3600.0)
    yield


def _registry(**handlers: Any) -> jobs.Registry:
    registry = jobs.Registry()
    for name, handler in handlers.items():
        registry.register_func(name, handler)
    return registry


def _add(ctx: jobs.JobContext, payload: dict[str, int]) -> int:
    return payload["a"] + payload["b"]


def _boom(ctx: jobs.JobContext, payload: object) -> object:
    raise ValueError("no good")


def test_result_of_an_enqueued_handle(redis_url: str) -> None:
    with make_client(redis_url, _registry(add=_add)) as client:
        handle = client.enqueue("add", {"a": 2, "b": 3})
        assert handle.result(timeout=10) == 5
        assert client.result(handle, timeout=10) == 5
        job = handle.wait(timeout=10)
        assert job.status is jobs.JobStatus.COMPLETED
        assert handle.get() == job


def test_a_waiter_is_woken_by_the_outcome_itself(redis_url: str) -> None:
    gate = Gate(result={"ok": True})
    with make_client(redis_url, _registry(slow=gate)) as client:
        job_id = client.enqueue("slow")
        assert gate.entered.wait(10)
        got: list[jobs.Job] = []
        waiter = threading.Thread(target=lambda: got.append(client.wait(job_id)))
        waiter.start()
        # The waiter is subscribed and has read the job as processing.
        wait_until(lambda: client.queue._listener is not None)
        listener = client.queue._listener
        assert listener is not None
        assert listener.wait_subscribed(10)
        gate.release.set()
        waiter.join(10)
        assert not waiter.is_alive(), "wait() was not woken by the completion"
        assert got[0].status is jobs.JobStatus.COMPLETED
        assert got[0].result == {"ok": True}


def test_a_failed_job_raises_with_its_traceback(redis_url: str) -> None:
    with make_client(redis_url, _registry(boom=_boom)) as client:
        handle = client.enqueue("boom", config=jobs.JobConfig(max_retries=0))
        with pytest.raises(jobs.JobFailed) as failed:
            handle.result(timeout=10)
        assert "ValueError: no good" in str(failed.value)
        job = failed.value.job
        assert job.status is jobs.JobStatus.FAILED
        assert job.traceback is not None
        assert "raise ValueError" in job.traceback
        assert client.get(handle).traceback == job.traceback
        # The error survives a trip through pickle (a process pool, a task result).
        assert pickle.loads(pickle.dumps(failed.value)).job == job


def test_a_cancelled_job_raises_job_cancelled(redis_url: str) -> None:
    with make_client(redis_url) as client:
        handle = client.enqueue("never", config=jobs.JobConfig(delay=3600))
        waiter_error: list[BaseException] = []

        def wait() -> None:
            try:
                handle.result()
            except BaseException as exc:
                waiter_error.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_until(lambda: client.queue._listener is not None)
        assert handle.cancel()
        waiter.join(10)
        assert not waiter.is_alive()
        assert isinstance(waiter_error[0], jobs.JobCancelled)
        cancelled = waiter_error[0].job
        assert cancelled is not None
        assert cancelled.status is jobs.JobStatus.CANCELLED


def test_a_timeout_raises_and_leaves_the_job_alone(redis_url: str) -> None:
    with make_client(redis_url) as client:
        handle = client.enqueue("nobody-runs-this")
        with pytest.raises(jobs.WaitTimeout) as timed_out:
            handle.wait(timeout=0.2)
        assert isinstance(timed_out.value, TimeoutError)
        assert isinstance(timed_out.value, jobs.JobsError)
        assert timed_out.value.job_ids == (handle,)
        assert handle.get().status is jobs.JobStatus.PENDING


def test_waiting_on_an_unknown_job_raises_not_found(redis_url: str) -> None:
    with make_client(redis_url) as client, pytest.raises(jobs.JobNotFound):
        client.wait("no-such-job", timeout=5)


def test_a_handle_is_its_id_everywhere(redis_url: str) -> None:
    with make_client(redis_url) as client:
        handle = client.enqueue("t", {"x": 1})
        assert isinstance(handle, str)
        assert isinstance(handle, jobs.JobHandle)
        plain = str(handle)
        assert handle == plain and hash(handle) == hash(plain) and handle.id == plain
        assert {plain: 1}[handle] == 1
        assert json.dumps({"id": handle}) == json.dumps({"id": plain})
        restored = pickle.loads(pickle.dumps(handle))
        assert restored == plain and type(restored) is str
        assert all(isinstance(h, jobs.JobHandle) for h in client.enqueue_many("t", [1, 2]))


def test_many_waits_share_one_subscription(redis_url: str, redis_client: redis.Redis) -> None:
    gate = Gate(result=1)
    with make_client(redis_url, _registry(add=_add, gate=gate), num_workers=4) as client:
        blocker = client.enqueue("gate")
        ids = client.enqueue_many("add", [{"a": i, "b": 1} for i in range(2000)])
        finished: list[list[jobs.Job]] = []
        threads = [
            threading.Thread(target=lambda ids=ids: finished.append(client.wait_all(ids)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        one = threading.Thread(target=lambda: finished.append([client.wait(blocker)]))
        one.start()
        channel = client.queue.keys.finished
        # Four waits over 6,001 ids: one pub/sub connection.
        wait_until(lambda: redis_client.pubsub_numsub(channel)[0][1] == 1)
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
        assert redis_client.pubsub_numsub(channel)[0][1] == 1
        gate.release.set()
        one.join(10)
        assert not one.is_alive()
    results = [job.result for job in finished[0]]
    assert results == [i + 1 for i in range(2000)]
    assert [job.id for job in finished[0]] == ids


class _PeakPool(redis.ConnectionPool):
    """A pool that remembers the most connections it had checked out at once."""

    most = 0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = super().get_connection(*args, **kwargs)
        self.most = max(self.most, len(self._in_use_connections))
        return connection


def test_many_threads_waiting_hold_a_bounded_number_of_connections(redis_url: str) -> None:
    # 300 threads each in wait() on one job, all woken by its one announcement: their
    # reads take turns, so together they hold the subscription and WAIT_READERS
    # connections, and leave the rest of the pool to the process's other calls (unbounded,
    # they took all of redis-py's 100 and enqueues failed with "Too many connections").
    gate = Gate(result="done")
    pool = _PeakPool.from_url(redis_url)
    queue = jobs.RedisQueue(
        jobs.RedisQueueConfig(client=redis.Redis(connection_pool=pool), name=unique_name())
    )
    waiter = jobs.Client(jobs.ClientConfig(queue=queue))
    try:
        with make_client(redis_url, _registry(slow=gate), name=queue.name) as client:
            job_id = client.enqueue("slow")
            assert gate.entered.wait(10)
            got: list[jobs.Job] = []
            threads = [
                threading.Thread(target=lambda: got.append(waiter.wait(job_id, timeout=30)))
                for _ in range(300)
            ]
            for thread in threads:
                thread.start()
            listener = queue._listener
            assert listener is not None
            wait_until(lambda: len(listener._watches.get(job_id, ())) == len(threads))
            gate.release.set()
            for thread in threads:
                thread.join(30)
            assert not any(thread.is_alive() for thread in threads)
        assert [job.result for job in got] == ["done"] * len(threads)
        assert 2 <= pool.most <= _waiter.WAIT_READERS + 1
    finally:
        queue.close()
        pool.disconnect()


def test_as_completed_yields_in_finishing_order(redis_url: str) -> None:
    first, second = Gate(result="first"), Gate(result="second")
    with make_client(redis_url, _registry(a=first, b=second), num_workers=2) as client:
        a, b = client.enqueue("a"), client.enqueue("b")
        assert first.entered.wait(10) and second.entered.wait(10)
        stream = client.as_completed([a, b], timeout=20)
        second.release.set()
        assert next(stream).result == "second"
        first.release.set()
        assert next(stream).result == "first"
        with pytest.raises(StopIteration):
            next(stream)


def test_a_waiter_carries_on_after_its_connection_is_cut(
    redis_url: str, redis_client: redis.Redis
) -> None:
    gate = Gate(result="done")
    with make_client(redis_url, _registry(slow=gate)) as client:
        job_id = client.enqueue("slow")
        assert gate.entered.wait(10)
        got: list[jobs.Job] = []
        waiter = threading.Thread(target=lambda: got.append(client.wait(job_id, timeout=30)))
        waiter.start()
        channel = client.queue.keys.finished
        wait_until(lambda: redis_client.pubsub_numsub(channel)[0][1] == 1)
        redis_client.client_kill_filter(_type="pubsub")
        # The job finishes while the listener may still be away: on resubscribing it has
        # every waiter read its jobs again, so the finish is not missed.
        gate.release.set()
        waiter.join(20)
        assert not waiter.is_alive()
        assert got[0].result == "done"
        wait_until(lambda: redis_client.pubsub_numsub(channel)[0][1] == 1)


def test_a_wait_outlives_a_redis_restart(redis_factory: Callable[..., RedisServer]) -> None:
    # docs/guide/tracking.rst: the job is cancelled once the server is back, maybe before
    # the listener has subscribed again; its re-read on resubscribing finds it (the
    # waiter's own re-read is an hour away here).
    server = redis_factory(appendonly=True, appendfsync="always")
    with make_client(server.url) as client:
        job_id = client.enqueue("never", config=jobs.JobConfig(delay=3600))
        got: list[jobs.Job] = []
        waiter = threading.Thread(target=lambda: got.append(client.wait(job_id, timeout=60)))
        waiter.start()
        observer = server.client()
        channel = client.queue.keys.finished
        wait_until(lambda: observer.pubsub_numsub(channel)[0][1] == 1)
        observer.close()
        server.kill()
        server.restart()
        other = jobs.Client(
            jobs.ClientConfig(queue=jobs.RedisQueue.from_url(server.url, name=client.queue.name))
        )
        try:
            assert other.cancel(job_id)
        finally:
            other.queue.close()
        waiter.join(30)
        assert not waiter.is_alive(), "the wait did not come back after the restart"
        assert got[0].status is jobs.JobStatus.CANCELLED


def test_closing_the_queue_ends_the_listener(redis_url: str) -> None:
    with make_client(redis_url, _registry(add=_add)) as client:
        assert client.enqueue("add", {"a": 1, "b": 1}).result(timeout=10) == 2
        listener = client.queue._listener
        assert listener is not None
    assert client.queue._listener is None
    wait_until(lambda: not any(t.name == "jobs-wait-listener" for t in threading.enumerate()))


@pytest.mark.slow
def test_wait_on_a_cluster(cluster: ClusterTopology) -> None:
    with make_client(cluster.url, _registry(add=_add)) as client:
        handles = [client.enqueue("add", {"a": i, "b": i}) for i in range(20)]
        assert [client.result(h, timeout=10) for h in handles] == [2 * i for i in range(20)]


@pytest.mark.slow
def test_wait_through_sentinel(sentinel: SentinelTopology) -> None:
    with make_client(sentinel.url, _registry(add=_add)) as client:
        handles = client.enqueue_many("add", [{"a": i, "b": 1} for i in range(10)])
        assert [job.result for job in client.wait_all(handles, timeout=10)] == list(range(1, 11))
