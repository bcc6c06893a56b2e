"""Groups and chains: several jobs created at once, each waiting for the ones before it.

A flow is a `Task` (one job to create), a `Chain` (steps run one after the other, each
once the previous one completed) or a `Group` (members run side by side, then an
optional callback job once every member is final). They nest: a chain's step may be a
group, a group's member a chain. `Client.enqueue_flow` writes a whole flow in one
atomic Redis call (every job, or none) and returns a `FlowHandle`.

Example::

    flow = client.enqueue_flow(
        jobs.chain(
            jobs.Task("download", {"url": url}),
            jobs.group(
                [jobs.Task("resize", {"size": s}) for s in (64, 256, 1024)],
                then=jobs.Task("publish"),
            ),
        )
    )
    flow.last.result(timeout=60)   # the publish job's result

Built on `JobConfig.depends_on`: a step waits (`JobStatus.WAITING`) for the previous one
and is cancelled, with a reason naming it, if that one fails for good or is cancelled.
A group's callback (``then``) runs once every member is final, whatever their outcomes
(`JobConfig.depends_on_any_outcome`); its ``ctx.job.depends_on`` holds the members' ids,
so it reads their results with ``ctx.client.wait_all(ctx.job.depends_on)`` (keep
``completed_ttl`` and ``max_completed_jobs`` large enough for the records to outlive
the group).

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from jobs._validators import require_text
from jobs.config import JobConfig
from jobs.errors import ConfigError
from jobs.job_type import JobType

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import timedelta

    from jobs.handle import JobHandle
    from jobs.job import Job

#: Most jobs in one flow: it is written by one script call, which blocks Redis while it
#: runs (10,000 jobs: see the measurements in the README's flow section).
MAX_FLOW_JOBS = 100_000
#: Most payload bytes in one flow, all held by that one call (Redis keeps its arguments
#: in memory twice while the script runs, and serves no one else meanwhile).
MAX_FLOW_BYTES = 64 << 20


def _job_type(value: object) -> str:
    if isinstance(value, JobType):
        return value.name
    return value  # type: ignore[return-value]  # the validator names the field


def _task_type(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    require_text(field.name, value)


def _task_config(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, JobConfig):
        raise ConfigError(f"{field.name} must be a JobConfig, got {type(value).__name__}")
    if value is not None and value.unique_key is not None:
        raise ConfigError(f"{field.name}: unique_key is not supported in a group or chain")


@attrs.frozen
class Task:
    """One job to create as part of a flow: its type, payload and settings.

    Args:
        job_type: the handler name (or a `JobType`).
        payload: JSON-serializable data, or an attrs instance, as for `Client.enqueue`.
        config: as for `Client.enqueue` (no ``unique_key``); its ``depends_on`` adds
            existing jobs to wait for, besides those the flow sets.

    .. versionadded:: 0.1
    """

    job_type: str = attrs.field(converter=_job_type, validator=_task_type)
    payload: Any = None
    config: JobConfig | None = attrs.field(default=None, validator=_task_config)


def _flows(value: Iterable[Flow]) -> tuple[Flow, ...]:
    if isinstance(value, Task | Chain | Group):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ConfigError(f"expected tasks, chains or groups, got {value!r}") from None


def _all_flows(inst: object, field: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ConfigError(f"{field.name} must hold at least one task, chain or group")
    for item in value:
        if not isinstance(item, Task | Chain | Group):
            raise ConfigError(
                f"{field.name} must hold Task, Chain or Group values, got {type(item).__name__}"
            )


def _then(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Task):
        raise ConfigError(f"{field.name} must be a Task or None, got {type(value).__name__}")


@attrs.frozen
class Chain:
    """Steps that run one after the other, each once the previous one completed.

    If a step fails for good or is cancelled, the steps after it are cancelled, each
    naming the step before it. Build one with `chain`.

    .. versionadded:: 0.1
    """

    steps: tuple[Flow, ...] = attrs.field(converter=_flows, validator=_all_flows)


@attrs.frozen
class Group:
    """Members that run side by side; then, optionally, one callback job.

    The callback (``then``) runs once every member is final, whatever their outcomes;
    its ``Job.depends_on`` holds the ids of the members (of a member chain, its last
    step), in order. Build one with `group`.

    .. versionadded:: 0.1
    """

    members: tuple[Flow, ...] = attrs.field(converter=_flows, validator=_all_flows)
    then: Task | None = attrs.field(default=None, validator=_then)


#: What `Client.enqueue_flow` takes.
Flow = Task | Chain | Group


def chain(*steps: Flow) -> Chain:
    """Steps run one after the other: ``chain(a, b, c)`` runs b once a completed, then c.

    .. versionadded:: 0.1
    """
    return Chain(steps)


def group(members: Iterable[Flow], then: Task | None = None) -> Group:
    """Members run side by side; ``then`` runs once all of them are final.

    .. versionadded:: 0.1
    """
    return Group(tuple(members), then)


@attrs.frozen
class Placed:
    """One task of a flow with its id and the ids it waits for (`plan`)."""

    task: Task
    job_id: str
    depends_on: tuple[str, ...]
    #: A group's callback: it runs whatever its members' outcomes.
    any_outcome: bool


def plan(flow: Flow, new_id: Any) -> tuple[list[Placed], tuple[str, ...]]:
    """Every task of ``flow`` in an order where each follows what it waits for.

    ``new_id()`` gives each job its id. Returns the tasks, and the ids of the jobs that
    end the flow (a chain's last step, a group's callback, or its members' ends).

    Raises:
        ConfigError: the flow has more than `MAX_FLOW_JOBS` jobs.
    """
    placed: list[Placed] = []

    def place(node: Flow, after: tuple[str, ...]) -> tuple[str, ...]:
        if isinstance(node, Task):
            return (add(node, after, any_outcome=False),)
        if isinstance(node, Chain):
            for step in node.steps:
                after = place(step, after)
            return after
        ends: list[str] = []
        for member in node.members:
            ends += place(member, after)
        if node.then is None:
            return tuple(ends)
        return (add(node.then, tuple(ends), any_outcome=True),)

    def add(task: Task, after: tuple[str, ...], *, any_outcome: bool) -> str:
        if len(placed) >= MAX_FLOW_JOBS:
            raise ConfigError(f"a flow may hold at most {MAX_FLOW_JOBS} jobs")
        job_id: str = new_id()
        extra = task.config.depends_on if task.config is not None else ()
        deps = tuple(dict.fromkeys((*after, *(str.__str__(i) for i in extra))))
        placed.append(Placed(task, job_id, deps, any_outcome))
        return job_id

    ends = place(flow, ())
    return placed, ends


@attrs.frozen
class FlowHandle:
    """The jobs `Client.enqueue_flow` created.

    Attributes:
        jobs: a handle per task, in the order the tasks appear in the flow (depth
            first: a chain's steps in order, a group's members, then its callback).
        ends: the jobs that end the flow: a chain's last step, a group's callback (or,
            without one, its members).

    .. versionadded:: 0.1
    """

    jobs: tuple[JobHandle, ...]
    ends: tuple[JobHandle, ...]

    @property
    def last(self) -> JobHandle:
        """The one job that ends the flow (a chain's last step, a group's callback).

        Raises:
            ConfigError: the flow ends with several jobs (a group without ``then``).
        """
        if len(self.ends) != 1:
            raise ConfigError(f"this flow ends with {len(self.ends)} jobs: use .ends")
        return self.ends[0]

    def wait(self, timeout: float | timedelta | None = None) -> list[Job]:
        """Block until every job of the flow is final; the jobs, in `jobs` order.

        Raises:
            WaitTimeout: ``timeout`` passed first.
        """
        if not self.jobs:
            return []
        return self.jobs[0].client.wait_all(self.jobs, timeout)
