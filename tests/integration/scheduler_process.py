"""A cron scheduler in its own process, for tests/integration/test_scheduler.py.

Run as::

    python tests/integration/scheduler_process.py --redis-url URL --queue NAME \
        --cron-id ID [--interval SECONDS] [--grace SECONDS]

It registers ``CronJob(id=ID, schedule=Every(interval), job_type="tick")``, starts the
scheduler, prints ``READY`` on stdout, and on SIGTERM or SIGINT stops it and prints
``FIRED <ms>,<ms>,...``: the fire times whose claim this process won (fire_cron returned
fired), so the test can check that no two processes fired the same time. Then it exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

import jobs

if TYPE_CHECKING:
    from datetime import timedelta
    from types import FrameType


class CountingQueue(jobs.RedisQueue):
    """A RedisQueue that remembers the fire times its fire_cron calls won, and lost."""

    def __init__(self, config: jobs.RedisQueueConfig) -> None:
        super().__init__(config)
        self.fired: list[int] = []
        self.refused: list[int] = []

    @classmethod
    def connect(cls, url: str, name: str) -> CountingQueue:
        """`RedisQueue.from_url`, typed as this class."""
        queue = cls.from_url(url, name=name)
        assert isinstance(queue, cls)
        return queue

    def fire_cron(
        self,
        cron_id: str,
        fire_ms: int,
        next_ms: int | None,
        job: tuple[str, str, bytes, jobs.JobConfig],
        state_ttl: timedelta,
    ) -> tuple[bool, int]:
        fired, last = super().fire_cron(cron_id, fire_ms, next_ms, job, state_ttl)
        (self.fired if fired else self.refused).append(fire_ms)
        return fired, last


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--cron-id", required=True)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--grace", type=float, default=2.0, help="misfire_grace, seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.DEBUG,
        stream=sys.stderr,
        format=f"%(asctime)s pid={os.getpid()} %(name)s %(levelname)s %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    queue = CountingQueue.connect(args.redis_url, args.queue)
    scheduler = jobs.Scheduler(queue, misfire_grace=args.grace)
    scheduler.register(
        jobs.CronJob(id=args.cron_id, schedule=jobs.Every(args.interval), job_type="tick")
    )
    scheduler.start()
    print("READY", flush=True)
    while not stop.wait(0.5):  # a timed wait lets the signal handler run
        pass
    scheduler.stop()
    queue.close()
    print("FIRED " + ",".join(map(str, queue.fired)), flush=True)


if __name__ == "__main__":
    main()
