"""A worker pool in its own process, for the fault tests (tests/integration/test_faults.py).

Run as::

    python tests/integration/worker_process.py --redis-url URL --queue NAME \
        --workers N --lease SECONDS [--shutdown-timeout S] [--max-lost-leases K] \
        [--record-url URL]

It prints ``READY`` on stdout once the pool runs, and stops gracefully on SIGTERM or
SIGINT, then exits 0. Every handler leaves its trace in Redis (never on stdout), so the
test process measures what really ran even when this process was SIGKILLed halfway:

- ``record``: appends ``{"id", "attempt", "pid"}`` to the list ``t:ran`` and returns
  ``{"pid": pid}``; an optional ``payload["delay"]`` (seconds, not cancellable) comes first;
- ``sleep``: ``ctx.sleep(payload["seconds"])``, then records like ``record``; if it is
  cancelled it returns without recording;
- ``block``: waits for its token, then appends ``{"id", "reason", "pid"}`` to
  ``t:cancelled``;
- ``hang``: ignores its token (``time.sleep``), then records;
- ``crash``: ends this process at once with exit code 1 (a poison pill).
- ``capped`` (declared with ``max_concurrency=--cap`` when given): appends
  ``{"id", "attempt", "pid", "at"}`` (this host's clock, s) to ``t:started``, sleeps
  ``payload["seconds"]`` on its first attempt only (not cancellable), then records like
  ``record``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

import jobs

if TYPE_CHECKING:
    from types import FrameType

RAN_KEY = "t:ran"
CANCELLED_KEY = "t:cancelled"
STARTED_KEY = "t:started"
#: How long a handler keeps trying to leave its trace while Redis is away.
RECORD_PATIENCE = 60.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", required=True, help="the queue's Redis")
    parser.add_argument("--queue", required=True, help="the queue's name")
    parser.add_argument("--workers", type=int, default=2, help="handler threads")
    parser.add_argument("--lease", type=float, default=1.0, help="lease, seconds")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="seconds")
    parser.add_argument("--shutdown-timeout", type=float, default=5.0, help="seconds")
    parser.add_argument("--max-lost-leases", type=int, default=5)
    parser.add_argument("--cap", type=int, default=None, help="max_concurrency of 'capped'")
    parser.add_argument(
        "--record-url",
        default=None,
        help="the Redis that t:ran and t:cancelled go to (default: --redis-url); a test "
        "that pauses the queue's Redis can still see what handlers did",
    )
    return parser.parse_args(argv)


class Recorder:
    """Appends handler traces to Redis lists through its own client, riding out outages."""

    def __init__(self, url: str) -> None:
        # Fail fast and retry here rather than inside redis-py, so that a handler keeps
        # trying for as long as RECORD_PATIENCE whatever the client's defaults are.
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def push(self, key: str, entry: dict[str, Any]) -> None:
        data = json.dumps(entry)
        deadline = time.monotonic() + RECORD_PATIENCE
        pause = 0.05
        while True:
            try:
                self._client.rpush(key, data)
                return
            except (redis.ConnectionError, redis.TimeoutError):
                # Not acknowledged: the push may or may not have happened, and pushing
                # again at worst leaves a duplicate, which the tests count as a re-run.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def close(self) -> None:
        self._client.close()


def _registry(recorder: Recorder, cap: int | None = None) -> jobs.Registry:
    registry = jobs.Registry()

    def ran(ctx: jobs.JobContext) -> dict[str, Any]:
        pid = os.getpid()
        recorder.push(RAN_KEY, {"id": ctx.job.id, "attempt": ctx.job.attempts, "pid": pid})
        return {"pid": pid}

    def record(ctx: jobs.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        delay = float(payload.get("delay", 0))
        if delay > 0:
            time.sleep(delay)
        return ran(ctx)

    def sleep(ctx: jobs.JobContext, payload: dict[str, Any]) -> dict[str, Any] | None:
        if not ctx.sleep(float(payload["seconds"])):
            return None
        return ran(ctx)

    def block(ctx: jobs.JobContext, payload: dict[str, Any]) -> None:
        while not ctx.cancelled:
            ctx.sleep(0.05)
        reason = str(ctx.cancel_reason)
        recorder.push(CANCELLED_KEY, {"id": ctx.job.id, "reason": reason, "pid": os.getpid()})

    def hang(ctx: jobs.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(payload["seconds"]))
        return ran(ctx)

    def crash(ctx: jobs.JobContext, payload: dict[str, Any]) -> None:
        os._exit(1)

    registry.register_func("record", record)
    registry.register_func("sleep", sleep)
    registry.register_func("block", block)
    registry.register_func("hang", hang)
    registry.register_func("crash", crash)

    def capped(ctx: jobs.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        attempt = ctx.job.attempts
        entry = {"id": ctx.job.id, "attempt": attempt, "pid": os.getpid(), "at": time.time()}
        recorder.push(STARTED_KEY, entry)
        if attempt == 1:
            time.sleep(float(payload["seconds"]))
        return ran(ctx)

    # Only when asked: the clock-skew tests run this file under an installed jobs too.
    if cap is None:
        registry.register_func("capped", capped)
    else:
        registry.register("capped", capped, max_concurrency=cap)
    return registry


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s pid={os.getpid()} %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before READY, so a test may signal us as soon as it has read it.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    recorder = Recorder(args.record_url or args.redis_url)
    queue = jobs.RedisQueue.from_url(
        args.redis_url, name=args.queue, max_lost_leases=args.max_lost_leases
    )
    client = jobs.Client(
        jobs.ClientConfig(
            queue=queue,
            registry=_registry(recorder, args.cap),
            worker_pool_config=jobs.WorkerPoolConfig(
                num_workers=args.workers,
                lease=args.lease,
                poll_interval=args.poll_interval,
                shutdown_timeout=args.shutdown_timeout,
            ),
        )
    )
    client.start()
    print("READY", flush=True)
    # A timed wait keeps the main thread returning to the interpreter, where the signal
    # handler runs, even on platforms where a blocked lock acquire is not interruptible.
    while not stop.wait(0.5):
        pass
    logging.getLogger("jobs.test").info("signal received, stopping")
    client.stop()
    queue.close()
    recorder.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: a handler that ignores its token ("hang") still runs in a pool thread,
    # and interpreter exit joins every ThreadPoolExecutor thread (concurrent.futures
    # registers that at exit), so the process would outlive stop() by the rest of the
    # handler's sleep. stop() has already handed the job back to the queue.
    os._exit(0)


if __name__ == "__main__":
    main()
