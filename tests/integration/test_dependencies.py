"""Dependencies, groups and chains: JobConfig.depends_on, jobs.group, jobs.chain.

A dependent job waits (JobStatus.WAITING) until its dependencies completed; the scripts
that finalize a job release or cancel what waits for it in the same call, so nothing
polls. Most tests drive the queue through real worker pools; the large group drives the
scripts directly (fetch and complete in batches) to count the callback's deliveries
exactly.
"""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis

import jobs
import jobs.flow
import jobs.testing
from jobs.queue._scripts import scripts
from jobs.worker._protocol import Completed, Failed, Leased
from tests.integration._clients import Gate, make_client, wait_for_status

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs._embedded import RedisServer
    from tests.integration._topologies import ClusterTopology

WAITING = jobs.JobStatus.WAITING
PENDING = jobs.JobStatus.PENDING
CANCELLED = jobs.JobStatus.CANCELLED
COMPLETED = jobs.JobStatus.COMPLETED


def _registry(**handlers: Callable[[jobs.JobContext, Any], Any]) -> jobs.Registry:
    registry = jobs.Registry()
    for name, handler in handlers.items():
        registry.register_func(name, handler)
    return registry


def _boom(ctx: jobs.JobContext, payload: Any) -> Any:
    raise jobs.PermanentError("boom")


def _echo(ctx: jobs.JobContext, payload: Any) -> Any:
    return payload


def _after(job_ids: list[str]) -> jobs.JobConfig:
    return jobs.JobConfig(depends_on=job_ids)


def _counts_add_up(stats: jobs.QueueStats) -> None:
    assert stats.total_jobs == (
        stats.pending_jobs
        + stats.scheduled_jobs
        + stats.waiting_jobs
        + stats.processing_jobs
        + stats.completed_jobs
        + stats.failed_jobs
        + stats.cancelled_jobs
    )


def test_a_dependent_waits_then_runs_when_its_dependency_completes(redis_url: str) -> None:
    gate = Gate(result="a done")
    with gate, make_client(redis_url, _registry(a=gate, b=_echo)) as client:
        a = client.enqueue("a")
        b = client.enqueue("b", {"n": 1}, _after([a]))
        assert gate.entered.wait(10)
        job = client.get(b)
        assert job.status is WAITING
        assert job.depends_on == (a,)
        stats = client.stats()
        assert (stats.waiting_jobs, stats.processing_jobs) == (1, 1)
        _counts_add_up(stats)
        assert [j.id for j in client.list_jobs("waiting")] == [b]
        gate.release.set()
        assert b.result(timeout=10) == {"n": 1}
        assert b.get().started_at >= a.get().completed_at  # type: ignore[operator]
        stats = client.stats()
        assert (stats.waiting_jobs, stats.completed_jobs, stats.total_jobs) == (0, 2, 2)


def test_a_dependency_that_already_completed_releases_at_once(redis_url: str) -> None:
    with make_client(redis_url, _registry(a=_echo, b=_echo)) as client:
        a = client.enqueue("a", 1)
        assert a.wait(timeout=10).status is COMPLETED
        client.stop()
        b = client.enqueue_many("b", [1, 2], _after([a, a]))
        assert [client.get(i).status for i in b] == [PENDING, PENDING]
        assert client.stats().waiting_jobs == 0


def test_a_failed_dependency_cancels_its_dependents_transitively(redis_url: str) -> None:
    with make_client(redis_url, _registry(a=_boom, b=_echo, c=_echo), start=False) as client:
        a = client.enqueue("a")
        b = client.enqueue("b", None, _after([a]))
        c = client.enqueue("c", None, _after([b]))
        client.start()
        assert client.wait(a, timeout=15).status is jobs.JobStatus.FAILED
        job_b, job_c = client.wait(b, timeout=5), client.wait(c, timeout=5)
        assert job_b.status is CANCELLED and job_b.error == f"dependency {a} failed"
        assert job_c.status is CANCELLED and job_c.error == f"dependency {b} was cancelled"
        assert job_b.attempts == job_c.attempts == 0
        # Enqueued after the failure: cancelled in the same call, with the reason.
        late = client.enqueue("b", None, _after([a]))
        assert late.get().status is CANCELLED
        assert late.get().error == f"dependency {a} failed"
        stats = client.stats()
        assert (stats.failed_jobs, stats.cancelled_jobs, stats.waiting_jobs) == (1, 3, 0)
        _counts_add_up(stats)


def test_run_anyway_after_a_failed_dependency(redis_url: str) -> None:
    with make_client(redis_url, _registry(a=_boom, cleanup=_echo)) as client:
        a = client.enqueue("a")
        anyway = jobs.JobConfig(depends_on=[a], depends_on_any_outcome=True)
        cleanup = client.enqueue("cleanup", "ran", anyway)
        assert cleanup.result(timeout=15) == "ran"
        assert a.get().status is jobs.JobStatus.FAILED


def test_cancel_propagates_to_dependents(redis_url: str) -> None:
    with make_client(redis_url) as client:  # no workers: everything stays where it is
        a = client.enqueue("a")
        b = client.enqueue("b", None, _after([a]))
        c = client.enqueue("c", None, _after([b]))
        report = client.enqueue(
            "report", None, jobs.JobConfig(depends_on=[c], depends_on_any_outcome=True)
        )
        assert client.cancel(a)
        assert [client.get(i).status for i in (a, b, c)] == [CANCELLED] * 3
        assert client.get(b).error == f"dependency {a} was cancelled"
        assert client.get(c).error == f"dependency {b} was cancelled"
        assert client.get(report).status is PENDING  # runs whatever the outcome
        stats = client.stats()
        assert (stats.cancelled_jobs, stats.pending_jobs, stats.waiting_jobs) == (3, 1, 0)
        _counts_add_up(stats)


def test_cancelling_a_waiting_job_leaves_its_dependency_alone(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url) as client:
        a = client.enqueue("a")
        b = client.enqueue("b", None, _after([a]))
        assert client.cancel(b)
        assert client.get(b).status is CANCELLED
        assert client.get(a).status is PENDING
        # b left a's dependents hash: nothing is left to settle when a finishes.
        assert not redis_client.exists(client.queue.keys.dependents(a))
        assert client.stats().waiting_jobs == 0


def test_purging_a_dependency_cancels_what_waits_for_it(redis_url: str) -> None:
    with make_client(redis_url) as client:
        a = client.enqueue("a")
        b = client.enqueue("b", None, _after([a]))
        c = client.enqueue("c", None, _after([b]))
        anyway = client.enqueue(
            "d", None, jobs.JobConfig(depends_on=[a], depends_on_any_outcome=True)
        )
        assert client.purge("pending") == 1
        assert client.get(b).error == f"dependency {a} was purged"
        assert client.get(c).error == f"dependency {b} was cancelled"
        assert client.get(anyway).status is PENDING
        stats = client.stats()
        assert (stats.waiting_jobs, stats.cancelled_jobs, stats.pending_jobs) == (0, 2, 1)


def test_an_unknown_dependency_is_refused_and_nothing_is_written(redis_url: str) -> None:
    with make_client(redis_url) as client:
        a = client.enqueue("a")
        with pytest.raises(jobs.JobNotFound, match="no-such-job"):
            client.enqueue_many("b", [1, 2, 3], _after([a, "no-such-job"]))
        with pytest.raises(jobs.JobNotFound, match="no-such-job"):
            client.enqueue_flow(
                jobs.chain(jobs.Task("x"), jobs.Task("y", None, _after(["no-such-job"])))
            )
        stats = client.stats()
        assert (stats.total_jobs, stats.pending_jobs, stats.waiting_jobs) == (1, 1, 0)


def test_a_dependency_on_another_queue_is_refused(redis_url: str) -> None:
    with make_client(redis_url) as one, make_client(redis_url) as other:
        a = one.enqueue("a")
        with pytest.raises(jobs.ConfigError, match="across queues"):
            other.enqueue("b", None, _after([a]))
        # A plain id is looked up in this queue only.
        with pytest.raises(jobs.JobNotFound, match="another queue"):
            other.enqueue("b", None, _after([a.id]))
        assert other.stats().total_jobs == 0


def test_a_delayed_dependent_keeps_its_delay(redis_url: str) -> None:
    with make_client(redis_url) as client:
        a = client.enqueue("a")
        b = client.enqueue("b", None, jobs.JobConfig(depends_on=[a], delay=3600))
        c = client.queue.fetch(1, timedelta(seconds=30))
        assert [j.job_id for j in c.jobs] == [a]
        client.queue.write([Completed(Leased(a, c.jobs[0].token), b"null")])
        assert client.get(b).status is jobs.JobStatus.SCHEDULED


def test_a_group_callback_runs_once_with_every_member_id(redis_url: str) -> None:
    seen: list[tuple[str, list[Any]]] = []
    lock = threading.Lock()

    def member(ctx: jobs.JobContext, n: int) -> int:
        if n % 3 == 0:
            raise jobs.PermanentError(f"member {n} fails")
        return n * n

    def callback(ctx: jobs.JobContext, payload: Any) -> str:
        assert ctx.client is not None
        members = ctx.client.wait_all(ctx.job.depends_on, timeout=5)
        with lock:
            seen.append((ctx.job.id, [m.result for m in members]))
        return "reported"

    with make_client(redis_url, _registry(member=member, callback=callback)) as client:
        flow = client.enqueue_flow(
            jobs.group([jobs.Task("member", n) for n in range(10)], then=jobs.Task("callback"))
        )
        assert flow.last.result(timeout=20) == "reported"
        assert len(flow.jobs) == 11
        assert [cid for cid, _ in seen] == [flow.last]
        assert seen[0][1] == [None if n % 3 == 0 else n * n for n in range(10)]
        assert client.get(flow.last).depends_on == tuple(flow.jobs[:10])
        statuses = [j.status for j in flow.wait(timeout=5)]
        assert statuses.count(jobs.JobStatus.FAILED) == 4
        _counts_add_up(client.stats())


def test_a_chain_runs_in_order_and_stops_at_a_failure(redis_url: str) -> None:
    order: list[int] = []

    def step(ctx: jobs.JobContext, n: int) -> int:
        order.append(n)
        return n

    with make_client(redis_url, _registry(step=step, fail=_boom), num_workers=4) as client:
        flow = client.enqueue_flow(jobs.chain(*(jobs.Task("step", n) for n in range(5))))
        assert flow.last.result(timeout=20) == 4
        assert order == [0, 1, 2, 3, 4]
        finished = flow.wait(timeout=5)
        for before, after in itertools.pairwise(finished):
            assert after.started_at >= before.completed_at  # type: ignore[operator]

        broken = client.enqueue_flow(
            jobs.chain(jobs.Task("step", 10), jobs.Task("fail"), jobs.Task("step", 11))
        )
        last = broken.last.wait(timeout=20)
        assert last.status is CANCELLED
        assert last.error == f"dependency {broken.jobs[1]} failed"
        assert order == [0, 1, 2, 3, 4, 10]


def test_nested_flows(redis_url: str) -> None:
    with make_client(redis_url, _registry(t=_echo)) as client:
        flow = client.enqueue_flow(
            jobs.chain(
                jobs.Task("t", "first"),
                jobs.group(
                    [jobs.chain(jobs.Task("t", "a1"), jobs.Task("t", "a2")), jobs.Task("t", "b")],
                    then=jobs.Task("t", "then"),
                ),
                jobs.Task("t", "last"),
            )
        )
        assert flow.last.result(timeout=20) == "last"
        by_payload = {j.payload: j for j in flow.wait(timeout=5)}
        then = by_payload["then"]
        assert then.depends_on == (by_payload["a2"].id, by_payload["b"].id)
        assert by_payload["a1"].depends_on == (by_payload["first"].id,)


def test_a_group_of_10000_is_created_in_one_call_and_its_callback_fires_once(
    redis_factory: Callable[..., RedisServer],
) -> None:
    size = 10_000
    # A server of its own: the test counts every script call the server sees.
    server = redis_factory()
    redis_client = redis.Redis(port=server.port)
    with make_client(server.url) as client:
        # Loaded first, so that the call below is the only script call the server sees.
        scripts().load_all(redis_client, client.queue.keys.pending)
        redis_client.config_resetstat()
        flow = client.enqueue_flow(
            jobs.group([jobs.Task("m", n) for n in range(size)], then=jobs.Task("cb"))
        )
        stats_info = redis_client.info("commandstats")
        calls = [name for name in stats_info if name in ("cmdstat_evalsha", "cmdstat_eval")]
        assert sum(stats_info[name]["calls"] for name in calls) == 1
        stats = client.stats()
        assert (stats.total_jobs, stats.pending_jobs, stats.waiting_jobs) == (size + 1, size, 1)
        queue = client.queue
        fired = 0
        done = 0
        while True:
            fetched = queue.fetch(1000, timedelta(minutes=5))
            if not fetched.jobs:
                break
            for leased in fetched.jobs:
                if leased.job_id == flow.last:
                    fired += 1
                    assert done == size  # only once every member is final
            # Every fifth member fails for good: the callback runs whatever the outcome.
            completions = [
                Completed(Leased(j.job_id, j.token), b"1")
                for j in fetched.jobs
                if j.job_id == flow.last or int(j.fields["payload"]) % 5
            ]
            failures = [
                Failed(Leased(j.job_id, j.token), "E", "", -1, True)
                for j in fetched.jobs
                if j.job_id != flow.last and not int(j.fields["payload"]) % 5
            ]
            queue.write([*completions, *failures])
            done += len(fetched.jobs) - (1 if flow.last in {j.job_id for j in fetched.jobs} else 0)
        assert fired == 1
        stats = client.stats()
        assert (stats.completed_jobs, stats.failed_jobs) == (size - size // 5 + 1, size // 5)
        assert stats.waiting_jobs == 0
        _counts_add_up(stats)
    redis_client.close()


def test_the_testing_drain_runs_a_flow_in_order(redis_url: str) -> None:
    order: list[str] = []

    def step(ctx: jobs.JobContext, name: str) -> str:
        order.append(name)
        return name

    with make_client(redis_url, _registry(step=step), start=False) as client:
        client.enqueue_flow(
            jobs.chain(
                jobs.Task("step", "a"),
                jobs.group([jobs.Task("step", "b")], then=jobs.Task("step", "c")),
            )
        )
        assert [j.payload for j in jobs.testing.enqueued(client)] == ["a", "b", "c"]
        ran = jobs.testing.drain(client)
        assert order == ["a", "b", "c"] and len(ran) == 3


def test_wait_for_status_sees_waiting(redis_url: str) -> None:
    with make_client(redis_url) as client:
        a = client.enqueue("a")
        b = client.enqueue("b", None, _after([a]))
        assert wait_for_status(client, b, WAITING).depends_on == (a,)


def test_a_flow_too_large_for_one_call_is_refused(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs.flow, "MAX_FLOW_BYTES", 100)
    with make_client(redis_url) as client:
        with pytest.raises(jobs.PayloadError, match="add up to"):
            client.enqueue_flow(jobs.group([jobs.Task("t", "x" * 40) for _ in range(3)]))
        assert client.stats().total_jobs == 0


def test_task_values_are_checked() -> None:
    with pytest.raises(jobs.ConfigError, match="unique_key"):
        jobs.Task("t", None, jobs.JobConfig(unique_key="k"))
    with pytest.raises(jobs.ConfigError, match="at least one"):
        jobs.group([])
    with pytest.raises(jobs.ConfigError, match="depends_on"):
        jobs.JobConfig(depends_on=[""])
    with pytest.raises(jobs.ConfigError, match="depends_on"):
        jobs.JobConfig(depends_on="abc")
    assert jobs.JobConfig(depends_on=["a", "b", "a"]).depends_on == ("a", "b")


@pytest.mark.slow
def test_dependencies_on_a_cluster(cluster: ClusterTopology) -> None:
    with make_client(cluster.url) as client, make_client(cluster.url) as other:
        a = client.enqueue("a")
        b = client.enqueue("b", None, _after([a]))
        flow = client.enqueue_flow(jobs.group([jobs.Task("m", 1)], then=jobs.Task("cb")))
        assert client.get(b).status is WAITING
        assert client.get(flow.last).status is WAITING
        assert client.cancel(a)
        assert client.get(b).status is CANCELLED
        with pytest.raises(jobs.ConfigError, match="across queues"):
            other.enqueue("c", None, _after([flow.jobs[0]]))
