"""Producing and reading jobs: enqueue, get(), payload errors, delays, priorities.

API.md sections "Queue, registry, client" and "Enqueue, track, cancel, stats"; typed
payloads are in test_typed_payloads.py.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

import jobs
from tests.helpers import wait_until
from tests.integration._clients import make_client, recorder, wait_for_status


def assert_utc(value: datetime | None) -> datetime:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    return value


def _noop(ctx: jobs.JobContext, payload: Any) -> Any:
    return payload


# -- queue construction -------------------------------------------------------------------


def test_queue_from_a_user_client_leaves_it_open(redis_url: str) -> None:
    user_client = redis.Redis.from_url(redis_url)
    try:
        queue = jobs.RedisQueue(
            jobs.RedisQueueConfig(
                client=user_client, name="default", prefix="jobs", max_lost_leases=5
            )
        )
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        job_id = client.enqueue("anything", {"x": 1})
        assert client.get(job_id).payload == {"x": 1}
        queue.close()
        # The queue did not create this client, so closing the queue must not close it.
        assert user_client.ping()
        assert user_client.exists("{jobs:default}:job:" + job_id) == 1
    finally:
        user_client.close()


# -- enqueue ------------------------------------------------------------------------------


def test_enqueue_many_returns_ids_in_payload_order(redis_url: str) -> None:
    with make_client(redis_url) as client:
        payloads = [{"i": i} for i in range(25)]
        ids = client.enqueue_many("t", payloads)
        assert len(ids) == 25
        assert len(set(ids)) == 25
        assert all(isinstance(i, str) and i for i in ids)
        assert [client.get(i).payload for i in ids] == payloads
        assert client.stats().total_jobs == 25
        assert client.enqueue_many("t", []) == []
        single = client.enqueue("t", "solo")
        assert single not in ids
        assert client.get(single).payload == "solo"


def test_enqueue_many_keeps_order_across_large_batches(redis_url: str) -> None:
    with make_client(redis_url) as client:
        # Past one script call's chunk, from a generator.
        ids = client.enqueue_many("t", (n for n in range(1500)))
        assert [client.get(job_id).payload for job_id in ids] == list(range(1500))
        assert client.stats().total_jobs == 1500


def test_enqueue_many_bounds_the_bytes_of_each_script_call(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # One script call blocks every other client while it runs: a batch of big payloads
    # goes in several calls (still one round trip), each of about ENQUEUE_CHUNK_BYTES.
    def evalsha_calls() -> int:
        stats = redis_client.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0))

    with make_client(redis_url) as client:
        client.enqueue("t", "warm-up")  # loads the script: NOSCRIPT retries not counted
        before = evalsha_calls()
        payloads = [str(n) * (400 * 1024) for n in range(6)]
        ids = client.enqueue_many("t", payloads)
        assert evalsha_calls() - before == 3  # two 400 KiB payloads per MiB
        assert [client.get(job_id).payload for job_id in ids] == payloads


# -- get ----------------------------------------------------------------------------------


def test_get_reports_every_field_through_pending_processing_completed(redis_url: str) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[jobs.Job] = []

    def handler(ctx: jobs.JobContext, payload: Any) -> dict[str, Any]:
        seen.append(ctx.job)
        entered.set()
        release.wait(10)
        return {"sum": sum(payload["values"])}

    registry = jobs.Registry()
    registry.register_func("add", handler)
    config = jobs.JobConfig(max_retries=2, priority=5, timeout=20, metadata={"user_id": 123})
    with make_client(redis_url, registry, start=False) as client:
        before = datetime.now(UTC)
        job_id = client.enqueue("add", {"values": [1, 2, 3]}, config)
        job = client.get(job_id)
        assert job.id == job_id
        assert job.type == "add"
        assert job.payload == {"values": [1, 2, 3]}
        assert job.status is jobs.JobStatus.PENDING
        assert job.priority == 5
        assert job.attempts == 0
        assert job.max_retries == 2
        assert job.metadata == {"user_id": 123}
        assert job.timeout == timedelta(seconds=20)
        created = assert_utc(job.created_at)
        # Redis and this host share a clock here; allow a little skew all the same.
        assert abs(created - before) < timedelta(seconds=5)
        assert assert_utc(job.run_at) == created
        assert (job.started_at, job.completed_at, job.error, job.result) == (None, None, None, None)

        client.start()
        try:
            assert entered.wait(5)
            running = client.get(job_id)
            assert running.status is jobs.JobStatus.PROCESSING
            assert running.attempts == 1
            started = assert_utc(running.started_at)
            assert started >= created
            assert running.completed_at is None
        finally:
            release.set()
        done = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
    assert done.result == {"sum": 6}
    assert done.attempts == 1
    assert done.error is None
    assert done.metadata == {"user_id": 123}
    assert assert_utc(done.completed_at) >= started
    # The handler saw the job as leased: this attempt's number, the metadata.
    assert seen[0].attempts == 1
    assert seen[0].status is jobs.JobStatus.PROCESSING
    assert seen[0].metadata == {"user_id": 123}


def _permanent_failure(ctx: jobs.JobContext, payload: object) -> None:
    raise jobs.PermanentError("no")


def test_expired_records_raise_job_not_found(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("t", _noop)
    with make_client(redis_url, registry, queue_options={"completed_ttl": 0.1}) as client:
        job_id = client.enqueue("t", 1)
        wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)

        def expired() -> bool:
            try:
                client.get(job_id)
            except jobs.JobNotFound:
                return True
            return False

        wait_until(expired, timeout=5)
        with pytest.raises(jobs.JobNotFound):
            client.cancel(job_id)


def test_retention_leaves_nothing_behind(redis_url: str, redis_client: redis.Redis) -> None:
    registry = jobs.Registry()
    registry.register_func("t", _noop)
    registry.register_func("bad", _permanent_failure)
    options = {"completed_ttl": 0.2, "failed_ttl": 0.2}
    with make_client(redis_url, registry, start=False, queue_options=options) as client:
        done = client.enqueue_many("t", [1, 2, 3])
        failed = client.enqueue("bad", None)
        cancelled = client.enqueue("t", 4)
        client.cancel(cancelled)
        client.start()
        for job_id in done:
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        wait_for_status(client, failed, jobs.JobStatus.FAILED)
        keys = client.queue.keys
        indexes = (keys.completed, keys.failed, keys.cancelled)
        assert [redis_client.zcard(k) for k in indexes] == [3, 1, 1]
        # Records expire by themselves; a reap that trims drops their index entries, so
        # a queue gone quiet keeps nothing of its finished jobs (workers trim every minute).
        wait_until(lambda: not redis_client.exists(*(keys.job(i) for i in [*done, failed])))
        client.queue.reap(trim=True)
        assert [redis_client.zcard(k) for k in indexes] == [0, 0, 0]
        assert client.list_jobs("completed") == []


def test_default_config_is_stored_with_the_job(redis_url: str) -> None:
    with make_client(redis_url) as client:
        job = client.get(client.enqueue("t", None))
    assert job.max_retries == 3
    assert job.priority == 0
    assert job.timeout == timedelta(minutes=30)
    assert job.payload is None
    assert job.metadata == {}


@pytest.mark.parametrize("job_id", ["does-not-exist", "", "0" * 32, "{jobs:x}:job:1", "é/../\n"])
def test_unknown_ids_raise_job_not_found(redis_url: str, job_id: str) -> None:
    with make_client(redis_url) as client:
        client.enqueue("t", 1)
        with pytest.raises(jobs.JobNotFound):
            client.get(job_id)
        with pytest.raises(jobs.JobNotFound):
            client.cancel(job_id)
        with pytest.raises(LookupError):
            client.get(job_id)


# -- payload errors -----------------------------------------------------------------------


class _Opaque:
    pass


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "payload",
    [
        {1, 2},
        _Opaque(),
        float("nan"),
        float("inf"),
        "lone \ud800 surrogate",
        {"nested": [1, {"deep": {3}}]},
        {"obj": object()},
        b"bytes",
        {"\ud800": "surrogate key"},
        {(1, 2): "tuple key"},
        _deep(100_000),
    ],
    ids=[
        "set",
        "object",
        "nan",
        "inf",
        "surrogate",
        "nested-set",
        "nested-object",
        "bytes",
        "surrogate-key",
        "tuple-key",
        "too-deep",
    ],
)
def test_non_json_payload_raises_payload_error_and_writes_nothing(
    redis_url: str, redis_client: redis.Redis, payload: object
) -> None:
    with make_client(redis_url) as client:
        client.enqueue("t", {"fine": True})
        keys_before = sorted(redis_client.keys("*"))
        with pytest.raises(jobs.PayloadError):
            client.enqueue("t", payload)
        with pytest.raises(TypeError):
            client.enqueue("t", payload)
        assert client.stats().total_jobs == 1
        assert sorted(redis_client.keys("*")) == keys_before


def test_enqueue_many_writes_nothing_if_one_payload_is_invalid(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url) as client:
        with pytest.raises(jobs.PayloadError, match="payload #2 is not JSON"):
            client.enqueue_many("t", [{"a": 1}, {"b": 2}, {"c": {3}}, {"d": 4}])
        with pytest.raises(jobs.PayloadError, match="payload #1 is not JSON"):
            client.enqueue_many("t", (p for p in [1, float("inf"), 3]))  # read once
        assert client.stats().total_jobs == 0
        assert redis_client.dbsize() == 0


def test_invalid_metadata_or_backoff_writes_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    def broken_backoff(attempt: int) -> float:
        raise RuntimeError("no")

    with make_client(redis_url) as client:
        with pytest.raises(jobs.PayloadError, match="metadata"):
            client.enqueue("t", 1, jobs.JobConfig(metadata={"tags": {"a"}}))
        with pytest.raises(jobs.PayloadError, match="metadata"):
            client.enqueue_many("t", [1, 2], jobs.JobConfig(metadata={"x": float("nan")}))
        with pytest.raises(jobs.ConfigError, match="retry_backoff"):
            client.enqueue("t", 1, jobs.JobConfig(retry_backoff=broken_backoff))
        with pytest.raises(jobs.ConfigError, match="job_type"):
            client.enqueue("", 1)
        with pytest.raises(jobs.ConfigError, match="config"):
            client.enqueue("t", 1, {"priority": 1})  # type: ignore[call-overload]
        assert client.stats().total_jobs == 0
        assert redis_client.dbsize() == 0


def test_max_payload_bytes(redis_url: str, redis_client: redis.Redis) -> None:
    with make_client(redis_url, queue_options={"max_payload_bytes": 100}) as client:
        # A JSON string of 98 characters encodes to exactly 100 bytes (with its quotes).
        at_limit = client.enqueue("t", "x" * 98)
        assert client.get(at_limit).payload == "x" * 98
        with pytest.raises(jobs.PayloadError, match="max_payload_bytes"):
            client.enqueue("t", "x" * 99)
        with pytest.raises(jobs.PayloadError, match=r"payload #1 is 502 bytes.*max_payload_bytes"):
            client.enqueue_many("t", ["small", "y" * 500])
        assert client.stats().total_jobs == 1
        assert len(redis_client.keys("*job:*")) == 1


# -- delays and priorities ----------------------------------------------------------------


def test_delayed_job_is_scheduled_and_not_run_before_its_delay(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("t", _noop)
    # A long poll interval: the pool must wake for the due time, not poll for it.
    with make_client(redis_url, registry, poll_interval=30) as client:
        job_id = client.enqueue("t", "later", jobs.JobConfig(delay=timedelta(milliseconds=400)))
        job = client.get(job_id)
        created, run_at = assert_utc(job.created_at), assert_utc(job.run_at)
        assert run_at - created == timedelta(milliseconds=400)
        done = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED, timeout=10)
    # Both times come from the Redis clock, so this holds whatever the host's load.
    assert assert_utc(done.started_at) >= run_at
    assert done.result == "later"


def test_delayed_job_counts_as_scheduled(redis_url: str) -> None:
    with make_client(redis_url) as client:
        job_id = client.enqueue("t", 1, jobs.JobConfig(delay=60))
        job = client.get(job_id)
        stats = client.stats()
    assert job.status is jobs.JobStatus.SCHEDULED
    assert assert_utc(job.run_at) - assert_utc(job.created_at) == timedelta(seconds=60)
    assert (stats.scheduled_jobs, stats.pending_jobs, stats.total_jobs) == (1, 0, 1)


def test_new_job_wakes_an_idle_pool(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("t", _noop)
    with make_client(redis_url, registry, poll_interval=30) as client:
        # Let the pool settle into its long idle wait first.
        wait_until(lambda: client.workers(), timeout=5)
        job_id = client.enqueue("t", "now")
        wait_for_status(client, job_id, jobs.JobStatus.COMPLETED, timeout=10)


def test_strict_priority_and_fifo_within_a_priority(redis_url: str) -> None:
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    plan = [
        (0, "a0"),
        (10, "b0"),
        (0, "a1"),
        (-5, "c0"),
        (10, "b1"),
        (1000, "top"),
        (-1000, "bottom"),
        (0, "a2"),
        (10, "b2"),
        (-5, "c1"),
    ]
    with make_client(redis_url, registry, start=False, num_workers=1) as client:
        ids = [client.enqueue("t", label, jobs.JobConfig(priority=p)) for p, label in plan]
        batch = client.enqueue_many("t", ["a3", "a4", "a5"])
        client.start()
        for job_id in [*ids, *batch]:
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
    expected = [label for _, label in sorted(plan, key=lambda item: -item[0])]
    # The batch has priority 0 and came last: after a0..a2, before the -5 jobs.
    expected = [*expected[:7], "a3", "a4", "a5", *expected[7:]]
    assert seen == expected


def test_due_delayed_job_joins_its_priority(redis_url: str, redis_client: redis.Redis) -> None:
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(redis_url, registry, start=False, num_workers=1) as client:
        client.enqueue_many("t", ["low-1", "low-2"])
        urgent = client.enqueue("t", "urgent", jobs.JobConfig(priority=10, delay=0.2))
        due = assert_utc(client.get(urgent).run_at)

        def server_time_passed() -> bool:
            seconds, micros = redis_client.time()
            return datetime.fromtimestamp(seconds + micros / 1e6, UTC) > due

        wait_until(server_time_passed, timeout=5)
        client.start()
        wait_until(lambda: len(seen) == 3, timeout=5)
    assert seen == ["urgent", "low-1", "low-2"]


# -- configuration values -----------------------------------------------------------------


def test_default_job_config() -> None:
    assert jobs.DefaultJobConfig() == jobs.JobConfig()
    default = jobs.DefaultJobConfig()
    assert default.max_retries == 3
    assert default.retry_backoff == jobs.ExponentialBackoff()
    assert default.timeout == timedelta(minutes=30)
    assert default.priority == 0
    assert default.delay == timedelta(0)
    assert dict(default.metadata) == {}
    assert jobs.JobConfig(timeout=600) == jobs.JobConfig(timeout=timedelta(minutes=10))
    assert jobs.JobConfig(delay=1.5) == jobs.JobConfig(delay=timedelta(seconds=1.5))
    assert jobs.DefaultWorkerPoolConfig() == jobs.WorkerPoolConfig()
