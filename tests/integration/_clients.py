"""Building in-process Clients for the integration tests, always torn down.

`make_client` gives each test a queue with its own name on the test's private Redis and
a worker pool tuned for speed (1 s lease, 0.1 s poll, short shutdown wait), and makes
sure the pool is stopped and the queue's connections closed however the test ends: a
leaked thread or socket would fail a later test instead of this one.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis

import jobs
from tests.helpers import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Pool settings that keep the tests fast; any of them can be overridden per test.
FAST_POOL: dict[str, Any] = {
    "num_workers": 2,
    "lease": 1,
    "poll_interval": 0.1,
    "shutdown_timeout": 2,
    # A handler a test leaves blocked (ignoring its token) holds stop() this long.
    "shutdown_grace": 0.5,
}


def unique_name(stem: str = "q") -> str:
    """A queue name no other test uses (the server is shared by the session)."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@contextmanager
def make_client(
    redis_url: str,
    registry: jobs.Registry | None = None,
    *,
    name: str | None = None,
    prefix: str = "jobs",
    start: bool = True,
    queue_options: dict[str, Any] | None = None,
    **pool_kwargs: Any,
) -> Iterator[jobs.Client]:
    """A Client on a fresh queue (or on queue ``name``), stopped and closed on exit.

    The pool starts at once when there is a registry and ``start`` is true; pass
    ``start=False`` to enqueue first and call ``client.start()`` later.
    """
    queue = jobs.RedisQueue.from_url(
        redis_url, name=name or unique_name(), prefix=prefix, **(queue_options or {})
    )
    try:
        client = jobs.Client(
            jobs.ClientConfig(
                queue=queue,
                registry=registry,
                worker_pool_config=jobs.WorkerPoolConfig(**{**FAST_POOL, **pool_kwargs}),
            )
        )
        try:
            if start and registry is not None:
                client.start()
            yield client
        finally:
            client.stop()
    finally:
        queue.close()


def wait_for_status(
    client: jobs.Client, job_id: str, *statuses: jobs.JobStatus, timeout: float = 5.0
) -> jobs.Job:
    """Poll until the job is in one of ``statuses``; the job as then read."""

    def reached() -> jobs.Job | None:
        job = client.get(job_id)
        return job if job.status in statuses else None

    job = wait_until(
        reached,
        timeout=timeout,
        message=f"job {job_id} never reached {[str(s) for s in statuses]}",
    )
    assert job is not None
    return job


def jobs_threads() -> list[threading.Thread]:
    """The live threads a worker pool started (all are named ``jobs-*``)."""
    return [t for t in threading.enumerate() if t.name.startswith("jobs-")]


def wait_no_jobs_threads(timeout: float = 5.0) -> None:
    """Wait until every ``jobs-*`` thread has ended (abandoned handlers included)."""
    wait_until(
        lambda: not jobs_threads(),
        timeout=timeout,
        message="jobs-* threads still alive",
    )


class Gate:
    """A handler that blocks until the test opens the gate, ignoring its token.

    ``entered`` is set on each call (the job ids it ran are kept in ``job_ids``), so a
    test knows the handler is running before it acts. Leaving ``with gate:`` opens it.
    """

    def __init__(self, result: object = "late") -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()
        self.job_ids: list[str] = []
        self.contexts: list[jobs.JobContext] = []
        self._result = result

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Always let the handler go, so no test leaves a blocked thread behind.
        self.release.set()

    def __call__(self, ctx: jobs.JobContext, payload: object) -> object:
        self.job_ids.append(ctx.job.id)
        self.contexts.append(ctx)
        self.entered.set()
        # A bounded wait: a test that forgets to open the gate still ends.
        self.release.wait(30)
        self.returned.set()
        return self._result


def recorder() -> tuple[list[Any], Callable[[jobs.JobContext, Any], Any]]:
    """A handler that appends each payload it runs to a list and returns it."""
    seen: list[Any] = []
    lock = threading.Lock()

    def handler(ctx: jobs.JobContext, payload: Any) -> Any:
        with lock:
            seen.append(payload)
        return payload

    return seen, handler


class DoomedPool(redis.ConnectionPool):
    """A connection pool whose next ``doomed`` connections handed out die just after.

    The server closes each (``CLIENT KILL``) once it left the pool: what a client sees
    when a restart or a kill closes its connections one after the other, and it took
    one from the pool before its close could be seen.
    """

    doomed = 0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connection from the pool, killed by the server if it is doomed."""
        connection: Any = super().get_connection(*args, **kwargs)
        if self.doomed:
            self.doomed -= 1
            connection.send_command("CLIENT", "ID")
            victim = connection.read_response()
            where = self.connection_kwargs
            with redis.Redis(host=where["host"], port=where["port"]) as killer:
                assert killer.client_kill_filter(_id=victim) == 1
        return connection
