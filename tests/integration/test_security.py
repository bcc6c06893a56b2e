"""Nobody gets in: passwords, least-privilege ACL users, TLS, tenant prefixes, unguessable ids.

- `WORKER_ACL` is the least-privilege rule a producer, worker pool, scheduler and the
  command line need: exactly the commands the library sends (EVALSHA and SCRIPT LOAD)
  plus those its scripts call inside Redis (ACLs apply inside scripts too), on the keys
  of one prefix. It was found by running these flows under ``+@all`` and reading
  ``INFO commandstats``; the full-flow test below runs under it and asserts that the
  ACL log recorded no denial.
- A user limited to another prefix gets NOPERM on every call against this queue.
- TLS: a private ``redis-server`` that listens on a TLS port only, with a CA and server
  certificate made by ``openssl`` for the test; the client verifies the certificate.
- Prefixes isolate tenants sharing one Redis; job ids carry 128 random bits.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import redis

import jobs
from jobs._ids import new_job_id, new_job_ids
from jobs.queue import _acl
from tests.helpers import checkout_connection, free_port, wait_until
from tests.integration._clients import make_client, wait_for_status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from jobs._embedded import RedisServer

#: Least privilege for everything ``jobs`` does on the queues under prefix "jobs" (any
#: queue name). For one queue only: ``~{jobs:NAME}:*``. Note the pattern: keys look like
#: ``{jobs:NAME}:pending``, so ``~{jobs:*}`` (with a closing brace) would match none.
#: ``+wait`` is needed only with ``RedisQueueConfig(wait_for_replicas=...)``, ``+ping``
#: only by ``python -m jobs``. On Redis 7.2+ add ``+client|setinfo`` if you want redis-py
#: to name its connections (it tries on connect and ignores a refusal).
WORKER_ACL = (
    "resetkeys resetchannels ~{jobs:* &{jobs:* -@all "
    "+evalsha +script|load +blpop +rpush +pexpire +del +exists +llen +persist "
    "+publish +subscribe +get +set "
    "+hget +hmget +hgetall +hset +hsetnx +hdel +hincrby +incr +incrby "
    "+zadd +zrem +zcard +zrange +zrevrange +zrangebyscore +zremrangebyscore "
    "+zremrangebyrank +zpopmin +time +ping +wait"
)


def command(client: redis.Redis, *args: str) -> Any:
    """Any Redis command, raw (redis-py leaves execute_command untyped)."""
    run: Callable[..., Any] = client.execute_command
    return run(*args)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def acl_setuser(admin: redis.Redis, user: str, password: str, rule: str) -> None:
    command(admin, "ACL", "SETUSER", user, "on", f">{password}", *rule.split())


def acl_denials(admin: redis.Redis) -> list[Any]:
    # redis-py sends CLIENT SETINFO on connect and shrugs off a refusal; some servers
    # (6.2) log that refusal. It is not a command of the library's. A worker pool reads
    # maxmemory-policy once (CONFIG GET) and shrugs off a refusal too: it is optional.
    optional = (b"client", b"config|get")
    entries = [_as_dict(e) for e in command(admin, "ACL", "LOG")]
    return [e for e in entries if e.get(b"object") not in optional]


def _as_dict(entry: Any) -> dict[Any, Any]:
    # redis-py 6+ parses each ACL LOG entry into a dict; 5.x leaves a flat list of pairs.
    if isinstance(entry, dict):
        return entry
    return dict(zip(entry[::2], entry[1::2], strict=True))


@contextlib.contextmanager
def admin_client(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    try:
        yield client
    finally:
        client.close()


def user_url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{quote(user)}:{quote(password, safe='')}@127.0.0.1:{server.port}/0"


def full_flow(url: str, prefix: str = "jobs") -> jobs.QueueStats:
    """Everything the library does against a queue: produce, run, fail, retry, time out,
    cancel, delay, hooks, heartbeats, reaping, cron, list, purge, wait, dependencies,
    graceful stop."""
    entered = threading.Event()
    hooks: list[str] = []

    def block(ctx: jobs.JobContext, payload: Any) -> None:
        entered.set()
        while not ctx.cancelled:
            ctx.sleep(0.05)

    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    registry.register_func("boom", lambda ctx, payload: 1 / 0)
    registry.register_func("slow", lambda ctx, payload: ctx.sleep(5))
    registry.register_func("block", block)
    with make_client(
        url,
        registry,
        prefix=prefix,
        shutdown_timeout=0.2,
        success_handler=lambda job: hooks.append(job.id),
        error_handler=lambda job, exc: hooks.append(job.id),
        # Small enough that failed records get trimmed (ZREMRANGEBYRANK) too.
        queue_options={"max_failed_jobs": 1},
    ) as client:
        scheduler = jobs.Scheduler(client)
        scheduler.register(jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="ok"))
        with scheduler:
            ok = client.enqueue("ok", {"a": 1})
            client.enqueue_many("ok", [{"i": i} for i in range(3)])
            client.enqueue("ok", {}, jobs.JobConfig(delay=0.2))
            client.enqueue(
                "boom", {}, jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
            )
            client.enqueue("slow", {}, jobs.JobConfig(timeout=0.2, max_retries=0))
            later = client.enqueue("ok", {}, jobs.JobConfig(delay=60))
            assert client.cancel(later)
            assert client.retry(later)
            blocked = client.enqueue("block", {})
            assert entered.wait(10)
            assert client.cancel(blocked)
            for job_id in client.enqueue_many("ok", [{}, {}], jobs.JobConfig(delay=60)):
                assert client.cancel(job_id)  # past max_failed_jobs: the oldest are dropped
            assert wait_for_status(client, ok, jobs.JobStatus.COMPLETED).result == {"a": 1}
            assert client.enqueue("ok", {"b": 2}).result(timeout=10) == {"b": 2}
            once = jobs.JobConfig(unique_key="k", unique_for=60)
            assert client.enqueue("ok", {}, once).wait(timeout=10).status == "completed"
            assert client.get(client.enqueue("ok", {}, once)).status == "completed"
            # Dependencies: the waiting index and the dependents hashes.
            flow = jobs.group([jobs.Task("ok", 1)], then=jobs.Task("ok", 2))
            assert client.enqueue_flow(flow).last.result(timeout=10) == 2
            # Failed records are trimmed to one too, so count rather than read them.
            wait_until(lambda: client.stats().failed_jobs >= 2, timeout=10)
            wait_until(lambda: client.stats().completed_jobs >= 7, timeout=10)
            wait_until(client.workers, timeout=10, message="the pool never reported itself")
            assert client.list_jobs("completed")
            assert client.queue.crons()
            assert client.purge("cancelled") >= 1
            client.enqueue("slow", {})  # still running at stop: handed back
        stats = client.stats()
    assert hooks
    return stats


# -- passwords and ACL users --------------------------------------------------------------


def test_password_protected_server(redis_factory: Callable[..., RedisServer]) -> None:
    password = "s3cret pass/with:odd@chars"
    server = redis_factory(password=password)
    assert "@" in server.url  # the URL carries the (quoted) password
    stats = full_flow(server.url)
    assert stats.completed_jobs >= 6

    # Refused, and the message says it is the credentials, not the network.
    for url in (
        f"redis://127.0.0.1:{server.port}/0",
        f"redis://:{quote('not-it')}@127.0.0.1:{server.port}/0",
    ):
        with make_client(url) as client, pytest.raises(jobs.RedisUnavailable) as refused:
            client.enqueue("ok", {})
        assert isinstance(refused.value.__cause__, redis.AuthenticationError)
        assert re.search("authenticat|password", str(refused.value), re.IGNORECASE)
        assert "refused the credentials" in str(refused.value)


def test_least_privilege_acl_user_runs_everything(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    with admin_client(server) as admin:
        acl_setuser(admin, "worker", "pw", WORKER_ACL)
        command(admin, "ACL", "LOG", "RESET")
        stats = full_flow(user_url(server, "worker", "pw"))
        assert stats.completed_jobs >= 6
        assert stats.failed_jobs >= 2
        assert stats.cancelled_jobs == 3  # four cancels; one job was retried since
        assert acl_denials(admin) == [], "the rule misses a command the library uses"

        # ... and nothing more: no other keys, no admin commands.
        worker = redis.Redis(port=server.port, username="worker", password="pw")
        try:
            for denied in (
                ("SMEMBERS", "{jobs:default}:stats"),  # an allowed key, a command it never needs
                ("HGETALL", "session:42"),  # a command it needs, a key outside its prefix
                ("FLUSHALL",),
                ("KEYS", "*"),
                ("CONFIG", "GET", "requirepass"),
                ("EVAL", "return 1", "0"),
                ("SCRIPT", "FLUSH"),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    command(worker, *denied)
        finally:
            worker.close()


def test_a_user_of_another_prefix_cannot_touch_this_queue(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    with admin_client(server) as admin:
        acl_setuser(admin, "worker", "pw", WORKER_ACL)
        acl_setuser(admin, "other", "pw2", WORKER_ACL.replace("~{jobs:*", "~{other:*"))
        with make_client(user_url(server, "worker", "pw")) as owner:
            name = owner.queue.name
            job_id = owner.enqueue("ok", {"secret": 1})
            with make_client(user_url(server, "other", "pw2"), name=name) as intruder:
                attempts: list[Callable[[], object]] = [
                    lambda: intruder.get(job_id),
                    lambda: intruder.cancel(job_id),
                    lambda: intruder.retry(job_id),
                    intruder.stats,
                    intruder.workers,
                    lambda: intruder.list_jobs("pending"),
                    lambda: intruder.purge("pending"),
                    lambda: intruder.enqueue("ok", {}),
                    lambda: intruder.queue.fetch(1, jobs.WorkerPoolConfig().lease),
                ]
                for attempt in attempts:
                    with pytest.raises(redis.exceptions.NoPermissionError):
                        attempt()
            # The same user on its own prefix works: the rule, not the user, said no.
            with make_client(user_url(server, "other", "pw2"), prefix="other") as own:
                own.enqueue("ok", {})
                assert own.stats().total_jobs == 1
            job = owner.get(job_id)
            assert job.status is jobs.JobStatus.PENDING
            assert owner.stats().total_jobs == 1


def _rule_without(*commands: str) -> str:
    return " ".join(t for t in WORKER_ACL.split() if t not in commands)


def test_the_start_check_probes_exactly_the_rules_commands() -> None:
    probed = {f"+{name}" for name, _ in _acl._calls("k", wait=True)}
    assert probed == {t for t in WORKER_ACL.split() if t.startswith("+")} - _acl.OPTIONAL


def test_the_start_check_names_what_the_acl_user_lacks(
    redis_factory: Callable[..., RedisServer],
) -> None:
    # A worker once met NOPERM only when the command's moment came, and retried it for
    # ever; `python -m jobs worker` now runs this check before it starts.
    server = redis_factory()
    with admin_client(server) as admin:
        acl_setuser(admin, "full", "pw", WORKER_ACL)
        acl_setuser(admin, "nozpop", "pw", _rule_without("+zpopmin", "+hincrby"))
        acl_setuser(admin, "other", "pw", WORKER_ACL.replace("~{jobs:*", "~{other:*"))
        command(admin, "ACL", "LOG", "RESET")
        with make_client(user_url(server, "full", "pw"), start=False) as client:
            assert _acl.missing_permissions(client.queue) == []
        assert acl_denials(admin) == []
        with make_client(user_url(server, "nozpop", "pw"), start=False) as client:
            assert _acl.missing_permissions(client.queue) == ["+hincrby", "+zpopmin"]
        with make_client(user_url(server, "other", "pw"), start=False) as client:
            assert _acl.missing_permissions(client.queue) == [f"~{client.queue.keys.base}*"]
        # The probe leaves no key behind.
        assert command(admin, "DBSIZE") == 0


# -- TLS ----------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n", "utf-8")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=jobs test CA", cwd=directory)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2",
             "-extfile", "san.ext", cwd=directory)  # fmt: skip
    return {
        "ca": directory / "ca.crt",
        "cert": directory / "server.crt",
        "key": directory / "server.key",
    }


@pytest.fixture
def tls_server(redis_binary: str, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server listening on a TLS port only; yields (port, CA certificate)."""
    with _tls_server(redis_binary, tmp_path) as (port, certs):
        yield port, certs["ca"]


@contextlib.contextmanager
def _tls_server(
    redis_binary: str, tmp_path: Path, *extra: str
) -> Iterator[tuple[int, dict[str, Path]]]:
    """A TLS-only redis-server with ``extra`` arguments; yields (port, certificate files).

    The server's certificate and key double as a client certificate (it has no extended
    key usage that would forbid it), for servers told to require one.
    """
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make certificates with")
    certs = make_certificates(tmp_path)
    # A cluster node's bus listens on port + 10000: Redis refuses a port above 55535.
    port = free_port(highest=55535 if "--cluster-enabled" in extra else 65535)
    log = tmp_path / "redis.log"
    server_argv = [
        redis_binary,
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(certs["cert"]),
        "--tls-key-file", str(certs["key"]),
        "--tls-ca-cert-file", str(certs["ca"]),
        *(() if "--tls-auth-clients" in extra else ("--tls-auth-clients", "no")),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(tmp_path),
        "--logfile", str(log),
        *extra,
    ]  # fmt: skip
    with log.open("ab") as err:
        proc = subprocess.Popen(server_argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    probe = redis.Redis(
        host="127.0.0.1",
        port=port, ssl=True, ssl_ca_certs=str(certs["ca"]), socket_timeout=0.5,
        socket_connect_timeout=0.5, ssl_certfile=str(certs["cert"]),
        ssl_keyfile=str(certs["key"]),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                text = log.read_text("utf-8", "replace")
                pytest.skip(f"redis-server cannot serve TLS here: {text.strip()[-300:]}")
            try:
                if probe.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if "--cluster-enabled" in extra:
            # One node holding every slot: the smallest Redis Cluster there is.
            command(probe, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            wait_until(
                lambda: "cluster_state:ok" in _text(command(probe, "CLUSTER", "INFO")),
                timeout=10,
            )
        yield port, certs
    finally:
        probe.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def test_full_flow_over_tls(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={quote(str(ca))}"
    stats = full_flow(url)
    assert stats.completed_jobs >= 6
    with make_client(url) as client:
        redis_client = client.queue.client
        assert isinstance(redis_client, redis.Redis)
        pool = redis_client.connection_pool
        connection = checkout_connection(pool)
        try:
            assert isinstance(connection, redis.connection.SSLConnection)
        finally:
            pool.release(connection)


def test_tls_refuses_plaintext_and_unknown_certificates(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    # Plain TCP to a TLS port, and TLS that trusts only the system CAs: both refused.
    for url in (f"redis://127.0.0.1:{port}/0", f"rediss://127.0.0.1:{port}/0"):
        with (
            make_client(f"{url}?socket_timeout=2&socket_connect_timeout=2") as client,
            pytest.raises(redis.ConnectionError),
        ):
            client.enqueue("ok", {})


def test_a_tls_cluster_url_carries_a_ca_and_a_client_certificate(
    redis_binary: str, tmp_path: Path
) -> None:
    # A private CA and mutual TLS, from the URL alone: what the command line can give.
    cluster = ("--cluster-enabled", "yes", "--tls-cluster", "yes", "--tls-auth-clients", "yes")
    with _tls_server(redis_binary, tmp_path, *cluster) as (port, certs):
        options = "&".join(
            f"{name}={quote(str(certs[key]))}"
            for name, key in (
                ("ssl_ca_certs", "ca"),
                ("ssl_certfile", "cert"),
                ("ssl_keyfile", "key"),
            )
        )
        url = f"rediss+cluster://127.0.0.1:{port}?{options}&ssl_check_hostname=true"
        registry = jobs.Registry()
        registry.register_func("ok", lambda ctx, payload: payload)
        with make_client(url, registry) as client:
            assert isinstance(client.queue.client, redis.cluster.RedisCluster)
            job_id = client.enqueue("ok", {"over": "mtls"})
            assert wait_for_status(client, job_id, jobs.JobStatus.COMPLETED).result == {
                "over": "mtls"
            }
        # Without the client certificate the server refuses the handshake.
        no_cert = f"rediss+cluster://127.0.0.1:{port}?ssl_ca_certs={quote(str(certs['ca']))}"
        with pytest.raises((redis.RedisError, redis.exceptions.RedisClusterException)):
            jobs.RedisQueue.from_url(no_cert + "&socket_timeout=2&socket_connect_timeout=2")


# -- tenants and ids ----------------------------------------------------------------------


def test_prefixes_isolate_tenants_on_one_redis(redis_url: str) -> None:
    seen_by: dict[str, list[str]] = {"a": [], "b": []}

    def registry(tenant: str) -> jobs.Registry:
        reg = jobs.Registry()
        reg.register_func("ok", lambda ctx, payload: seen_by[tenant].append(ctx.job.id))
        return reg

    with (
        make_client(redis_url, registry("a"), name="shared", prefix="tenant_a", start=False) as a,
        make_client(redis_url, registry("b"), name="shared", prefix="tenant_b") as b,
    ):
        a_ids = a.enqueue_many("ok", [{"i": i} for i in range(3)])
        b_ids = b.enqueue_many("ok", [{"i": i} for i in range(2)])
        for job_id in b_ids:
            wait_for_status(b, job_id, jobs.JobStatus.COMPLETED)
        # B's running pool never took A's jobs, and B cannot see or touch them.
        assert a.stats().pending_jobs == 3
        for job_id in a_ids:
            for call in (b.get, b.cancel, b.retry):
                with pytest.raises(jobs.JobNotFound):
                    call(job_id)
        for status in jobs.JobStatus:
            assert {j.id for j in b.list_jobs(status)}.isdisjoint(a_ids)
        assert b.stats().total_jobs == 2
        a.start()
        for job_id in a_ids:
            wait_for_status(a, job_id, jobs.JobStatus.COMPLETED)
        assert sorted(seen_by["a"]) == sorted(a_ids)
        assert sorted(seen_by["b"]) == sorted(b_ids)
        a_pools, b_pools = {w.id for w in a.workers()}, {w.id for w in b.workers()}
        assert len(a_pools) == len(b_pools) == 1 and a_pools.isdisjoint(b_pools)
        assert (a.stats().completed_jobs, b.stats().completed_jobs) == (3, 2)
        for job_id in b_ids:
            with pytest.raises(jobs.JobNotFound):
                a.get(job_id)


def test_job_ids_are_unguessable() -> None:
    ids = [new_job_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    pattern = re.compile(r"[0-9a-f]{32}")  # 128 bits, from the secrets module
    assert all(pattern.fullmatch(i) for i in ids)
    # Every hex digit shows up in every position: no fixed or counter-like part.
    for position in range(32):
        assert len({i[position] for i in ids}) == 16


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    new_job_id()  # the parent has read ids ahead
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, " ".join(new_job_ids(5)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(child) == 5
    assert set(child).isdisjoint(new_job_ids(5))


class _Exploit:
    """Unpickling this runs a command: what a pickle-based queue would execute."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_payload_is_never_unpickled(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: "ran")
    with make_client(redis_url, registry, start=False) as client:
        job_id = client.enqueue("ok", {})
        # Someone with write access to Redis swaps the payload for a pickle.
        evil = pickle.dumps(_Exploit(marker))
        redis_client.hset(client.queue.keys.job(job_id), "payload", evil)
        client.start()
        key = client.queue.keys.job(job_id)
        # Read raw: Client.get cannot decode a record whose payload is not JSON either.
        wait_until(lambda: redis_client.hget(key, "status") == b"failed", timeout=10)
        error = redis_client.hget(key, "error")
    assert isinstance(error, bytes) and b"payload is not valid JSON" in error
    assert not marker.exists()


def test_an_acl_without_publish_still_records_outcomes(
    redis_factory: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ACL README.rst gave before waits existed: no channels, no PUBLISH/SUBSCRIBE.
    # Outcomes must still be recorded (the announcement is best effort), and a wait
    # still returns, by re-reading.
    monkeypatch.setattr("jobs.queue._reader.RECHECK", 0.2)
    old_acl = WORKER_ACL.replace("&{jobs:* ", "").replace("+publish +subscribe ", "")
    server = redis_factory()
    with admin_client(server) as admin:
        acl_setuser(admin, "worker", "pw", old_acl)
        registry = jobs.Registry()
        registry.register_func("ok", lambda ctx, payload: payload)
        with make_client(user_url(server, "worker", "pw"), registry) as client:
            assert client.enqueue("ok", 7).result(timeout=20) == 7
            assert client.stats().completed_jobs == 1
