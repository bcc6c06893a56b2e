"""The command line, ``python -m jobs``: run workers and schedulers, enqueue and inspect jobs.

Every command takes ``--redis-url`` (else ``$REDIS_URL``, else redis://localhost:6379/0),
``--queue`` and ``--prefix``, before or after the subcommand. Exit codes: 0 success, 1 a
runtime failure (unknown job, Redis unreachable, a module that does not import), 2 a usage
error. Every failure is one line on stderr, ``jobs: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import redis

from . import _cli_format as fmt
from ._acl import missing_permissions
from ._cli_dashboard import add_dashboard_arguments, cmd_dashboard
from ._cli_load import check_type, load_object, load_registry, load_scheduler
from ._cli_serve import exit_now, serve
from ._supervisor import SUPERVISED_ENV, supervise
from ._urls import redacted, scrub
from .client import Client
from .config import ClientConfig, JobConfig, WorkerPoolConfig
from .errors import CliError, ConfigError, JobNotFound, PayloadError, RedisUnavailable, UsageError
from .job import JobStatus
from .redis_queue import RedisQueue

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

PROG = "python -m jobs"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
logger = logging.getLogger("jobs.cli")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: ``--proc`` once meant ``--processes`` here but not in the
        # code that edited the children's command line, and every option added later
        # would silently change what an abbreviation in someone's unit file means.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block; one line says more.
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- connecting --------------------------------------------------------------------


def _redis_url(args: argparse.Namespace) -> str | None:
    """The URL given with --redis-url or $REDIS_URL, or None when neither was."""
    return getattr(args, "redis_url", None) or os.environ.get("REDIS_URL") or None


def open_queue(args: argparse.Namespace) -> RedisQueue:
    """The queue the options name (no connection is made yet)."""
    url = _redis_url(args) or DEFAULT_REDIS_URL
    try:
        return RedisQueue.from_url(url, name=args.queue, prefix=args.prefix)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # redis-py's URL parser
        raise UsageError(f"--redis-url {redacted(url)!r}: {scrub(str(exc), url)}") from None


def _ping(queue: RedisQueue) -> None:
    # The queue's own mapping: refused credentials are said to be, not "cannot reach".
    with queue._unavailable_as_error():
        queue.client.ping()


def _check_access(queue: RedisQueue, names: Sequence[str] = ()) -> None:
    """Reach Redis, and make sure its user may run everything on the queues it will serve.

    ``names``: those queues (default: ``queue`` alone). A missing permission is one line
    and exit 1 now, rather than NOPERM retried for ever once running.
    """
    _ping(queue)
    for name in names or [queue.name]:
        served = queue if name == queue.name else RedisQueue(attrs.evolve(queue.config, name=name))
        missing = missing_permissions(served)
        if missing:
            raise CliError(
                f"the Redis user at {queue.address} lacks what queue {name!r} "
                f"(prefix {queue.config.prefix!r}) needs: {' '.join(missing)} "
                "(see the ACL rule in docs/operations/security.rst)"
            )


@contextlib.contextmanager
def _producer(args: argparse.Namespace) -> Iterator[Client]:
    queue = open_queue(args)
    try:
        yield Client(ClientConfig(queue=queue))
    finally:
        queue.close()


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


# -- producer and inspection commands ----------------------------------------------


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
    with _producer(args) as client:
        print(client.enqueue(args.type, payload, config))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Print one job."""
    with _producer(args) as client:
        job = client.get(args.job_id)
    _print(args, fmt.job_dict(job), fmt.job_lines(job), "")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job; exit 1 if it had already finished."""
    with _producer(args) as client:
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
        with _producer(args) as client:
            count = client.retry_failed(job_type=args.type)
        kind = "" if args.type is None else f" {fmt.one_line(args.type)}"
        print(f"retrying {count} failed{kind} job{'' if count == 1 else 's'}")
        return 0
    with _producer(args) as client:
        if client.retry(args.job_id):
            print(f"retrying {args.job_id}: pending again, with a fresh retry budget")
            return 0
        status = client.get(args.job_id).status
    raise CliError(f"job {args.job_id} is {status}: only failed or cancelled jobs can be retried")


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete every job in one status."""
    with _producer(args) as client:
        count = client.purge(args.status)
    print(f"deleted {count} {args.status} job{'' if count == 1 else 's'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List the jobs in one status."""
    with _producer(args) as client:
        found = client.list_jobs(args.status, limit=args.limit, offset=args.offset)
    empty = f"no {args.status} jobs in queue {args.queue!r}"
    _print(args, [fmt.job_dict(j) for j in found], fmt.jobs_table(found) if found else [], empty)
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    """List the live worker pools of the queue."""
    with _producer(args) as client:
        found = client.workers()
    empty = f"no live worker pools on queue {args.queue!r}"
    lines = fmt.workers_table(found) if found else []
    _print(args, [fmt.worker_dict(w) for w in found], lines, empty)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the queue's counts, once or (--watch) every --interval seconds."""
    with _producer(args) as client:
        if not args.watch:
            stats = client.stats()
            _print(args, fmt.stats_dict(stats), fmt.stats_lines(stats), "")
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
    from .demo import run_demo

    # The narration tells the story; the library's own log lines would only repeat it.
    fmt.configure_logging("info" if args.verbose else "critical", "text")
    return run_demo(_redis_url(args), queue_name=args.queue)


def _pool_config(args: argparse.Namespace) -> WorkerPoolConfig:
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
    fmt.configure_logging(args.log_level, args.log_format)
    if args.processes is not None:
        if args.supervised:
            # Whatever the command line says, a supervised child never forks a tree of its own.
            raise UsageError("--processes: a worker started by a supervisor cannot supervise")
        if args.processes < 1:
            raise UsageError(f"--processes must be at least 1, got {args.processes}")
        # Check what the children will load, so a typo fails once here, not N times.
        load_registry(args.registry)
        queue = open_queue(args)
        try:
            _check_access(queue, [name for name, _ in _pool_config(args).queues])
        finally:
            queue.close()
        return supervise(_child_argv(args), args.processes, _redis_url(args))
    registry = load_registry(args.registry)
    queue = open_queue(args)
    pool_config = _pool_config(args)
    client = Client(ClientConfig(queue=queue, registry=registry, worker_pool_config=pool_config))
    _check_access(queue, [name for name, _ in pool_config.queues])
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


def _child_argv(args: argparse.Namespace) -> list[str]:
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
    return argv


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Run a scheduler alone until SIGINT/SIGTERM."""
    fmt.configure_logging(args.log_level, args.log_format)
    queue = open_queue(args)
    client = Client(ClientConfig(queue=queue))
    _check_access(queue)
    scheduler = load_scheduler(args.spec, client)
    logger.info("scheduler %s for queue %r at %s", args.spec, queue.name, queue.address)
    return serve(None, scheduler, "scheduler")


# -- argument parsing --------------------------------------------------------------


def _timeout_arg(text: str) -> float | str:
    if text.lower() == "none":
        return "none"
    return float(text)


_timeout_arg.__name__ = "seconds or 'none'"  # argparse names the type in its message


def _interval_arg(text: str) -> float:
    # 0 would redraw as fast as Redis answers; a negative one crashed in time.sleep.
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m jobs`` argument parser."""
    from . import __version__

    common = _Parser(add_help=False)
    conn = common.add_argument_group("connection")
    conn.add_argument(
        "--redis-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"the Redis to use (default: $REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    conn.add_argument(
        "--queue", metavar="NAME", default=argparse.SUPPRESS, help="queue name (default: default)"
    )
    conn.add_argument(
        "--prefix", metavar="PREFIX", default=argparse.SUPPRESS, help="key prefix (default: jobs)"
    )
    logs = _Parser(add_help=False)
    group = logs.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="lowest level logged (default: info)",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (default: text)",
    )

    parser = _Parser(
        prog=PROG,
        description="Run workers and schedulers, enqueue and inspect background jobs in Redis.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options. New here? Try '{PROG} demo'.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"jobs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], text: str, *extra: _Parser
    ) -> _Parser:
        command: _Parser = sub.add_parser(
            name, parents=[common, *extra], help=text, description=text
        )
        command.set_defaults(func=func)
        return command

    p = add("worker", cmd_worker, "Run a worker pool until SIGINT or SIGTERM.", logs)
    p.add_argument("registry", metavar="MODULE:REGISTRY", help="a jobs.Registry, e.g. app:registry")
    p.add_argument("--workers", type=int, metavar="N", help="handler threads (default: 10)")
    p.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="run N worker processes (for CPU-bound handlers), restarting any that dies",
    )
    p.add_argument(
        "--scheduler",
        metavar="MODULE:SCHEDULER",
        help="also run this scheduler: a jobs.Scheduler, a list of jobs.CronJob, "
        "or a function(client) returning a jobs.Scheduler",
    )
    p.add_argument(
        "--pool-config",
        metavar="MODULE:CONFIG",
        help="a jobs.WorkerPoolConfig to start from (hooks, defaults); options here override it",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        metavar="SECONDS",
        help="how long running jobs get to finish once stopping (default: 30)",
    )
    p.add_argument(
        "--lease",
        type=float,
        metavar="SECONDS",
        help="a dead worker's jobs run elsewhere about 1.5 leases later (default: 30)",
    )
    p.add_argument(
        "--poll-interval", type=float, metavar="SECONDS", help="longest idle wait (default: 1)"
    )

    p = add("scheduler", cmd_scheduler, "Run a cron scheduler until SIGINT or SIGTERM.", logs)
    p.add_argument(
        "spec",
        metavar="MODULE:SCHEDULER",
        help="a jobs.Scheduler, a list of jobs.CronJob, or a function(client) returning one",
    )

    p = add("enqueue", cmd_enqueue, "Enqueue a job and print its id.")
    p.add_argument("type", metavar="TYPE", help="the job type (handler name)")
    p.add_argument(
        "payload", metavar="JSON_PAYLOAD", nargs="?", help="the payload as JSON ('-': stdin)"
    )
    p.add_argument(
        "--priority", type=int, metavar="N", help="-1000..1000, higher first (default 0)"
    )
    p.add_argument("--delay", type=float, metavar="SECONDS", help="run no sooner than this")
    p.add_argument("--max-retries", type=int, metavar="N", help="retries after the first attempt")
    p.add_argument("--timeout", type=_timeout_arg, metavar="SECONDS", help="per attempt, or 'none'")
    p.add_argument("--metadata", metavar="JSON", help="a JSON object stored with the job")

    for name, func, text in (
        ("get", cmd_get, "Print a job: status, attempts, timestamps, result and error."),
        ("cancel", cmd_cancel, "Cancel a job (a running one is told to stop)."),
        ("retry", cmd_retry, "Put a failed or cancelled job back in the queue."),
    ):
        p = add(name, func, text)
        if name == "retry":
            p.add_argument("job_id", metavar="JOB_ID", nargs="?")
            p.add_argument(
                "--all-failed", action="store_true", help="every failed job (instead of JOB_ID)"
            )
            p.add_argument("--type", metavar="TYPE", help="with --all-failed: only this type")
        else:
            p.add_argument("job_id", metavar="JOB_ID")
        if name == "get":
            p.add_argument("--json", action="store_true", help="print JSON")

    statuses = [str(s) for s in JobStatus]
    p = add("list", cmd_list, "List the jobs in one status.")
    p.add_argument("--status", required=True, choices=statuses)
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("purge", cmd_purge, "Delete every job in one status (not processing).")
    p.add_argument("--status", required=True, choices=statuses)

    p = add("stats", cmd_stats, "Print the queue's counts, one per line.")
    p.add_argument(
        "--json", action="store_true", help="print JSON (one object per line with --watch)"
    )
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument(
        "--interval", type=_interval_arg, default=1.0, metavar="SECONDS", help="> 0, default: 1"
    )
    p.add_argument(
        "--count", type=_count_arg, metavar="N", help="with --watch: stop after N refreshes"
    )

    p = add("workers", cmd_workers, "List the live worker pools of the queue.")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("dashboard", cmd_dashboard, "Serve the web dashboard of every queue.", logs)
    add_dashboard_arguments(p)

    p = add("demo", cmd_demo, "Run every feature end to end, narrated (about 15 seconds).")
    p.add_argument("--verbose", action="store_true", help="also show the library's log lines")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"jobs: error: {fmt.one_line(message)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``worker`` and ``scheduler`` exit)."""
    args: argparse.Namespace | None = None
    try:
        # Read once and removed, so that no process a handler starts inherits the mark.
        supervised = os.environ.pop(SUPERVISED_ENV, None) is not None
        args = build_parser().parse_args(argv)
        args.supervised = supervised
        args.queue = getattr(args, "queue", "default")
        args.prefix = getattr(args, "prefix", "jobs")
        code = _run(args)
    except UsageError as exc:
        code = _fail(str(exc), 2)
    if args is not None and args.command in ("worker", "scheduler"):
        exit_now(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except UsageError as exc:
        return _fail(str(exc), 2)
    except (ConfigError, PayloadError) as exc:  # a value from the command line
        return _fail(str(exc), 2)
    except (CliError, JobNotFound, RedisUnavailable) as exc:
        return _fail(str(exc), 1)
    except redis.AuthenticationError as exc:
        return _fail(f"Redis refused the credentials: {exc}", 1)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return _fail(f"cannot reach Redis: {exc}", 1)
    except redis.RedisError as exc:
        return _fail(f"Redis error: {type(exc).__name__}: {exc}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (``| head``): say nothing more, and keep Python's exit-time
        # flush of stdout from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("JOBS_TRACEBACK"):
            raise
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (set JOBS_TRACEBACK=1 to see where)", 1
        )
