"""Typed enqueues mypy --strict must accept (tests/unit/test_typed_enqueue.py)."""

from __future__ import annotations

import attrs

import jobs

registry = jobs.Registry()


@attrs.frozen
class Resize:
    path: str
    width: int


@attrs.frozen
class Resized:
    path: str


@registry.job_type("resize", timeout=60)
def resize(ctx: jobs.JobContext, payload: Resize) -> Resized:
    return Resized(path=payload.path)


def produce(client: jobs.Client) -> Resized:
    handle: jobs.TypedJobHandle[Resized] = client.enqueue(resize, Resize("a.png", 100))
    job_id: str = handle  # still the id
    plain: jobs.JobHandle = client.enqueue("resize", {"path": "a.png", "width": 1})
    assert job_id and plain
    return handle.result(timeout=10)
