"""The command line, ``python -m jobs``: run workers and schedulers, enqueue and inspect jobs.

Every command takes ``--redis-url`` (else ``$REDIS_URL``, else redis://localhost:6379/0),
``--queue`` and ``--prefix``, before or after the subcommand. Exit codes: 0 success, 1 a
runtime failure (unknown job, Redis unreachable, a module that does not import), 2 a usage
error. Every failure is one line on stderr, ``jobs: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import redis

from jobs.cli import _format as fmt
from jobs.cli._dashboard import add_dashboard_arguments, cmd_dashboard
from jobs.cli._metrics import add_metrics_arguments, process_number
from jobs.cli._serve import exit_now
from jobs.cli._supervisor import SUPERVISED_ENV
from jobs.errors import (
    CliError,
    ConfigError,
    JobNotFound,
    PayloadError,
    RedisUnavailable,
    UsageError,
)
from jobs.job import JobStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

from jobs.cli._commands import (
    cmd_cancel,
    cmd_demo,
    cmd_enqueue,
    cmd_get,
    cmd_list,
    cmd_purge,
    cmd_retry,
    cmd_scheduler,
    cmd_stats,
    cmd_worker,
    cmd_workers,
)
from jobs.cli._connect import DEFAULT_REDIS_URL

PROG = "python -m jobs"
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
    from jobs import __version__

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
    add_metrics_arguments(p)

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
        args.process_number = process_number() if supervised else 1
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
