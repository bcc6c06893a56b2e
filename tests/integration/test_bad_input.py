"""Bad input from every side: damaged records in Redis, payloads that are not JSON, handlers
that raise the unprintable or return the unstorable.

The rule throughout: a bad job fails (or runs) on its own with an error that names the
problem, every other job is unaffected, and a payload that cannot be stored is refused
at enqueue with `jobs.PayloadError` before anything is written.

Damaged records are written straight into Redis, as a foreign tool, a hand edit or a bug
would leave them, next to good jobs enqueued the normal way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import jobs
from jobs._codec import MAX_ERROR_CHARS, MAX_JSON_DEPTH, MAX_TRACEBACK_CHARS
from jobs.worker._protocol import Completed, Leased
from tests.helpers import wait_until
from tests.integration._clients import make_client, wait_for_status

if TYPE_CHECKING:
    import redis

    from jobs.queue._keys import QueueKeys

#: A pickle of the int 1: bytes a Python-only queue might have written.
PICKLE = b"\x80\x04K\x01."
BAND = 4398046511104  # ready_score's priority band (see _lib.lua)


def good_record(job_id: str) -> dict[str, str]:
    """A record as enqueue.lua writes it, for a pending job of type "work"."""
    return {
        "id": job_id,
        "type": "work",
        "payload": "{}",
        "status": "pending",
        "priority": "0",
        "max_retries": "0",
        "timeout_ms": "",
        "backoff": '{"kind": "none"}',
        "metadata": "{}",
        "created_at": "1700000000000",
        "run_at": "1700000000000",
        "attempts": "0",
        "failures": "0",
        "lost": "0",
        "score": str(1000 * BAND),
    }


def inject(
    r: redis.Redis, keys: QueueKeys, job_id: str, index: str, damage: dict[str, str | None]
) -> None:
    """Write a record with ``damage`` (None deletes a field) and put it in ``index``.

    ``pending``: ahead of every job enqueued normally. ``scheduled``: due since 1970.
    ``processing``: leased by a worker that is gone, its lease expired in 1970.
    """
    record: dict[str, str | None] = {**good_record(job_id), **damage}
    if index == "processing":
        record.update(status="processing", attempts="1", lease="dead:1")
    elif index == "scheduled":
        record["status"] = "scheduled"
    fields = {k: v for k, v in record.items() if v is not None}
    hset: Any = r.hset  # its mapping type differs between redis-py releases
    hset(keys.job(job_id), mapping=fields)
    score = {"pending": 1000 * BAND - 1, "scheduled": 1000, "processing": 1000}[index]
    r.zadd(getattr(keys, index), {job_id: score})


@dataclass(frozen=True)
class Damage:
    """One way a record can be broken, and what must become of its job."""

    name: str
    index: str
    fields: dict[str, str | None]
    status: jobs.JobStatus
    error: str | None = None  # a substring of the job's error


DAMAGES = [
    Damage("payload not JSON", "pending", {"payload": PICKLE.decode("latin-1")},
           jobs.JobStatus.FAILED, "payload is not valid JSON"),
    Damage("payload missing", "pending", {"payload": None},
           jobs.JobStatus.FAILED, "no 'payload'"),
    Damage("type missing", "pending", {"type": None},
           jobs.JobStatus.FAILED, "job record has no 'type'"),
    Damage("priority not a number", "pending", {"priority": "high"},
           jobs.JobStatus.FAILED, "'priority' is not an integer"),
    Damage("priority not a number, due", "scheduled", {"priority": "high"},
           jobs.JobStatus.FAILED, "'priority' is not an integer"),
    Damage("max_retries not a number", "pending", {"max_retries": "x"},
           jobs.JobStatus.FAILED, "'max_retries' is not an integer"),
    Damage("metadata not an object", "pending", {"metadata": "[1, 2]"},
           jobs.JobStatus.FAILED, "'metadata' is not a JSON object"),
    Damage("created_at out of range", "pending", {"created_at": "9" * 30},
           jobs.JobStatus.FAILED, "does not decode"),
    # Counters that do not parse restart from 0: the job itself is intact and runs.
    Damage("attempts not a number", "pending", {"attempts": "many"}, jobs.JobStatus.COMPLETED),
    Damage("id missing", "pending", {"id": None}, jobs.JobStatus.COMPLETED),
    Damage("status unknown", "pending", {"status": "exploded"}, jobs.JobStatus.COMPLETED),
    Damage("lost not a number, lease expired", "processing", {"lost": "x"},
           jobs.JobStatus.COMPLETED),
    Damage("score not a number, lease expired", "processing", {"score": "x"},
           jobs.JobStatus.COMPLETED),
    Damage("failures not a number, handler fails", "pending",
           {"failures": "x", "payload": '"fail"'}, jobs.JobStatus.FAILED, "RuntimeError: asked to"),
]  # fmt: skip


def work(ctx: jobs.JobContext, payload: Any) -> str:
    if payload == "fail":
        raise RuntimeError("asked to")
    return "ok"


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.name)
def test_a_damaged_record_fails_or_runs_alone(
    redis_url: str, redis_client: redis.Redis, damage: Damage
) -> None:
    registry = jobs.Registry()
    registry.register_func("work", work)
    with make_client(redis_url, registry, start=False, num_workers=4) as client:
        keys = client.queue.keys
        good = client.enqueue_many("work", [{"before": i} for i in range(3)])
        inject(redis_client, keys, "bad", damage.index, damage.fields)
        good += client.enqueue_many("work", [{"after": i} for i in range(3)])
        client.start()
        for job_id in good:
            assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == "ok"

        def settled() -> bool:
            return redis_client.hget(keys.job("bad"), "status") == str(damage.status).encode()

        wait_until(settled, timeout=10, message=f"the damaged job never became {damage.status}")
        error = redis_client.hget(keys.job("bad"), "error")
        if damage.error is None:
            assert error is None
        else:
            assert isinstance(error, bytes) and damage.error in error.decode(), error
        stats = client.stats()
        # Nothing stranded: every job reached an end, no index holds a leftover.
        assert (stats.pending_jobs, stats.scheduled_jobs, stats.processing_jobs) == (0, 0, 0)
        assert stats.completed_jobs == len(good) + (damage.status is jobs.JobStatus.COMPLETED)
        assert redis_client.zcard(keys.processing) == 0


def test_an_attempt_count_past_a_c_long_is_counted_on_not_wrapped(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # fetch.lua prints a whole count with %d (through a C long) only where it fits.
    registry = jobs.Registry()
    registry.register_func("work", work)
    with make_client(redis_url, registry, start=False) as client:
        job_id = client.enqueue("work", {})
        redis_client.hset(client.queue.keys.job(job_id), "attempts", "1e300")
        client.start()
        job = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        assert job.attempts == int(1e300)  # plus one, in a double


def test_a_damaged_job_stays_readable(redis_url: str, redis_client: redis.Redis) -> None:
    registry = jobs.Registry()
    registry.register_func("work", work)
    with make_client(redis_url, registry) as client:
        inject(redis_client, client.queue.keys, "bad", "pending", {"payload": "{not json"})
        job = wait_for_status(client, "bad", jobs.JobStatus.FAILED)
        # The worker's verdict is readable, and so is the damaged field, as its raw text.
        assert job.error is not None and "payload is not valid JSON" in job.error
        assert job.payload == "{not json"
        assert [j.id for j in client.list_jobs("failed")] == ["bad"]


# -- payloads refused at enqueue ----------------------------------------------------------


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class Opaque:
    pass


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("x" * (1 << 20), "over max_payload_bytes"),
        (nested(10_000), "not JSON-serializable"),
        ({"k": nested(10_000)}, "not JSON-serializable"),
        ("lone \ud800 surrogate", "not JSON-serializable"),
        ({"\udfff": 1}, "not JSON-serializable"),
        ({"n": math.nan}, "not JSON-serializable"),
        ({"s": {1, 2}}, "not JSON-serializable"),
        (Opaque(), "not JSON-serializable"),
        (b"bytes", "not JSON-serializable"),
    ],
    ids=[
        "1MiB+",
        "nested-10000",
        "nested-in-object",
        "lone-surrogate",
        "surrogate-key",
        "nan",
        "set",
        "object",
        "bytes",
    ],
)
def test_unstorable_payloads_are_refused_and_nothing_is_written(
    redis_url: str, redis_client: redis.Redis, payload: Any, message: str
) -> None:
    with make_client(redis_url) as client:
        with pytest.raises(jobs.PayloadError, match=message):
            client.enqueue("work", payload)
        # One bad payload in a batch: none of the batch is written.
        with pytest.raises(jobs.PayloadError):
            client.enqueue_many("work", [{"ok": 1}, payload, {"ok": 2}])
        assert redis_client.dbsize() == 0
        assert client.stats().total_jobs == 0


def test_max_payload_bytes_is_exact_and_configurable(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url, queue_options={"max_payload_bytes": 100}) as client:
        fits = "x" * 98  # 100 bytes once quoted
        client.enqueue("work", fits)
        with pytest.raises(jobs.PayloadError, match=r"101 bytes, over max_payload_bytes \(100\)"):
            client.enqueue("work", fits + "x")
        # The limit counts encoded bytes, not characters.
        with pytest.raises(jobs.PayloadError):
            client.enqueue("work", "\u00e9" * 50)
        assert client.stats().total_jobs == 1


def levels(count: int) -> list[Any]:
    """A value nesting exactly ``count`` levels deep (`nested` adds one: its empty list)."""
    return nested(count - 1)


def test_json_accepted_at_enqueue_decodes_at_the_worker(redis_url: str) -> None:
    # One nesting bound for producers and workers alike: what enqueue accepts, the worker
    # (deeper in its own stack) decodes; a payload deeper than MAX_JSON_DEPTH used to be
    # accepted and failed at the worker as a CorruptRecord.
    registry = jobs.Registry()
    registry.register_func("work", lambda ctx, payload: "ran")
    registry.register_func("deep_result", lambda ctx, depth: levels(depth))
    config = jobs.JobConfig(max_retries=2, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, start=False) as client:
        deepest = levels(MAX_JSON_DEPTH)
        payload = client.enqueue("work", deepest, config)
        deepest_metadata = {"m": levels(MAX_JSON_DEPTH - 1)}  # the mapping is a level too
        meta = client.enqueue("work", {}, attrs.evolve(config, metadata=deepest_metadata))
        with pytest.raises(jobs.PayloadError, match=f"nests deeper than {MAX_JSON_DEPTH}"):
            client.enqueue("work", levels(MAX_JSON_DEPTH + 1), config)
        with pytest.raises(jobs.PayloadError, match="metadata nests deeper"):
            client.enqueue("work", {}, attrs.evolve(config, metadata={"m": deepest}))
        fits = client.enqueue("deep_result", MAX_JSON_DEPTH, config)
        too_deep = client.enqueue("deep_result", MAX_JSON_DEPTH + 1, config)
        client.start()
        for job_id in (payload, meta):
            job = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
            assert (job.result, job.attempts) == ("ran", 1)
        assert client.get(payload).payload == deepest
        assert wait_for_status(client, fits, jobs.JobStatus.COMPLETED).result == deepest
        # A result too deep can never be stored: it fails for good, not after retries.
        failed = wait_for_status(client, too_deep, jobs.JobStatus.FAILED)
        assert failed.attempts == 1
        assert failed.error == f"PayloadError: result nests deeper than {MAX_JSON_DEPTH} levels"
        assert client.stats().total_jobs == 4


def test_unstorable_metadata_is_refused_and_nothing_is_written(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url) as client:
        with pytest.raises(jobs.PayloadError, match="metadata"):
            client.enqueue("work", {}, jobs.JobConfig(metadata={"when": {1, 2}}))
        assert redis_client.dbsize() == 0


# -- handlers that misbehave --------------------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no string for you")


def _ping(depth: int) -> int:
    return _pong(depth + 1)


def _pong(depth: int) -> int:
    # Two alternating frames: Python's traceback does not fold them into
    # "[Previous line repeated N more times]", so the full text is hundreds of KB.
    return _ping(depth + 1)


def raise_unprintable(ctx: jobs.JobContext, payload: Any) -> None:
    raise Unprintable


def raise_huge_message(ctx: jobs.JobContext, payload: Any) -> None:
    raise RuntimeError("m" * 1_000_000)


def raise_system_exit(ctx: jobs.JobContext, payload: Any) -> None:
    raise SystemExit(3)


def test_misbehaving_handlers_fail_clearly_and_the_pool_goes_on(
    redis_url: str, redis_client: redis.Redis
) -> None:
    registry = jobs.Registry()
    registry.register_func("unprintable", raise_unprintable)
    registry.register_func("set_result", lambda ctx, p: {1, 2})
    registry.register_func("nan_result", lambda ctx, p: [math.nan])
    registry.register_func("surrogate_result", lambda ctx, p: "\ud800")
    registry.register_func("recursion", lambda ctx, p: _ping(0))
    registry.register_func("huge_message", raise_huge_message)
    registry.register_func("system_exit", raise_system_exit)
    registry.register_func("ok", lambda ctx, p: "fine")
    once = jobs.JobConfig(max_retries=0)
    with make_client(redis_url, registry) as client:
        ids = {name: client.enqueue(name, {}, once) for name in registry.names()}
        assert wait_for_status(client, ids["ok"], jobs.JobStatus.COMPLETED).result == "fine"
        failed = {
            name: wait_for_status(client, job_id, jobs.JobStatus.FAILED)
            for name, job_id in ids.items()
            if name != "ok"
        }
        assert failed["unprintable"].error == "Unprintable: <str() raised ValueError>"
        for name in ("set_result", "nan_result", "surrogate_result"):
            error = failed[name].error
            assert error is not None and error.startswith("PayloadError: result is not JSON"), error
        assert failed["recursion"].error is not None
        assert failed["recursion"].error.startswith("RecursionError")
        assert failed["system_exit"].error == "SystemExit: 3"
        assert len(failed["huge_message"].error or "") <= MAX_ERROR_CHARS
        for name, job in failed.items():
            trace = redis_client.hget(client.queue.keys.job(job.id), "traceback")
            assert isinstance(trace, bytes), name
            assert len(trace.decode()) <= MAX_TRACEBACK_CHARS, name
            assert len(trace) <= MAX_TRACEBACK_CHARS + 1024, name  # ~8 KB of bytes too
        deep = redis_client.hget(client.queue.keys.job(ids["recursion"]), "traceback")
        assert isinstance(deep, bytes) and b"characters cut" in deep
        # The pool survived all of it, SystemExit included.
        after = client.enqueue("ok", {})
        assert wait_for_status(client, after, jobs.JobStatus.COMPLETED).result == "fine"


# -- keys that are not job records at all ---------------------------------------------


@pytest.mark.parametrize("index", ["pending", "scheduled", "processing"])
def test_a_key_that_is_not_a_record_is_set_aside(
    redis_url: str, redis_client: redis.Redis, index: str
) -> None:
    # A string where a job's hash should be: every command on it fails with WRONGTYPE, and
    # a script that fails after its first write is not rolled back. It wedged every fetch
    # (scheduled) or left the jobs popped with it in no index (pending).
    registry = jobs.Registry()
    registry.register_func("work", work)
    with make_client(redis_url, registry, start=False, num_workers=4) as client:
        keys = client.queue.keys
        good = client.enqueue_many("work", [{"before": i} for i in range(3)])
        redis_client.set(keys.job("bad"), "not a hash")
        score = {"pending": 1000 * BAND - 1, "scheduled": 1000, "processing": 1000}[index]
        redis_client.zadd(getattr(keys, index), {"bad": score})
        good += client.enqueue_many("work", [{"after": i} for i in range(3)])
        delayed = client.enqueue("work", {"delayed": True}, jobs.JobConfig(delay=0.2))
        client.start()
        for job_id in [*good, delayed]:
            assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == "ok"
        wait_until(lambda: client.stats().damaged_records == 1, timeout=10)
        stats = client.stats()
        assert (stats.pending_jobs, stats.scheduled_jobs, stats.processing_jobs) == (0, 0, 0)
        assert stats.completed_jobs == len(good) + 1
        # Out of every index, and left as it was found for whoever wrote it.
        for name in ("pending", "scheduled", "processing", "failed"):
            assert redis_client.zscore(getattr(keys, name), "bad") is None, name
        assert redis_client.get(keys.job("bad")) == b"not a hash"


def test_a_fetch_sets_aside_a_damaged_key_among_the_jobs_it_pops(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url) as client:
        queue, keys = client.queue, client.queue.keys
        first = client.enqueue("work", 1, jobs.JobConfig(priority=5))
        rest = client.enqueue_many("work", [2, 3, 4])
        redis_client.set(keys.job("bad"), "not a hash")
        redis_client.zadd(keys.pending, {"bad": 999 * BAND})  # priority 1: between them
        fetched = queue.fetch(10, timedelta(seconds=30))
        assert [j.job_id for j in fetched.jobs] == [first, *rest]
        assert all(client.get(i).status is jobs.JobStatus.PROCESSING for i in [first, *rest])
        assert redis_client.zcard(keys.pending) == 0
        assert client.stats().damaged_records == 1
        # Lease checks read it as "not held": a write naming it is refused, not an error.
        done = queue.write([Completed(Leased("bad", "x:1"), b"1")])
        assert [o.recorded for o in done] == [False]
        with pytest.raises(jobs.JobNotFound):
            client.cancel("bad")


def test_a_fetched_record_keeps_bytes_that_are_not_utf8_and_control_characters(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # fetch.lua sends the jobs as one JSON array: what Redis holds must come through it
    # byte for byte, whether or not it is UTF-8, for the record's own checks to judge;
    # a damaged record leaves the other jobs of the same reply as they are.
    with make_client(redis_url) as client:
        queue, keys = client.queue, client.queue.keys
        odd = client.enqueue("work", {"text": 'quote " backslash \\ nul \x00 tab \t'})
        bad = client.enqueue("work", 1)
        redis_client.hset(keys.job(bad), mapping={"error": b"caf\xe9 \xff", "type": b"w\xe9"})
        fetched = {j.job_id: j for j in queue.fetch(2, timedelta(seconds=30)).jobs}
        assert set(fetched) == {odd, bad}
        assert json.loads(fetched[odd].fields["payload"]) == {
            "text": 'quote " backslash \\ nul \x00 tab \t'
        }
        assert fetched[bad].fields["error"] == b"caf\xe9 \xff"
        assert fetched[bad].fields["type"] == b"w\xe9"
        assert fetched[odd].fields["type"] == "work"
        assert "result" not in fetched[bad].fields  # absent fields stay absent


def test_a_damaged_stats_counter_does_not_strand_a_reaped_job(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url) as client:
        queue, keys = client.queue, client.queue.keys
        job_id = client.enqueue("work", 1)
        assert len(queue.fetch(1, timedelta(seconds=30)).jobs) == 1
        redis_client.zadd(keys.processing, {job_id: 1000}, xx=True)  # its lease ran out
        redis_client.hset(keys.stats, "lost_leases", "n/a")
        assert queue.reap() == (1, 0)
        assert client.get(job_id).status is jobs.JobStatus.PENDING
        assert redis_client.zscore(keys.pending, job_id) is not None
        assert client.stats().lost_leases == 1  # restarted from the damaged value


@pytest.mark.parametrize("key", ["seq", "lease_seq", "wake"])
@pytest.mark.parametrize("damage", ["not a number", "not a string"])
def test_damaged_counters_and_markers_restart_in_order(
    redis_url: str, redis_client: redis.Redis, key: str, damage: str
) -> None:
    # fetch popped its jobs, then took their lease numbers: a damaged lease_seq failed the
    # script there and left the popped jobs in no index. Damaged, each starts afresh.
    with make_client(redis_url) as client:
        queue, keys = client.queue, client.queue.keys
        first = client.enqueue_many("work", [1, 2])
        name = getattr(keys, key)
        redis_client.delete(name)
        if damage == "not a number":
            redis_client.set(name, "x")
        else:
            redis_client.hset(name, "x", "1")
        second = client.enqueue_many("work", [3, 4])
        fetched = queue.fetch(4, timedelta(seconds=30)).jobs
        # FIFO holds across the restart, every job is leased once, with its own token.
        assert [j.job_id for j in fetched] == [*first, *second]
        assert len({j.token for j in fetched}) == 4
        assert client.stats().processing_jobs == 4


def test_a_stats_key_of_another_type_costs_the_counts_not_the_jobs(
    redis_url: str, redis_client: redis.Redis
) -> None:
    registry = jobs.Registry()
    registry.register_func("work", work)
    with make_client(redis_url, registry) as client:
        keys = client.queue.keys
        redis_client.delete(keys.stats)
        redis_client.rpush(keys.stats, "not a hash")
        job_id = client.enqueue("work", 1)
        assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == "ok"
        stats = client.stats()
        assert (stats.total_jobs, stats.completed_jobs, stats.pending_jobs) == (0, 0, 0)
