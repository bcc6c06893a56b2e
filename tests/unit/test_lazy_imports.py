"""What ``import jobs`` loads: a process pays only for the parts it uses.

A worker or web process that schedules nothing and sends no typed payloads does not
import python-dateutil, zoneinfo or cattrs (about 2 MB of every worker process, and
their import time); the names that need them still come from ``jobs`` on first use.
"""

from __future__ import annotations

import subprocess
import sys

import jobs

_PROBE = """
import sys
import jobs
print(sorted(m for m in ("cattrs", "dateutil", "zoneinfo", "decimal") if m in sys.modules))
"""


def _imported_by_jobs(extra: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-c", extra + _PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_import_jobs_loads_no_scheduler_or_converter_dependencies() -> None:
    assert _imported_by_jobs() == "[]"


def test_the_command_line_loads_the_scheduler_only_for_a_scheduler() -> None:
    # `python -m jobs worker` without --scheduler: the most common worker process.
    assert _imported_by_jobs("import jobs.cli\n") == "[]"


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in jobs.__all__:
        assert getattr(jobs, name) is not None, name
    assert set(jobs.__all__) <= set(dir(jobs))
    namespace: dict[str, object] = {}
    exec("from jobs import *", namespace)
    assert {"Scheduler", "Cron", "MONDAY", "CronJob"} <= namespace.keys()


def test_scheduler_names_are_the_schedule_modules_own() -> None:
    from jobs.schedule.scheduler import Scheduler
    from jobs.schedule.schedules import MONDAY, Cron

    assert jobs.Scheduler is Scheduler
    assert jobs.Cron is Cron
    assert jobs.MONDAY is MONDAY


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        jobs.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("jobs.NoSuchThing resolved")


def test_a_typed_payload_loads_the_converter_on_first_use() -> None:
    probe = """
import attrs, sys
import jobs
from jobs import _typed
@attrs.frozen
class Email:
    to: str
assert _typed.structure(Email, {"to": "a@b"}) == Email("a@b")
"""
    assert _imported_by_jobs(probe) == "['cattrs', 'decimal']"
