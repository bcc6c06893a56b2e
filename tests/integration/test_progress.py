"""JobContext.progress: reported by a handler, stored with the heartbeat, read from anywhere."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import jobs
from tests.helpers import wait_until
from tests.integration._clients import make_client


def test_progress_is_readable_while_the_job_runs(redis_url: str) -> None:
    release = threading.Event()

    def export(ctx: jobs.JobContext, payload: Any) -> str:
        ctx.progress(0.25)
        ctx.progress(0.5, "halfway")
        release.wait(20)
        return "done"

    registry = jobs.Registry()
    registry.register_func("export", export)
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("export")
        assert client.get(job_id).progress in (None, (0.25, None), (0.5, "halfway"))
        # Stored by the pool's next heartbeat (every lease/3, at most 0.5 s): no poll of
        # the handler, no extra round trip.
        wait_until(lambda: client.get(job_id).progress == (0.5, "halfway"), 5)
        release.set()
        assert client.wait(job_id, timeout=10).result == "done"


def test_a_retry_starts_without_progress(redis_url: str) -> None:
    second = threading.Event()
    seen: list[tuple[float, str | None] | None] = []

    def flaky(ctx: jobs.JobContext, payload: Any) -> str:
        if ctx.job.attempts == 1:
            ctx.progress(0.9, "almost")
            wait_until(lambda: client.get(ctx.job.id).progress == (0.9, "almost"), 5)
            raise RuntimeError("fell over")
        seen.append(client.get(ctx.job.id).progress)
        second.set()
        return "ok"

    registry = jobs.Registry()
    registry.register_func("flaky", flaky)
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("flaky", None, config)
        assert client.wait(job_id, timeout=20).result == "ok"
    assert seen == [None]


def test_bad_progress_values_raise() -> None:
    token = jobs.CancellationToken()
    job = jobs.Job(id="j", type="t", payload=None, status=jobs.JobStatus.PROCESSING)
    ctx = jobs.JobContext(job, token, logging.getLogger("jobs.job"))
    for fraction in (-0.1, 1.5, "half", True, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            ctx.progress(fraction)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="message"):
        ctx.progress(0.5, 3)  # type: ignore[arg-type]
    ctx.progress(1)  # no pool behind it: nothing to store, no error
