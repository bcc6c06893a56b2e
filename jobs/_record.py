"""A stored job record (the fields of its Redis hash) back to a `Job`.

Three ways, one per reader: the fast one every worker takes for every job it runs, the
checked one that says exactly which field is wrong, and the lenient one that shows a
damaged record as well as it can (``Client.get``, listings).
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs._codec import CorruptRecord, from_ms, loads, text
from jobs.job import Job, JobStatus

if TYPE_CHECKING:
    from collections.abc import Mapping


def _int(fields: Mapping[str, Any], name: str, default: int | None = None) -> int:
    raw = fields.get(name)
    if raw is None or raw in ("", b""):
        if default is None:
            raise CorruptRecord(f"job record has no {name!r}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise CorruptRecord(f"job record field {name!r} is not an integer: {raw!r}") from None


def _str(fields: Mapping[str, Any], name: str) -> str | None:
    raw = fields.get(name)
    return None if raw is None or raw in ("", b"") else text(raw)


def decode_job(fields: Mapping[str, Any], queue: str, *, lenient: bool = False) -> Job:
    """Build a `Job` from a record's fields.

    Args:
        fields: the record.
        queue: the queue's name.
        lenient: for reading a damaged record back (``Client.get``): a field that does
            not decode is shown as its raw text (or 0, or empty) instead of raising, so
            the error the worker recorded for it stays readable.

    Raises:
        CorruptRecord: a required field (id, type, status) is missing or unknown, or,
            unless ``lenient``, any field does not decode.
    """
    try:
        return _decode_fast(fields, queue)
    except Exception:  # whatever went wrong, the checked path says exactly what
        if not lenient:
            return _decode_checked(fields, queue)
    try:
        return _decode_checked(fields, queue)
    except CorruptRecord:
        return _decode_lenient(fields, queue)


def read_back(fields: Mapping[str | bytes, Any], queue: str) -> Job:
    """A record as HGETALL returned it (names as bytes or str) shown as a `Job`, leniently.

    For readers (``Client.get``, listings): see `decode_job`'s ``lenient``.
    """
    return decode_job({text(k): v for k, v in fields.items()}, queue, lenient=True)


# Status values as stored (bytes or str, as the client decodes), to the enum: a dict
# lookup is several times cheaper than JobStatus(...) on every decoded job.
_STATUSES: dict[str | bytes, JobStatus] = {
    **{s.value: s for s in JobStatus},
    **{s.value.encode(): s for s in JobStatus},
}


def _progress(raw: str | bytes | None) -> tuple[float, str | None] | None:
    """A stored progress, ``[fraction, message]`` as JSON (see heartbeat.lua)."""
    if not raw:
        return None
    try:
        fraction, message = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        raise ValueError("progress is not [fraction, message]") from None
    if not isinstance(fraction, int | float) or not (message is None or isinstance(message, str)):
        raise ValueError("progress is not [fraction, message]")
    return float(fraction), message


def _lenient_progress(raw: str | bytes | None) -> tuple[float, str | None] | None:
    try:
        return _progress(raw)
    except ValueError:
        return None


def _deps(raw: str | bytes | None) -> tuple[str, ...]:
    """A stored ``deps``: the JSON array of the ids a job depends on (see enqueue.lua)."""
    if not raw:
        return ()
    try:
        ids = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("deps is not JSON") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("deps is not a list of ids")
    return tuple(ids)


def _lenient_deps(raw: str | bytes | None) -> tuple[str, ...]:
    try:
        return _deps(raw)
    except ValueError:
        return ()


def _ms(raw: str | bytes | None) -> datetime | None:
    return _moment(raw) if raw else None


# A worker decodes a few timestamps per job, and most repeat: the jobs of one fetch share
# their started_at, those of one enqueue call their created_at (and run_at). datetimes
# are immutable, so one can serve every job that has it; a hit costs a tenth of making it.
@functools.lru_cache(maxsize=256)
def _moment(raw: str | bytes) -> datetime:
    return datetime.fromtimestamp(int(raw) / 1000, tz=UTC)


@functools.lru_cache(maxsize=64)
def _timeout(ms: int) -> timedelta | None:
    return timedelta(milliseconds=ms) if ms > 0 else None


def _decode_fast(fields: Mapping[str, Any], queue: str) -> Job:
    # Every worker decodes every job it runs: this is `_decode_checked` without the
    # field-by-field diagnostics, which only a damaged record needs.
    get = fields.get
    job_id, job_type, status, payload = get("id"), get("type"), get("status"), get("payload")
    if not job_id or not job_type or not status or payload is None:
        raise ValueError("incomplete record")
    metadata = get("metadata")
    metadata = json.loads(metadata) if metadata and metadata not in (b"{}", "{}") else {}
    if type(metadata) is not dict:
        raise ValueError("metadata is not an object")
    result, error, trace = get("result"), get("error"), get("traceback")
    timeout_ms = int(get("timeout_ms") or 0)
    created_at = _ms(get("created_at"))
    run_at = get("run_at")
    return Job(
        id=job_id.decode() if type(job_id) is bytes else job_id,
        type=job_type.decode() if type(job_type) is bytes else job_type,
        payload=json.loads(payload),
        status=_STATUSES[status],
        priority=int(get("priority") or 0),
        attempts=int(get("attempts") or 0),
        max_retries=int(get("max_retries") or 0),
        created_at=created_at,
        # Missing until a delay or a retry sets it: the job was due when it was created.
        run_at=created_at if run_at is None else _ms(run_at),
        started_at=_ms(get("started_at")),
        completed_at=_ms(get("completed_at")),
        error=(error.decode() if type(error) is bytes else error) if error else None,
        traceback=(trace.decode() if type(trace) is bytes else trace) if trace else None,
        progress=_progress(get("progress")),
        result=None if result is None else json.loads(result),
        metadata=metadata,
        timeout=_timeout(timeout_ms),
        lost_leases=int(get("lost") or 0),
        queue=queue,
        depends_on=_deps(get("deps")),
    )


def _decode_checked(fields: Mapping[str, Any], queue: str) -> Job:
    job_id, job_type, status = _str(fields, "id"), _str(fields, "type"), _str(fields, "status")
    if job_id is None or job_type is None or status is None:
        missing = [n for n in ("id", "type", "status") if _str(fields, n) is None]
        raise CorruptRecord(f"job record has no {', '.join(map(repr, missing))}")
    try:
        job_status = JobStatus(status)
    except ValueError:
        raise CorruptRecord(f"job record has an unknown status {status!r}") from None
    raw_payload = fields.get("payload")
    if raw_payload is None:
        raise CorruptRecord("job record has no 'payload'")
    result = fields.get("result")
    metadata = loads(fields["metadata"], "metadata") if fields.get("metadata") else {}
    if not isinstance(metadata, dict):
        raise CorruptRecord("job record field 'metadata' is not a JSON object")
    timeout_ms = _int(fields, "timeout_ms", 0)
    try:
        return Job(
            id=job_id,
            type=job_type,
            payload=loads(raw_payload, "payload"),
            status=job_status,
            priority=_int(fields, "priority", 0),
            attempts=_int(fields, "attempts", 0),
            max_retries=_int(fields, "max_retries", 0),
            created_at=from_ms(fields.get("created_at")),
            run_at=from_ms(fields.get("run_at", fields.get("created_at"))),
            started_at=from_ms(fields.get("started_at")),
            completed_at=from_ms(fields.get("completed_at")),
            error=_str(fields, "error"),
            traceback=_str(fields, "traceback"),
            progress=_progress(fields.get("progress")),
            result=None if result is None else loads(result, "result"),
            metadata=metadata,
            timeout=timedelta(milliseconds=timeout_ms) if timeout_ms > 0 else None,
            lost_leases=_int(fields, "lost", 0),
            queue=queue,
            depends_on=_deps(fields.get("deps")),
        )
    except (ValueError, OverflowError, OSError) as exc:  # e.g. a timestamp out of range
        raise CorruptRecord(f"job record does not decode: {exc}") from None


def _decode_lenient(fields: Mapping[str, Any], queue: str) -> Job:
    job_id, job_type, status = _str(fields, "id"), _str(fields, "type"), _str(fields, "status")
    if job_id is None or job_type is None or status is None:
        return _decode_checked(fields, queue)  # raises, naming what is missing
    try:
        job_status = JobStatus(status)
    except ValueError:
        return _decode_checked(fields, queue)  # raises: an unknown status

    def json_or_text(name: str) -> Any:
        raw = fields.get(name)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return text(raw)

    def number(name: str) -> int:
        try:
            return _int(fields, name, 0)
        except CorruptRecord:
            return 0

    def instant(name: str) -> datetime | None:
        try:
            return from_ms(fields.get(name))
        except (ValueError, OverflowError, OSError):
            return None

    metadata = json_or_text("metadata")
    timeout_ms = number("timeout_ms")
    return Job(
        id=job_id,
        type=job_type,
        payload=json_or_text("payload"),
        status=job_status,
        priority=number("priority"),
        attempts=number("attempts"),
        max_retries=number("max_retries"),
        created_at=instant("created_at"),
        run_at=instant("run_at" if "run_at" in fields else "created_at"),
        started_at=instant("started_at"),
        completed_at=instant("completed_at"),
        error=_str(fields, "error"),
        traceback=_str(fields, "traceback"),
        progress=_lenient_progress(fields.get("progress")),
        result=json_or_text("result"),
        metadata=metadata if isinstance(metadata, dict) else {},
        timeout=timedelta(milliseconds=timeout_ms) if timeout_ms > 0 else None,
        lost_leases=number("lost"),
        queue=queue,
        depends_on=_lenient_deps(fields.get("deps")),
    )
