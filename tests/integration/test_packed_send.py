"""`PackedCalls.send`: commands sent now, their replies read later (`Sent`).

The worker pool sends its next exchange before it takes the jobs of the last one
(`jobs.worker._fetcher`). Meanwhile the thread's own connection awaits replies: its
other calls must borrow another, and replies never read must not reach anyone else.
"""

from __future__ import annotations

from typing import Any

import redis

from jobs.queue._packed import UNSENT, PackedCalls, command, pack_args


def _echo(text: str) -> bytes:
    return command(2, pack_args(("ECHO", text)))


def _in_use(client: redis.Redis) -> set[Any]:
    pool: Any = client.connection_pool
    return set(pool._in_use_connections)


def test_replies_are_read_later_and_other_calls_borrow_meanwhile(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        calls = PackedCalls(client)
        assert calls.call([_echo("warm")]) == [b"warm"]
        (own,) = _in_use(client)  # the thread keeps its connection
        sent = calls.send([_echo("a"), _echo("b")])
        assert sent is not UNSENT
        # This thread's connection awaits those replies: this call borrows another.
        assert calls.call([_echo("c")]) == [b"c"]
        assert _in_use(client) == {own}
        assert sent.read() == [b"a", b"b"]
        assert calls.call([_echo("d")]) == [b"d"]
        assert _in_use(client) == {own}
    finally:
        client.close()


def test_replies_abandoned_never_reach_the_next_call(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        calls = PackedCalls(client)
        sent = calls.send([_echo("lost")])
        sent.abandon()
        assert calls.call([_echo("next")]) == [b"next"]
    finally:
        client.close()


def test_a_connection_lost_before_the_replies_reads_as_unsent(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = redis.Redis.from_url(redis_url, client_name="sent-then-killed")
    try:
        calls = PackedCalls(client)
        sent = calls.send([command(3, pack_args(("BLPOP", "sent-never-pushed", "5")))])
        (victim,) = [c for c in redis_client.client_list() if c["name"] == "sent-then-killed"]
        redis_client.client_kill_filter(_id=victim["id"])
        assert sent.read() is UNSENT
        assert calls.call([_echo("after")]) == [b"after"]  # a new connection
    finally:
        client.close()
