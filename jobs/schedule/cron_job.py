"""`CronJob`: what a `Scheduler` fires, and when (a frozen value object)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import attrs

from jobs._validators import instance_of, require_text
from jobs.config import JobConfig
from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.schedule.schedules import Schedule

#: How missed fire times are handled: ``"skip"`` them, or ``"run_once"`` for the latest.
Misfire: TypeAlias = Literal["skip", "run_once"]
_MISFIRES = ("skip", "run_once")


def _non_empty_str(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    require_text(field.name, value)


def _schedule(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not callable(getattr(value, "next_after", None)):
        raise ConfigError(
            f"{field.name} must be a schedule (jobs.Every, Daily, Weekly, Monthly, Cron, "
            f"RRule, or any object with next_after), got {type(value).__name__}"
        )


def _misfire(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value not in _MISFIRES:
        raise ConfigError(f"{field.name} must be 'skip' or 'run_once', got {value!r}")


def _bool(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{field.name} must be a bool, got {value!r}")


@attrs.frozen(kw_only=True)
class CronJob:
    """A periodic job: enqueue ``job_type`` with ``payload`` at each fire time of ``schedule``.

    Example::

        jobs.CronJob(id="daily-report", schedule=jobs.Daily(2, 0),
                     job_type="generate_report", payload={"report_type": "daily"})

    Args:
        id: names the cron job across schedulers and restarts (its claim in Redis).
        schedule: when it fires: `Every`, `Daily`, `Weekly`, `Monthly`, `Cron`, `RRule`,
            or any object with ``next_after(dt, *, default_tz=None)``.
        job_type: the handler name each fire enqueues.
        payload: JSON-serializable; checked by `Scheduler.register` (`PayloadError`).
        config: the enqueued jobs' `JobConfig`; None means `DefaultJobConfig`.
        enabled: a disabled cron job is registered but does not fire.
        misfire: fire times missed while no scheduler ran: ``"skip"`` them (default), or
            ``"run_once"``: enqueue one catch-up job for the latest of them.

    .. versionadded:: 0.1
    """

    id: str = attrs.field(validator=_non_empty_str)
    schedule: Schedule = attrs.field(validator=_schedule, hash=False)
    job_type: str = attrs.field(validator=_non_empty_str)
    payload: Any = attrs.field(default=None, hash=False)
    config: JobConfig | None = attrs.field(
        default=None, validator=instance_of(JobConfig, optional=True)
    )
    enabled: bool = attrs.field(default=True, validator=_bool)
    misfire: Misfire = attrs.field(default="skip", validator=_misfire)
