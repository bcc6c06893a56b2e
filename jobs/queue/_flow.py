"""Flow limits on `RedisQueue`: publish, set and read job types' rate limits and caps.

The fetch script enforces them (the flow control section of ``lua/_lib.lua``); here they
are only written and read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from jobs import _codec
from jobs._limits import RateLimit, TypeLimits, parse_cap
from jobs.queue._base import QueueBase

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobs.queue._scripts import Arg


class FlowControl(QueueBase):
    """Rate limits and concurrency caps per job type."""

    def publish_limits(self, declared: Mapping[str, TypeLimits]) -> int:
        """Publish a worker pool's declared limits, with this queue's overrides applied.

        Every type in ``declared`` gets exactly its effective limits (none clears them),
        as does every type the queue's config overrides. Returns how many types' limits
        changed.
        """
        config = self.config
        effective = dict(declared)
        for name in config.rate_limits.keys() | config.concurrency_limits.keys():
            base = effective.get(name, TypeLimits())
            rate = config.rate_limits.get(name, base.rate_limit)
            cap = config.concurrency_limits.get(name, base.max_concurrency)
            effective[name] = TypeLimits(rate, cap)
        # A worker pool's call (see WorkerQueue): every Redis error as RedisUnavailable.
        with self._any_error_as_unavailable():
            return self.set_limits(effective)

    def set_limits(self, limits: Mapping[str, TypeLimits]) -> int:
        """Set job types' limits as given (an empty `TypeLimits` clears a type's).

        In force at the next fetch of any pool; jobs held back by a type's old limits are
        looked at again under the new ones. A pool that starts later publishes its own
        declarations (`publish_limits`) over these. Returns how many types' limits changed.
        """
        if not limits:
            return 0
        k = self.keys
        args: list[Arg] = []
        for name, each in sorted(limits.items()):
            args += (name, each.encode())
        with self._unavailable_as_error():
            return int(self._scripts.limits(self.client, (k.limits, k.parked, k.wake), args))

    def set_type_limits(
        self,
        job_type: str,
        *,
        rate_limit: str | RateLimit | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        """Set one job type's limits (None: no such limit); see `set_limits`.

        Raises:
            ConfigError: an invalid limit, named.
        """
        rate = None if rate_limit is None else RateLimit.parse(rate_limit)
        cap = None if max_concurrency is None else parse_cap(max_concurrency)
        self.set_limits({job_type: TypeLimits(rate, cap)})

    def limits(self) -> dict[str, TypeLimits]:
        """Every job type's limits in force, by type."""
        with self._unavailable_as_error():
            raw = cast("dict[Any, Any]", self.client.hgetall(self.keys.limits))
        return {
            _codec.text(name): TypeLimits.decode(_codec.text(value)) for name, value in raw.items()
        }

    def held_back(self) -> dict[str, int]:
        """How many ready jobs of each job type wait for its limits (the type's rate or cap)."""
        k = self.keys
        with self._unavailable_as_error():
            names = [_codec.text(n) for n in cast("list[Any]", self.client.zrange(k.parked, 0, -1))]
            if not names:
                return {}
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.zcard(k.held(name))
            counts = cast("list[int]", pipe.execute())
        return {name: int(count) for name, count in zip(names, counts, strict=True) if count}

    def running_by_type(self, job_type: str) -> int:
        """How many jobs of a capped type hold a slot now (0 for a type without a cap)."""
        with self._unavailable_as_error():
            count: Any = self.client.zcard(self.keys.running(job_type))
            return int(count)

    def is_held_back(self, job_id: str, job_type: str) -> bool:
        """Whether a pending job waits for its type's limits (parked by a fetch)."""
        k = self.keys
        with self._unavailable_as_error():
            score: Any = self.client.hget(k.job(job_id), "score")
            if score is None:
                return False
            found = cast("list[Any]", self.client.zrangebyscore(k.held(job_type), score, score))
        return job_id in {_codec.text(each) for each in found}
