"""`JobType`: a job type declared with its payload and result types, for typed enqueues.

``@registry.job_type("resize")`` registers the handler like ``@registry.job`` and returns
a `JobType[P, R]` read from the handler's annotations (``payload: P`` and ``-> R``). It
still calls the handler, so tests can call it directly; and it is what a producer passes
to `Client.enqueue` instead of the type's name, which gives ``mypy --strict`` the payload
type to check at the call and the result type of the returned `TypedJobHandle`::

    @registry.job_type("resize", timeout=60)
    def resize(ctx: jobs.JobContext, payload: Resize) -> Resized: ...

    handle = client.enqueue(resize, Resize(path="a.png"))   # a dict here: a mypy error
    resized: Resized = handle.result(timeout=10)            # a Resized, built from JSON

A result whose annotation is an attrs class, a dataclass or a pydantic model comes back
as an instance of it (built by the same converter as payloads); other results come back
as stored (JSON data).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from jobs import _typed
from jobs.errors import JobCancelled, JobFailed
from jobs.handle import JobHandle
from jobs.job import JobStatus

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from jobs.client import Client
    from jobs.context import JobContext
    from jobs.job import Job

P = TypeVar("P")
R = TypeVar("R")


@attrs.frozen
class JobType(Generic[P, R]):
    """A declared job type: its name, its handler, and the class its result is built as.

    .. versionadded:: 0.1
    """

    name: str
    func: Callable[[JobContext, P], R]
    #: The class a stored result is rebuilt as (an attrs class, dataclass or pydantic
    #: model from the handler's return annotation), or None to return it as stored.
    result_type: type | None = None

    def __call__(self, ctx: JobContext, payload: P) -> R:
        """Call the handler (as a worker would, minus the JSON round trip)."""
        return self.func(ctx, payload)

    def result_of(self, job: Job) -> R:
        """A final job's result as the handler's return type; its failure raised (`outcome`)."""
        value = outcome(job)
        if self.result_type is None:
            return typing.cast("R", value)
        return typing.cast("R", _typed.structure(self.result_type, value))


class TypedJobHandle(JobHandle, Generic[R]):
    """A `JobHandle` whose `result` is typed: returned by ``client.enqueue(job_type, ...)``.

    .. versionadded:: 0.1
    """

    _job_type: JobType[Any, R]

    def __new__(cls, job_id: str, client: Client, job_type: JobType[Any, R]) -> TypedJobHandle[R]:
        """The handle of job ``job_id`` of ``job_type``, enqueued by ``client``."""
        handle = typing.cast("TypedJobHandle[R]", super().__new__(cls, job_id, client))
        handle._job_type = job_type
        return handle

    def result(self, timeout: float | timedelta | None = None) -> R:
        """Block until the job is final; its result as the handler's return type.

        Raises:
            JobFailed: the job failed for good.
            JobCancelled: the job was cancelled.
            WaitTimeout: ``timeout`` passed first.
        """
        return self._job_type.result_of(self.client.wait(self.id, timeout))


def outcome(job: Job) -> Any:
    """A final job's result; raises `JobFailed` or `JobCancelled` (with the job) instead.

    Shared by `Client.result` and `TypedJobHandle.result`.
    """
    if job.status is JobStatus.COMPLETED:
        return job.result
    if job.status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {job.id} ({job.type}) was cancelled", job=job)
    raise JobFailed(job)


def result_type_of(func: Callable[..., Any]) -> type | None:
    """The class a handler's results are rebuilt as: its return annotation, if typed."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: results come back as stored
        return None
    returned = hints.get("return")
    if isinstance(returned, type) and _typed.is_typed(returned):
        return returned
    return None


def payload_type_of(func: Callable[..., Any]) -> type | None:
    """The class a handler's payload is built as: its second parameter's annotation."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return None
    names = func.__code__.co_varnames[: func.__code__.co_argcount]
    if len(names) < 2:
        return None
    annotated = hints.get(names[1])
    if isinstance(annotated, type) and _typed.is_typed(annotated):
        return annotated
    return None
