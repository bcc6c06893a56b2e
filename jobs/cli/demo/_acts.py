"""The demo's narrated acts, and the handlers they enqueue jobs for.

Typed payloads, priorities, a delayed job, retries with exponential backoff, a permanent
failure, a timeout, cancelling a running job and a cron job, then the queue's stats.
"""

from __future__ import annotations

import json
import queue as queue_module
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from jobs._client_config import ClientConfig
from jobs.backoff import ExponentialBackoff
from jobs.cli import _format as fmt
from jobs.client import Client
from jobs.config import JobConfig, WorkerPoolConfig
from jobs.errors import PermanentError
from jobs.registry import Registry

if TYPE_CHECKING:
    from jobs.cli.demo._screen import Screen
    from jobs.context import JobContext
    from jobs.job import Job
    from jobs.queue.redis_queue import RedisQueue

#: The longest any one step may take before the demo gives up on it.
STEP_TIMEOUT = 15.0
ACTS = 8


@attrs.frozen
class Email:
    """The demo's typed payload: handlers registered with it receive instances, not dicts."""

    to: str
    subject: str


class Demo:
    """The demo's handlers, the worker pool running them, and the narrated acts.

    Args:
        queue: the queue (under the demo's own key prefix) to run on.
        screen: where the acts are narrated.
    """

    def __init__(self, queue: RedisQueue, screen: Screen) -> None:
        self.screen = screen
        self._lock = threading.Lock()
        self.order: list[str] = []
        self.started: dict[str, list[float]] = {}
        self.events: dict[str, threading.Event] = {}
        self.notes: dict[str, Any] = {}
        self.failures: queue_module.Queue[Job] = queue_module.Queue()
        registry = Registry()
        registry.register("send_email", self.send_email, payload_type=Email)
        for name in ("report", "flaky", "charge_card", "resize_video", "export", "tick"):
            registry.register(name, getattr(self, name))
        self.client = Client(
            ClientConfig(
                queue=queue,
                registry=registry,
                # One worker thread, so that the order jobs run in is easy to follow; a
                # 2 s lease so that a cancellation reaches the handler within 0.5 s.
                worker_pool_config=WorkerPoolConfig(
                    num_workers=1,
                    lease=2,
                    poll_interval=0.5,
                    shutdown_timeout=2,
                    error_handler=lambda job, exc: self.failures.put(job),
                ),
            )
        )

    # -- handlers --------------------------------------------------------------------

    def _mark(self, ctx: JobContext, event: str | None = None) -> None:
        with self._lock:
            self.started.setdefault(ctx.job.id, []).append(time.monotonic())
        if event is not None:
            self.event(event).set()

    def event(self, name: str) -> threading.Event:
        with self._lock:
            return self.events.setdefault(name, threading.Event())

    def send_email(self, ctx: JobContext, email: Email) -> dict[str, str]:
        self._mark(ctx)
        return {"delivered_to": email.to, "payload_arrived_as": type(email).__name__}

    def report(self, ctx: JobContext, payload: dict[str, Any]) -> str:
        self._mark(ctx, f"report:{payload['name']}")
        with self._lock:
            self.order.append(payload["name"])
        ctx.sleep(payload.get("seconds", 0.05))
        return f"report {payload['name']} done"

    def flaky(self, ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        self._mark(ctx)
        if ctx.job.attempts < 3:
            raise ConnectionError(f"{payload['service']} did not answer")
        return {"charged": True, "on_attempt": ctx.job.attempts}

    def charge_card(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self._mark(ctx)
        raise PermanentError(f"card {payload['card'][-4:]} declined: retrying cannot help")

    def resize_video(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self._mark(ctx)
        if not ctx.sleep(30):  # returns early once the token is cancelled
            self.notes["timeout_reason"] = ctx.cancel_reason
            self.event("resize_video:stopped").set()
        ctx.raise_if_cancelled()

    def export(self, ctx: JobContext, payload: dict[str, Any]) -> int:
        self._mark(ctx, "export:running")
        rows = 0
        while rows < payload["rows"] and not ctx.cancelled:
            rows += 1000
            ctx.sleep(0.01)
        self.notes["export_rows"] = rows
        self.notes["export_stopped"] = time.monotonic()
        self.event("export:stopped").set()
        return rows

    def tick(self, ctx: JobContext, payload: dict[str, Any]) -> str:
        self._mark(ctx)
        # A cron job's id is "cron:<cron id>:<fire time, ms>": one job per fire time.
        fired = datetime.fromtimestamp(int(ctx.job.id.rsplit(":", 1)[-1]) / 1000, UTC)
        late = (datetime.now(UTC) - fired).total_seconds()
        with self._lock:
            self.order.append(f"tick:{fired:%H:%M:%S}")
            count = sum(1 for name in self.order if name.startswith("tick:"))
        self.say(f"job {ctx.job.id} ran {late * 1000:.0f} ms after its fire time {fired:%H:%M:%S}")
        if count >= 3:
            self.event("tick:3").set()
        return "tick"

    # -- helpers ---------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.screen.say(f"    {text}")

    def title(self, number: int, name: str, what: str) -> None:
        self.screen.say()
        self.screen.say(f"[{number}/{ACTS}] {name}: {what}")

    def wait_final(self, job_id: str) -> Job:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            job = self.client.get(job_id)
            if job.status.is_final:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {STEP_TIMEOUT:g} s")
            time.sleep(0.02)

    def wait_event(self, name: str) -> None:
        if not self.event(name).wait(STEP_TIMEOUT):
            raise TimeoutError(f"the demo waited {STEP_TIMEOUT:g} s for {name} in vain")

    # -- the acts --------------------------------------------------------------------

    def run(self) -> None:
        for act in (
            self.typed_payloads,
            self.priorities,
            self.delayed,
            self.retries,
            self.permanent_failure,
            self.timeout,
            self.cancel_running,
            self.cron,
        ):
            act()
        self.client.stop()
        self.final_stats()

    def typed_payloads(self) -> None:
        self.title(1, "Typed payloads", "an attrs class in, an instance of it in the handler")
        email = Email(to="ada@example.com", subject="Welcome aboard")
        job_id = self.client.enqueue("send_email", email)
        self.say(f"enqueued send_email with {email!r}: job {_short(job_id)}")
        self.client.start()
        job = self.wait_final(job_id)
        self.say(f"{job.status} with result {json.dumps(job.result)}")

    def priorities(self) -> None:
        self.title(2, "Priorities", "higher priority runs first, FIFO within a priority")
        # Jobs pile up while no worker runs (a deploy, an outage), then it comes back.
        self.client.stop()
        ids = [self.client.enqueue("report", {"name": f"low-{n}"}) for n in (1, 2, 3)]
        ids.append(self.client.enqueue("report", {"name": "urgent"}, JobConfig(priority=10)))
        self.say("with the worker stopped, queued low-1, low-2, low-3 at priority 0,")
        self.say("then urgent at priority 10; now the worker starts again")
        self.client.start()
        for job_id in ids:
            self.wait_final(job_id)
        self.say(f"they ran in this order: {' -> '.join(self.order)}")

    def delayed(self) -> None:
        self.title(3, "A delayed job", "JobConfig(delay=2): not run before now + 2 s")
        enqueued = time.monotonic()
        job_id = self.client.enqueue("report", {"name": "reminder"}, JobConfig(delay=2))
        job = self.client.get(job_id)
        self.say(f"job {_short(job_id)} is {job.status}, due at {fmt.iso(job.run_at)}")
        job = self.wait_final(job_id)
        ran = self.started[job_id][0] - enqueued
        self.say(f"it ran {ran:.1f} s after it was enqueued, and {job.status}")

    def retries(self) -> None:
        backoff = ExponentialBackoff()
        self.title(4, "Retries", "a flaky job fails twice, then succeeds (exponential backoff)")
        config = JobConfig(max_retries=3, retry_backoff=backoff)
        job_id = self.client.enqueue("flaky", {"service": "payments-api"}, config)
        for _ in range(2):
            failed = self._next_failure(job_id)
            n = failed.attempts
            self.say(f"attempt {n} failed: {failed.error} -> retry in {backoff(n):g} s")
        job = self.wait_final(job_id)
        starts = self.started[job_id]
        offsets = ", ".join(f"+{t - starts[0]:.1f} s" for t in starts)
        self.say(f"attempt {job.attempts} {job.status}: {json.dumps(job.result)}")
        self.say(f"the three attempts started at {offsets}")

    def _next_failure(self, job_id: str) -> Job:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            job = self.failures.get(timeout=max(deadline - time.monotonic(), 0.01))
            if job.id == job_id:
                return job

    def permanent_failure(self) -> None:
        self.title(5, "A permanent failure", "PermanentError fails a job at once, no retries")
        config = JobConfig(max_retries=3)
        job_id = self.client.enqueue("charge_card", {"card": "4000000000000002"}, config)
        job = self.wait_final(job_id)
        self.say(f"{job.status} after {job.attempts} attempt of 4 allowed: {job.error}")

    def timeout(self) -> None:
        self.title(6, "A timeout", "JobConfig(timeout=1): the attempt fails at the deadline")
        config = JobConfig(timeout=1, max_retries=0)
        job_id = self.client.enqueue("resize_video", {"file": "holiday.mp4"}, config)
        job = self.wait_final(job_id)
        ran = time.monotonic() - self.started[job_id][0]
        self.wait_event("resize_video:stopped")
        self.say(f"{job.status} after {ran:.1f} s: {job.error}")
        reason = self.notes["timeout_reason"]
        self.say(f"the handler's ctx.sleep returned early: ctx.cancel_reason = {reason}")

    def cancel_running(self) -> None:
        self.title(7, "Cancelling a running job", "client.cancel() reaches the handler's token")
        job_id = self.client.enqueue("export", {"rows": 10_000_000})
        self.wait_event("export:running")
        time.sleep(0.3)
        cancelled_at = time.monotonic()
        self.say(f"export is running; client.cancel(job) -> {self.client.cancel(job_id)}")
        self.wait_event("export:stopped")
        job = self.client.get(job_id)
        latency = self.notes["export_stopped"] - cancelled_at
        rows = self.notes["export_rows"]
        self.say(f"the handler saw ctx.cancelled {latency:.2f} s later, at row {rows:,}")
        self.say(f"the job is {job.status}, and is never retried; its late result is discarded")

    def cron(self) -> None:
        from jobs import CronJob, Every, Scheduler

        self.title(8, "A cron job", "Every(1) fires each second; each fire time enqueued once")
        # No grace: a brand-new cron job would otherwise fire the fire times of the last
        # 10 seconds at once, as if they had been missed by a moment.
        scheduler = Scheduler(self.client, misfire_grace=0)
        scheduler.register(
            CronJob(id="heartbeat", schedule=Every(1), job_type="tick", payload={"from": "cron"})
        )
        with scheduler:
            self.wait_event("tick:3")
        self.say("stopped the scheduler")

    def final_stats(self) -> None:
        self.screen.say()
        self.screen.say("Final stats (client.stats(), or: python -m jobs stats):")
        for line in fmt.stats_lines(self.client.stats()):
            self.say(line)


def _short(job_id: str) -> str:
    return job_id[:8]
