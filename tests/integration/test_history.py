"""Per-minute history: the counts the scripts keep in Redis, and `Client.history`.

API.md section "Enqueue, track, cancel, stats" (history).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from tests.integration._clients import make_client, wait_for_status

if TYPE_CHECKING:
    import redis


def _permanent(ctx: jobs.JobContext, payload: Any) -> None:
    raise jobs.PermanentError("no")


def test_an_empty_queue_has_a_full_window_of_zero_minutes(redis_url: str) -> None:
    with make_client(redis_url) as client:
        now_minute = client.queue.server_time_ms() // 60_000
        history = client.history()
        assert len(client.history(5).minutes) == 5
    assert len(history.minutes) == 60
    assert all(m.enqueued == m.completed == m.failed == m.cancelled == 0 for m in history.minutes)
    steps = {
        b.minute - a.minute for a, b in zip(history.minutes, history.minutes[1:], strict=False)
    }
    assert steps == {timedelta(minutes=1)}
    # Whole minutes of the server clock, UTC, the current one last (a boundary may pass).
    last = history.minutes[-1].minute
    assert last.utcoffset() == timedelta(0)
    assert last.second == last.microsecond == 0
    assert int(last.timestamp()) // 60 in (now_minute, now_minute + 1)
    assert history.per_minute("completed") == 0.0


@pytest.mark.parametrize("minutes", [0, -1, 61])
def test_a_window_outside_the_kept_hour_is_refused(redis_url: str, minutes: int) -> None:
    with make_client(redis_url) as client, pytest.raises(jobs.ConfigError):
        client.history(minutes)


def test_every_way_a_job_enters_or_ends_is_counted(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    registry.register_func("perm", _permanent)
    with make_client(redis_url, registry, start=False) as client:
        ok, other = client.enqueue_many("ok", [1, 2])
        perm = client.enqueue("perm", 2)
        client.enqueue("ok", 3, jobs.JobConfig(delay=60))
        cancelled = client.enqueue("ok", 4)
        assert client.cancel(cancelled)
        # A cron fire is a new job; its id already existing (a second claim) is not.
        fired = (f"cron-{ok}", "ok", b"5", jobs.JobConfig())
        assert client.queue.fire_cron("c", 1, None, fired, timedelta(hours=1))[0]
        client.queue.fire_cron("c", 2, None, fired, timedelta(hours=1))
        client.start()
        wait_for_status(client, ok, jobs.JobStatus.COMPLETED)
        wait_for_status(client, other, jobs.JobStatus.COMPLETED)
        wait_for_status(client, perm, jobs.JobStatus.FAILED)
        wait_for_status(client, fired[0], jobs.JobStatus.COMPLETED)
        history = client.history()
    assert history.total("enqueued") == 6
    assert history.total("completed") == 3
    assert history.total("failed") == 1
    assert history.total("cancelled") == 1


def test_history_keys_are_in_the_queue_slot_and_expire_after_the_hour(
    redis_url: str, redis_client: redis.Redis
) -> None:
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    with make_client(redis_url, registry) as client:
        wait_for_status(client, client.enqueue("ok", 1), jobs.JobStatus.COMPLETED)
        keys = [k.decode() for k in redis_client.scan_iter(client.queue.keys.history_prefix + "*")]
    assert keys
    for key in keys:
        assert key.startswith(client.queue.keys.base)
        minute = int(key.rsplit(":", 1)[1])
        # Absolute: kept through the 61st minute after its own, whatever the count order.
        # (Within a few ms: the expiry is relative to the script's clock.)
        assert abs(redis_client.pexpiretime(key) - (minute + 62) * 60_000) < 1000


def test_older_minutes_land_in_their_place_in_the_window(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url) as client:
        minute = client.queue.server_time_ms() // 60_000
        redis_client.hset(client.queue.keys.history(minute - 10), "failed", 7)
        redis_client.hset(client.queue.keys.history(minute - 60), "failed", 100)  # out of window
        history = client.history()
    by_minute = {int(m.minute.timestamp()) // 60: m for m in history.minutes}
    if minute in by_minute:  # no minute boundary passed in between
        assert by_minute[minute - 10].failed == 7
        assert history.total("failed") == 7
        assert history.per_minute("failed", last=10) == 0.7


def test_a_damaged_history_key_never_stops_a_job(redis_url: str, redis_client: redis.Redis) -> None:
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    with make_client(redis_url, registry, start=False) as client:
        minute = client.queue.server_time_ms() // 60_000
        for m in (minute, minute + 1):  # the minute may turn while the job runs
            redis_client.set(client.queue.keys.history(m), "not a hash")
            redis_client.hset(client.queue.keys.history(m + 2), "completed", "x")
        job_id = client.enqueue("ok", 1)
        client.start()
        assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == 1
        assert client.stats().completed_jobs == 1
        history = client.history()  # the damaged minutes read as zeros
    assert len(history.minutes) == 60 and history.total("completed") in (0, 1)
