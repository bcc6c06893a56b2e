"""``jobs`` under benchmark: a worker process (run as a script) and the harness's adapter.

``python jobs_worker.py --threads T`` builds ``jobs.RedisQueue.from_url($BENCH_REDIS_URL)``,
a `jobs.Registry` with the three benchmark bodies, and a `jobs.Client` with
``WorkerPoolConfig(num_workers=T)`` and otherwise default settings; it starts the pool and
stops it gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import workloads
from peers import Adapter

import jobs

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from peers import Body


class JobsAdapter(Adapter):
    name = "jobs"

    def __init__(self, url: str, count_dir: Path, log_dir: Path) -> None:
        super().__init__(url, count_dir, log_dir)
        self.queue = jobs.RedisQueue.from_url(url)
        self.client = jobs.Client(jobs.ClientConfig(queue=self.queue))
        self.enqueue_bulk = self._enqueue_bulk

    def version(self) -> str:
        return jobs.__version__

    def enqueue_one(self, body: Body, arg: int) -> None:
        self.client.enqueue(body, arg)

    def _enqueue_bulk(self, body: Body, args: Sequence[int]) -> None:
        self.client.enqueue_many(body, args)

    def worker_argv(self, processes: int, threads: int) -> list[list[str]]:
        script = os.path.abspath(__file__)
        return [[sys.executable, script, "--threads", str(threads)] for _ in range(processes)]

    def stats(self) -> jobs.QueueStats:
        return self.client.stats()

    def close(self) -> None:
        self.queue.close()


ADAPTER = JobsAdapter


def _handler(body: str) -> jobs.registry.Handler:
    function = workloads.BODY_FUNCTIONS[body]

    def handle(ctx: jobs.JobContext, payload: Any) -> None:
        function(payload)

    return handle


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    registry = jobs.Registry()
    for body in workloads.BODY_FUNCTIONS:
        registry.register_func(body, _handler(body))
    queue = jobs.RedisQueue.from_url(os.environ[workloads.URL_ENV])
    client = jobs.Client(
        jobs.ClientConfig(
            queue=queue,
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(num_workers=args.threads),
        )
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client.start()
    try:
        stop.wait()
    finally:
        client.stop()
        queue.close()


if __name__ == "__main__":
    main()
