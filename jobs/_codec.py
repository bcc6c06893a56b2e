"""The wire format: payloads and results as JSON, job records to and from `Job`.

JSON only, never pickle: a Redis that an attacker can write to must not become code
execution in every worker. attrs instances are written as their fields.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs._json_depth import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from jobs._json_depth import too_deep
from jobs._typed import is_typed, unstructure
from jobs.errors import JobsError, PayloadError
from jobs.job import Job, JobStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Tracebacks are stored with the failed job, bounded so a deep recursion cannot bloat Redis.
MAX_TRACEBACK_CHARS = 8_000
#: Errors ("ExcType: message") are bounded too; a handler may put a whole response in one.
MAX_ERROR_CHARS = 2_000


#: The record fields fetch.lua returns for each job, in its order.
FETCHED_FIELDS = (
    "id",
    "type",
    "payload",
    "status",
    "priority",
    "max_retries",
    "timeout_ms",
    "backoff",
    "metadata",
    "created_at",
    "run_at",
    "started_at",
    "completed_at",
    "attempts",
    "failures",
    "lost",
    "error",
    "result",
    "lease",
    "deps",
)


class CorruptRecord(JobsError):
    """A job record in Redis is missing fields or holds values that do not decode."""


def _attrs_default(value: object) -> object:
    if is_typed(type(value)):
        return unstructure(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(
    default=_attrs_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def dumps(value: object, what: str = "payload") -> bytes:
    """Encode ``value`` as compact UTF-8 JSON; attrs instances become their fields.

    Raises:
        PayloadError: not JSON (a set, an object, NaN, a lone surrogate), or nesting
            deeper than `MAX_JSON_DEPTH`.
    """
    try:
        data = _ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"{what} is not JSON-serializable: {exc}") from None
    if too_deep(data):
        raise PayloadError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return data


def loads(data: str | bytes, what: str = "payload") -> Any:
    """Decode JSON written by `dumps`.

    Raises:
        CorruptRecord: the bytes are not JSON.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptRecord(f"{what} is not valid JSON: {exc}") from None


def text(value: str | bytes) -> str:
    """A reply field as str, whether or not the client decodes responses."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def pairs(flat: list[Any]) -> dict[str, Any]:
    """A flat HGETALL reply (as returned from Lua) as a dict with str keys."""
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def from_ms(value: int | str | bytes | None) -> datetime | None:
    """Milliseconds since the epoch (Redis server time) as an aware UTC datetime."""
    if value is None or value in ("", b""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


_MICROSECOND = timedelta(microseconds=1)


def to_ms(value: timedelta | None) -> int:
    """A duration as whole milliseconds (the unit every script takes), to the nearest one.

    A positive duration is at least 1 ms: rounded to 0 it would mean "none" to the scripts
    (a 0.4 ms timeout would be no timeout, a sub-millisecond lease would expire on
    arrival, a ``wait_timeout`` of 0 makes WAIT block for ever).
    """
    if value is None:
        return 0
    micros = value // _MICROSECOND  # exact: timedelta counts whole microseconds
    ms, rest = divmod(micros, 1000)
    if rest >= 500:
        ms += 1
    return 1 if ms == 0 and micros > 0 else ms


def bounded(value: str, limit: int) -> str:
    """``value``, cut to ``limit`` characters with a marker saying so."""
    if len(value) <= limit:
        return value
    return value[: limit - 40] + f"... [{len(value) - limit + 40} characters cut]"


def storable(value: str) -> str:
    r"""``value`` as redis-py can send it: lone surrogates escaped as ``\udcxx``.

    They come from bytes that were not UTF-8 (``os.fsdecode`` of a file name), and a text
    holding one cannot be encoded, so the outcome it belongs to could not be written.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def ascii_text(value: str) -> str:
    """``value`` with everything outside ASCII escaped: writable under any client encoding."""
    return value.encode("ascii", "backslashreplace").decode("ascii")


def describe(exc: BaseException) -> str:
    """``"ExcType: message"`` for `Job.error`, even when ``str(exc)`` itself raises."""
    try:
        message = str(exc)
    except Exception as inner:  # a broken __str__ must not take the worker down
        message = f"<str() raised {type(inner).__name__}>"
    name = type(exc).__name__
    return bounded(f"{name}: {message}" if message else name, MAX_ERROR_CHARS)


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
    return Job(
        id=job_id.decode() if type(job_id) is bytes else job_id,
        type=job_type.decode() if type(job_type) is bytes else job_type,
        payload=json.loads(payload),
        status=_STATUSES[status],
        priority=int(get("priority") or 0),
        attempts=int(get("attempts") or 0),
        max_retries=int(get("max_retries") or 0),
        created_at=_ms(get("created_at")),
        run_at=_ms(get("run_at")),
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
            run_at=from_ms(fields.get("run_at")),
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
        run_at=instant("run_at"),
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
