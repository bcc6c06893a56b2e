"""A fetch's reply, decoded: what fetch.lua returns, as the worker side's `Fetched`."""

from __future__ import annotations

import json
from typing import Any

from jobs import _codec
from jobs.worker._protocol import Fetched, Leased


def decode_fetched(reply: Any) -> Fetched:
    """``{now_ms, next_event_ms, more, job_1, ...}`` (fetch.lua) as a `Fetched`."""
    leased = []
    names = _codec.FETCHED_FIELDS
    for raw in reply[3:]:
        values = _values(raw)
        fields = {n: v for n, v in zip(names, values, strict=True) if v is not False}
        leased.append(Leased(_codec.text(fields["id"]), _codec.text(fields["lease"]), fields))
    next_due = int(reply[1])
    return Fetched(int(reply[0]), None if next_due < 0 else next_due, leased, int(reply[2]) == 1)


def _values(raw: str | bytes) -> list[Any]:
    """One job of a fetch reply: the values of `FETCHED_FIELDS`, absent ones False.

    fetch.lua sends each job as one JSON array, which parses in C here; its strings are
    the record's bytes as Redis holds them. Those that are not UTF-8 (a record damaged by
    hand) come back as those very bytes, as a reply field would, for the record's own
    checks to judge.
    """
    if type(raw) is not bytes:
        return json.loads(raw)  # type: ignore[no-any-return]
    try:
        return json.loads(raw.decode())  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        values = json.loads(raw.decode("utf-8", "surrogateescape"))
        return [v.encode("utf-8", "surrogateescape") if type(v) is str else v for v in values]
