"""Celery under benchmark: ``task.delay`` / ``group(...).apply_async()``; ``celery worker``.

One process is ``-P threads -c T``; two processes are the prefork pool with ``-c 2``
(Celery's own multi-process model: two single-job children under one parent). No result
backend; mingle, gossip and heartbeats are off (fewer commands, faster start), and
logging is at WARNING, as for every library.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

import workloads

from peers import Adapter

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from peers import Body


def make_app(url: str) -> tuple[Any, dict[str, Any]]:
    """A `Celery` app on ``url`` and one task per body."""
    from celery import Celery

    app = Celery("bench", broker=url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    app.conf.task_ignore_result = True
    tasks = {
        name: app.task(function, name=f"bench.{name}")
        for name, function in workloads.BODY_FUNCTIONS.items()
    }
    return app, tasks


_app: Any = None


def __getattr__(name: str) -> Any:
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = make_app(os.environ[workloads.URL_ENV])[0]
    return _app


class CeleryAdapter(Adapter):
    name = "celery"

    def __init__(self, url: str, count_dir: Path, log_dir: Path) -> None:
        super().__init__(url, count_dir, log_dir)
        self.app, self.tasks = make_app(url)
        self.enqueue_bulk = self._enqueue_bulk

    def version(self) -> str:
        return metadata.version("celery")

    def enqueue_one(self, body: Body, arg: int) -> None:
        self.tasks[body].delay(arg)

    def _enqueue_bulk(self, body: Body, args: Sequence[int]) -> None:
        from celery import group

        task = self.tasks[body]
        group(task.s(arg) for arg in args).apply_async()

    def worker_argv(self, processes: int, threads: int) -> list[list[str]]:
        pool = ["-P", "threads", "-c", str(threads)] if processes == 1 else ["-P", "prefork"]
        if processes > 1:
            pool += ["-c", str(processes)]
        return [
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "peers.celery_peer:app",
                "worker",
                *pool,
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"bench-{os.getpid()}@%h",
            ]
        ]

    def close(self) -> None:
        self.app.close()


ADAPTER = CeleryAdapter
