"""Huey under benchmark: calling a task enqueues it; ``huey_consumer -k thread -w T``.

Huey has no bulk enqueue. A task's registry name is its function's module and name, so
the consumer (which builds its own `RedisHuey` from the environment, through the module
attribute ``app``) and the harness agree on them. "2 processes" is two consumers.
"""

from __future__ import annotations

import os
import signal
from importlib import metadata
from typing import TYPE_CHECKING, Any

import workloads

from peers import Adapter, venv_script

if TYPE_CHECKING:
    from pathlib import Path

    from peers import Body


def make_app(url: str) -> tuple[Any, dict[str, Any]]:
    """A `RedisHuey` on ``url`` and its tasks, one per body."""
    from huey import RedisHuey

    app = RedisHuey("bench", url=url)
    tasks = {name: app.task()(function) for name, function in workloads.BODY_FUNCTIONS.items()}
    return app, tasks


_app: Any = None


def __getattr__(name: str) -> Any:
    # huey_consumer peers.huey_peer.app: built on first use from the worker's environment.
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = make_app(os.environ[workloads.URL_ENV])[0]
    return _app


class HueyAdapter(Adapter):
    name = "huey"
    stop_signal = int(signal.SIGINT)  # huey_consumer's graceful signal

    def __init__(self, url: str, count_dir: Path, log_dir: Path) -> None:
        super().__init__(url, count_dir, log_dir)
        self.app, self.tasks = make_app(url)

    def version(self) -> str:
        return metadata.version("huey")

    def enqueue_one(self, body: Body, arg: int) -> None:
        self.tasks[body](arg)

    def worker_argv(self, processes: int, threads: int) -> list[list[str]]:
        argv = [
            venv_script("huey_consumer"),
            "peers.huey_peer.app",
            "--workers",
            str(threads),
            "--worker-type",
            "thread",
            "--quiet",
        ]
        return [argv for _ in range(processes)]

    def close(self) -> None:
        self.app.storage.conn.close()


ADAPTER = HueyAdapter
