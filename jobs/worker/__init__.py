"""The worker runtime: a pool of threads that runs jobs leased from a queue.

The runtime sees its queue only through ``_protocol.WorkerQueue`` (lease, extend, write,
hand back, wait for work, wake, reap), which also names the values they trade and keeps
the glossary (`Leased`, `Attempt`, `Outcome`, `Written`, `LeaseState`). `RedisQueue`
implements it for Redis, `jobs.testing.MemoryQueue` in memory.

``_pool`` is the pool's lifecycle (start, stop), assembled from one part per
responsibility on the shared state of ``_core``: ``_fetcher`` leases jobs, ``_slots``
runs them, ``_reports`` logs written outcomes and queues hooks. An attempt
(``_attempt``) is one run of one leased job; ``_outbox`` writes outcomes back (one write
loop, for the writer thread and the fetcher); ``_heartbeat`` extends the leases of held
jobs and the pool's presence; ``_watchdog`` enforces timeouts. ``_events`` is what the
pool tells an observer (metrics).
"""

from jobs.worker._events import AttemptResult, Interruption, WorkerEvents

__all__ = ["AttemptResult", "Interruption", "WorkerEvents"]
