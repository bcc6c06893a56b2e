"""The contract on a real Redis Cluster (3 masters, 3 replicas), and a master's failover.

Every queue lives in one hash slot (``{prefix:name}``), so its scripts run on one node
while different queues spread over the masters. The cluster is built once per session
(`redis_cluster`) and healed before each test (`cluster`), since one test kills a master.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
import redis.cluster

import jobs
from jobs import _codec
from jobs._loops import MAX_BACKOFF
from jobs.queue import _cluster as jobs_cluster
from jobs.queue._keys import QueueKeys
from jobs.queue._waiter import RECHECK
from tests.helpers import wait_until
from tests.integration._clients import Gate, make_client, recorder, unique_name, wait_for_status
from tests.integration._topologies import (
    ClusterTopology,
    drive_failover,
)


def _registry(**handlers: Any) -> jobs.Registry:
    registry = jobs.Registry()
    for name, handler in handlers.items():
        registry.register_func(name, handler)
    return registry


def _names_on_different_masters(cluster: ClusterTopology) -> tuple[str, str]:
    first = unique_name("a")
    owner = cluster.master_of(QueueKeys.for_queue("jobs", first).pending)
    for _ in range(100):
        second = unique_name("b")
        if cluster.master_of(QueueKeys.for_queue("jobs", second).pending) is not owner:
            return first, second
    raise AssertionError("100 random queue names all hashed to one master")


def test_a_queue_lives_in_one_slot_and_queues_spread_over_masters(
    cluster: ClusterTopology,
) -> None:
    first, second = _names_on_different_masters(cluster)
    seen, handler = recorder()
    registry = _registry(echo=handler)
    with (
        make_client(cluster.url, registry, name=first) as one,
        make_client(cluster.url, registry, name=second) as two,
    ):
        assert isinstance(one.queue.client, redis.cluster.RedisCluster)
        for client, name in ((one, first), (two, second)):
            keys = QueueKeys.for_queue("jobs", name)
            slots = {cluster.keyslot(k) for k in (keys.pending, keys.stats, keys.job("x"))}
            assert len(slots) == 1, f"queue {name} spans slots {slots}"
            job_id = client.enqueue("echo", name)
            assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == name
            master = cluster.master_of(keys.pending)
            node = master.client()
            try:
                assert node.exists(keys.job(job_id)) == 1  # the record is on that master
            finally:
                node.close()
        owners = {
            cluster.master_of(QueueKeys.for_queue("jobs", n).pending).port for n in (first, second)
        }
        assert len(owners) == 2
    assert sorted(seen) == sorted([first, second])


def test_one_pool_serves_queues_on_different_masters(cluster: ClusterTopology) -> None:
    first, second = _names_on_different_masters(cluster)
    seen, handler = recorder()
    registry = _registry(echo=handler)
    with (
        make_client(cluster.url, None, name=second) as producer,
        make_client(cluster.url, registry, name=first, queues=[first, second]) as client,
    ):
        # The pool blocks on its first queue's node and polls the second every
        # poll_interval: both are drained, in strict order when both have work.
        ids = [producer.enqueue("echo", "second"), client.enqueue("echo", "first")]
        assert wait_for_status(producer, ids[0], jobs.JobStatus.COMPLETED).result == "second"
        assert wait_for_status(client, ids[1], jobs.JobStatus.COMPLETED).result == "first"
        assert len(wait_until(producer.workers, 5, message="not registered on the second")) == 1
    assert sorted(seen) == ["first", "second"]


def test_enqueue_many_priorities_stats_and_workers(cluster: ClusterTopology) -> None:
    seen, handler = recorder()
    with make_client(cluster.url, _registry(echo=handler), start=False, num_workers=1) as client:
        low = client.enqueue_many("echo", [1, 2, 3])
        high = client.enqueue("echo", "urgent", config=jobs.JobConfig(priority=10))
        stats = client.stats()
        assert (stats.total_jobs, stats.pending_jobs) == (4, 4)
        assert client.get(low[0]).status is jobs.JobStatus.PENDING
        client.start()
        for job_id in [*low, high]:
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        assert seen == ["urgent", 1, 2, 3]  # priority first, then FIFO
        stats = client.stats()
        assert (stats.completed_jobs, stats.pending_jobs, stats.processing_jobs) == (4, 0, 0)
        assert stats.last_processed is not None
        workers = wait_until(client.workers, 5, message="the pool never registered")
        assert [w.num_workers for w in workers] == [1]


def test_retries_backoff_delays_and_permanent_failure(cluster: ClusterTopology) -> None:
    attempts: dict[str, int] = {}

    def flaky(ctx: jobs.JobContext, payload: Any) -> str:
        attempts[ctx.job.id] = ctx.job.attempts
        if ctx.job.attempts < 3:
            raise RuntimeError(f"attempt {ctx.job.attempts}")
        return "ok"

    def hopeless(ctx: jobs.JobContext, payload: Any) -> None:
        raise jobs.PermanentError("no")

    registry = _registry(flaky=flaky, hopeless=hopeless, echo=recorder()[1])
    with make_client(cluster.url, registry) as client:
        retried = client.enqueue(
            "flaky",
            None,
            config=jobs.JobConfig(max_retries=3, retry_backoff=jobs.LinearBackoff(step=0.1)),
        )
        delayed = client.enqueue("echo", "later", config=jobs.JobConfig(delay=0.5))
        assert client.get(delayed).status is jobs.JobStatus.SCHEDULED
        failed = client.enqueue("hopeless")

        job = wait_for_status(client, retried, jobs.JobStatus.COMPLETED)
        assert (job.attempts, job.result, attempts[retried]) == (3, "ok", 3)
        job = wait_for_status(client, delayed, jobs.JobStatus.COMPLETED)
        assert job.started_at is not None
        assert job.created_at is not None
        assert job.started_at - job.created_at >= timedelta(seconds=0.5)
        job = wait_for_status(client, failed, jobs.JobStatus.FAILED)
        assert job.attempts == 1
        assert job.error == "PermanentError: no"
        assert client.stats().retried_attempts == 2


def test_cancel_pending_and_running_jobs(cluster: ClusterTopology) -> None:
    entered = threading.Event()
    saw_cancel = threading.Event()

    def long(ctx: jobs.JobContext, payload: Any) -> None:
        entered.set()
        if not ctx.sleep(20):
            saw_cancel.set()

    with make_client(cluster.url, _registry(long=long)) as client:
        running = client.enqueue("long")
        assert entered.wait(5)
        pending = client.enqueue("long", config=jobs.JobConfig(delay=60))
        assert client.cancel(pending) is True
        assert client.get(pending).status is jobs.JobStatus.CANCELLED
        assert client.cancel(running) is True
        assert client.get(running).status is jobs.JobStatus.CANCELLED
        assert saw_cancel.wait(3), "the running handler's token was not cancelled"
        assert client.cancel(running) is False
        with pytest.raises(jobs.JobNotFound):
            client.cancel("no-such-job")
        assert client.stats().cancelled_jobs == 2


def test_fire_cron_claims_each_fire_time_once(cluster: ClusterTopology) -> None:
    with make_client(cluster.url) as client:
        queue = client.queue
        fire_ms = 1_800_000_000_000
        job = (f"cron:report:{fire_ms}", "report", _codec.dumps({"n": 1}), jobs.JobConfig())
        ttl = timedelta(days=1)
        assert queue.fire_cron("report", fire_ms, fire_ms + 60_000, job, ttl) == (True, fire_ms)
        assert queue.fire_cron("report", fire_ms, fire_ms + 60_000, job, ttl) == (False, fire_ms)
        assert client.get(job[0]).payload == {"n": 1}
        assert client.stats().total_jobs == 1
        assert queue.cron_state("report")["last_fire"] == str(fire_ms)


def test_wait_for_replicas_waits_on_the_queues_own_master(cluster: ClusterTopology) -> None:
    options = {"wait_for_replicas": 1, "wait_timeout": 0.2}
    with make_client(cluster.url, queue_options=options) as client:
        pending = client.queue.keys.pending
        master = cluster.master_of(pending)
        assert client.enqueue("t")  # the replica is attached: WAIT returns 1
        other_replicas = [
            r for m in cluster.masters_now() if m is not master for r in cluster.replicas_of(m)
        ]
        (own_replica,) = cluster.replicas_of(master)

        # WAIT goes to the queue's master: other masters' replicas do not matter.
        other_replicas[0].pause()
        try:
            assert client.enqueue("t")
        finally:
            other_replicas[0].resume()

        own_replica.pause()
        try:
            with pytest.raises(jobs.ReplicationError) as caught:
                client.enqueue("t")
            cron_job = ("cron:c:1", "t", b"null", jobs.JobConfig())
            with pytest.raises(jobs.ReplicationError):
                client.queue.fire_cron("c", 1, None, cron_job, timedelta(days=1))
            # A fire time already claimed writes nothing, so there is nothing to wait for.
            assert client.queue.fire_cron("c", 1, None, cron_job, timedelta(days=1)) == (False, 1)
        finally:
            own_replica.resume()
        error = caught.value
        assert (error.acknowledged, error.required) == (0, 1)
        assert f"written on the master at 127.0.0.1:{master.port}" in str(error)
        (job_id,) = error.job_ids
        assert client.get(job_id).status is jobs.JobStatus.PENDING  # it was written
        assert client.queue.cron_state("c")["last_fire"] == "1"


def test_workers_carry_on_after_a_master_fails_over(
    cluster: ClusterTopology,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="jobs")
    name = unique_name("failover")
    key = QueueKeys.for_queue("jobs", name).pending
    killed: list[Any] = []

    def kill() -> None:
        killed.append(cluster.kill_master_of(key))

    report = drive_failover(
        cluster.url, kill, lambda: cluster.wait_for_failover(key, killed[0]), name=name
    )
    with capsys.disabled():
        print(report.summary("cluster"))
    assert report.acked_after >= 100
    # Every error the outage caused was a Redis error that the loops back off from, not
    # an unexpected one (logged with a traceback).
    # (redis-py's own loggers may report its refreshes: not ours to judge.)
    assert not [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("jobs")
    ], caplog.text


def test_a_waiting_producer_is_woken_after_a_master_fails_over(cluster: ClusterTopology) -> None:
    # The ``finished`` channel hashes to the queue's slot, so the waiters' subscription
    # lives on the master this test kills: it must subscribe again on the promoted
    # replica and be woken there by the outcome, not only by its RECHECK re-read.
    name = unique_name("wait-failover")
    key = QueueKeys.for_queue("jobs", name).pending
    # A lease longer than the failover: the handler's outcome is the one written.
    with (
        Gate(result="done") as gate,
        make_client(cluster.url, _registry(slow=gate), name=name, lease=30) as client,
    ):
        job_id = client.enqueue("slow")
        assert gate.entered.wait(10)
        got: list[jobs.Job] = []
        waiter = threading.Thread(
            target=lambda: got.append(client.wait(job_id, timeout=60)), name="test-waiter"
        )
        waiter.start()
        wait_until(lambda: client.queue._listener is not None, 10)
        listener = client.queue._listener
        assert listener is not None
        assert listener.wait_subscribed(10)
        killed = cluster.kill_master_of(key)
        wait_until(
            lambda: not listener._subscribed.is_set(),
            10,
            message="the listener did not notice that its node died",
        )
        cluster.wait_for_failover(key, killed)
        # As for the heartbeat: one call's failover window, the loop's longest backoff and
        # a second more.
        bound = jobs_cluster.FAILOVER_WINDOW + MAX_BACKOFF + 1.0
        assert listener.wait_subscribed(bound), f"not subscribed again within {bound:.0f} s"
        gate.release.set()
        waiter.join(RECHECK / 2)
        assert not waiter.is_alive(), "wait() was not woken by the outcome after the failover"
    assert got[0].status is jobs.JobStatus.COMPLETED
    assert got[0].result == "done"


def test_exchanges_go_packed_on_the_queues_node_and_are_sent_ahead(
    cluster: ClusterTopology, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's hot path on a cluster: the exchange is packed and sent on the
    # connections of the node that serves the queue's slot, and answered later (the
    # pool decodes the previous answer meanwhile), not run at once through the cluster
    # client. Then a whole pool drains short jobs that way.
    with make_client(cluster.url, None, name=unique_name("packed")) as producer:
        queue = producer.queue
        producer.enqueue_many("echo", range(10))

        def at_once(*args: object, **kwargs: object) -> object:
            raise AssertionError("the exchange ran at once, not sent ahead")

        monkeypatch.setattr(queue, "exchange", at_once)
        answer = queue.begin_exchange((), 4, timedelta(seconds=30), request="r-1")
        written, fetched = answer()
        assert written == []
        assert fetched is not None
        assert len(fetched.jobs) == 4
        assert fetched.more
        monkeypatch.undo()
        queue.requeue(fetched.jobs)
        seen, handler = recorder()
        registry = _registry(echo=handler)
        with make_client(cluster.url, registry, name=queue.name, num_workers=4):
            ids = producer.enqueue_many("echo", range(10, 200))
            wait_for_status(producer, ids[-1], jobs.JobStatus.COMPLETED)
            wait_until(lambda: producer.stats().completed_jobs == 200, 10)
    assert sorted(seen) == list(range(200))
