"""`Twin`: a `RedisQueue` and a `MemoryQueue` driven with the same calls, compared.

The model test (test_model.py) drives its queue through a `Twin`: every call goes to the
Lua scripts, then, with the same arguments, to `jobs.testing.MemoryQueue`; both must
answer alike (or raise the same error), and after every step both must hold the same
state (`assert_same_state`). So the in-memory queue's rules are the scripts' rules, on
every operation sequence hypothesis tries.

What only differs by the clock is compared loosely: timestamps are left out, and the
indexes scored by time are compared as sets (the memory queue reads the Redis clock
just after the script ran, so its times are a millisecond or so later). What the test
does to Redis behind the queue's back (time passing for one job, a foreign tool
damaging a record or a counter) it does to the memory queue's state too (`set_score`,
`damage_record`, `damage_counter`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis

from jobs import _codec
from jobs.job import Job
from jobs.testing import MemoryQueue
from jobs.worker._protocol import Beat, Fetched, Written

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs.queue.redis_queue import RedisQueue

#: The calls mirrored to the memory queue.
MIRRORED = frozenset(
    {
        "enqueue",
        "fetch",
        "write",
        "exchange",
        "heartbeat",
        "requeue",
        "reap",
        "cancel",
        "retry",
        "retry_failed",
        "purge",
        "list_jobs",
        "get",
    }
)
#: Record fields that hold times: they differ by the clock only.
TIMES = frozenset({"created_at", "run_at", "started_at", "completed_at"})
INDEXES = ("pending", "scheduled", "processing", "completed", "failed", "cancelled")
#: Stats counters both keep.
COUNTERS = (
    "total",
    "completed",
    "failed",
    "cancelled",
    "retried",
    "lost_leases",
    "rejected",
    "damaged",
)


class Twin:
    """A `RedisQueue` whose every mirrored call is repeated on a `MemoryQueue` and compared."""

    #: Calls and states compared by every twin so far (a test checks it is not vacuous).
    compared = 0

    def __init__(self, queue: RedisQueue, client: redis.Redis) -> None:
        self.redis_queue = queue
        self._client = client
        self._now_ms = 0
        self.memory = MemoryQueue(
            queue.name,
            clock=lambda: self._now_ms / 1000,
            max_lost_leases=queue.config.max_lost_leases,
            max_failed_jobs=queue.config.max_failed_jobs,
            max_completed_jobs=queue.config.max_completed_jobs,
            completed_ttl=queue.config.completed_ttl,
            failed_ttl=queue.config.failed_ttl,
        )

    def set_score(self, index: str, job_id: str, score: int) -> None:
        """Mirror a score the test wrote into Redis directly (time passing, for a job)."""
        self.memory._state.index[index][job_id] = score

    def damage_record(self, job_id: str) -> None:
        """Mirror a string written where the job's record was."""
        self.memory._state.damage(job_id)

    def damage_counter(self, field: str) -> None:
        """Mirror a stats counter overwritten with text (it then reads, and restarts, as 0)."""
        if field == "last_processed":
            self.memory._state.last_processed = None
        else:
            self.memory._state.stats[field] = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.redis_queue, name)
        if name not in MIRRORED:
            return target
        return self._mirrored(name, target)

    def _mirrored(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                expected = target(*args, **kwargs)
            except Exception as exc:
                self._compare_error(name, args, kwargs, exc)
                raise
            self._sync_clock()
            got = getattr(self.memory, name)(*args, **kwargs)
            assert _plain(got) == _plain(expected), (name, args, got, expected)
            Twin.compared += 1
            return expected

        return call

    def _compare_error(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> None:
        self._sync_clock()
        try:
            getattr(self.memory, name)(*args, **kwargs)
        except Exception as mine:
            assert type(mine) is type(exc), (name, args, mine, exc)
            Twin.compared += 1
            return
        raise AssertionError(f"{name}{args}: the scripts raised {exc!r}, the memory queue did not")

    def _sync_clock(self) -> None:
        seconds, micros = self._client.time()
        self._now_ms = int(seconds) * 1000 + int(micros) // 1000

    def assert_same_state(self, ids: list[str]) -> None:
        """Both queues hold the same indexes, records (but times) and counters."""
        k = self.redis_queue.keys
        pipe = self._client.pipeline(transaction=False)
        for name in INDEXES:
            pipe.zrange(getattr(k, name), 0, -1, withscores=True)
        for job_id in ids:
            pipe.hgetall(k.job(job_id))
        pipe.hgetall(k.stats)
        replies = pipe.execute(raise_on_error=False)
        state = self.memory._state
        for name, reply in zip(INDEXES, replies[: len(INDEXES)], strict=True):
            scripts = {_codec.text(m): int(s) for m, s in reply}
            memory = dict(state.index[name])
            if name == "pending":
                assert memory == scripts, (name, memory, scripts)
            else:
                assert set(memory) == set(scripts), (name, memory, scripts)
        now = self.memory.server_time_ms()
        for job_id, fields in zip(ids, replies[len(INDEXES) : -1], strict=True):
            if isinstance(fields, redis.ResponseError):  # WRONGTYPE: a damaged key
                assert job_id in state.damaged, (job_id, fields)
                continue
            assert job_id not in state.damaged, job_id
            scripts_record = {
                _codec.text(f): _codec.text(v)
                for f, v in fields.items()
                if _codec.text(f) not in TIMES
            }
            if "unique" in scripts_record:
                scripts_record["unique"] = scripts_record["unique"].removeprefix(k.base)
            record = state.record(job_id, now) or {}
            memory_record = {f: _plain(v) for f, v in record.items() if f not in TIMES}
            assert memory_record == scripts_record, (job_id, memory_record, scripts_record)
        stats = {_codec.text(f): _codec.text(v) for f, v in replies[-1].items()}
        for counter in COUNTERS:
            value = stats.get(counter, "0")
            expected = int(value) if value.lstrip("-").isdigit() else 0  # damaged: reads as 0
            assert state.stats[counter] == expected, (counter, state.stats, stats)
        Twin.compared += 1


def _plain(value: Any) -> Any:
    """A reply with what differs by the clock only left out."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, Fetched):
        return (
            value.next_due_ms is None,
            [
                (j.job_id, j.token, {f: _plain(v) for f, v in j.fields.items() if f not in TIMES})
                for j in value.jobs
            ],
        )
    if isinstance(value, Written):
        return value.recorded, value.status, value.run_at_ms == 0
    if isinstance(value, Beat):
        return value.leases, value.next_expiry_ms is None
    if isinstance(value, Job):
        return (
            value.id,
            value.type,
            value.status,
            value.attempts,
            value.lost_leases,
            value.priority,
            value.max_retries,
            value.error,
            value.payload,
            value.result,
        )
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
