"""Counting and observing: stats(), workers(), isolation between queues, logging.

API.md sections "Enqueue, track, cancel, stats" (stats, workers) and "Logging".
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any

import pytest
import redis

import jobs
from jobs import _codec
from jobs.worker._protocol import Completed
from tests.helpers import wait_until
from tests.integration._clients import Gate, make_client, recorder, wait_for_status

JOB_FIELDS = ("job_id", "job_type", "attempt", "queue")


def _is_utc(value: object) -> bool:
    return getattr(value, "utcoffset", lambda: None)() == timedelta(0)


def _permanent(ctx: jobs.JobContext, payload: Any) -> None:
    raise jobs.PermanentError("no")


# -- stats --------------------------------------------------------------------------------


def test_stats_of_an_empty_queue(redis_url: str) -> None:
    with make_client(redis_url) as client:
        stats = client.stats()
    assert stats == jobs.QueueStats()
    assert stats.last_processed is None


def test_stats_after_a_mixed_run(redis_url: str) -> None:
    with Gate() as gate:
        registry = jobs.Registry()
        registry.register_func("ok", lambda ctx, payload: payload)
        registry.register_func("perm", _permanent)
        registry.register_func("flaky", lambda ctx, payload: 1 / 0)
        registry.register_func("block", gate)
        retry_once = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
        with make_client(redis_url, registry, num_workers=1) as client:
            finished = [
                client.enqueue("ok", 1),
                client.enqueue("ok", 2),
                client.enqueue("perm", 3),
                client.enqueue("flaky", 4, retry_once),
            ]
            for job_id in finished:
                wait_for_status(client, job_id, jobs.JobStatus.COMPLETED, jobs.JobStatus.FAILED)
            # The single slot is now held, so what follows stays where it is put.
            blocked = client.enqueue("block", 5)
            assert gate.entered.wait(5)
            client.enqueue("ok", 6)
            cancelled = client.enqueue("ok", 7)
            assert client.cancel(cancelled)
            client.enqueue("ok", 8, jobs.JobConfig(delay=60))
            stats = client.stats()
            ended = [client.get(i).completed_at for i in [*finished, cancelled]]
            assert client.get(blocked).status is jobs.JobStatus.PROCESSING
            gate.release.set()
    assert stats.total_jobs == 8
    assert stats.pending_jobs == 1
    assert stats.scheduled_jobs == 1
    assert stats.processing_jobs == 1
    assert stats.completed_jobs == 2
    assert stats.failed_jobs == 2
    assert stats.cancelled_jobs == 1
    assert stats.retried_attempts == 1
    assert stats.last_processed is not None
    assert _is_utc(stats.last_processed)
    # The cancel was the last thing to finish; both read the same Redis clock.
    assert stats.last_processed == max(t for t in ended if t is not None)
    assert ended[-1] == stats.last_processed


def test_a_retried_job_counts_once_in_the_outcome_counters(redis_url: str) -> None:
    # retry() takes the job out of the count of the final state it leaves: each job
    # enqueued counts once, where it is now or in the final state it last reached.
    outcomes = iter([jobs.PermanentError("first run"), None, None])

    def handler(ctx: jobs.JobContext, payload: Any) -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(redis_url, registry, num_workers=1) as client:
        failed = client.enqueue("t", 1)
        wait_for_status(client, failed, jobs.JobStatus.FAILED)
        assert client.retry(failed)
        wait_for_status(client, failed, jobs.JobStatus.COMPLETED)
        cancelled = client.enqueue("t", 2, jobs.JobConfig(delay=60))
        assert client.cancel(cancelled)
        assert client.retry(cancelled)
        wait_for_status(client, cancelled, jobs.JobStatus.COMPLETED)
        stats = client.stats()
    assert (stats.total_jobs, stats.completed_jobs) == (2, 2)
    assert (stats.failed_jobs, stats.cancelled_jobs, stats.pending_jobs) == (0, 0, 0)


# -- workers ------------------------------------------------------------------------------


def test_workers_lists_the_running_pool(redis_url: str) -> None:
    with Gate() as gate:
        registry = jobs.Registry()
        registry.register_func("block", gate)
        with make_client(redis_url, registry, num_workers=3) as client:
            [pool] = wait_until(client.workers, timeout=5)
            assert pool.hostname == socket.gethostname()
            assert pool.pid == os.getpid()
            assert pool.num_workers == 3
            assert pool.in_flight == 0
            assert _is_utc(pool.started_at)
            assert _is_utc(pool.last_seen)
            assert pool.started_at <= pool.last_seen
            assert str(os.getpid()) in pool.id
            client.enqueue("block", 1)
            assert gate.entered.wait(5)
            # The next heartbeat reports the job it holds.
            busy = wait_until(lambda: [w for w in client.workers() if w.in_flight == 1], timeout=5)
            assert busy[0].id == pool.id
            assert busy[0].started_at == pool.started_at
            assert busy[0].last_seen >= pool.last_seen

            def two_pools() -> list[jobs.WorkerInfo]:
                found = client.workers()
                return found if len(found) == 2 else []

            with make_client(redis_url, registry, name=client.queue.name) as second:
                pools = wait_until(two_pools, timeout=5)
                assert pool.id in {w.id for w in pools}
                assert second.running
            assert [w.id for w in client.workers()] == [pool.id]
            gate.release.set()
            client.stop()
            assert client.workers() == []


def test_queues_with_other_names_or_prefixes_are_isolated(redis_url: str) -> None:
    seen_a, handler_a = recorder()
    seen_b, handler_b = recorder()
    seen_c, handler_c = recorder()
    registry_a, registry_b, registry_c = jobs.Registry(), jobs.Registry(), jobs.Registry()
    registry_a.register_func("t", handler_a)
    registry_b.register_func("t", handler_b)
    registry_c.register_func("t", handler_c)
    with (
        make_client(redis_url, registry_a, name="shared", prefix="tenant-a") as a,
        make_client(redis_url, registry_b, name="shared", prefix="tenant-b") as b,
        make_client(redis_url, registry_c, name="other", prefix="tenant-a") as c,
    ):
        ids = {
            client: client.enqueue("t", label) for client, label in ((a, "a"), (b, "b"), (c, "c"))
        }
        for client, job_id in ids.items():
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        for client, job_id in ids.items():
            for other in (a, b, c):
                if other is client:
                    continue
                with pytest.raises(jobs.JobNotFound):
                    other.get(job_id)
                with pytest.raises(jobs.JobNotFound):
                    other.cancel(job_id)
        pending = a.enqueue("t", "late-a", jobs.JobConfig(delay=60))
        for client in (a, b, c):
            stats = client.stats()
            assert (stats.total_jobs, stats.completed_jobs) == (1 + (client is a), 1)
            assert stats.scheduled_jobs == (client is a)
            assert len(wait_until(client.workers, timeout=5)) == 1
        assert len({client.workers()[0].id for client in (a, b, c)}) == 3
        assert a.cancel(pending)
    assert (seen_a, seen_b, seen_c) == (["a"], ["b"], ["c"])


# -- logging ------------------------------------------------------------------------------


def _jobs_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "jobs" or r.name.startswith("jobs.")]


def test_log_records_carry_job_fields(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="jobs")
    calls: list[int] = []

    def flaky(ctx: jobs.JobContext, payload: Any) -> str:
        calls.append(ctx.job.attempts)
        if len(calls) == 1:
            raise RuntimeError("once")
        return "ok"

    registry = jobs.Registry()
    registry.register_func("flaky", flaky)
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry) as client:
        name = client.queue.name
        job_id = client.enqueue("flaky", 1, config)
        ghost = client.enqueue("ghost", 1, jobs.JobConfig(max_retries=0))
        wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        wait_for_status(client, ghost, jobs.JobStatus.FAILED)
    records = _jobs_records(caplog)
    assert records
    about_jobs = [r for r in records if hasattr(r, "job_id")]
    for record in about_jobs:
        for field in JOB_FIELDS:
            assert hasattr(record, field), (field, record.getMessage())
        assert record.__dict__["queue"] == name
    mine = [r for r in about_jobs if r.__dict__["job_id"] == job_id]
    failed = [r for r in mine if r.levelno == logging.WARNING and r.__dict__["attempt"] == 1]
    assert failed, [r.getMessage() for r in mine]
    assert failed[0].__dict__["job_type"] == "flaky"
    # Outcome records of attempts whose handler ran know how long it took.
    assert isinstance(failed[0].__dict__["duration_ms"], int | float)
    assert failed[0].__dict__["duration_ms"] >= 0
    done = [r for r in mine if r.__dict__["attempt"] == 2 and "duration_ms" in r.__dict__]
    assert done, [r.getMessage() for r in mine]
    assert any(r.__dict__["job_id"] == ghost and r.levelno >= logging.WARNING for r in about_jobs)
    # Pool-level records name their queue.
    lifecycle = [r for r in records if r.name == "jobs.worker" and "started" in r.getMessage()]
    assert lifecycle
    assert lifecycle[0].__dict__["queue"] == name


def test_a_jobs_error_reaches_log_messages_escaped(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Under any formatter (the application's own, not only the command line's), a
    # handler's error must not act on a terminal nor start a line of its own.
    caplog.set_level(logging.DEBUG, logger="jobs")
    hostile = "\x1b]0;pwned\x07\x9b2J\nINFO forged"

    def fail(ctx: jobs.JobContext, payload: Any) -> None:
        raise ValueError(hostile)

    registry = jobs.Registry()
    registry.register_func("fail", fail)
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("fail", None, config)
        wait_for_status(client, job_id, jobs.JobStatus.FAILED)
    about = [r.getMessage() for r in _jobs_records(caplog) if r.__dict__.get("job_id") == job_id]
    told = [m for m in about if "pwned" in m]
    assert len(told) == 2, about  # the retry, then the final failure
    for message in told:
        assert not any(c in message for c in "\x1b\x07\x9b\n"), message
        assert "\\x1b]0;pwned\\x07\\x9b2J\\nINFO forged" in message


def test_ctx_logger_adds_job_fields_and_merges_extra(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobs")

    def handler(ctx: jobs.JobContext, payload: Any) -> None:
        ctx.logger.info("step %s", "one", extra={"step": "download", "bytes": 42})
        ctx.logger.warning("plain")

    registry = jobs.Registry()
    registry.register_func("logs", handler)
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("logs", 1)
        wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        name = client.queue.name
    from_handler = [r for r in _jobs_records(caplog) if r.getMessage() in ("step one", "plain")]
    assert [r.getMessage() for r in from_handler] == ["step one", "plain"]
    for record in from_handler:
        assert record.name.startswith("jobs")
        assert record.__dict__["job_id"] == job_id
        assert record.__dict__["job_type"] == "logs"
        assert record.__dict__["attempt"] == 1
        assert record.__dict__["queue"] == name
    assert from_handler[0].__dict__["step"] == "download"
    assert from_handler[0].__dict__["bytes"] == 42
    assert "step" not in from_handler[1].__dict__


def _handlers_under_jobs() -> dict[str, list[logging.Handler]]:
    loggers = {
        name: logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("jobs.") and isinstance(logger, logging.Logger)
    }
    loggers["jobs"] = logging.getLogger("jobs")
    return {name: list(logger.handlers) for name, logger in loggers.items() if logger.handlers}


def test_library_installs_no_handlers(redis_url: str) -> None:
    assert logging.getLogger("jobs").handlers == []
    assert _handlers_under_jobs() == {}
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: ctx.logger.info("hi"))
    with make_client(redis_url, registry) as client:
        wait_for_status(client, client.enqueue("t", 1), jobs.JobStatus.COMPLETED)
    assert logging.getLogger("jobs").handlers == []
    assert _handlers_under_jobs() == {}
    assert logging.getLogger("jobs").propagate


# -- the server's eviction policy -------------------------------------------------------


def _policy_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in _jobs_records(caplog) if "maxmemory-policy" in r.getMessage()]


@pytest.mark.parametrize(
    ("policy", "level"),
    [("allkeys-lru", logging.WARNING), ("volatile-lru", logging.INFO), ("noeviction", None)],
)
def test_a_pool_says_when_redis_may_evict_its_jobs(
    redis_url: str, caplog: pytest.LogCaptureFixture, policy: str, level: int | None
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobs")
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: None)
    with make_client(redis_url, registry, start=False) as client:
        r = client.queue.client
        before = {k: str(v) for k, v in r.config_get("maxmemory*").items()}
        r.config_set("maxmemory", str(1 << 30))
        r.config_set("maxmemory-policy", policy)
        try:
            client.start()
            wait_for_status(client, client.enqueue("t", 1), jobs.JobStatus.COMPLETED)
            wait_until(lambda: client.workers(), timeout=5)  # the first beat is done
        finally:
            r.config_set("maxmemory-policy", before["maxmemory-policy"])
            r.config_set("maxmemory", before["maxmemory"])
    found = [(rec.levelno, rec.getMessage()) for rec in _policy_records(caplog)]
    if level is None:
        assert found == []
    else:
        assert [lvl for lvl, _ in found] == [level], found
        assert policy in found[0][1]


def test_a_refused_config_get_is_not_an_error(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ACL user without +config|get (the README's least-privilege worker), or a managed
    # Redis that renamed CONFIG: nothing is known, nothing to warn about.
    def refused(self: jobs.RedisQueue) -> tuple[int, str]:
        raise redis.exceptions.NoPermissionError("this user has no permissions to run 'config|get'")

    monkeypatch.setattr(jobs.RedisQueue, "memory_policy", refused)
    caplog.set_level(logging.DEBUG, logger="jobs")
    with make_client(redis_url) as client:
        client.queue.warn_if_evicting(logging.getLogger("jobs.worker"))
    found = [(rec.levelno, rec.getMessage()) for rec in _policy_records(caplog)]
    assert found == [(logging.DEBUG, f"cannot read maxmemory-policy at {client.queue.address}")]


def test_completed_records_are_bounded_by_count(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: payload)
    options = {"max_completed_jobs": 5}
    with make_client(redis_url, registry, queue_options=options) as client:
        ids = client.enqueue_many("t", list(range(20)))
        # (Not wait_all: a record dropped by the bound before its wait read it is gone.)
        wait_until(lambda: client.stats().completed_jobs == 20, timeout=20)
        r = client.queue.client
        # Trimmed as jobs complete and by the heartbeats' reap, oldest first, without
        # touching the counters.
        wait_until(lambda: r.zcard(client.queue.keys.completed) <= 5, timeout=10)
        assert client.stats().completed_jobs == 20
        kept = {i for i in ids if r.exists(client.queue.keys.job(i))}
        members: Any = r.zrange(client.queue.keys.completed, 0, -1)
        indexed = {_codec.text(i) for i in members}
        # The records dropped are the oldest completions: those the index no longer names.
        assert kept == indexed and len(kept) <= 5


def test_the_completed_bound_holds_at_once_however_fast_jobs_complete(redis_url: str) -> None:
    # The heartbeats' slices alone fell behind a busy pool (issue 17: 18,896 records kept
    # for a bound of 1,000); each write now drops up to twice what it recorded.
    with make_client(redis_url, queue_options={"max_completed_jobs": 5}, start=False) as client:
        queue, r = client.queue, client.queue.client
        ids = client.enqueue_many("t", list(range(30)))
        held = queue.fetch(30, timedelta(minutes=5)).jobs
        for first in range(0, 30, 10):
            batch = [Completed(job, b"null") for job in held[first : first + 10]]
            assert all(w.recorded for w in queue.write(batch))
            assert r.zcard(queue.keys.completed) == 5
        kept = {i for i in ids if r.exists(queue.keys.job(i))}
        members: Any = r.zrange(queue.keys.completed, 0, -1)
        assert kept == {_codec.text(i) for i in members}  # dropped: records and entries
        assert client.stats().completed_jobs == 30


def test_a_pool_says_when_retention_may_not_fit_in_maxmemory(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobs")
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: None)
    with make_client(redis_url, registry, start=False) as client:
        r = client.queue.client
        before = {k: str(v) for k, v in r.config_get("maxmemory*").items()}
        r.config_set("maxmemory", str(32 << 20))  # 120,000 records of ~700 bytes do not fit
        try:
            client.start()
            wait_for_status(client, client.enqueue("t", 1), jobs.JobStatus.COMPLETED)
            wait_until(lambda: "retention may keep" in caplog.text, timeout=5)
        finally:
            r.config_set("maxmemory", before["maxmemory"])
    assert "120,000 finished records" in caplog.text
