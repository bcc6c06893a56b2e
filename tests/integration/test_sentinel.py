"""Redis Sentinel: the ``redis+sentinel://`` URL, failover under load, and ``wait_for_replicas``.

The topology (a master, one replica, three sentinels with quorum 2) is built once per
session (`redis_sentinel`) and healed before each test (`sentinel`). The URL parsing
tests at the end need no server.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.sentinel

import jobs
from jobs.errors import ConfigError
from jobs.queue import _urls
from tests.helpers import wait_until
from tests.integration._clients import make_client, recorder, wait_for_status
from tests.integration._topologies import SentinelTopology, drive_failover

if TYPE_CHECKING:
    from pathlib import Path


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


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://admin:Sup3rS3cret@[10.0.0.1:7000",
        "redis+sentinel://admin:Sup3rS3cret@[fe80::1/mymaster",
        "redis://admin:Sup3rS3cret@[::1:6379/0",
        "redis+cluster://10.0.0.1:7000/?password=Sup3rS3cret",
        "redis://10.0.0.1:6379/0?password=Sup3rS3cret&socket_timeout=x",
        "redis+sentinel://s1:26379,s2:2637x/mymaster?sentinel_password=Sup3rS3cret",
        "redis+sentinel://s1/mymaster?sentinel_password=Sup3rS3cret&socket_timeout=5s",
        "redis+sentinel://u:Sup3r@S3cret@s1/m?socket_timeout=5s",
        "redis://u:Sup3r/S3cret@h:1/0?ssl_ca_certs=/nowhere",
        "redis://u:Sup3rS3cret@h:x/0",
        "redis://u:pa:Sup3rS3cret@h:1/0?db=x",
        "rediss://h/0?ssl_keyfile_password=Sup3rS3cret&ssl_cert_reqs=maybe",
    ],
)
def test_no_url_error_shows_a_password(url: str) -> None:
    # Messages reach logs and terminals. A malformed host ("[") raised a bare ValueError
    # that the command line printed with the whole URL.
    with pytest.raises(ConfigError) as caught:
        _urls.connect(url)
    text = str(caught.value)
    assert "Sup3r" not in text and "S3cret" not in text, text
    assert "***" in text, text


def test_tls_options_reach_the_sentinels_and_the_master(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("not read until a connection is made\n")
    connection = _urls.connect(
        f"rediss+sentinel://h1/svc?ssl_ca_certs={files['ca']}&ssl_certfile={files['cert']}"
        f"&ssl_keyfile={files['key']}&ssl_cert_reqs=optional&ssl_check_hostname=false"
    )
    expected = {
        "ssl_ca_certs": str(files["ca"]),
        "ssl_certfile": str(files["cert"]),
        "ssl_keyfile": str(files["key"]),
        "ssl_cert_reqs": "optional",
        "ssl_check_hostname": False,
    }
    try:
        client = connection.client
        assert isinstance(client, redis.Redis)
        kwargs = client.connection_pool.connection_kwargs
        assert expected.items() <= kwargs.items()
        assert issubclass(client.connection_pool.connection_class, redis.SSLConnection)
        assert connection.sentinel is not None
        for sentinel in connection.sentinel.sentinels:
            pool = sentinel.connection_pool
            assert expected.items() <= pool.connection_kwargs.items()
            assert issubclass(pool.connection_class, redis.SSLConnection)
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("query", "option", "message"),
    [
        ("ssl_cert_reqs=maybe", "ssl_cert_reqs", "must be one of required, optional, none"),
        ("ssl_check_hostname=perhaps", "ssl_check_hostname", "must be true or false"),
        ("ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs", "no such file"),
        ("ssl_certfile=/no/such/cert.pem", "ssl_certfile", "no such file"),
        ("ssl_keyfile={file}", "ssl_keyfile", "needs ssl_certfile"),
    ],
)
@pytest.mark.parametrize(
    "scheme", ["rediss+sentinel://h1/svc", "rediss+cluster://h1:1", "rediss://h1:1/0"]
)
def test_bad_tls_options_raise_config_error_naming_them(
    scheme: str, query: str, option: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "key.pem").write_text("")
    url = f"{scheme}?{query.format(file=tmp_path / 'key.pem')}"
    with pytest.raises(ConfigError, match=rf"{option}\b.*{message}"):
        _urls.connect(url)


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://h1/svc?ssl_cert_reqs=none", "redis+cluster://h1:1?ssl_cert_reqs=none"],
)
def test_tls_options_need_a_tls_url(url: str) -> None:
    with pytest.raises(ConfigError, match="ssl_cert_reqs needs a TLS URL"):
        _urls.connect(url)
