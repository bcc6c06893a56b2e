"""Redis Sentinel: the ``redis+sentinel://`` URL, failover under load, and ``wait_for_replicas``.

The topology (a master, one replica, three sentinels with quorum 2) is built once per
session (`redis_sentinel`) and healed before each test (`sentinel`). The URL parsing
tests at the end need no server.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.sentinel

import jobs
from jobs import _urls
from jobs.errors import ConfigError
from tests.helpers import wait_until
from tests.integration._clients import make_client, recorder, wait_for_status
from tests.integration._topologies import SentinelTopology, drive_failover


def test_a_sentinel_url_reaches_the_master(sentinel: SentinelTopology) -> None:
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("echo", handler)
    with make_client(sentinel.url, registry) as client:
        assert client.queue.address.startswith("sentinel service mymaster via 127.0.0.1:")
        job_id = client.enqueue("echo", {"n": 1})
        assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == {"n": 1}
        key = client.queue.keys.job(job_id)
        master, replica = sentinel.master().client(), sentinel.replica().client()
        try:
            assert master.exists(key) == 1
            wait_until(lambda: replica.exists(key) == 1, 5, message="not replicated")
        finally:
            master.close()
            replica.close()
    assert seen == [{"n": 1}]


def test_workers_carry_on_after_the_sentinels_fail_over(
    sentinel: SentinelTopology,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="jobs")
    killed: list[Any] = []

    def kill() -> None:
        killed.append(sentinel.kill_master())

    report = drive_failover(sentinel.url, kill, lambda: sentinel.wait_for_failover(killed[0]))
    with capsys.disabled():
        print(report.summary("sentinel"))
    assert report.acked_after >= 100
    # Every error the outage caused was a Redis error that the loops back off from, not
    # an unexpected one (logged with a traceback).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_wait_for_replicas_raises_when_no_replica_acknowledges(
    sentinel: SentinelTopology,
) -> None:
    options = {"wait_for_replicas": 1, "wait_timeout": 0.3}
    with make_client(sentinel.url, queue_options=options) as client:
        assert client.enqueue("t")
        ids = client.enqueue_many("t", [1, 2])
        replica = sentinel.replica()
        replica.pause()
        try:
            with pytest.raises(jobs.ReplicationError) as caught:
                client.enqueue_many("t", [3, 4])
        finally:
            replica.resume()
        error = caught.value
        assert (error.acknowledged, error.required) == (0, 1)
        assert "2 jobs" in str(error)
        assert "written on the master" in str(error)
        assert len(error.job_ids) == 2
        for job_id in (*ids, *error.job_ids):
            assert client.get(job_id).status is jobs.JobStatus.PENDING
        assert client.enqueue("t")  # the replica is back

    with (
        make_client(sentinel.url, queue_options={**options, "wait_for_replicas": 2}) as client,
        pytest.raises(jobs.ReplicationError, match="only 1 of 2 replicas"),
    ):
        client.enqueue("t")  # there is one replica, never two


def test_wait_timeout_must_stay_below_the_socket_timeout() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_timeout=1)
    try:
        with pytest.raises(ConfigError, match="wait_timeout"):
            jobs.RedisQueue(
                jobs.RedisQueueConfig(client=client, wait_for_replicas=1, wait_timeout=1)
            )
        with pytest.raises(ConfigError, match="wait_for_replicas"):
            jobs.RedisQueueConfig(client=client, wait_for_replicas=-1)
        with pytest.raises(ConfigError, match="wait_timeout"):
            jobs.RedisQueueConfig(client=client, wait_timeout=0)
        config = jobs.RedisQueueConfig(client=client, wait_timeout=timedelta(milliseconds=500))
        assert (config.wait_for_replicas, config.wait_timeout) == (0, timedelta(seconds=0.5))
    finally:
        client.close()


# -- URL parsing (no server needed: nothing connects until the first command) --------


def test_sentinel_url_parts() -> None:
    connection = _urls.connect(
        "redis+sentinel://:s%40cret@h1:1111,h2,[::1]:3333/svc/2?socket_timeout=0.5"
        "&sentinel_password=sp"
    )
    try:
        client = connection.client
        assert isinstance(client, redis.Redis)
        pool = client.connection_pool
        assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
        assert pool.service_name == "svc"
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (2, "s@cret", 0.5)
        assert connection.sentinel is not None
        sentinels = [s.connection_pool.connection_kwargs for s in connection.sentinel.sentinels]
        assert [(s["host"], s["port"]) for s in sentinels] == [
            ("h1", 1111),
            ("h2", 26379),
            ("::1", 3333),
        ]
        assert {s["password"] for s in sentinels} == {"sp"}
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:1", "the path must be /service"),
        ("redis+sentinel://h1:1/svc/0/extra", "the path must be /service"),
        ("redis+sentinel://h1:1/svc/x", "bad db"),
        ("redis+sentinel://h1:x/svc", "bad port"),
        ("redis+sentinel:///svc", "names no host"),
        ("redis+sentinel://h1/svc?colour=red", "unknown option 'colour'"),
        ("redis+sentinel://h1/svc?socket_timeout=soon", "socket_timeout must be a number"),
        ("redis+cluster://h1:1/3", "only db 0"),
    ],
)
def test_bad_urls_raise_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _urls.connect(url)


def test_a_bad_url_never_shows_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        _urls.connect("redis+sentinel://user:hunter2@h1/svc?nope=1")
    assert "hunter2" not in str(caught.value)
    assert "user:***@h1" in str(caught.value)
