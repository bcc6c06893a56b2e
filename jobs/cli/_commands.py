"""The subcommands: ``cmd_<name>(args) -> exit code``, one per ``python -m jobs <name>``."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from jobs._client_config import ClientConfig
from jobs.cli import _format as fmt
from jobs.cli._load import check_type, load_object, load_registry, load_scheduler
from jobs.cli._logging import configure_logging
from jobs.cli._metrics import check_metrics_arguments, metrics_argv, start_metrics
from jobs.cli._serve import serve
from jobs.cli._supervisor import supervise
from jobs.client import Client
from jobs.config import JobConfig, WorkerPoolConfig
from jobs.errors import (
    CliError,
    UsageError,
)
from jobs.job import JobStatus
from jobs.worker._pool import served_names

if TYPE_CHECKING:
    import argparse


from jobs.cli._connect import check_access, open_queue, producer, redis_url

logger = logging.getLogger("jobs.cli")


def _json_arg(text: str, what: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc}): {text[:60]!r}") from None


def _print(args: argparse.Namespace, data: Any, lines: list[str], empty: str) -> None:
    if args.json:
        print(fmt.json_text(json.dumps(data, ensure_ascii=False, indent=2, default=str)))
    else:
        print("\n".join(lines) if lines else empty)


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Enqueue one job and print its id."""
    payload = None if args.payload is None else _json_arg(args.payload, "JSON_PAYLOAD")
    options: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("priority", "delay", "max_retries", "timeout")
        if getattr(args, name) is not None
    }
    if options.get("timeout") == "none":
        options["timeout"] = None
    if args.metadata is not None:
        options["metadata"] = _json_arg(args.metadata, "--metadata")
    config = JobConfig(**options)
    with producer(args) as client:
        print(client.enqueue(args.type, payload, config))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Print one job."""
    with producer(args) as client:
        job = client.get(args.job_id)
        data, lines = fmt.job_dict(job), fmt.job_lines(job)
        limits = client.queue.limits().get(job.type)
        if limits:
            # Only for a limited type: what holds the job, or could.
            held = job.status is JobStatus.PENDING and client.queue.is_held_back(job.id, job.type)
            data |= {"limits": limits.describe(), "held_back": held}
            lines += [f"limits: {limits.describe()}", f"held_back: {'yes' if held else 'no'}"]
    _print(args, data, lines, "")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job; exit 1 if it had already finished."""
    with producer(args) as client:
        if client.cancel(args.job_id):
            print(f"cancelled {args.job_id}")
            return 0
        status = client.get(args.job_id).status
    raise CliError(f"job {args.job_id} is already {status}: nothing to cancel")


def cmd_retry(args: argparse.Namespace) -> int:
    """Put a failed or cancelled job back in the queue; exit 1 if it is neither.

    With ``--all-failed`` (and optionally ``--type``): every failed job, in batches.
    """
    if args.all_failed == (args.job_id is not None):
        raise UsageError("retry takes a JOB_ID or --all-failed (not both)")
    if args.type is not None and not args.all_failed:
        raise UsageError("--type goes with --all-failed")
    if args.all_failed:
        with producer(args) as client:
            count = client.retry_failed(job_type=args.type)
        kind = "" if args.type is None else f" {fmt.one_line(args.type)}"
        print(f"retrying {count} failed{kind} job{'' if count == 1 else 's'}")
        return 0
    with producer(args) as client:
        if client.retry(args.job_id):
            print(f"retrying {args.job_id}: pending again, with a fresh retry budget")
            return 0
        status = client.get(args.job_id).status
    raise CliError(f"job {args.job_id} is {status}: only failed or cancelled jobs can be retried")


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete every job in one status."""
    with producer(args) as client:
        count = client.purge(args.status)
    print(f"deleted {count} {args.status} job{'' if count == 1 else 's'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List the jobs in one status."""
    with producer(args) as client:
        found = client.list_jobs(args.status, limit=args.limit, offset=args.offset)
    empty = f"no {args.status} jobs in queue {args.queue!r}"
    _print(args, [fmt.job_dict(j) for j in found], fmt.jobs_table(found) if found else [], empty)
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    """List the live worker pools of the queue."""
    with producer(args) as client:
        found = client.workers()
    empty = f"no live worker pools on queue {args.queue!r}"
    lines = fmt.workers_table(found) if found else []
    _print(args, [fmt.worker_dict(w) for w in found], lines, empty)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the queue's counts, once or (--watch) every --interval seconds."""
    with producer(args) as client:
        if not args.watch:
            stats = client.stats()
            data, lines = fmt.stats_dict(stats), fmt.stats_lines(stats)
            queue = client.queue
            limits = queue.limits()
            if limits:
                running = {
                    name: queue.running_by_type(name)
                    for name, each in limits.items()
                    if each.max_concurrency is not None
                }
                data["limits"] = fmt.limits_dict(limits, queue.held_back(), running)
                lines += fmt.limits_lines(data["limits"])
            _print(args, data, lines, "")
            return 0
        view = fmt.StatsView(
            sys.stdout,
            f"queue {args.queue!r} at {client.queue.address}",
            args.interval,
            as_json=args.json,
        )
        shown = 0
        try:
            while args.count is None or shown < args.count:
                view.show(client.stats(), datetime.now(UTC), client.history(fmt.RATE_MINUTES + 1))
                shown += 1
                if args.count is None or shown < args.count:
                    time.sleep(args.interval)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a watch ends
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the narrated end-to-end demo."""
    from jobs.cli.demo import run_demo

    # The narration tells the story; the library's own log lines would only repeat it.
    configure_logging("info" if args.verbose else "critical", "text")
    return run_demo(redis_url(args), queue_name=args.queue)


def pool_config(args: argparse.Namespace) -> WorkerPoolConfig:
    base = WorkerPoolConfig()
    if args.pool_config is not None:
        loaded = load_object(args.pool_config, "--pool-config")
        check_type(loaded, args.pool_config, "--pool-config", WorkerPoolConfig)
        assert isinstance(loaded, WorkerPoolConfig)
        base = loaded
    overrides = {
        name: getattr(args, option)
        for name, option in (
            ("num_workers", "workers"),
            ("lease", "lease"),
            ("poll_interval", "poll_interval"),
            ("shutdown_timeout", "shutdown_timeout"),
        )
        if getattr(args, option) is not None
    }
    return attrs.evolve(base, **overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker pool (and optionally a scheduler) until SIGINT/SIGTERM."""
    configure_logging(args.log_level, args.log_format)
    if args.processes is not None:
        if args.supervised:
            # Whatever the command line says, a supervised child never forks a tree of its own.
            raise UsageError("--processes: a worker started by a supervisor cannot supervise")
        if args.processes < 1:
            raise UsageError(f"--processes must be at least 1, got {args.processes}")
        check_metrics_arguments(args, args.processes)
        # Check what the children will load, so a typo fails once here, not N times.
        registry = load_registry(args.registry)
        queue = open_queue(args)
        try:
            check_access(
                queue, [n for n, _ in served_names(queue.name, pool_config(args), registry)]
            )
        finally:
            queue.close()
        return supervise(child_argv(args), args.processes, redis_url(args))
    check_metrics_arguments(args)
    registry = load_registry(args.registry)
    queue = open_queue(args)
    settings = start_metrics(args, queue, pool_config(args))
    client = Client(ClientConfig(queue=queue, registry=registry, worker_pool_config=settings))
    check_access(queue, [n for n, _ in served_names(queue.name, settings, registry)])
    scheduler = None if args.scheduler is None else load_scheduler(args.scheduler, client)
    logger.info(
        "worker for queue %r at %s: job types %s%s",
        queue.name,
        queue.address,
        ", ".join(registry.names()) or "(none)",
        f"; scheduler {args.scheduler}" if scheduler is not None else "",
        extra={"queue": queue.name},
    )
    return serve(client, scheduler, "worker", supervised=args.supervised)


def child_argv(args: argparse.Namespace) -> list[str]:
    """What each supervised child runs: this worker's parsed options, without ``--processes``.

    Rebuilt from the parsed options rather than edited from the command line, so that no
    spelling of ``--processes`` can reach a child. ``OPTION=VALUE`` keeps a value that
    starts with ``-`` a value. The Redis URL goes by environment (see `supervise`), out of
    the process list that any local user can read.
    """
    argv = [
        "worker",
        args.registry,
        f"--queue={args.queue}",
        f"--prefix={args.prefix}",
        f"--log-level={args.log_level}",
        f"--log-format={args.log_format}",
    ]
    options = ("workers", "scheduler", "pool_config", "shutdown_timeout", "lease", "poll_interval")
    for option in options:
        value = getattr(args, option)
        if value is not None:
            argv.append(f"--{option.replace('_', '-')}={value}")
    return argv + metrics_argv(args)


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Run a scheduler alone until SIGINT/SIGTERM."""
    configure_logging(args.log_level, args.log_format)
    queue = open_queue(args)
    client = Client(ClientConfig(queue=queue))
    check_access(queue)
    scheduler = load_scheduler(args.spec, client)
    logger.info("scheduler %s for queue %r at %s", args.spec, queue.name, queue.address)
    return serve(None, scheduler, "scheduler")
