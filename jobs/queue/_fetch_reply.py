"""An exchange's replies, decoded: complete.lua's, fail.lua's and fetch.lua's.

They become the worker side's `Written` and `Fetched` values.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobs import _codec
from jobs.worker._protocol import Fetched, Leased, Written

if TYPE_CHECKING:
    from collections.abc import Sequence


def decode_fetched(reply: Any) -> Fetched:
    """``{now_ms, next_event_ms, more, jobs}`` (fetch.lua) as a `Fetched`."""
    leased = []
    names = _codec.FETCHED_FIELDS
    for values in _jobs(reply[3]) if len(reply) > 3 else ():
        fields = {n: v for n, v in zip(names, values, strict=True) if v is not False}
        leased.append(Leased(_codec.text(fields["id"]), _codec.text(fields["lease"]), fields))
    next_due = int(reply[1])
    return Fetched(int(reply[0]), None if next_due < 0 else next_due, leased, int(reply[2]) == 1)


def _jobs(raw: str | bytes) -> list[list[Any]]:
    """A fetch reply's jobs: for each, the values of `FETCHED_FIELDS`, absent ones False.

    fetch.lua sends them as one JSON array, which parses in C here; its strings are the
    records' bytes as Redis holds them. A job with some that are not UTF-8 (a record
    damaged by hand) has its strings as those very bytes, as reply fields would be, for
    the record's own checks to judge; the other jobs of the reply are as ever.
    """
    if type(raw) is not bytes:
        return json.loads(raw)  # type: ignore[no-any-return]
    try:
        return json.loads(raw.decode())  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        jobs: list[list[Any]] = json.loads(raw.decode("utf-8", "surrogateescape"))
        return [_as_bytes(values) if _escaped(values) else values for values in jobs]


def _escaped(values: list[Any]) -> bool:
    """Whether a decoded string of one job stands for bytes that are not UTF-8."""
    try:
        for v in values:
            if type(v) is str:
                v.encode()
    except UnicodeEncodeError:
        return True
    return False


def _as_bytes(values: list[Any]) -> list[Any]:
    return [v.encode("utf-8", "surrogateescape") if type(v) is str else v for v in values]


#: Where an exchange's replies are (`WorkerSide.exchange`): the positions of its
#: completed and of its failed outcomes, and whether it fetched.
Parts = tuple[list[int], list[int], bool]


def decode_exchanged(
    outcomes: int, parts: Parts, replies: Sequence[Any]
) -> tuple[list[Written], Fetched | None]:
    """An exchange's replies (complete.lua, fail.lua, fetch.lua, those sent) as values."""
    completed, failed, fetching = parts
    rest = iter(replies)
    written: list[Written] = [Written(False, "", 0, 0)] * outcomes
    if completed:
        reply = next(rest)
        now = int(reply[0])
        for index, code in zip(completed, _codec.text(reply[1]), strict=True):
            written[index] = Written(code == "1", "completed", now, 0)
    if failed:
        reply = next(rest)
        now = int(reply[0])
        for n, index in enumerate(failed):
            i = 1 + 3 * n
            written[index] = Written(
                bool(int(reply[i])), _codec.text(reply[i + 1]), now, int(reply[i + 2])
            )
    fetched: Fetched | None = None
    if fetching:
        fetched = decode_fetched(next(rest))
    return written, fetched
