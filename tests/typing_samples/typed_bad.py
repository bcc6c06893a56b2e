"""Typed enqueues mypy --strict must refuse, each on a line marked E.

Checked by tests/unit/test_typed_enqueue.py.
"""

from __future__ import annotations

import attrs

import jobs

registry = jobs.Registry()


@attrs.frozen
class Resize:
    path: str


@registry.job_type("resize")
def resize(ctx: jobs.JobContext, payload: Resize) -> int:
    return len(payload.path)


def produce(client: jobs.Client) -> None:
    client.enqueue(resize, {"path": "a.png"})  # E: a dict is not a Resize
    client.enqueue(resize, "a.png")  # E: nor is a str
    text: str = client.enqueue(resize, Resize("a.png")).result()  # E: the result is an int
    assert text
