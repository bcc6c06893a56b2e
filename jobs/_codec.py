"""The wire format: payloads and results as JSON, times as the ms Redis keeps.

A job record back to a `Job` is `jobs._record`.

JSON only, never pickle: a Redis that an attacker can write to must not become code
execution in every worker. attrs instances are written as their fields.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs._json_depth import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from jobs._json_depth import too_deep
from jobs._typed import is_typed, unstructure
from jobs.errors import JobsError, PayloadError

if TYPE_CHECKING:
    from collections.abc import Callable

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


def _one_c_encoder() -> Callable[[object], str]:
    """`_ENCODER.encode` without its set-up at every call, where json has its C encoder.

    ``JSONEncoder.encode`` makes a new C encoder at each call, which is most of the cost
    of a small value (an int payload: 0.68 -> 0.18 us; a dict of three keys: 1.46 -> 0.78
    us). This one is made once, so without cycle markers: a dict kept across calls would
    hold stale object ids after a call that failed half way. A value that contains itself
    then recurses to a RecursionError, which `dumps` refuses as it refused the cycle.
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    quote: Callable[[str], str] = json.encoder.encode_basestring  # ensure_ascii=False's
    chunks = make(None, _attrs_default, quote, None, ":", ",", False, False, False)

    def encode(value: object) -> str:
        if isinstance(value, str):
            return quote(value)
        return "".join(chunks(value, 0))

    return encode


_encode = _one_c_encoder()


def dumps(value: object, what: str = "payload") -> bytes:
    """Encode ``value`` as compact UTF-8 JSON; attrs instances become their fields.

    Raises:
        PayloadError: not JSON (a set, an object, NaN, a lone surrogate), or nesting
            deeper than `MAX_JSON_DEPTH`.
    """
    try:
        data = _encode(value).encode("utf-8")
    except RecursionError:
        raise PayloadError(
            f"{what} is not JSON-serializable: it contains itself, or nests deeper than "
            f"{MAX_JSON_DEPTH} levels"
        ) from None
    except (TypeError, ValueError) as exc:
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
