"""``jobs`` under benchmark: a worker process (run as a script) and the harness's adapters.

``python jobs_worker.py --threads T [--queue NAME]`` builds
``jobs.RedisQueue.from_url($BENCH_REDIS_URL, name=NAME)`` (a ``redis+cluster://`` URL
too), the registry of ``jobs_app.py`` (the three benchmark bodies), and a `jobs.Client`
with ``WorkerPoolConfig(num_workers=T)`` and otherwise default settings; it starts the
pool and stops it gracefully on SIGTERM or SIGINT. With ``$BENCH_JOBS_METRICS`` set
(``run.py --jobs-metrics``) the pool also counts into `jobs.metrics.WorkerMetrics`.

`JobsAdapter` starts one such process per worker process; `SupervisedJobsAdapter`
instead starts the library's own supervisor, ``python -m jobs worker --processes N``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

import workloads
from jobs_app import registry
from peers import Adapter, Workers

import jobs

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from peers import Body


#: Set (by ``run.py --jobs-metrics``): the worker pools count into `WorkerMetrics`.
METRICS_ENV = "BENCH_JOBS_METRICS"


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


class SupervisedWorkers(Workers):
    """A supervisor's process: its exit code, and whether it left a child behind."""

    def __init__(self, workers: Workers) -> None:
        super().__init__(workers.procs, workers.logs, workers.stop_signal)
        self.started = workers.started
        self.leftover_children = 0

    def stop(self, timeout: float = 30.0) -> None:
        children = workloads.process_tree(self.pids)[1:]
        super().stop(timeout)
        # The supervisor puts each child in a session of its own, out of reach of the
        # process-group kill that ends a worker which did not stop in time.
        for child in children:
            with contextlib.suppress(Exception):
                if child.is_running() and child.status() != "zombie":
                    self.leftover_children += 1
                    child.kill()

    @property
    def exit_code(self) -> int | None:
        return self.procs[0].returncode


class SupervisedJobsAdapter(JobsAdapter):
    """``jobs`` workers run by the library's own ``python -m jobs worker --processes N``."""

    def __init__(self, url: str, count_dir: Path, log_dir: Path) -> None:
        super().__init__(url, count_dir, log_dir)
        self.last: SupervisedWorkers | None = None

    def worker_argv(self, processes: int, threads: int) -> list[list[str]]:
        return [
            [
                sys.executable, "-m", "jobs", "worker", "jobs_app:registry",
                "--redis-url", self.url, "--processes", str(processes),
                "--workers", str(threads), "--log-level", "warning",
            ]
        ]  # fmt: skip

    def start_workers(self, processes: int, threads: int) -> Workers:
        self.last = SupervisedWorkers(super().start_workers(processes, threads))
        return self.last


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--queue", default="default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    queue = jobs.RedisQueue.from_url(os.environ[workloads.URL_ENV], name=args.queue)
    events = None
    if os.environ.get(METRICS_ENV):
        from prometheus_client import CollectorRegistry

        from jobs.metrics import WorkerMetrics

        events = WorkerMetrics(CollectorRegistry())
    client = jobs.Client(
        jobs.ClientConfig(
            queue=queue,
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(num_workers=args.threads, events=events),
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
