"""The producer's fast path (`jobs.queue._packed`): enqueue calls packed by hand.

It must write exactly what the generic redis-py path writes, and hand every unusual case
(a server that lost its scripts, a lost connection, a lost reply) to the generic path,
which recovers: no job lost, none written twice, counters exact.
"""

from __future__ import annotations

import gc
import os
import threading
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis

import jobs
from jobs.queue import _packed, _reply_poll
from jobs.queue._packed import PackedCalls, pack_args
from jobs.queue._producer import _NO_DEPENDENCIES, POLLED_JOBS, Producer
from jobs.queue._resp import ReplyReader
from tests.helpers import wait_until
from tests.integration._clients import DoomedPool
from tests.integration._proxy import FaultyProxy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jobs._embedded import RedisServer

#: Fields that differ between two jobs enqueued one after the other.
_OWN = {b"id", b"created_at", b"run_at", b"score"}

#: Settings that each write different fields (none with a unique key or dependencies).
_CONFIGS = [
    None,
    jobs.JobConfig(priority=7, max_retries=1, timeout=5, metadata={"user": 3}),
    jobs.JobConfig(delay=timedelta(hours=1), retry_backoff=jobs.LinearBackoff(2)),
]


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


@pytest.mark.parametrize("config", [*_CONFIGS, jobs.JobConfig(unique_key="u1")])
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


@pytest.mark.parametrize("config", _CONFIGS)
def test_enqueue_plain_writes_what_enqueue_writes(
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    config: jobs.JobConfig | None,
) -> None:
    # Jobs without a unique key or dependencies go through enqueue_plain.lua; the same
    # jobs sent through enqueue.lua (its unique key and dependencies left empty) must
    # leave the same records, counters and indexes.
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        plain = client.enqueue_many("t", [{"x": 1}, {"x": 2}], config)

        def through_enqueue_lua(
            job_type: str, job_config: jobs.JobConfig, declared: bool, strict: bool, fresh: bool
        ) -> tuple[Any, list[Any]]:
            _, head = Producer._enqueue_head(queue, job_type, job_config, declared, strict, fresh)
            *settings, letters, strict_flag, _fresh = head
            return queue._scripts.enqueue, [
                *settings,
                "",
                0,
                letters,
                strict_flag,
                *_NO_DEPENDENCIES,
            ]

        monkeypatch.setattr(queue, "_enqueue_head", through_enqueue_lua)
        queue._packed_heads.clear()
        full = client.enqueue_many("t", [{"x": 1}, {"x": 2}], config)
        for a, b in zip(plain, full, strict=True):
            assert _record(redis_client, a) == _record(redis_client, b)
        assert client.stats().total_jobs == 4
        index = "{jobs:packed}:scheduled" if config and config.delay else "{jobs:packed}:pending"
        assert redis_client.zcard(index) == 4
    finally:
        queue.close()


def test_no_jobs_write_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    queue = _queue(redis_url)
    try:
        assert queue.enqueue("t", [], [], jobs.JobConfig()) == []
        assert redis_client.keys("{jobs:packed}:*") == []
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


def test_a_connection_killed_and_the_next_one_too_cost_no_job(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The kill that closed the packed connection closes the one the generic way takes
    # next as well (as a restart closes them all, one after the other): one more try.
    pool = DoomedPool.from_url(redis_url)
    queue = jobs.RedisQueue(
        jobs.RedisQueueConfig(client=redis.Redis(connection_pool=pool), name="packed")
    )
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        client.enqueue("t", 0)
        assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
        pool.doomed = 1
        job_id = client.enqueue("t", 1)
        assert pool.doomed == 0
        assert client.get(job_id).payload == 1
        assert client.stats().total_jobs == 2
    finally:
        queue.close()
        pool.disconnect()


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each packed reply was polled for (and came in time), polling on any machine."""
    monkeypatch.setattr(_reply_poll, "CAN_POLL", True)
    monkeypatch.setattr(_reply_poll, "HOT_NS", 1 << 62)  # every call follows close on one
    seen: list[bool] = []
    poll = ReplyReader.poll

    def counted(reader: ReplyReader, budget_ns: int) -> bool:
        seen.append(poll(reader, budget_ns))
        return seen[-1]

    monkeypatch.setattr(ReplyReader, "poll", counted)
    return seen


def test_a_one_job_enqueue_polls_for_its_reply_and_a_batch_does_not(
    redis_url: str, polls: list[bool]
) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        job_id = client.enqueue("t", 1)
        assert len(polls) == 1
        client.enqueue_many("t", range(POLLED_JOBS + 1))
        assert len(polls) == 1
        assert client.get(job_id).payload == 1
        assert client.stats().total_jobs == POLLED_JOBS + 2
    finally:
        queue.close()


def test_a_connection_killed_while_it_polls_costs_no_job(
    redis_url: str, redis_client: redis.Redis, polls: list[bool]
) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        client.enqueue("t", 0)
        assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
        job_id = client.enqueue("t", 1)  # its poll (if it was sent) reads the close
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


def test_a_lost_reply_writes_a_batch_once(proxy: FaultyProxy, redis_client: redis.Redis) -> None:
    # A Client's ids are fresh: the script sent again finds the batch's first or last id
    # and writes nothing (one check a call, not one a job).
    queue = _queue(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=5")
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        client.enqueue("t", 0)
        marker = "lost-batch-marker"
        proxy.drop_reply_to(marker.encode())
        ids = client.enqueue_many("t", [1, marker, 3])
        assert [client.get(i).payload for i in ids] == [1, marker, 3]
        assert client.stats().total_jobs == 4
        assert redis_client.zcard("{jobs:packed}:pending") == 4
    finally:
        queue.close()


def test_ids_a_caller_chose_are_checked_one_by_one(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Ids a caller chose (not fresh) are each checked: the new one is written, the
    # existing one left as it was.
    queue = _queue(redis_url)
    try:
        config = jobs.JobConfig()
        assert queue.enqueue("t", ["a"], [b"1"], config) == ["a"]
        assert queue.enqueue("t", ["a", "b"], [b"2", b"3"], config) == ["a", "b"]
        assert redis_client.hget("{jobs:packed}:job:a", "payload") == b"1"
        assert redis_client.hget("{jobs:packed}:job:b", "payload") == b"3"
        assert jobs.Client(jobs.ClientConfig(queue=queue)).stats().total_jobs == 2
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


def _pool(queue: jobs.RedisQueue) -> Any:
    client: Any = queue.client
    return client.connection_pool


def test_a_thread_keeps_its_connection_and_gives_it_back_when_it_ends(redis_url: str) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        pool = _pool(queue)
        seen: list[set[Any]] = []

        def enqueue_twice() -> None:
            for n in range(2):
                client.enqueue("t", n)
                seen.append(set(pool._in_use_connections))

        thread = threading.Thread(target=enqueue_twice)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
        # Both calls on the same connection, kept between them (not given back).
        assert len(seen[0]) == 1 and seen[0] == seen[1]
        kept = next(iter(seen[0]))
        del thread
        gc.collect()  # the thread's locals go with it, and its connection back to the pool
        wait_until(lambda: kept not in pool._in_use_connections)
        assert kept in pool._available_connections
        assert client.stats().total_jobs == 2
    finally:
        queue.close()


def test_threads_past_the_limit_borrow_a_connection_per_call(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_packed, "OWNED", 2)
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        pool = _pool(queue)
        all_in = threading.Barrier(5)
        done = threading.Barrier(5)

        def enqueue() -> None:
            client.enqueue("t", 1)
            all_in.wait(10)  # every thread has enqueued and is still alive
            done.wait(10)

        threads = [threading.Thread(target=enqueue) for _ in range(4)]
        for thread in threads:
            thread.start()
        all_in.wait(10)
        # Two threads keep theirs; the other two gave theirs back after their call.
        assert len(pool._in_use_connections) == 2
        done.wait(10)
        for thread in threads:
            thread.join(10)
        assert client.stats().total_jobs == 4
    finally:
        queue.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_use_its_parents_connection(redis_url: str) -> None:
    queue = _queue(redis_url)
    try:
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        first = client.enqueue("t", "parent")
        (parents,) = _pool(queue)._in_use_connections
        pid = os.fork()
        if pid == 0:  # the child: enqueue on a socket of its own, and say how it went
            code = 1
            try:
                job_id = client.enqueue("t", "child")
                code = 0 if client.get(job_id).payload == "child" else 2
                if queue._packed_calls._local.owner.connection is parents:
                    code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's kept connection was not disturbed by the child's calls.
        assert client.get(client.enqueue("t", "again")).payload == "again"
        assert client.get(first).payload == "parent"
        assert client.stats().total_jobs == 3
    finally:
        queue.close()


def test_a_queue_dropped_unclosed_gives_back_its_kept_connection(redis_url: str) -> None:
    # A client made per request and never closed (in a thread that lives on, as a sync
    # web server's main thread does): its kept connection must not live on with the thread.
    client = redis.Redis.from_url(redis_url)
    pool: Any = client.connection_pool
    try:
        queue = jobs.RedisQueue(jobs.RedisQueueConfig(client=client, name="packed"))
        jobs.Client(jobs.ClientConfig(queue=queue)).enqueue("t", 1)
        calls = weakref.ref(queue._packed_calls)
        assert len(pool._in_use_connections) == 1
        del queue
        gc.collect()
        assert calls() is None
        assert not pool._in_use_connections
    finally:
        client.close()


def test_queues_on_one_client_share_a_threads_kept_connection(redis_url: str) -> None:
    queue = _queue(redis_url)
    try:
        sibling = queue.sibling("packed-other")
        assert sibling._packed_calls is queue._packed_calls
        jobs.Client(jobs.ClientConfig(queue=queue)).enqueue("t", 1)
        jobs.Client(jobs.ClientConfig(queue=sibling)).enqueue("t", 2)
        assert len(_pool(queue)._in_use_connections) == 1
    finally:
        queue.close()


def test_a_client_on_one_dedicated_connection_goes_the_generic_way(redis_url: str) -> None:
    shared = redis.Redis.from_url(redis_url)
    dedicated = redis.Redis(connection_pool=shared.connection_pool, single_connection_client=True)
    try:
        plain = jobs.RedisQueue(jobs.RedisQueueConfig(client=shared, name="packed"))
        single = jobs.RedisQueue(jobs.RedisQueueConfig(client=dedicated, name="packed"))
        assert plain._packed_calls.usable
        assert not single._packed_calls.usable
        job_id = jobs.Client(jobs.ClientConfig(queue=single)).enqueue("t", 1)
        assert jobs.Client(jobs.ClientConfig(queue=plain)).get(job_id).payload == 1
    finally:
        dedicated.close()
        shared.close()


def test_a_push_message_on_the_connection_is_skipped_and_the_connection_renewed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # A RESP3 push (here a client-side caching invalidation; on a managed Redis, a
    # maintenance notice) arrives ahead of a reply: the reply is still the call's, and
    # the connection is closed after the call, to start afresh on the next one.
    client = redis.Redis.from_url(redis_url, protocol=3)
    calls = PackedCalls(client)

    def call(*args: Any) -> Any:
        return calls.call([_packed.command(len(args), pack_args(args))])

    try:
        assert call("CLIENT", "TRACKING", "ON") == [b"OK"]
        assert call("GET", "tracked") == [None]
        connection = calls._local.owner.connection
        redis_client.set("tracked", "new")  # the invalidation is sent now, before the PING
        assert call("PING") == [b"PONG"]
        assert connection._sock is None  # closed after the call
        assert call("GET", "tracked") == [b"new"]
    finally:
        client.close()
