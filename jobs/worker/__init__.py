"""The worker runtime: a pool of threads that runs jobs leased from a queue.

``_pool`` owns the threads: a fetcher that leases jobs, the slots that run them; an
attempt (``_attempt``) is one run of one held job; ``_outbox`` writes outcomes back;
``_heartbeat`` extends the leases of held jobs and the pool's presence; ``_watchdog``
enforces timeouts and cancellations. ``_events`` is what it tells an observer (metrics).
"""

from jobs.worker._events import AttemptResult, Interruption, WorkerEvents

__all__ = ["AttemptResult", "Interruption", "WorkerEvents"]
