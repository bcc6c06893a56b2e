"""The command line's log lines: text or JSON, with the records' structured fields.

The library installs no handler; the command line does (`configure_logging`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from jobs.cli._format import indented, iso, json_text, one_line

#: The order of the structured fields (`jobs.log.EXTRA_FIELDS`) in log lines; others follow sorted.
EXTRA_ORDER = ("queue", "job_id", "job_type", "attempt", "duration_ms")
# Every attribute a bare LogRecord has: anything else on a record came from ``extra``.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    found = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
    ordered = {k: found.pop(k) for k in EXTRA_ORDER if k in found}
    return {**ordered, **dict(sorted(found.items()))}


class TextFormatter(logging.Formatter):
    """``2025-01-02 03:04:05.678 INFO jobs.worker: message  job_id=... attempt=2``.

    The structured fields (`jobs.log.EXTRA_FIELDS`, and any other ``extra``) follow the
    message as ``key=value`` pairs, so ``grep job_id=abc`` finds a job's whole story.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s")
        self.datefmt = "%Y-%m-%d %H:%M:%S"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line, then its traceback (if any) on indented lines after.

        Control characters are escaped throughout, and nothing but the first line starts
        at the margin: text from a job (its error, its type) cannot forge a record.
        """
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        head = one_line(self.formatMessage(record))
        extras = _extras(record)
        if extras:
            head += "  " + " ".join(f"{k}={one_line(str(v))}" for k, v in extras.items())
        tail = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            tail.append(record.exc_text)
        if record.stack_info:
            tail.append(self.formatStack(record.stack_info))
        return "\n".join([head, *(indented(text) for text in tail)])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the structured fields.

    A traceback goes in ``exc_info`` as one string, so every record stays one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        data: dict[str, Any] = {
            "time": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(_extras(record))
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return json_text(json.dumps(data, ensure_ascii=False, default=str))


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr) as text or JSON.

    The command line is the one place that installs a handler (the library never does);
    it goes on the root logger so that the handlers' own loggers show up as well.
    """
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
