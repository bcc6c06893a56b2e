"""The Redis key schema of one queue; `jobs/queue/lua/_lib.lua` documents what each key holds.

Every key of a queue starts with the hash tag ``{prefix:name}``, so a queue lives in one
Redis Cluster slot (its scripts touch one node) while different queues spread out.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class QueueKeys:
    """Key names for one queue, computed once (they sit on every hot path)."""

    base: str
    pending: str
    scheduled: str
    processing: str
    completed: str
    failed: str
    cancelled: str
    stats: str
    seq: str
    lease_seq: str
    wake: str
    workers: str
    job_prefix: str
    worker_prefix: str
    cron_prefix: str
    crons: str
    finished: str
    types: str
    history_prefix: str
    waiting: str
    dependents_prefix: str
    limits: str
    rate: str
    parked: str

    @classmethod
    def for_queue(cls, prefix: str, name: str) -> QueueKeys:
        """The keys of queue ``name`` under the namespace ``prefix``."""
        base = f"{{{prefix}:{name}}}:"
        return cls(
            base=base,
            pending=base + "pending",
            scheduled=base + "scheduled",
            processing=base + "processing",
            completed=base + "completed",
            failed=base + "failed",
            cancelled=base + "cancelled",
            stats=base + "stats",
            seq=base + "seq",
            lease_seq=base + "lease_seq",
            wake=base + "wake",
            workers=base + "workers",
            job_prefix=base + "job:",
            worker_prefix=base + "worker:",
            cron_prefix=base + "cron:",
            crons=base + "crons",
            # A pub/sub channel, not a key: see finish_call in _lib.lua.
            finished=base + "finished",
            types=base + "types",
            history_prefix=base + "history:",
            waiting=base + "waiting",
            dependents_prefix=base + "dependents:",
            limits=base + "limits",
            rate=base + "rate",
            parked=base + "parked",
        )

    def job(self, job_id: str) -> str:
        """The hash holding one job's record."""
        return self.job_prefix + job_id

    def dependents(self, job_id: str) -> str:
        """The hash whose fields name the jobs waiting for ``job_id`` (`JobConfig.depends_on`)."""
        return self.dependents_prefix + job_id

    def worker(self, pool_id: str) -> str:
        """The hash holding one worker pool's registry record."""
        return self.worker_prefix + pool_id

    def cron(self, cron_id: str) -> str:
        """The hash holding one cron job's shared state (its claim: the last fire time)."""
        return self.cron_prefix + cron_id

    def request(self, request_id: str) -> str:
        """The short-lived record of one request (what it did, should it be sent again)."""
        return f"{self.base}req:{request_id}"

    def unique(self, key: str) -> str:
        """The string naming the job that holds a `JobConfig.unique_key`."""
        return f"{self.base}unique:{key}"

    def history(self, minute: int) -> str:
        """The hash counting what happened in one minute (ms since the epoch // 60000)."""
        return f"{self.history_prefix}{minute}"

    def pool_wake(self, pool_id: str) -> str:
        """A list only one pool blocks on, so that stopping it is immediate."""
        return f"{self.base}wake:{pool_id}"

    def held(self, job_type: str) -> str:
        """The zset of one job type's ready jobs held back by its limits (parked)."""
        return f"{self.base}parked:{job_type}"

    def running(self, job_type: str) -> str:
        """The zset of one capped job type's jobs holding a concurrency slot."""
        return f"{self.base}running:{job_type}"


#: A ready job's place in its queue is (1000 - priority) * READY_BAND + its FIFO number
#: (ready_score in _lib.lua): one band per priority.
READY_BAND = 4398046511104  # 2**42


def priority_of_score(score: float) -> int:
    """The priority a ready job's place (``ready_score``) stands for."""
    return 1000 - int(score // READY_BAND)
