"""Dramatiq under benchmark: ``actor.send``; ``dramatiq -p P -t T`` with the RedisBroker.

Dramatiq has no bulk enqueue. The CLI imports ``peers.dramatiq_peer:broker``, a module
attribute that builds the broker and declares the actors from the worker's environment.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

import workloads

from peers import Adapter

if TYPE_CHECKING:
    from pathlib import Path

    from peers import Body


def make_broker(url: str) -> tuple[Any, dict[str, Any]]:
    """A `RedisBroker` on ``url``, made the global broker, and one actor per body."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url)
    dramatiq.set_broker(broker)
    actors = {
        name: dramatiq.actor(function, actor_name=name, broker=broker)
        for name, function in workloads.BODY_FUNCTIONS.items()
    }
    return broker, actors


_broker: Any = None


def __getattr__(name: str) -> Any:
    global _broker
    if name != "broker":
        raise AttributeError(name)
    if _broker is None:
        _broker = make_broker(os.environ[workloads.URL_ENV])[0]
    return _broker


class DramatiqAdapter(Adapter):
    name = "dramatiq"

    def __init__(self, url: str, count_dir: Path, log_dir: Path) -> None:
        super().__init__(url, count_dir, log_dir)
        self.broker, self.actors = make_broker(url)

    def version(self) -> str:
        return metadata.version("dramatiq")

    def enqueue_one(self, body: Body, arg: int) -> None:
        self.actors[body].send(arg)

    def worker_argv(self, processes: int, threads: int) -> list[list[str]]:
        return [
            [
                sys.executable,
                "-m",
                "dramatiq",
                "peers.dramatiq_peer:broker",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ]
        ]

    def close(self) -> None:
        self.broker.close()


ADAPTER = DramatiqAdapter
