"""`WorkerQueue`: everything a worker pool asks of a queue, and the values they trade.

The seam between the worker runtime (`jobs.worker`) and a queue implementation: the
pool, its heartbeat, outbox and watchdog see only this protocol, never the store behind
it. `RedisQueue` implements it (`jobs.queue._worker_side`), and so does the in-memory
`jobs.testing.MemoryQueue`, which runs the pool in unit tests without a server.

Glossary of a job's life inside a pool (one name per concept):

- `Leased`: a job as a fetch hands it out (id, lease token, raw record fields); also
  the handle every later call about that lease passes back (extend, write, requeue).
- `Fetched`: everything one fetch returned.
- `jobs.worker._attempt.Attempt`: one run of a leased job in this process.
- `Outcome` (`Completed` or `Failed`): what an attempt decided, to be written.
- `Written`: how the queue answered one written outcome.
- `LeaseState`: what extending a lease found (held, cancelled, lost).

Errors: every method raises `jobs.RedisUnavailable` (a `jobs.JobsError`) when the
queue's store cannot be reached or refuses the call for now; an implementation maps
its own errors in one place. Anything else raised is a bug, a permission the store
refuses (the operator's to fix; Redis: ``NoPermissionError``), or an outcome that
cannot be encoded (`write` raises that before anything is written).
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping, Sequence
    from datetime import timedelta

    from jobs._limits import TypeLimits


# The per-job values below are NamedTuples: several are built for every job on the hot
# path, and a tuple is the cheapest immutable record Python has.


class Leased(NamedTuple):
    """A leased job: its id, the lease token that fences it, and its record's fields."""

    job_id: str
    token: str
    #: Empty in a handle made from an id and a token.
    fields: Mapping[str, Any] = MappingProxyType({})


class Fetched(NamedTuple):
    """What one fetch returned."""

    now_ms: int  #: the queue's clock when it answered (ms since the epoch)
    #: When the earliest scheduled job is due (the queue's ms), or None.
    next_due_ms: int | None
    jobs: list[Leased]
    #: Whether ready jobs were left after this fetch (the queue has a backlog).
    more: bool = False


class Completed(NamedTuple):
    """An attempt's outcome: its handler returned ``value``, encoded as ``result``."""

    leased: Leased
    result: bytes
    #: The handler's return value (for the success hook; not written).
    value: Any = None


class Failed(NamedTuple):
    """An attempt's outcome: it failed for good, or is retried after ``delay_ms``."""

    leased: Leased
    error: str
    traceback: str
    delay_ms: int
    permanent: bool
    #: What the attempt raised (for the error hook; not written).
    exc: BaseException | None = None


#: What an attempt decided.
Outcome = Completed | Failed


class Written(NamedTuple):
    """How the queue answered one written outcome."""

    recorded: bool  #: False: the lease was no longer held, nothing was written
    status: str  #: the job's status now ("completed", "failed", "pending", "scheduled")
    now_ms: int  #: the queue's clock when it wrote
    run_at_ms: int  #: when a retry is due (ms), or 0


class LeaseState(enum.Enum):
    """What extending one lease found."""

    HELD = "held"  #: still held, and extended
    CANCELLED = "cancelled"  #: the job was cancelled: stop working on it
    LOST = "lost"  #: the lease expired or was taken over: the job is no longer ours


class Beat(NamedTuple):
    """What one heartbeat of a pool returned."""

    now_ms: int  #: the queue's clock
    leases: list[LeaseState]  #: one per held job, in order
    #: When the earliest lease left in the queue expires (the queue's ms), or None.
    next_expiry_ms: int | None


class WorkerQueue(Protocol):
    """What a worker pool asks of a queue: lease, extend, write, hand back, wait, reap."""

    @property
    def name(self) -> str:
        """The queue's name."""
        ...

    @property
    def address(self) -> str:
        """Where the queue lives, for messages."""
        ...

    @property
    def max_result_bytes(self) -> int:
        """The largest result (encoded) the queue accepts."""
        ...

    @property
    def reply_timeout(self) -> float | None:
        """How long a call may take to answer before it fails (s); None: no bound."""
        ...

    def sibling(self, name: str) -> WorkerQueue:
        """The queue called ``name`` in the same store (for pools serving several)."""
        ...

    def fetch(self, count: int, lease: timedelta, *, request: str | None = None) -> Fetched:
        """Promote due jobs, then lease up to ``count`` ready jobs (best first).

        ``request``: the fetch's id (default: a fresh one). A fetch sent again with the
        id of one that ran leases nothing new: it returns what the first one leased.
        """
        ...

    def exchange(
        self,
        outcomes: Sequence[Outcome],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> tuple[list[Written], Fetched | None]:
        """`write` these outcomes and `fetch` up to ``count`` jobs in one call.

        No fetch when ``count`` is 0 and no ``request`` is given; a ``request`` of a
        fetch whose answer never came fetches even with ``count`` 0, to collect its jobs.
        The replies are in the order of ``outcomes``.
        """
        ...

    def begin_exchange(
        self,
        outcomes: Sequence[Outcome],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> Callable[[], tuple[list[Written], Fetched | None]]:
        """`exchange`, sent now: the function returned waits for its answer.

        Meanwhile the caller goes on with other work (a queue that cannot send ahead
        runs the exchange here and the function only returns its answer). The function
        must be called once, and raises what `exchange` raises.
        """
        ...

    def write(self, outcomes: Sequence[Outcome]) -> list[Written]:
        """Record finished attempts, each fenced by its lease; one reply per outcome."""
        ...

    def heartbeat(
        self,
        pool_id: str,
        info: Mapping[str, Any],
        record_ttl: timedelta,
        held: Sequence[Leased],
        lease: timedelta,
        *,
        reap: bool = True,
        first: bool = False,
        trim: bool = False,
        progress: Sequence[str] = (),
    ) -> Beat:
        """Refresh the pool's record, extend its leases and (optionally) reap.

        ``first``: the pool's first beat (it also prunes the records of dead pools).
        ``trim``: the reap also drops index entries of expired finished records.
        ``progress``: per held job, its new progress (JSON) to store, or '' for none.
        """
        ...

    def extend(self, pool_id: str, held: Sequence[Leased], lease: timedelta) -> list[LeaseState]:
        """Extend these leases only (no record, no reap): what each one found."""
        ...

    def requeue(self, held: Sequence[Leased]) -> int:
        """Hand held jobs back to the front of the queue, attempts not counted; how many."""
        ...

    def reap(self, *, trim: bool = False) -> tuple[int, int]:
        """Return expired leases to the queue now; (requeued, failed for too many losses)."""
        ...

    def best_ready_priority(self) -> int | None:
        """The priority of the best job ready to run now, or None if none is.

        Raises:
            RedisUnavailable: the queue cannot be reached.
        """
        ...

    def wait_for_work(self, pool_id: str, timeout: float, also: Sequence[WorkerQueue] = ()) -> bool:
        """Block until there may be work on this queue or ``also``, or ``timeout`` passes.

        True when woken (`wake_pool`), when a job is ready, or when some of ``also``
        cannot be waited on together with this queue (the pool then polls them).
        """
        ...

    def wait_and_fetch(
        self, pool_id: str, timeout: float, count: int, lease: timedelta, request: str
    ) -> tuple[bool, Fetched]:
        """`wait_for_work` on this queue alone, then `fetch`, in one round trip if it can.

        Returns whether a wake-up ended the wait (not the timeout), and what was fetched.

        Raises:
            RedisUnavailable: the queue cannot be reached (the fetch may have run: send
                it again with the same ``request``).
        """
        ...

    def wake_pool(self, pool_id: str) -> None:
        """Wake the pool blocked in `wait_for_work` (so that stopping it is immediate)."""
        ...

    def forget_pool(self, pool_id: str) -> None:
        """Remove a stopped pool's record."""
        ...

    def declare_types(self, declarations: Mapping[str, str]) -> None:
        """Publish the pool's job types and their declared settings."""
        ...

    def warn_if_evicting(self, logger: logging.Logger) -> None:
        """Log a warning if the store may evict the queue's keys."""
        ...

    def publish_limits(self, declared: Mapping[str, TypeLimits]) -> int:
        """Put the job types' declared rate limits and caps in force.

        The queue's own overrides win. Returns how many types' limits changed.
        """
        ...
