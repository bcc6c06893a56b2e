"""What the command line prints: jobs, stats and worker pools as text or JSON.

Kept apart from `jobs.cli` (argument parsing and running commands) so that every output
format lives in one place. Text output is ``field: value`` lines or aligned tables, one
record per line; ``--json`` output is one JSON document (or one per line with
``--watch``), with timestamps as ISO 8601 UTC strings.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from jobs.job import JobStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from jobs._limits import TypeLimits
    from jobs.job import Job, QueueHistory, QueueStats, WorkerInfo

#: What a missing value (a timestamp not reached yet, no error) prints as in text output.
NONE = "-"
#: Text tables cut errors to this many characters; ``get`` and ``--json`` show them whole.
ERROR_WIDTH = 60

#: Dependencies ``get`` prints in text (``--json`` shows them all).
DEPENDS_SHOWN = 5


def iso(value: datetime | None) -> str | None:
    """``2025-01-02T03:04:05.678Z`` (UTC, milliseconds), or None."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


#: What a terminal may act on rather than show: C0 and C1 control characters (ESC starts
#: the sequences that retitle a window or clear the screen, and a line break would let a
#: job's error forge a log line), DEL, and the bidirectional marks that reorder a line.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# json.dumps escapes C0 controls inside strings itself; outside strings, "\n" is layout.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Every line of a traceback is indented, so only a record's first line starts at the margin.
TRACEBACK_INDENT = "  "


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def one_line(text: str) -> str:
    """``text`` safe to print as one line: line breaks and other control characters escaped.

    Job errors, types and results come from handlers and producers; printed raw, an
    escape sequence in one would act on the reader's terminal.
    """
    return _UNSAFE.sub(_escape, text)


def json_text(text: str) -> str:
    """JSON text with every character `one_line` escapes written as a JSON escape.

    For ``json.dumps(..., ensure_ascii=False)`` output, which escapes C0 controls but not
    DEL, C1 or bidirectional marks: the result is valid JSON of the same data.
    """
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def indented(text: str) -> str:
    """A traceback or stack for a text log: each line escaped and indented."""
    return "\n".join(TRACEBACK_INDENT + one_line(line) for line in text.split("\n"))


def job_dict(job: Job) -> dict[str, Any]:
    """A job as JSON-ready data (the ``--json`` form of ``get`` and ``list``)."""
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "status": str(job.status),
        "priority": job.priority,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "lost_leases": job.lost_leases,
        "timeout": _seconds(job.timeout),
        "created_at": iso(job.created_at),
        "run_at": iso(job.run_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.completed_at),
        "error": job.error,
        "depends_on": list(job.depends_on),
        "progress": None if job.progress is None else list(job.progress),
        "result": job.result,
        "payload": job.payload,
        "metadata": dict(job.metadata),
        "traceback": job.traceback,
    }


def job_lines(job: Job) -> list[str]:
    """A job as ``field: value`` lines: status, attempts, timestamps, result and error."""
    data = job_dict(job)
    lines = []
    for name, value in data.items():
        if value is None:
            text = NONE
        elif name in ("result", "payload", "metadata"):
            text = json_text(_json(value))
        elif name == "timeout":
            text = f"{value:g} s"
        elif name == "depends_on":
            if not value:
                continue
            # A group's callback may wait for thousands: the first few, and the count.
            shown = ", ".join(value[:DEPENDS_SHOWN])
            more = len(value) - DEPENDS_SHOWN
            text = one_line(shown + (f" ... ({len(value)} in all)" if more > 0 else ""))
        elif name == "progress":
            fraction, message = value
            text = f"{fraction:.0%}" + ("" if message is None else f" {one_line(message)}")
        elif name == "traceback":
            # Last: its lines follow, indented, each escaped like any other value.
            lines.append("traceback:")
            lines += ["  " + one_line(line) for line in str(value).rstrip("\n").split("\n")]
            continue
        else:
            text = one_line(str(value))
        lines.append(f"{name}: {text}")
    return lines


def stats_dict(stats: QueueStats) -> dict[str, Any]:
    """Every `QueueStats` field, JSON-ready."""
    data = attrs.asdict(stats)
    data["last_processed"] = iso(stats.last_processed)
    return data


def limits_dict(
    limits: Mapping[str, TypeLimits], held: Mapping[str, int], running: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Job types' flow limits with what waits for them, JSON-ready (``stats``)."""
    return {
        name: {
            "rate_limit": None if each.rate_limit is None else str(each.rate_limit),
            "max_concurrency": each.max_concurrency,
            "held_back": held.get(name, 0),
            "running": running.get(name) if each.max_concurrency is not None else None,
        }
        for name, each in sorted(limits.items())
    }


def limits_lines(data: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``limits_dict`` as one ``limit TYPE: ...`` line per type."""
    lines = []
    for name, each in data.items():
        parts = [p for p in (each["rate_limit"],) if p is not None]
        if each["max_concurrency"] is not None:
            parts.append(f"at most {each['max_concurrency']} at once ({each['running']} running)")
        parts.append(f"{each['held_back']} held back")
        lines.append(f"limit {one_line(name)}: {', '.join(parts)}")
    return lines


def stats_lines(stats: QueueStats) -> list[str]:
    """Every `QueueStats` field as a ``field: value`` line, in declaration order."""
    return [
        f"{name}: {NONE if value is None else value}" for name, value in stats_dict(stats).items()
    ]


def stats_logfmt(stats: QueueStats, now: datetime) -> str:
    """One ``time=... total_jobs=...`` line: ``stats --watch`` when not on a terminal."""
    fields = " ".join(
        f"{name}={NONE if value is None else value}" for name, value in stats_dict(stats).items()
    )
    return f"time={iso(now)} {fields}"


#: Whole minutes the rates of ``stats --watch`` average over.
RATE_MINUTES = 5


def rates_dict(history: QueueHistory) -> dict[str, float]:
    """Jobs per minute over the last `RATE_MINUTES` whole minutes, by count."""
    return {
        f"{name}_per_minute": round(history.per_minute(name, RATE_MINUTES), 2)
        for name in ("enqueued", "completed", "failed", "cancelled")
    }


class StatsView:
    """``stats --watch``: one block redrawn in place on a terminal, else one line per refresh.

    With ``as_json``, one JSON object per line (JSON Lines), terminal or not.
    """

    def __init__(self, out: TextIO, title: str, interval: float, *, as_json: bool) -> None:
        self._out = out
        self._title = title
        self._interval = interval
        self._json = as_json
        self._tty = out.isatty() and not as_json
        self._drawn = 0

    def show(self, stats: QueueStats, now: datetime, history: QueueHistory | None = None) -> None:
        """Print (or redraw) the stats as read at ``now``, with rates from ``history``."""
        rates = rates_dict(history) if history is not None else {}
        if self._json:
            text = json.dumps({"time": iso(now), **stats_dict(stats), **rates}) + "\n"
        elif self._tty:
            lines = [
                f"{self._title}, {iso(now)} (every {self._interval:g} s, Ctrl-C to stop)",
                *stats_lines(stats),
            ]
            if rates:
                lines.append(
                    f"per minute (last {RATE_MINUTES} min): "
                    + "  ".join(f"{k.split('_')[0]} {v:g}" for k, v in rates.items())
                )
            # Back to the top of the previous block, then rewrite each line in place.
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            text = up + "".join(f"\x1b[2K{line}\n" for line in lines)
            self._drawn = len(lines)
        else:
            extra = "".join(f" {name}={value:g}" for name, value in rates.items())
            text = stats_logfmt(stats, now) + extra + "\n"
        self._out.write(text)
        self._out.flush()


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(header), *([one_line(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _short_error(error: str | None) -> str:
    if not error:
        return ""
    error = one_line(error)
    return error if len(error) <= ERROR_WIDTH else error[: ERROR_WIDTH - 3] + "..."


def _when(job: Job) -> datetime | None:
    # The moment that matters for the job's status: when it runs, started, or ended.
    if job.status.is_final:
        return job.completed_at
    if job.status is JobStatus.PROCESSING:
        return job.started_at
    return job.run_at


def jobs_table(jobs: Sequence[Job]) -> list[str]:
    """Jobs as an aligned table, one per line (``list``)."""
    rows = [
        (
            job.id,
            job.type,
            str(job.status),
            str(job.priority),
            f"{job.attempts}/{job.max_retries + 1}",
            iso(_when(job)) or NONE,
            _short_error(job.error),
        )
        for job in jobs
    ]
    return _table(("ID", "TYPE", "STATUS", "PRIORITY", "ATTEMPTS", "WHEN", "ERROR"), rows)


def worker_dict(info: WorkerInfo) -> dict[str, Any]:
    """A live worker pool, JSON-ready."""
    data = attrs.asdict(info)
    data["started_at"] = iso(info.started_at)
    data["last_seen"] = iso(info.last_seen)
    return data


def workers_table(workers: Sequence[WorkerInfo]) -> list[str]:
    """Live worker pools as an aligned table (``workers``)."""
    rows = [
        (
            w.id,
            w.hostname,
            str(w.pid),
            str(w.num_workers),
            str(w.in_flight),
            iso(w.started_at) or NONE,
            iso(w.last_seen) or NONE,
        )
        for w in workers
    ]
    return _table(("ID", "HOST", "PID", "WORKERS", "IN_FLIGHT", "STARTED", "LAST_SEEN"), rows)


# -- logging -----------------------------------------------------------------------
