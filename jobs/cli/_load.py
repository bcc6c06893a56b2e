"""Loading the objects a command line names (``MODULE:ATTR``)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING

from jobs.cli import _format as fmt
from jobs.errors import CliError, UsageError
from jobs.registry import Registry

if TYPE_CHECKING:
    from jobs.client import Client
    from jobs.schedule.scheduler import Scheduler

logger = logging.getLogger("jobs.cli")


def load_object(spec: str, what: str) -> object:
    """Import ``MODULE:ATTR`` (ATTR may be dotted), with the current directory importable.

    Raises:
        UsageError: ``spec`` is not ``MODULE:ATTR``.
        CliError: the module does not import or has no such attribute.
    """
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise UsageError(
            f"{what} must look like MODULE:ATTRIBUTE (e.g. app:registry), got {spec!r}"
        )
    # As `python -m` does; a console script or PYTHONSAFEPATH would not.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a module may raise anything at import, even SystemExit
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and f"{module_name}.".startswith(f"{missing}."):
            raise CliError(
                f"{what} {spec!r}: no module named {missing!r} "
                f"(looked in the current directory, {os.getcwd()}, and on sys.path)"
            ) from None
        raise CliError(
            f"{what} {spec!r}: importing {module_name!r} failed: {_where(exc)}"
        ) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(
                f"{what} {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


def _where(exc: BaseException) -> str:
    """``ExcType: message (at file:line)``: where in the user's code an import failed."""
    text = fmt.one_line(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, SyntaxError):
        return text  # its message already names the file and line
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno})" if frames else text


def check_type(obj: object, spec: str, what: str, cls: type) -> None:
    if not isinstance(obj, cls):
        raise CliError(f"{what} {spec!r} is a {type(obj).__name__}, not a jobs.{cls.__name__}")


def load_registry(spec: str) -> Registry:
    obj = load_object(spec, "MODULE:REGISTRY")
    check_type(obj, spec, "MODULE:REGISTRY", Registry)
    assert isinstance(obj, Registry)
    if not len(obj):
        logger.warning("registry %s has no handlers: every job will fail its attempt", spec)
    return obj


def _check_bound_queue(scheduler: Scheduler, spec: str, client: Client) -> None:
    """Refuse a ready-made Scheduler bound to a queue other than the command line's.

    Its queue was fixed when its module built it, so ``--redis-url``, ``--queue`` and
    ``--prefix`` cannot apply to it; run silently on its own queue, it would fire where
    the operator did not ask, while the log named the queue asked for.
    """
    own, asked = scheduler._queue, client.queue
    where = (own.name, own.config.prefix, own.address)
    if where == (asked.name, asked.config.prefix, asked.address):
        return
    raise UsageError(
        f"MODULE:SCHEDULER {spec!r} is a Scheduler bound to queue {own.name!r} (prefix "
        f"{own.config.prefix!r}) at {own.address}, but the command line names queue "
        f"{asked.name!r} (prefix {asked.config.prefix!r}) at {asked.address}: give the "
        "matching --redis-url/--queue/--prefix, or name a list of jobs.CronJob or a "
        "function(client) instead, which run on the command line's queue"
    )


def load_scheduler(spec: str, client: Client) -> Scheduler:
    """A `jobs.Scheduler` from ``spec``: a Scheduler, a list of CronJobs, or a factory(client)."""
    # Here, not at the top: a worker without --scheduler never loads the scheduler (nor
    # zoneinfo and python-dateutil with it).
    from jobs.schedule.scheduler import CronJob, Scheduler

    obj = load_object(spec, "MODULE:SCHEDULER")
    if isinstance(obj, Scheduler):
        _check_bound_queue(obj, spec, client)
        return obj
    if isinstance(obj, list | tuple) and all(isinstance(c, CronJob) for c in obj):
        scheduler = Scheduler(client)
        for cron_job in obj:
            scheduler.register(cron_job)
        return scheduler
    if callable(obj) and not isinstance(obj, type):
        made = obj(client)
        check_type(made, f"{spec}(client)", "MODULE:SCHEDULER", Scheduler)
        assert isinstance(made, Scheduler)
        return made
    raise CliError(
        f"MODULE:SCHEDULER {spec!r} is a {type(obj).__name__}: expected a jobs.Scheduler, "
        "a list of jobs.CronJob, or a function(client) -> jobs.Scheduler"
    )
