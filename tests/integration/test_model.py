"""Model-based test of the queue: random operation sequences through the real Lua scripts,
checked after every step against a plain-Python model of what they must do.

Hypothesis drives `jobs.queue.redis_queue.RedisQueue` (enqueue, fetch, finish, cancel, reap,
heartbeat, requeue, retry, purge, and fetch, cancel and retry sent again with the request
id of an earlier call, as redis-py does after a lost reply) on a private Redis, with
random priorities, retry budgets, delays, batch sizes and fencing tokens, live or stale.
After each step the whole queue is read back raw (the six index zsets with their scores,
every job hash and its TTL, the stats counters) and compared with the model, and each
job must sit in exactly the one index its status names. A failure prints the shortest
sequence of steps that breaks the contract.

Dependencies (JobConfig.depends_on, and groups and chains through flow.lua) are steps
too: a job enqueued to wait for random existing jobs (live, final, purged, damaged), or a
chain or group created in one call. The model keeps each waiting job's count of
unsettled dependencies and who waits for whom; every finalize (complete, fail, reap,
cancel) releases or cancels the jobs that wait for it, transitively, and the invariant
checks the waiting index and each record's ``deps``/``waits`` fields.

Damage is one more kind of step: a waiting or running job's key overwritten with a
string, or a stats counter with text, as a foreign tool or a hand edit would. No script
may then fail half way: the job is set aside (out of its index, counted in
``damaged_records``), the counter restarts, and everything else goes on.

Flow control: besides the unlimited type ``t``, jobs of type ``r`` are rate limited
(`RATE`: one start per hour, a burst of one) and jobs of type ``c`` capped (`CAP` running
at once). A job fetch meets over its type's limit is parked (still pending, in its type's
held-back list, no attempt counted); the model knows which, which jobs hold a slot, and
whether each type's next look (its score in the ``parked`` zset) is due. "change_cap"
sets another cap (limits.lua), which makes the held-back jobs due.

Time: the scripts read the Redis clock, so the test never waits for it.

- Leases are taken for an hour and delays are an hour, so nothing expires or comes due by
  itself. "expire_lease" and "make_due" instead rewrite one entry's score in the
  processing or scheduled zset to a moment in 1970 (ZADD XX), which is exactly what the
  passing of time would have done; the next reap or fetch then sees it. The library is
  not changed for the test.
- "rate_time_passes" does the same for the rate limit: it sets the type's GCRA timestamp
  (the ``rate`` hash) to 0 and its next look (the ``parked`` zset) to 0, as an hour
  passing would. Slot deadlines (``running:c``) are never aged: a slot is given back only
  by a script (complete, fail, cancel, requeue, reap), which is what the test checks; a
  set-aside job's slot stays taken, as it would until its deadline passed (its reap makes
  every held-back type due, so that the next fetch would drop it).
- Failed and cancelled indexes keep only `KEEP` records (``max_failed_jobs``), dropping the
  oldest by (finish time, id). So that the model knows which is oldest without reading
  clocks, a step that may finish jobs first waits until the Redis clock has moved past the
  previous step's last write (`_tick`): finish times then order like the steps.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any, cast

import attrs
import pytest
import redis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobs import (
    ConfigError,
    JobConfig,
    JobNotFound,
    JobStatus,
    RateLimit,
    RedisQueueConfig,
    TypeLimits,
)
from jobs._codec import CorruptRecord
from jobs.queue._producer import FlowJob, FlowProfile
from jobs.queue._scripts import scripts
from jobs.queue.redis_queue import RedisQueue
from jobs.worker._protocol import Completed, Failed, Leased, LeaseState
from tests.integration._memory_twin import Twin

#: Leases and delays that never run out during a test: only the explicit steps age them.
LONG = timedelta(hours=1)
LONG_MS = 3_600_000
#: max_lost_leases and max_failed_jobs, small so that both limits are reached often.
MAX_LOST = 2
KEEP = 2
#: (1000 - priority) * 2**42 + seq, as ready_score in _lib.lua.
BAND = 4398046511104
PRIORITIES = st.sampled_from([-3, 0, 0, 7])
PICK = st.integers(min_value=0, max_value=10**6)
LOST_ERROR = "lease expired (worker lost)"
FAIL_ERROR = "RuntimeError: boom"

PENDING, SCHEDULED, PROCESSING, WAITING = "pending", "scheduled", "processing", "waiting"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
#: A job whose record is gone (purged, or dropped as the oldest failed/cancelled one).
GONE = "gone"
#: A job whose key a foreign tool overwrote with a string, once a script set it aside: in
#: no index, its key left as it was (before that it keeps its status and index, `damaged`).
SET_ASIDE = "set aside"
INDEXES = (PENDING, SCHEDULED, PROCESSING, COMPLETED, FAILED, CANCELLED, WAITING)
#: The fields of the stats hash the scripts write.
STATS_FIELDS = (
    "total",
    COMPLETED,
    FAILED,
    CANCELLED,
    "retried",
    "lost_leases",
    "rejected",
    "last_processed",
)
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})
#: heartbeat.lua's reply codes, as the model gives them.
CODES = {LeaseState.HELD: 1, LeaseState.CANCELLED: 2, LeaseState.LOST: 0}
#: The held-back lists of the two limited types (read like the indexes).
HELD = ("parked:r", "parked:c")


#: The rate-limited and the capped job type, and their limits (set once per machine).
RATE_TYPE, CAP_TYPE = "r", "c"
RATE = "1/h"
CAP = 2


@attrs.define
class ModelJob:
    """What the model knows of one job; field names follow the Redis record."""

    id: str
    priority: int
    max_retries: int
    status: str
    score: int  # the record's 'score': its place when ready (priority band + sequence)
    attempts: int = 0
    failures: int = 0
    lost: int = 0
    token: str | None = None  # the live lease, while processing
    expired_at: int | None = None  # processing score forced into the past
    due_at: int | None = None  # scheduled score forced into the past
    finished: tuple[int, str] | None = None  # position in a count-trimmed index
    #: (step, status) when a count bound dropped it (status GONE since).
    trimmed: tuple[int, str] | None = None
    error: str | None = None
    written_by: str | None = None  # "c:"/"f:" and the token of the last recorded outcome
    damaged: bool = False  # its key holds a string, not a record
    unique: str | None = None  # the unique key it was enqueued with
    deps: tuple[str, ...] = ()  # the ids it depends on, as given
    waits: int = 0  # the record's 'waits': dependencies not settled yet
    any_outcome: bool = False  # released by any final outcome of a dependency
    delayed: bool = False  # released into 'scheduled', not 'pending'
    type: str = "t"
    parked: bool = False  # pending, held back by its type's limits (parked:<type>)
    slot: bool = False  # in running:c (and its record names the slot), while it holds one


class Model:
    """The queue as the scripts' contracts describe it."""

    def __init__(self) -> None:
        self.jobs: dict[str, ModelJob] = {}
        self.seq = 0
        self.counters: Counter[str] = Counter()
        self.leases: list[tuple[str, str]] = []  # every (id, token) ever handed out
        # Requests that acted, by request id: what each fetch leased; cancels and retries.
        self.fetches: dict[str, list[tuple[str, str]]] = {}
        self.answered: list[tuple[str, str, str]] = []  # ("cancel"/"retry", request, job id)
        self.unique: dict[str, str] = {}  # unique key -> the job that took it last
        #: Job id -> the jobs waiting for it (B..'dependents:'..id).
        self.dependents: dict[str, set[str]] = {}
        self._settle: list[tuple[str, str]] = []  # (id, status) still to settle
        self._settling = False
        self.step = 0
        self.finalized_any = False
        #: A stats counter was overwritten: counts restart, so their sum proves nothing.
        self.counts_damaged = False
        self._past = 1_000
        self._ids = 0
        # Flow control: may the rate-limited type start a job now; is a held-back type's
        # next look due (its score in the parked zset <= now).
        self.rate_ready = True
        self.parked_due: dict[str, bool] = {}
        # Some type has limits (fetch.lua then pops on past held-back and set-aside jobs).
        self.flow = False
        self.cap = CAP

    # -- helpers -------------------------------------------------------------------------

    def new_id(self) -> str:
        self._ids += 1
        return f"j{self._ids:04d}"

    def past(self) -> int:
        """A fresh moment in 1970 (ms): distinct, so ordering among them is by this value."""
        self._past += 1
        return self._past

    def ready_score(self, job: ModelJob) -> int:
        self.seq += 1
        return (1000 - job.priority) * BAND + self.seq

    def in_status(self, *statuses: str) -> list[ModelJob]:
        return [j for j in self.jobs.values() if j.status in statuses]

    def live_leases(self) -> list[tuple[str, str]]:
        return [(j.id, j.token) for j in self.jobs.values() if j.status == PROCESSING and j.token]

    def holds(self, job_id: str, token: str) -> ModelJob | None:
        job = self.jobs.get(job_id)
        if job is not None and job.status == PROCESSING and job.token == token and not job.damaged:
            return job
        return None

    def is_record(self, job_id: str) -> bool:
        """Whether the id has a readable record (not gone, not a damaged key)."""
        job = self.jobs.get(job_id)
        return job is not None and job.status != GONE and not job.damaged

    def set_aside(self, job: ModelJob) -> None:
        self._leave_processing(job)
        job.status = SET_ASIDE
        job.due_at = None
        self.counters["damaged"] += 1

    def pending_order(self) -> list[str]:
        """The pending index: ready jobs not held back, in run order."""
        ready = (j for j in self.in_status(PENDING) if not j.parked)
        return [j.id for j in sorted(ready, key=lambda j: j.score)]

    def pending_listed(self) -> list[str]:
        """What list_jobs('pending') shows: every pending job, held back or not, in order."""
        return [j.id for j in sorted(self.in_status(PENDING), key=lambda j: j.score)]

    # -- flow control ----------------------------------------------------------------------

    def held_back(self, job_type: str) -> list[ModelJob]:
        parked = (j for j in self.in_status(PENDING) if j.parked and j.type == job_type)
        return sorted(parked, key=lambda j: j.score)

    def parked_types(self) -> set[str]:
        return {j.type for j in self.in_status(PENDING) if j.parked}

    def room(self, job_type: str) -> int:
        """How many jobs of the type may start now."""
        if job_type == RATE_TYPE:
            return 1 if self.rate_ready else 0
        if job_type == CAP_TYPE:
            return max(self.cap - sum(1 for j in self.jobs.values() if j.slot), 0)
        return 10**9

    def give_slot(self, job: ModelJob) -> None:
        """give_slot in _lib.lua: a job left processing; its type's held jobs are due."""
        if job.slot:
            job.slot = False
            if self.held_back(job.type):
                self.parked_due[job.type] = True

    def unpark(self) -> None:
        """flow_unpark: held-back jobs of due types go back, as many as may start."""
        for job_type in sorted(self.parked_types()):
            if self.parked_due.get(job_type):
                for job in self.held_back(job_type)[: self.room(job_type)]:
                    job.parked = False
                self.parked_due[job_type] = False

    def set_cap(self, cap: int) -> bool:
        """limits.lua: a changed limit makes the type's held-back jobs due."""
        changed, self.cap = cap != self.cap, cap
        if changed and self.held_back(CAP_TYPE):
            self.parked_due[CAP_TYPE] = True
        return changed

    def rate_time_passes(self) -> None:
        self.rate_ready = True
        if self.held_back(RATE_TYPE):
            self.parked_due[RATE_TYPE] = True

    def _leave_processing(self, job: ModelJob) -> None:
        job.token = None
        job.expired_at = None

    def make_ready(self, job: ModelJob) -> None:
        job.score = self.ready_score(job)
        job.status = PENDING
        job.due_at = None

    def finalize(self, job: ModelJob, status: str) -> None:
        self._leave_processing(job)
        job.status = status
        job.due_at = None
        self.counters[status] += 1
        self.finalized_any = True
        if status != COMPLETED:  # completed records are bounded by age only
            job.finished = (self.step, job.id)
            kept = sorted(self.in_status(status), key=lambda j: j.finished or (0, ""))
            for oldest in kept[: max(0, len(kept) - KEEP)]:
                oldest.trimmed = (self.step, oldest.status)
                oldest.status = GONE
        # Then what waits for it, breadth first, each job's dependents in id order.
        self._settle.append((job.id, status))
        self._settle_all()

    def _settle_all(self) -> None:
        if self._settling:
            return
        self._settling = True
        i = 0
        while i < len(self._settle):
            self._settle_one(*self._settle[i])
            i += 1
        self._settle = []
        self._settling = False

    def _settle_one(self, job_id: str, status: str) -> None:
        for dependent_id in sorted(self.dependents.pop(job_id, set())):
            dependent = self.jobs[dependent_id]
            if dependent.status != WAITING or dependent.damaged:
                continue
            if status == COMPLETED or dependent.any_outcome:
                dependent.waits -= 1
                if dependent.waits <= 0:
                    self.release(dependent)
            else:
                dependent.error = self.reason(job_id, status)
                self.finalize(dependent, CANCELLED)

    @staticmethod
    def reason(job_id: str, status: str) -> str:
        if status == FAILED:
            return f"dependency {job_id} failed"
        return f"dependency {job_id} was " + ("purged" if status == "purged" else "cancelled")

    def release(self, job: ModelJob) -> None:
        job.waits = 0
        if job.delayed:
            job.status = SCHEDULED  # its delay counts from enqueue: an hour away
        else:
            self.make_ready(job)

    # -- operations ----------------------------------------------------------------------

    def promote_due(self) -> None:
        """Make due scheduled jobs ready, earliest first, as promote_due in _lib.lua.

        Every script that hands out FIFO numbers does this first (fetch, enqueue, fail,
        retry): a job that became due before another was enqueued or retried runs first.
        """
        due = sorted(
            (j for j in self.in_status(SCHEDULED) if j.due_at is not None),
            key=lambda j: (j.due_at, j.id),
        )
        for job in due:
            if job.damaged:
                self.set_aside(job)
            else:
                self.make_ready(job)

    def enqueue(
        self, ids: list[str], priority: int, max_retries: int, delayed: bool, job_type: str = "t"
    ) -> list[bool]:
        self.promote_due()
        base = self.seq
        self.seq += len(ids)  # one INCRBY for the batch, whatever gets written
        created = []
        for i, job_id in enumerate(ids):
            existing = self.jobs.get(job_id)
            if existing is not None and existing.status != GONE:
                created.append(False)
                continue
            self.jobs[job_id] = ModelJob(
                id=job_id,
                priority=priority,
                max_retries=max_retries,
                status=SCHEDULED if delayed else PENDING,
                score=(1000 - priority) * BAND + base + i + 1,
                type=job_type,
            )
            self.counters["total"] += 1
            created.append(True)
        return created

    def enqueue_unique(self, ids: list[str], key: str, delayed: bool) -> list[str]:
        """enqueue.lua with a unique key: the first id takes it unless a live job holds it."""
        holder = self.unique_holder(key)
        if holder is not None:
            self.promote_due()
            self.seq += len(ids)
            return [holder] * len(ids)
        created = self.enqueue(ids[:1], 0, 0, delayed)
        self.seq += len(ids) - 1
        if created[0]:
            self.unique[key] = ids[0]
            self.jobs[ids[0]].unique = key
        return [ids[0]] + [ids[0] if created[0] else ids[i] for i in range(1, len(ids))]

    def unique_holder(self, key: str) -> str | None:
        """The live job (readable, not final) that holds a unique key, if any."""
        holder = self.unique.get(key)
        if holder is None or not self.is_record(holder) or self.jobs[holder].unique != key:
            return None
        return holder if self.jobs[holder].status not in FINAL else None

    def fetch(self, n: int) -> list[str]:
        self.promote_due()
        self.unpark()
        leased: list[str] = []
        # Jobs held back do not count towards n: fetch pops on past them.
        while len(leased) < n:
            batch = self.pending_order()[: n - len(leased)]
            if not batch:
                break
            for job_id in batch:
                job = self.jobs[job_id]
                if job.damaged:
                    self.set_aside(job)
                    continue
                if self.room(job.type) < 1:
                    job.parked = True
                    self.parked_due[job.type] = False
                    continue
                if job.type == RATE_TYPE:
                    self.rate_ready = False
                job.slot = job.type == CAP_TYPE
                job.status = PROCESSING
                job.attempts += 1
                leased.append(job_id)
            if not self.flow:
                break  # no type limited: one pop, a set-aside record counts towards n
        return leased

    def fetch_again(self, request: str) -> list[str]:
        """The same fetch sent again: its jobs still held with its tokens, leases renewed."""
        again = [job_id for job_id, token in self.fetches[request] if self.holds(job_id, token)]
        for job_id in again:
            self.jobs[job_id].expired_at = None
        return again

    def lease(self, job_id: str, token: str) -> None:
        self.jobs[job_id].token = token
        self.leases.append((job_id, token))

    def complete(self, job_id: str, token: str) -> bool:
        job = self.holds(job_id, token)
        if job is None:
            known = self.jobs.get(job_id)
            if self.is_record(job_id) and known is not None and known.written_by == f"c:{token}":
                return True  # the same write again (its reply was lost): recorded
            self.counters["rejected"] += 1
            return False
        job.written_by = f"c:{token}"
        self.give_slot(job)
        self.finalize(job, COMPLETED)
        return True

    def fail(self, job_id: str, token: str, delay_ms: int, permanent: bool) -> str:
        job = self.holds(job_id, token)
        if job is None:
            known = self.jobs.get(job_id)
            if known is not None and known.written_by == f"f:{token}":
                if self.is_record(job_id):
                    return known.status  # the same write again: recorded
                if known.trimmed is not None and known.trimmed[0] == self.step:
                    # Dropped by the count bound in this very call: the script trims once,
                    # at the call's end (finish_call), so it still read the record.
                    return known.trimmed[1]
            self.counters["rejected"] += 1
            return ""
        job.written_by = f"f:{token}"
        self.give_slot(job)
        self._leave_processing(job)
        job.error = FAIL_ERROR
        job.failures += 1
        if permanent or job.failures > job.max_retries:
            self.finalize(job, FAILED)
            return FAILED
        self.counters["retried"] += 1
        if delay_ms == 0:
            self.make_ready(job)
            return PENDING
        job.status = SCHEDULED
        return SCHEDULED

    def cancel(self, job: ModelJob) -> bool:
        if job.status in FINAL:
            return False
        if job.status == WAITING:
            for dep in job.deps:
                self.dependents.get(dep, set()).discard(job.id)
        self.give_slot(job)
        job.parked = False
        self.finalize(job, CANCELLED)
        return True

    def create_flow(
        self,
        jobs: list[tuple[str, tuple[str, ...], bool]],
        priority: int,
        delayed: bool,
    ) -> str | None:
        """enqueue.lua with depends_on, or flow.lua: (id, deps, any_outcome) per new job.

        Returns the first unknown dependency (nothing written), else None. Each job's
        dependencies among ``jobs`` come before it.
        """
        here = {job_id for job_id, _, _ in jobs}
        for _, deps, _ in jobs:
            for dep in deps:
                if dep not in here and not self.is_record(dep):
                    return dep
        self.promote_due()
        base = self.seq
        self.seq += len(jobs)
        doomed: list[tuple[ModelJob, str]] = []
        for i, (job_id, deps, any_outcome) in enumerate(jobs):
            unmet: list[str] = []
            first_bad: tuple[str, str] | None = None
            for dep in dict.fromkeys(deps):
                status = self.jobs[dep].status
                if status not in FINAL:
                    unmet.append(dep)
                elif status != COMPLETED and not any_outcome and first_bad is None:
                    first_bad = (dep, status)
            hold = bool(unmet) or first_bad is not None
            job = ModelJob(
                id=job_id,
                priority=priority,
                max_retries=0,
                status=WAITING if hold else (SCHEDULED if delayed else PENDING),
                score=(1000 - priority) * BAND + base + i + 1,
                deps=deps,
                any_outcome=any_outcome,
                delayed=delayed,
            )
            self.jobs[job_id] = job
            self.counters["total"] += 1
            if first_bad is not None:
                doomed.append((job, self.reason(*first_bad)))
            elif unmet:
                job.waits = len(unmet)
                for dep in unmet:
                    self.dependents.setdefault(dep, set()).add(job_id)
        for job, why in doomed:
            if job.status == WAITING:  # not cancelled meanwhile as a dependent
                job.error = why
                self.finalize(job, CANCELLED)
        return None

    def reap(self) -> tuple[int, int]:
        expired = sorted(
            (j for j in self.in_status(PROCESSING) if j.expired_at is not None),
            key=lambda j: (j.expired_at, j.id),
        )
        requeued = failed = 0
        for job in expired:
            if job.damaged:
                self.set_aside(job)
                # Its slot cannot be given back by name: every held-back type is due.
                for job_type in self.parked_types():
                    self.parked_due[job_type] = True
                continue
            self.give_slot(job)
            self._leave_processing(job)
            self.counters["lost_leases"] += 1
            job.lost += 1
            if job.lost >= MAX_LOST:
                job.error = LOST_ERROR
                self.finalize(job, FAILED)
                failed += 1
            else:
                job.status = PENDING  # at its old place: the front of its priority
                requeued += 1
        return requeued, failed

    def heartbeat(self, pairs: list[tuple[str, str]]) -> list[int]:
        codes = []
        for job_id, token in pairs:
            job = self.holds(job_id, token)
            if job is not None:
                job.expired_at = None  # extended: an hour from now again
                codes.append(1)
            elif self.is_record(job_id) and self.jobs[job_id].status == CANCELLED:
                codes.append(2)
            else:
                codes.append(0)
        return codes

    def requeue(self, pairs: list[tuple[str, str]]) -> int:
        count = 0
        for job_id, token in pairs:
            job = self.holds(job_id, token)
            if job is not None:
                self.give_slot(job)
                self._leave_processing(job)
                job.attempts -= 1
                job.status = PENDING
                count += 1
        return count

    def retry(self, job: ModelJob) -> bool:
        if job.status not in (FAILED, CANCELLED):
            return False
        self.promote_due()
        # Counted again wherever it ends; a count never goes below 0 (one restarted
        # after damage has nothing to take back).
        if self.counters[job.status] > 0:
            self.counters[job.status] -= 1
        job.failures = job.lost = 0
        job.finished = None
        self.make_ready(job)
        if job.unique is not None and self.unique_holder(job.unique) in (None, job.id):
            self.unique[job.unique] = job.id
        return True

    def purge(self, status: str) -> int:
        doomed = self.in_status(status)
        if status not in FINAL:
            self.counters["purged_unfinished"] += len(doomed)
        for job in doomed:
            job.status = GONE
            job.parked = False
        # What waited for them is settled as for a cancel, the purged in id order.
        self._settle += [(job.id, "purged") for job in sorted(doomed, key=lambda j: j.id)]
        self._settle_all()
        return len(doomed)


def _choose(items: list[Any], pick: int) -> Any:
    return items[pick % len(items)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def make_machine(url: str, twin: bool = False) -> type[RuleBasedStateMachine]:
    """The state machine class, bound to the test's private Redis.

    ``twin``: every call also goes to jobs.testing.MemoryQueue, which must answer alike
    and hold the same state; the steps it does not model (dependencies, flows, rate
    limits and caps: it refuses them) are left out.
    """

    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.twin = twin
            self.redis = redis.Redis.from_url(url)
            queue = RedisQueue(
                RedisQueueConfig(
                    client=self.redis,
                    name=f"model-{uuid.uuid4().hex[:8]}",
                    max_lost_leases=MAX_LOST,
                    max_failed_jobs=KEEP,
                )
            )
            self.queue: Any = Twin(queue, self.redis) if twin else queue
            self.keys = self.queue.keys
            # Every script cached up front: with only some cached, a pipeline of two
            # scripts runs the cached one first (see test_noscript_recovery_keeps_order).
            for script in vars(scripts()).values():
                self.redis.script_load(script.source)
            self.model = Model()
            self.last_write_ms = 0
            if not twin:
                self.model.flow = True
                self.queue.set_limits(
                    {
                        RATE_TYPE: TypeLimits(rate_limit=RateLimit.parse(RATE)),
                        CAP_TYPE: TypeLimits(max_concurrency=CAP),
                    }
                )

        def teardown(self) -> None:
            self.redis.close()

        # -- plumbing --------------------------------------------------------------------

        def _redis_ms(self) -> int:
            seconds, micros = self.redis.time()
            return int(seconds) * 1000 + int(micros) // 1000

        def _tick(self) -> None:
            """Let the Redis clock pass the previous step's writes (see the module doc)."""
            self.model.step += 1
            while self._redis_ms() <= self.last_write_ms:
                time.sleep(0.0002)

        def _running(self) -> list[ModelJob]:
            return [j for j in self.model.in_status(PROCESSING) if not j.damaged]

        def _finish(
            self,
            completions: list[tuple[str, str]],
            failures: list[tuple[str, str, str]],
        ) -> None:
            self._tick()
            fails = [
                Failed(
                    Leased(job_id, token),
                    error=FAIL_ERROR,
                    traceback="Traceback: ...",
                    delay_ms=0 if kind == "retry_now" else LONG_MS,
                    permanent=kind == "permanent",
                )
                for job_id, token, kind in failures
            ]
            written = self.queue.write(
                [*(Completed(Leased(i, t), b'"ok"') for i, t in completions), *fails]
            )
            done, failed = written[: len(completions)], written[len(completions) :]
            # complete.lua runs before fail.lua in the pipeline: the model follows suit.
            expected_done = [self.model.complete(i, t) for i, t in completions]
            if fails:
                self.model.promote_due()
            expected_failed = [
                self.model.fail(f.leased.job_id, f.leased.token, f.delay_ms, f.permanent)
                for f in fails
            ]
            assert [o.recorded for o in done] == expected_done
            assert [o.recorded for o in failed] == [bool(s) for s in expected_failed]
            assert [o.status for o in failed] == expected_failed

        # -- producers -------------------------------------------------------------------

        @rule(
            n=st.integers(1, 3),
            priority=PRIORITIES,
            max_retries=st.integers(0, 2),
            delayed=st.booleans(),
        )
        def enqueue(self, n: int, priority: int, max_retries: int, delayed: bool) -> None:
            ids = [self.model.new_id() for _ in range(n)]
            self._enqueue(ids, priority, max_retries, delayed, fresh=True)

        @precondition(lambda self: self.model.jobs)
        @rule(pick=PICK, priority=PRIORITIES, delayed=st.booleans())
        def enqueue_existing_id(self, pick: int, priority: int, delayed: bool) -> None:
            # A deterministic id (as cron uses) enqueues at most once while its record lives.
            job_id = _choose(sorted(self.model.jobs), pick)
            self._enqueue([job_id, self.model.new_id()], priority, 1, delayed)

        @rule(n=st.integers(1, 3), key=st.sampled_from(["u1", "u2"]), delayed=st.booleans())
        def enqueue_unique(self, n: int, key: str, delayed: bool) -> None:
            # A unique key: nothing new while the job that took it is live (not final,
            # not gone); the rest of the batch resolves to that job.
            ids = [self.model.new_id() for _ in range(n)]
            config = JobConfig(
                max_retries=0, delay=LONG if delayed else 0, timeout=None, unique_key=key
            )
            got = self.queue.enqueue("t", ids, [b"{}"] * n, config)
            assert got == self.model.enqueue_unique(ids, key, delayed)

        @precondition(lambda self: not self.twin)
        @rule(
            n=st.integers(1, 3),
            job_type=st.sampled_from([RATE_TYPE, CAP_TYPE]),
            priority=PRIORITIES,
            max_retries=st.integers(0, 2),
            delayed=st.booleans(),
        )
        def enqueue_limited(
            self, n: int, job_type: str, priority: int, max_retries: int, delayed: bool
        ) -> None:
            ids = [self.model.new_id() for _ in range(n)]
            self._enqueue(ids, priority, max_retries, delayed, job_type)

        def _enqueue(
            self,
            ids: list[str],
            priority: int,
            max_retries: int,
            delayed: bool,
            job_type: str = "t",
            *,
            fresh: bool = False,
        ) -> None:
            config = JobConfig(
                priority=priority,
                max_retries=max_retries,
                delay=LONG if delayed else 0,
                timeout=None,
            )
            # Without a unique key every payload keeps its own id, new or not; the state
            # check after the step tells whether the script created the right ones.
            # ``fresh``: new ids, as a Client's (enqueue_plain.lua checks once per call).
            got = self.queue.enqueue(job_type, ids, [b"{}"] * len(ids), config, fresh=fresh)
            assert got == ids
            self.model.enqueue(ids, priority, max_retries, delayed, job_type)

        def _dependencies(self, picks: list[int], unknown: bool) -> tuple[str, ...]:
            # Any known id (live, final, purged or damaged), and maybe one never written.
            known = sorted(self.model.jobs)
            deps = [_choose(known, pick) for pick in picks] if known else []
            # Repeats dropped, as JobConfig.depends_on drops them.
            return tuple(dict.fromkeys([*deps, *(["never-written"] if unknown else [])]))

        @precondition(lambda self: not self.twin)
        @rule(
            n=st.integers(1, 2),
            picks=st.lists(PICK, min_size=1, max_size=2),
            unknown=st.sampled_from([False, False, False, True]),
            any_outcome=st.booleans(),
            priority=PRIORITIES,
            delayed=st.booleans(),
        )
        def enqueue_dependent(
            self,
            n: int,
            picks: list[int],
            unknown: bool,
            any_outcome: bool,
            priority: int,
            delayed: bool,
        ) -> None:
            deps = self._dependencies(picks, unknown)
            if not deps:
                return
            ids = [self.model.new_id() for _ in range(n)]
            config = JobConfig(
                priority=priority,
                max_retries=0,
                delay=LONG if delayed else 0,
                timeout=None,
                depends_on=deps,
                depends_on_any_outcome=any_outcome,
            )
            self._tick()  # a dependency that failed already cancels them at once
            missing = self.model.create_flow(
                [(job_id, deps, any_outcome) for job_id in ids], priority, delayed
            )
            if missing is not None:
                with pytest.raises(JobNotFound, match=missing):
                    self.queue.enqueue("t", ids, [b"{}"] * n, config)
                return
            assert self.queue.enqueue("t", ids, [b"{}"] * n, config) == ids

        @precondition(lambda self: not self.twin)
        @rule(
            kind=st.sampled_from(["chain", "group"]),
            n=st.integers(1, 3),
            picks=st.lists(PICK, max_size=1),
            unknown=st.sampled_from([False, False, False, True]),
            priority=PRIORITIES,
            delayed=st.booleans(),
        )
        def enqueue_flow(
            self,
            kind: str,
            n: int,
            picks: list[int],
            unknown: bool,
            priority: int,
            delayed: bool,
        ) -> None:
            # flow.lua: a chain (each after the one before, the first after the external
            # dependencies) or a group (each member after them, a callback after all).
            external = self._dependencies(picks, unknown)
            ids = [self.model.new_id() for _ in range(n)]
            plan: list[tuple[str, tuple[str, ...], bool]] = []
            if kind == "chain":
                for i, job_id in enumerate(ids):
                    plan.append((job_id, (ids[i - 1],) if i else external, False))
            else:
                plan = [(job_id, external, False) for job_id in ids]
                plan.append((self.model.new_id(), tuple(ids), True))
            base = JobConfig(
                priority=priority, max_retries=0, delay=LONG if delayed else 0, timeout=None
            )
            profiles = [
                FlowProfile("t", base, declared=False, strict=False),
                FlowProfile(
                    "t",
                    attrs.evolve(base, depends_on_any_outcome=True),
                    declared=False,
                    strict=False,
                ),
            ]
            jobs = [
                FlowJob(job_id, 1 if any_outcome else 0, b"{}", deps)
                for job_id, deps, any_outcome in plan
            ]
            self._tick()
            missing = self.model.create_flow(plan, priority, delayed)
            if missing is not None:
                with pytest.raises(JobNotFound, match=missing):
                    self.queue.enqueue_flow(profiles, jobs)
                return
            self.queue.enqueue_flow(profiles, jobs)

        # -- workers ---------------------------------------------------------------------

        @rule(n=st.integers(1, 4))
        def fetch(self, n: int) -> None:
            request = uuid.uuid4().hex
            fetched = self.queue.fetch(n, LONG, request=request)
            expected = self.model.fetch(n)
            assert [j.job_id for j in fetched.jobs] == expected
            issued = {t for _, t in self.model.leases}
            for leased in fetched.jobs:
                assert leased.token not in issued, "a lease token was handed out twice"
                assert _text(leased.fields["status"]) == PROCESSING
                assert (
                    int(leased.fields.get("attempts", 0)) == self.model.jobs[leased.job_id].attempts
                )
                self.model.lease(leased.job_id, leased.token)
            if fetched.jobs:
                self.model.fetches[request] = [(j.job_id, j.token) for j in fetched.jobs]
            assert (fetched.next_due_ms is None) == self._nothing_due()

        def _nothing_due(self) -> bool:
            """No scheduled job and no held-back type: an idle pool may wait for ever."""
            return not self.model.in_status(SCHEDULED) and not self.model.parked_types()

        @precondition(lambda self: not self.twin)
        @rule()
        def rate_time_passes(self) -> None:
            # As if the rate limit's hour had passed (see the module doc).
            self.redis.hset(self.keys.rate, RATE_TYPE, "0")
            self.redis.zadd(self.keys.parked, {RATE_TYPE: 0}, xx=True)
            self.model.rate_time_passes()

        @precondition(lambda self: not self.twin)
        @rule(cap=st.integers(1, 3))
        def change_cap(self, cap: int) -> None:
            # An operator (or a pool starting with other declarations) changes the cap;
            # the jobs running over a lowered cap keep their slots.
            limits = TypeLimits(max_concurrency=cap)
            assert self.queue.set_limits({CAP_TYPE: limits}) == self.model.set_cap(cap)

        @precondition(lambda self: self.model.fetches)
        @rule(pick=PICK, n=st.integers(0, 4))
        def fetch_sent_again(self, pick: int, n: int) -> None:
            # Its reply was lost: the same jobs if still held, nothing new, whatever n.
            request = _choose(sorted(self.model.fetches), pick)
            fetched = self.queue.fetch(n, LONG, request=request)
            expected = self.model.fetch_again(request)
            assert [j.job_id for j in fetched.jobs] == expected
            tokens = dict(self.model.fetches[request])
            for leased in fetched.jobs:
                assert leased.token == tokens[leased.job_id]
                job = self.model.jobs[leased.job_id]
                assert int(leased.fields.get("attempts", 0)) == job.attempts
            assert (fetched.next_due_ms is None) == self._nothing_due()

        @precondition(lambda self: self.model.live_leases())
        @rule(
            picks=st.lists(
                st.tuples(
                    PICK, st.sampled_from(["complete", "retry_now", "retry_later", "permanent"])
                ),
                min_size=1,
                max_size=3,
            )
        )
        def finish_live(self, picks: list[tuple[int, str]]) -> None:
            self._finish_from(self.model.live_leases(), picks)

        @precondition(lambda self: self.model.leases)
        @rule(
            picks=st.lists(
                st.tuples(
                    PICK, st.sampled_from(["complete", "retry_now", "retry_later", "permanent"])
                ),
                min_size=1,
                max_size=3,
            )
        )
        def finish_any_token(self, picks: list[tuple[int, str]]) -> None:
            # Mostly stale tokens: late writes of workers whose lease is gone.
            self._finish_from(self.model.leases, picks)

        def _finish_from(self, leases: list[tuple[str, str]], picks: list[tuple[int, str]]) -> None:
            completions, failures = [], []
            for pick, kind in picks:
                job_id, token = _choose(leases, pick)
                if kind == "complete":
                    completions.append((job_id, token))
                else:
                    failures.append((job_id, token, kind))
            self._finish(completions, failures)

        @precondition(lambda self: self.model.in_status(PROCESSING))
        @rule(pick=PICK)
        def expire_lease(self, pick: int) -> None:
            job = _choose(self.model.in_status(PROCESSING), pick)
            at = self.model.past()
            # As if the lease's hour had passed without a heartbeat.
            assert self.redis.zadd(self.keys.processing, {job.id: at}, xx=True) == 0
            if self.twin:  # mirror on the memory queue what was written in Redis
                self.queue.set_score(PROCESSING, job.id, at)
            job.expired_at = at

        @precondition(lambda self: self.model.in_status(PROCESSING))
        @rule(pick=PICK)
        def lose_lease(self, pick: int) -> None:
            # The common case in one step: a worker died and a reaper noticed.
            self.expire_lease(pick)
            self.reap()

        @rule()
        def reap(self) -> None:
            self._tick()
            assert self.queue.reap() == self.model.reap()

        @precondition(lambda self: self.model.leases)
        @rule(picks=st.lists(PICK, max_size=4), reap=st.booleans())
        def heartbeat(self, picks: list[int], reap: bool) -> None:
            pairs = [_choose(self.model.leases, p) for p in picks]
            self._tick()
            _, states, next_expiry = self.queue.heartbeat(
                "pool-1",
                {"hostname": "h", "pid": 1, "num_workers": 1, "in_flight": len(pairs)},
                timedelta(seconds=30),
                [Leased(i, t) for i, t in pairs],
                LONG,
                reap=reap,
            )
            assert [CODES[s] for s in states] == self.model.heartbeat(pairs)
            if reap:
                self.model.reap()
                assert (next_expiry is None) == (not self.model.in_status(PROCESSING))

        @precondition(lambda self: self.model.leases)
        @rule(picks=st.lists(PICK, min_size=1, max_size=3), live_only=st.booleans())
        def requeue(self, picks: list[int], live_only: bool) -> None:
            # What a stopping pool does with the jobs it holds.
            leases = (self.model.live_leases() if live_only else []) or self.model.leases
            pairs = [_choose(leases, p) for p in picks]
            count = self.queue.requeue([Leased(i, t) for i, t in pairs])
            assert count == self.model.requeue(pairs)

        @precondition(lambda self: any(j.due_at is None for j in self.model.in_status(SCHEDULED)))
        @rule(pick=PICK)
        def make_due(self, pick: int) -> None:
            job = _choose([j for j in self.model.in_status(SCHEDULED) if j.due_at is None], pick)
            at = self.model.past()
            assert self.redis.zadd(self.keys.scheduled, {job.id: at}, xx=True) == 0
            if self.twin:  # mirror on the memory queue what was written in Redis
                self.queue.set_score(SCHEDULED, job.id, at)
            job.due_at = at

        @precondition(lambda self: any(not j.damaged for j in self.model.in_status(*INDEXES[:3])))
        @rule(pick=PICK)
        def damage_record(self, pick: int) -> None:
            # A string where a waiting or running job's hash was (a foreign tool, a hand
            # edit): WRONGTYPE on any command. The next script that meets the id in an
            # index sets it aside; every other call reads it as "no such job".
            live = [j for j in self.model.in_status(*INDEXES[:3]) if not j.damaged]
            job = _choose(sorted(live, key=lambda j: j.id), pick)
            self.redis.delete(self.keys.job(job.id))
            self.redis.set(self.keys.job(job.id), "not a hash")
            if self.twin:  # mirror on the memory queue what was written in Redis
                self.queue.damage_record(job.id)
            job.damaged = True

        @rule(field=st.sampled_from(STATS_FIELDS))
        def damage_stats(self, field: str) -> None:
            # A counter overwritten by hand or by another tool: no script may fail on it
            # half way (reap did, stranding the job it had taken out of 'processing').
            # It restarts from 0, and reads as 0 (or None) until then.
            self.redis.hset(self.keys.stats, field, "n/a")
            if self.twin:  # mirror on the memory queue what was written in Redis
                self.queue.damage_counter(field)
            self.model.counts_damaged = True
            if field == "last_processed":
                self.model.finalized_any = False
            else:
                self.model.counters[field] = 0

        # -- operators -------------------------------------------------------------------

        @precondition(lambda self: self.model.jobs)
        @rule(pick=PICK)
        def cancel(self, pick: int) -> None:
            job = _choose(sorted(self.model.jobs.values(), key=lambda j: j.id), pick)
            self._tick()
            if not self.model.is_record(job.id):
                with pytest.raises(JobNotFound):
                    self.queue.cancel(job.id)
                return
            request = uuid.uuid4().hex
            cancelled = self.model.cancel(job)
            assert self.queue.cancel(job.id, request=request) == cancelled
            if cancelled:
                self.model.answered.append(("cancel", request, job.id))

        @precondition(lambda self: self._running())
        @rule(pick=PICK)
        def cancel_running(self, pick: int) -> None:
            # Its worker still holds a token: the next heartbeat must say "cancelled".
            job = _choose(self._running(), pick)
            self._tick()
            assert self.queue.cancel(job.id) is True
            self.model.cancel(job)

        @precondition(lambda self: self.model.jobs)
        @rule(pick=PICK)
        def retry(self, pick: int) -> None:
            job = _choose(sorted(self.model.jobs.values(), key=lambda j: j.id), pick)
            if not self.model.is_record(job.id):
                with pytest.raises(JobNotFound):
                    self.queue.retry(job.id)
                return
            request = uuid.uuid4().hex
            retried = self.model.retry(job)
            assert self.queue.retry(job.id, request=request) == retried
            if retried:
                self.model.answered.append(("retry", request, job.id))

        @precondition(lambda self: self.model.answered)
        @rule(pick=PICK)
        def cancel_or_retry_sent_again(self, pick: int) -> None:
            # The first answer (True), and no change, whatever became of the job since:
            # retried, finished again, purged.
            kind, request, job_id = _choose(self.model.answered, pick)
            self._tick()
            send = self.queue.cancel if kind == "cancel" else self.queue.retry
            assert send(job_id, request=request) is True

        @precondition(lambda self: self.model.in_status(FAILED, CANCELLED))
        @rule(pick=PICK)
        def retry_finished(self, pick: int) -> None:
            job = _choose(self.model.in_status(FAILED, CANCELLED), pick)
            assert self.queue.retry(job.id) is True
            self.model.retry(job)

        @rule(status=st.sampled_from(INDEXES))
        def purge(self, status: str) -> None:
            if status == PROCESSING:
                with pytest.raises(ConfigError):
                    self.queue.purge(status)
                return
            self._tick()  # purging what others wait for cancels them
            assert self.queue.purge(status) == self.model.purge(status)

        @precondition(lambda self: self.model.jobs)
        @rule(pick=PICK)
        def read_back(self, pick: int) -> None:
            # The public read paths agree with the raw structures the invariant checks.
            # A damaged key still in its index is skipped: it is no job to show.
            for status in INDEXES:
                listed = [j.id for j in self.queue.list_jobs(status, limit=1000)]
                if status == PENDING:
                    expected = [i for i in self.model.pending_listed() if self.model.is_record(i)]
                    assert listed == expected
                else:
                    expected = [j.id for j in self.model.in_status(status) if not j.damaged]
                    assert sorted(listed) == sorted(expected)
            job = _choose(sorted(self.model.jobs.values(), key=lambda j: j.id), pick)
            if job.status == GONE:
                with pytest.raises(JobNotFound):
                    self.queue.get(job.id)
                return
            if job.damaged:
                with pytest.raises(CorruptRecord, match="not a job record"):
                    self.queue.get(job.id)
                return
            got = self.queue.get(job.id)
            assert (got.status, got.attempts, got.lost_leases, got.priority, got.max_retries) == (
                JobStatus(job.status),
                job.attempts,
                job.lost,
                job.priority,
                job.max_retries,
            )
            assert got.error == job.error

        # -- the check after every step --------------------------------------------------

        @invariant()
        def memory_queue_matches_scripts(self) -> None:
            if self.twin:
                self.queue.assert_same_state(sorted(self.model.jobs))

        @invariant()
        def queue_matches_model(self) -> None:
            k = self.keys
            ids = sorted(self.model.jobs)
            pipe = self.redis.pipeline(transaction=False)
            for name in INDEXES:
                pipe.zrange(getattr(k, name), 0, -1, withscores=True)
            for name in HELD:
                pipe.zrange(k.held(name[len("parked:") :]), 0, -1, withscores=True)
            for job_id in ids:
                pipe.hgetall(k.job(job_id))
                pipe.pttl(k.job(job_id))
            pipe.time()
            replies = pipe.execute(raise_on_error=False)
            seconds, micros = replies[-1]
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            self.last_write_ms = now_ms
            indexes = {
                name: [(_text(m), int(s)) for m, s in reply]
                for name, reply in zip(INDEXES + HELD, replies[: len(INDEXES + HELD)], strict=True)
            }
            records = replies[len(INDEXES + HELD) : -1]

            # Each job in exactly the index its status names; a gone job in none.
            where: dict[str, list[str]] = {}
            for name, entries in indexes.items():
                for member, _ in entries:
                    where.setdefault(member, []).append(name)
            assert set(where) <= set(ids), f"unknown ids indexed: {set(where) - set(ids)}"
            for job_id in ids:
                job = self.model.jobs[job_id]
                expected = [] if job.status in (GONE, SET_ASIDE) else [job.status]
                if job.parked:
                    expected = [f"parked:{job.type}"]
                assert where.get(job_id, []) == expected, (job_id, where.get(job_id), job)

            # The indexes' contents, order and scores.
            assert [m for m, _ in indexes[PENDING]] == self.model.pending_order()
            for member, score in indexes[PENDING] + indexes[HELD[0]] + indexes[HELD[1]]:
                assert score == self.model.jobs[member].score
            for member, score in indexes[WAITING]:
                assert score == self.model.jobs[member].score
            self._check_flow(now_ms)
            scheduled_at = dict(indexes[SCHEDULED])
            for member, score in indexes[SCHEDULED]:
                due_at = self.model.jobs[member].due_at
                assert score == due_at if due_at is not None else score > now_ms
            for member, score in indexes[PROCESSING]:
                expired_at = self.model.jobs[member].expired_at
                assert score == expired_at if expired_at is not None else score > now_ms
            assert len(indexes[FAILED]) <= KEEP
            assert len(indexes[CANCELLED]) <= KEEP

            # Every record.
            for index, job_id in enumerate(ids):
                job = self.model.jobs[job_id]
                raw, ttl = records[2 * index], records[2 * index + 1]
                if job.status == GONE:
                    assert raw == {} and ttl == -2, (job_id, raw)
                    continue
                if job.damaged:  # left as it was found, whatever happened to its id
                    assert isinstance(raw, redis.ResponseError) and ttl == -1, (job_id, raw)
                    assert self.redis.get(k.job(job_id)) == b"not a hash"
                    continue
                fields = {_text(f): _text(v) for f, v in raw.items()}
                if job.status == SCHEDULED and job.due_at is None:
                    # The record says when it is due, as its index does.
                    assert int(fields["run_at"]) == scheduled_at[job_id], (job_id, fields)
                assert fields["status"] == job.status
                assert json.loads(fields.get("deps", "[]")) == list(job.deps), (job_id, job)
                assert int(fields.get("waits", 0)) == job.waits, (job_id, job)
                assert (fields.get("after") == "any") == job.any_outcome
                got = (
                    int(fields.get("attempts", 0)),
                    int(fields.get("failures", 0)),
                    int(fields.get("lost", 0)),
                    int(fields["score"]),
                )
                assert got == (job.attempts, job.failures, job.lost, job.score), (job_id, job)
                assert fields.get("lease") == (job.token if job.status == PROCESSING else None)
                assert fields.get("slot") == (job.type if job.slot else None), (job_id, job)
                assert fields.get("error") == job.error
                # Final records expire on their own; live ones never may.
                assert (ttl > 0) if job.status in FINAL else (ttl == -1), (job_id, ttl)

            stats = self.queue.stats()
            c = self.model.counters
            assert (
                stats.total_jobs,
                stats.pending_jobs,
                stats.scheduled_jobs,
                stats.processing_jobs,
                stats.completed_jobs,
                stats.failed_jobs,
                stats.cancelled_jobs,
                stats.retried_attempts,
                stats.lost_leases,
                stats.rejected_writes,
                stats.damaged_records,
                stats.waiting_jobs,
                stats.throttled_jobs,
            ) == (
                c["total"],
                len(self.model.in_status(PENDING)),
                len(self.model.in_status(SCHEDULED)),
                len(self.model.in_status(PROCESSING)),
                c[COMPLETED],
                c[FAILED],
                c[CANCELLED],
                c["retried"],
                c["lost_leases"],
                c["rejected"],
                c["damaged"],
                len(self.model.in_status(WAITING)),
                sum(len(self.model.held_back(t)) for t in (RATE_TYPE, CAP_TYPE)),
            )
            # Each job counts once: where it is, in the final state it last reached, or
            # set aside (unless a damaged counter restarted from 0).
            assert self.model.counts_damaged or stats.total_jobs == (
                stats.completed_jobs
                + stats.failed_jobs
                + stats.cancelled_jobs
                + stats.pending_jobs
                + stats.scheduled_jobs
                + stats.processing_jobs
                + stats.waiting_jobs
                + c["purged_unfinished"]
                + c["damaged"]
            )
            assert (stats.last_processed is not None) == self.model.finalized_any

        def _check_flow(self, now_ms: int) -> None:
            """The held-back types, when each is looked at next, and the cap's slots."""
            k = self.keys
            raw = cast(
                "list[tuple[bytes, float]]", self.redis.zrange(k.parked, 0, -1, withscores=True)
            )
            parked = {_text(m): s for m, s in raw}
            assert set(parked) == self.model.parked_types()
            for name, score in parked.items():
                assert (score <= now_ms) == self.model.parked_due[name], (name, score)
            members = cast("list[bytes]", self.redis.zrange(k.running(CAP_TYPE), 0, -1))
            slots = {_text(m) for m in members}
            assert slots == {j.id for j in self.model.jobs.values() if j.slot}
            assert len(slots) <= 3 or any(self.model.jobs[i].damaged for i in slots)

    return QueueMachine


_SETTINGS = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    # The explain phase traces every line of a failing run again and again: minutes
    # against Redis. Shrinking alone gives a short enough counterexample.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)


# A passing run takes a few seconds; a failing one needs more to shrink its counterexample.
@pytest.mark.timeout(180)
def test_queue_scripts_follow_the_model(redis_url: str) -> None:
    run_state_machine_as_test(make_machine(redis_url), settings=_SETTINGS)


@pytest.mark.timeout(180)
def test_memory_queue_follows_the_scripts(redis_url: str) -> None:
    before = Twin.compared
    run_state_machine_as_test(make_machine(redis_url, twin=True), settings=_SETTINGS)
    # The same sequences ran against jobs.testing.MemoryQueue, compared call by call.
    assert Twin.compared - before > 1000


def test_noscript_recovery_records_every_call(redis_client: redis.Redis) -> None:
    # Found by the model test: a fresh (or restarted, or SCRIPT FLUSHed) server may hold
    # some scripts and not others. The calls a pipeline carries touch different jobs (a
    # pool never completes and fails one attempt), so the calls that hit NOSCRIPT may run
    # after the others; what matters is that every one of them runs, once.
    queue = RedisQueue(RedisQueueConfig(client=redis_client, name="noscript"))
    queue.enqueue("t", ["a", "b"], [b"{}", b"{}"], JobConfig(max_retries=0))
    leased = {job.job_id: job.token for job in queue.fetch(2, LONG).jobs}
    redis_client.script_flush()
    redis_client.script_load(scripts().fail.source)
    written = queue.write(
        [
            Completed(Leased("a", leased["a"]), b'"ok"'),
            Failed(Leased("b", leased["b"]), FAIL_ERROR, "", 0, permanent=False),
        ]
    )
    assert [o.recorded for o in written] == [True, True]
    assert queue.get("a").status is JobStatus.COMPLETED
    assert queue.get("b").status is JobStatus.FAILED
    # One NOSCRIPT loads every script, so a restarted server is not half-loaded for long.
    assert all(redis_client.script_exists(*(s.sha for s in scripts().all())))


def test_a_due_job_keeps_its_fifo_place_ahead_of_later_writes(redis_client: redis.Redis) -> None:
    # A delayed job, or one waiting out a retry backoff, was given its FIFO number only when
    # a fetch promoted it: while every pool was busy, jobs enqueued (or retried) after it
    # was due ran first. Whatever hands out FIFO numbers now promotes what is due first.
    queue = RedisQueue(RedisQueueConfig(client=redis_client, name="fifo"))
    keys = queue.keys

    def become_due(job_id: str) -> None:
        # As if its hour had passed (see the module doc: the test never waits for time).
        assert redis_client.zadd(keys.scheduled, {job_id: 1000}, xx=True) == 0

    delayed = JobConfig(delay=LONG, timeout=None, max_retries=1)
    queue.enqueue("t", ["x"], [b"{}"], delayed)
    become_due("x")
    queue.enqueue("t", ["y"], [b"{}"], JobConfig(timeout=None))
    assert [j.job_id for j in queue.fetch(2, LONG).jobs] == ["x", "y"]

    # A backed-off retry that became due, then a job failed and retried at once.
    queue.enqueue("t", ["a", "b"], [b"{}", b"{}"], JobConfig(timeout=None, max_retries=1))
    tokens = {j.job_id: j.token for j in queue.fetch(2, LONG).jobs}
    queue.write([Failed(Leased("a", tokens["a"]), FAIL_ERROR, "", LONG_MS, permanent=False)])
    become_due("a")
    queue.write([Failed(Leased("b", tokens["b"]), FAIL_ERROR, "", 0, permanent=False)])
    assert [j.job_id for j in queue.fetch(2, LONG).jobs] == ["a", "b"]

    # A job due before a manual retry runs before the retried one.
    queue.enqueue("t", ["c"], [b"{}"], JobConfig(timeout=None, max_retries=0))
    (c,) = queue.fetch(1, LONG).jobs
    queue.write([Failed(c, FAIL_ERROR, "", 0, permanent=True)])
    queue.enqueue("t", ["d"], [b"{}"], delayed)
    become_due("d")
    assert queue.retry("c") is True
    assert [j.job_id for j in queue.fetch(2, LONG).jobs] == ["d", "c"]
