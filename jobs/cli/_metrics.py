"""``python -m jobs worker --metrics-port N``: a Prometheus endpoint in the worker process.

Under ``--processes N`` each child serves its own endpoint, child ``i`` (1-based) on
port ``N + i - 1``: a scrape target per process, whose worker counters a query sums.
Every endpoint also exports the served queues' gauges read from Redis
(`jobs.metrics.QueueCollector`), the same numbers from each process: aggregate those
with ``max``, never ``sum``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import attrs

from jobs.errors import UsageError
from jobs.queue.redis_queue import RedisQueue

if TYPE_CHECKING:
    import argparse

    from jobs.config import WorkerPoolConfig

logger = logging.getLogger("jobs.cli")

#: Set in each supervised child's environment: its number, 1 to ``--processes``.
PROCESS_NUMBER_ENV = "JOBS_PROCESS_NUMBER"


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--metrics-port`` and ``--metrics-host`` options of ``worker``."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (extra jobs[metrics]); "
        "with --processes N, process i serves on PORT+i-1",
    )
    parser.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="the address the metrics endpoint binds to (default: 127.0.0.1)",
    )


def check_metrics_arguments(args: argparse.Namespace, processes: int = 1) -> None:
    """Refuse a bad port, a host without a port, or a missing ``prometheus_client``."""
    port = args.metrics_port
    if port is None:
        if args.metrics_host is not None:
            raise UsageError("--metrics-host needs --metrics-port")
        return
    if not 1 <= port <= 65535 - (processes - 1):
        last = f" (and up to {port + processes - 1} for --processes)" if processes > 1 else ""
        raise UsageError(f"--metrics-port must be a TCP port, got {port}{last}")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError(
            "--metrics-port needs prometheus-client: pip install 'jobs[metrics]'"
        ) from None


def metrics_argv(args: argparse.Namespace) -> list[str]:
    """The metrics options to pass on to a supervised child."""
    if args.metrics_port is None:
        return []
    argv = [f"--metrics-port={args.metrics_port}"]
    if args.metrics_host is not None:
        argv.append(f"--metrics-host={args.metrics_host}")
    return argv


def process_number() -> int:
    """This process's number under a supervisor (1 otherwise), read once and removed."""
    try:
        return max(int(os.environ.pop(PROCESS_NUMBER_ENV, "1")), 1)
    except ValueError:
        return 1


def start_metrics(
    args: argparse.Namespace, queue: RedisQueue, config: WorkerPoolConfig
) -> WorkerPoolConfig:
    """Serve the endpoint if asked to; the pool config that feeds it (``events``).

    Raises:
        UsageError: the port cannot be bound.
    """
    if args.metrics_port is None:
        return config
    from jobs.metrics import serve_metrics

    names = [name for name, _ in config.queues] or [queue.name]
    served = tuple(
        queue if name == queue.name else RedisQueue(attrs.evolve(queue.config, name=name))
        for name in names
    )
    port = args.metrics_port + args.process_number - 1
    host = args.metrics_host or "127.0.0.1"
    try:
        metrics = serve_metrics(port, host, served)
    except OSError as exc:
        raise UsageError(f"--metrics-port: cannot serve on {host}:{port}: {exc}") from None
    logger.info(
        "serving Prometheus metrics at http://%s:%d/metrics",
        host,
        port,
        extra={"queue": queue.name},
    )
    return attrs.evolve(config, events=metrics)
