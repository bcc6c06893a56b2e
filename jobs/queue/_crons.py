"""The scheduler's side of `RedisQueue`: claim cron fire times, publish cron state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from jobs import _codec
from jobs.queue._wire import (
    job_args,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from jobs.config import JobConfig
from jobs.queue._base import QueueBase


class Crons(QueueBase):
    """Fire cron jobs exactly once and publish their state."""

    def fire_cron(
        self,
        cron_id: str,
        fire_ms: int,
        next_ms: int | None,
        job: tuple[str, str, bytes, JobConfig],
        state_ttl: timedelta,
    ) -> tuple[bool, int]:
        """Claim one fire time of a cron job and enqueue its job, atomically (cron_fire.lua).

        ``job`` is (job id, job type, encoded payload, config).

        Returns:
            Whether this call fired, and the cron job's last fire time now stored (ms).

        Raises:
            ReplicationError: with ``wait_for_replicas``, too few replicas acknowledged
                (this call did fire: the claim and the job are written on the master).
        """
        k = self.keys
        job_id, job_type, payload, config = job
        call = (
            self._scripts.cron_fire,
            (k.pending, k.scheduled, k.seq, k.stats, k.wake, k.cron(cron_id), k.crons),
            (
                k.job_prefix,
                cron_id,
                fire_ms,
                "" if next_ms is None else next_ms,
                _codec.to_ms(state_ttl),
                job_id,
                job_type,
                payload,
                *job_args(config),
            ),
        )
        (reply,) = self._execute_durably(
            [call], [job_id], wrote=lambda replies: int(replies[0][0]) == 1
        )
        return bool(int(reply[0])), int(reply[1])

    def cron_state(self, cron_id: str) -> dict[str, str]:
        """A cron job's shared state (last_fire, last_job_id, next_run, ...), {} if none."""
        raw = self.client.hgetall(self.keys.cron(cron_id))
        return {_codec.text(key): _codec.text(value) for key, value in raw.items()}

    def announce_cron(
        self, cron_id: str, fields: dict[str, str], next_ms: int | None, state_ttl: timedelta
    ) -> None:
        """Publish a cron job's registration (schedule, job type, enabled, next run).

        Also drops the listing's entries of cron jobs whose state expired: no scheduler
        announced or fired them for a whole state TTL (`jobs.schedule.scheduler.STATE_TTL` at
        least), so none runs them any more. (Should one be announced again in between,
        its next fire or announce lists it again.)
        """
        key = self.keys.cron(cron_id)
        pipe = self.client.pipeline(transaction=False)
        mapping = {**fields, "next_run": "" if next_ms is None else str(next_ms)}
        pipe.hset(key, mapping=cast("Any", mapping))
        pipe.pexpire(key, _codec.to_ms(state_ttl))
        if next_ms is None:
            pipe.zrem(self.keys.crons, cron_id)
        else:
            pipe.zadd(self.keys.crons, {cron_id: next_ms})
        pipe.zrange(self.keys.crons, 0, -1)
        listed = [_codec.text(i) for i in pipe.execute()[-1]]
        if listed:
            pipe = self.client.pipeline(transaction=False)
            for other in listed:
                pipe.exists(self.keys.cron(other))
            gone = [i for i, alive in zip(listed, pipe.execute(), strict=True) if not alive]
            if gone:
                self.client.zrem(self.keys.crons, *gone)

    def crons(self) -> list[dict[str, str]]:
        """Every cron job announced on this queue, with its shared state, by next run."""
        with self._unavailable_as_error():
            raw_ids = cast("list[str | bytes]", self.client.zrange(self.keys.crons, 0, -1))
            ids = [_codec.text(i) for i in raw_ids]
            pipe = self.client.pipeline(transaction=False)
            for cron_id in ids:
                pipe.hgetall(self.keys.cron(cron_id))
            states = pipe.execute() if ids else []
        return [
            {"id": cron_id, **{_codec.text(k): _codec.text(v) for k, v in state.items()}}
            for cron_id, state in zip(ids, states, strict=True)
            if state
        ]
