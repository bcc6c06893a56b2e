"""RQ under benchmark: ``Queue.enqueue`` / ``enqueue_many``, ``rq worker`` with SimpleWorker.

RQ runs one job at a time per worker process (its default ``Worker`` forks a child per
job; ``SimpleWorker`` runs it in the worker process, the faster of the two), so it has no
thread count: "1 process" is one SimpleWorker and "2 processes" two of them.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from peers import Adapter, venv_script

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from peers import Body


class RQAdapter(Adapter):
    name = "rq"
    threaded = False

    def __init__(self, url: str, count_dir: Path, log_dir: Path) -> None:
        super().__init__(url, count_dir, log_dir)
        import redis
        import rq

        self._rq: Any = rq
        self.connection = redis.Redis.from_url(url)
        self.queue: Any = rq.Queue("default", connection=self.connection)
        self.enqueue_bulk = self._enqueue_bulk

    def version(self) -> str:
        return metadata.version("rq")

    def enqueue_one(self, body: Body, arg: int) -> None:
        self.queue.enqueue(f"workloads.{body}", arg)

    def _enqueue_bulk(self, body: Body, args: Sequence[int]) -> None:
        prepare = self._rq.Queue.prepare_data
        self.queue.enqueue_many([prepare(f"workloads.{body}", (arg,)) for arg in args])

    def worker_argv(self, processes: int, threads: int) -> list[list[str]]:
        argv = [
            venv_script("rq"),
            "worker",
            "--worker-class",
            "rq.worker.SimpleWorker",
            "--url",
            self.url,
            "--logging_level",
            "WARNING",
            "default",
        ]
        return [argv for _ in range(processes)]

    def close(self) -> None:
        self.connection.close()


ADAPTER = RQAdapter
