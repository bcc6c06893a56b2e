"""The producer's fast path (`jobs.queue._packed`): enqueue calls packed by hand.

It must write exactly what the generic redis-py path writes, and hand every unusual case
(a server that lost its scripts, a lost connection, a lost reply) to the generic path,
which recovers: no job lost, none written twice, counters exact.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis

import jobs
from jobs.queue._packed import PackedCalls, pack_args
from tests.integration._proxy import FaultyProxy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jobs._embedded import RedisServer

#: Fields that differ between two jobs enqueued one after the other.
_OWN = {b"id", b"created_at", b"run_at", b"score"}


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[FaultyProxy]:
    with FaultyProxy((redis_server.host, redis_server.port)) as faulty:
        yield faulty


def _queue(url: str) -> jobs.RedisQueue:
    return jobs.RedisQueue.from_url(url, name="packed")


def _record(redis_client: redis.Redis, job_id: str) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = redis_client.hgetall("{jobs:packed}:job:" + job_id)  # type: ignore[assignment]
    return {k: v for k, v in fields.items() if k not in _OWN}


def test_pack_args_matches_redis_py() -> None:
    args: list[Any] = ["EVALSHA", "é", b"\x00\xff", 0, -12, 2**70, 1.5, 1e-7, ""]
    make: Any = redis.Connection  # untyped in some redis-py releases
    connection = make()
    expected = b"".join(connection.pack_command(*args))
    assert b"*%d\r\n" % len(args) + pack_args(args) == expected


def test_pack_args_refuses_what_redis_py_would_not_send() -> None:
    with pytest.raises(TypeError, match="NoneType"):
        pack_args([None])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "config",
    [
        None,
        jobs.JobConfig(priority=7, max_retries=1, timeout=5, metadata={"user": 3}),
        jobs.JobConfig(delay=timedelta(hours=1), retry_backoff=jobs.LinearBackoff(2)),
        jobs.JobConfig(unique_key="u1"),
    ],
)
def test_the_packed_path_writes_what_the_generic_path_writes(
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    config: jobs.JobConfig | None,
) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        assert queue._packed_calls.usable
        fast = client.enqueue("t", {"x": [1, "é"]}, config)
        redis_client.delete("{jobs:packed}:unique:u1")
        monkeypatch.setattr(PackedCalls, "usable", property(lambda self: False))
        generic = client.enqueue("t", {"x": [1, "é"]}, config)
        assert _record(redis_client, fast) == _record(redis_client, generic)
        assert client.stats().total_jobs == 2
    finally:
        queue.close()


def test_a_unique_key_held_is_answered_with_its_holder(redis_url: str) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        first = client.enqueue("t", 1, jobs.JobConfig(unique_key="k"))
        assert client.enqueue("t", 2, jobs.JobConfig(unique_key="k")) == first
        assert client.stats().total_jobs == 1
    finally:
        queue.close()


def test_a_server_that_lost_its_scripts_gets_them_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        client.enqueue("t", 0)
        redis_client.script_flush()
        one = client.enqueue("t", 1)
        redis_client.script_flush()
        # Several script calls in one round trip (the payloads pass the bytes bound).
        many = client.enqueue_many("t", ["x" * 400_000] * 5)
        assert client.get(one).payload == 1
        assert [client.get(i).status for i in many] == [jobs.JobStatus.PENDING] * 5
        assert client.stats().total_jobs == 7
    finally:
        queue.close()


def test_a_killed_connection_costs_no_job(redis_url: str, redis_client: redis.Redis) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        client.enqueue("t", 0)
        assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
        job_id = client.enqueue("t", 1)
        assert client.get(job_id).payload == 1
        assert client.stats().total_jobs == 2
    finally:
        queue.close()


def test_a_lost_reply_writes_the_job_once(proxy: FaultyProxy, redis_client: redis.Redis) -> None:
    queue = _queue(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=5")
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        client.enqueue("t", 0)
        marker = b"lost-reply-marker"
        proxy.drop_reply_to(marker)
        job_id = client.enqueue("t", marker.decode())
        assert client.get(job_id).payload == marker.decode()
        assert client.stats().total_jobs == 2
        assert redis_client.zcard("{jobs:packed}:pending") == 2
    finally:
        queue.close()


def test_a_refusal_is_raised_and_the_connection_serves_on(redis_url: str) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue, strict_types=True))
        with pytest.raises(jobs.UnknownJobType, match="nobody"):
            client.enqueue("nobody", 1)
        assert client.stats().total_jobs == 0
        loose = jobs.Client(jobs.ClientConfig(queue=queue))
        assert loose.get(loose.enqueue("t", 1)).payload == 1
    finally:
        queue.close()
