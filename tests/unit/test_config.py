"""Configuration rules, backoff math, the public names and the error tree (no Redis).

API.md sections "Errors", "Enqueue, track, cancel, stats" (JobConfig, backoff) and the
import surface of "Queue, registry, client".
"""

from __future__ import annotations

import enum
import importlib
import json
import pkgutil
import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis

import jobs
from jobs._codec import to_ms
from jobs.backoff import backoff_from_spec, backoff_to_spec
from jobs.queue._wire import job_args

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: The names API.md's core sections promise at the top level.
CONTRACT_NAMES = {
    "RedisQueue",
    "RedisQueueConfig",
    "Registry",
    "Client",
    "ClientConfig",
    "WorkerPoolConfig",
    "DefaultWorkerPoolConfig",
    "JobConfig",
    "DefaultJobConfig",
    "NoBackoff",
    "LinearBackoff",
    "ExponentialBackoff",
    "Job",
    "JobStatus",
    "JobContext",
    "CancelReason",
    "QueueStats",
    "WorkerInfo",
    "JobsError",
    "JobNotFound",
    "PayloadError",
    "ConfigError",
    "JobTimeout",
    "JobCancelled",
    "WorkerShutdown",
    "PermanentError",
}


@pytest.fixture
def offline_redis() -> Iterator[redis.Redis]:
    """A client that is never used to connect (config only), closed afterwards."""
    client = redis.Redis(host="127.0.0.1", port=1)
    try:
        yield client
    finally:
        client.close()


# -- ConfigError naming the field ---------------------------------------------------------

INVALID: list[tuple[str, Callable[[], object]]] = [
    ("max_retries", lambda: jobs.JobConfig(max_retries=-1)),
    ("max_retries", lambda: jobs.JobConfig(max_retries="3")),  # type: ignore[arg-type]
    ("max_retries", lambda: jobs.JobConfig(max_retries=True)),
    ("max_retries", lambda: jobs.JobConfig(max_retries=1.5)),  # type: ignore[arg-type]
    ("priority", lambda: jobs.JobConfig(priority=1001)),
    ("priority", lambda: jobs.JobConfig(priority=-1001)),
    ("priority", lambda: jobs.JobConfig(priority="high")),  # type: ignore[arg-type]
    ("timeout", lambda: jobs.JobConfig(timeout=0)),
    ("timeout", lambda: jobs.JobConfig(timeout=-1)),
    ("timeout", lambda: jobs.JobConfig(timeout=timedelta(0))),
    ("timeout", lambda: jobs.JobConfig(timeout="10")),
    ("timeout", lambda: jobs.JobConfig(timeout=float("nan"))),
    ("timeout", lambda: jobs.JobConfig(timeout=float("inf"))),
    ("delay", lambda: jobs.JobConfig(delay=-1)),
    ("delay", lambda: jobs.JobConfig(delay=timedelta(seconds=-0.001))),
    ("delay", lambda: jobs.JobConfig(delay="soon")),
    ("retry_backoff", lambda: jobs.JobConfig(retry_backoff="exp")),  # type: ignore[arg-type]
    ("metadata", lambda: jobs.JobConfig(metadata=[1, 2])),
    ("num_workers", lambda: jobs.WorkerPoolConfig(num_workers=0)),
    ("num_workers", lambda: jobs.WorkerPoolConfig(num_workers=-3)),
    ("num_workers", lambda: jobs.WorkerPoolConfig(num_workers=True)),
    ("num_workers", lambda: jobs.WorkerPoolConfig(num_workers=2.0)),  # type: ignore[arg-type]
    ("lease", lambda: jobs.WorkerPoolConfig(lease=0)),
    ("lease", lambda: jobs.WorkerPoolConfig(lease=-1)),
    ("lease", lambda: jobs.WorkerPoolConfig(lease="30")),
    ("poll_interval", lambda: jobs.WorkerPoolConfig(poll_interval=0)),
    ("queues", lambda: jobs.WorkerPoolConfig(queues=["default", "eu:default"])),
    ("shutdown_timeout", lambda: jobs.WorkerPoolConfig(shutdown_timeout=-1)),
    ("shutdown_timeout", lambda: jobs.WorkerPoolConfig(shutdown_timeout=None)),
    ("error_handler", lambda: jobs.WorkerPoolConfig(error_handler=3)),  # type: ignore[arg-type]
    ("success_handler", lambda: jobs.WorkerPoolConfig(success_handler="x")),  # type: ignore[arg-type]
    ("client", lambda: jobs.RedisQueueConfig(client="redis://127.0.0.1:1")),  # type: ignore[arg-type]
    ("client", lambda: jobs.RedisQueueConfig(client=None)),  # type: ignore[arg-type]
    ("queue", lambda: jobs.ClientConfig(queue="default")),  # type: ignore[arg-type]
    ("step", lambda: jobs.LinearBackoff(step=-1)),
    ("base", lambda: jobs.ExponentialBackoff(base=-1)),
    ("factor", lambda: jobs.ExponentialBackoff(factor="2")),  # type: ignore[arg-type]
    ("max", lambda: jobs.ExponentialBackoff(max=float("nan"))),
    ("jitter", lambda: jobs.ExponentialBackoff(jitter=1)),  # type: ignore[arg-type]
    # An infinite delay made a worker's slot thread die computing the retry (issue 11).
    ("step", lambda: jobs.LinearBackoff(step=float("inf"))),
    ("base", lambda: jobs.ExponentialBackoff(base=float("inf"))),
    ("factor", lambda: jobs.ExponentialBackoff(factor=float("inf"))),
    ("max", lambda: jobs.ExponentialBackoff(max=float("inf"))),
    ("delays", lambda: jobs.ExplicitBackoff([1, float("inf")])),
    ("delays", lambda: jobs.ExplicitBackoff([float("-inf")])),
]


@pytest.mark.parametrize(("field", "build"), INVALID, ids=[f for f, _ in INVALID])
def test_invalid_config_raises_config_error_naming_the_field(
    field: str, build: Callable[[], object]
) -> None:
    with pytest.raises(jobs.ConfigError, match=rf"\b{field}\b"):
        build()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "a{b"),
        ("name", "a}b"),
        ("name", "{x}"),
        ("name", 3),
        ("name", None),
        ("prefix", ""),
        ("prefix", "jobs}"),
        ("prefix", "{jobs"),
        ("name", "q\udc80"),  # a lone surrogate has no UTF-8 form
        ("prefix", "\ud800"),
        # "{acme:eu:default}" would be both (acme, eu:default) and (acme:eu, default).
        ("name", "eu:default"),
        ("prefix", "acme:eu"),
        # ACL key patterns are globs: "~{acme*:*" would cover tenant "acme-corp" too.
        ("prefix", "acme*"),
        ("prefix", "acm?"),
        ("name", "q[12]"),
        ("prefix", "a\\b"),
        ("name", "a\x1b]0;x\x07"),
        ("max_lost_leases", 0),
        ("max_payload_bytes", 0),
    ],
)
def test_invalid_queue_config_names_the_field(
    offline_redis: redis.Redis, field: str, value: object
) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(jobs.ConfigError, match=rf"\b{field}\b"):
        jobs.RedisQueueConfig(client=offline_redis, **kwargs)
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        jobs.RedisQueueConfig(client=offline_redis, **kwargs)


def test_from_url_rejects_a_bad_name_and_closes_its_client() -> None:
    with pytest.raises(jobs.ConfigError, match="name"):
        jobs.RedisQueue.from_url("redis://127.0.0.1:1/0", name="bad{name}")


def test_client_needs_a_client_config() -> None:
    with pytest.raises(jobs.ConfigError, match="config"):
        jobs.Client("not a config")  # type: ignore[arg-type]


def test_boundary_values_are_accepted(offline_redis: redis.Redis) -> None:
    assert jobs.JobConfig(max_retries=0).max_retries == 0
    assert jobs.JobConfig(priority=1000).priority == 1000
    assert jobs.JobConfig(priority=-1000).priority == -1000
    assert jobs.JobConfig(timeout=None).timeout is None
    assert jobs.JobConfig(timeout=0.001).timeout == timedelta(milliseconds=1)
    assert jobs.JobConfig(delay=0).delay == timedelta(0)
    assert jobs.WorkerPoolConfig(num_workers=1).num_workers == 1
    assert jobs.WorkerPoolConfig(lease=0.5).lease == timedelta(seconds=0.5)
    assert jobs.WorkerPoolConfig(shutdown_timeout=0).shutdown_timeout == timedelta(0)
    assert jobs.WorkerPoolConfig(lease=1.5) == jobs.WorkerPoolConfig(lease=timedelta(seconds=1.5))
    config = jobs.RedisQueueConfig(client=offline_redis, name="e-mails.eu", prefix="app_jobs")
    assert (config.name, config.prefix) == ("e-mails.eu", "app_jobs")


def test_registry_rejects_bad_registrations() -> None:
    registry = jobs.Registry()
    with pytest.raises(jobs.ConfigError, match="payload_type"):
        registry.register("t", lambda ctx, payload: None, payload_type=dict)
    with pytest.raises(jobs.ConfigError, match="name"):
        registry.register_func("", lambda ctx, payload: None)
    with pytest.raises(jobs.ConfigError, match="callable"):
        registry.register_func("t", "not a function")  # type: ignore[arg-type]
    assert len(registry) == 0


def test_lone_surrogates_in_names_are_config_errors(offline_redis: redis.Redis) -> None:
    # redis-py raised a bare UnicodeEncodeError while sending the command; now nothing is
    # sent (the client below never connects).
    odd = "t\udc80"
    with pytest.raises(jobs.ConfigError, match="name must be valid Unicode text"):
        jobs.Registry().register_func(odd, lambda ctx, payload: None)
    with pytest.raises(jobs.ConfigError, match="job_type"):
        jobs.CronJob(id="c", schedule=jobs.Every(60), job_type=odd)
    with pytest.raises(jobs.ConfigError, match=r"\bid\b"):
        jobs.CronJob(id=odd, schedule=jobs.Every(60), job_type="t")
    queue = jobs.RedisQueue(jobs.RedisQueueConfig(client=offline_redis))
    client = jobs.Client(jobs.ClientConfig(queue=queue))
    with pytest.raises(jobs.ConfigError, match="job_type must be valid Unicode text"):
        client.enqueue(odd, 1)
    with pytest.raises(jobs.ConfigError, match="job_type"):
        client.enqueue_many(odd, [1, 2])


@pytest.mark.parametrize(
    ("duration", "ms"),
    [
        (timedelta(0), 0),
        (timedelta(microseconds=1), 1),
        (timedelta(microseconds=400), 1),
        (timedelta(microseconds=1499), 1),
        (timedelta(microseconds=1500), 2),
        (timedelta(seconds=0.3), 300),
        (timedelta(days=30), 2_592_000_000),
    ],
)
def test_durations_go_to_the_scripts_as_whole_ms_never_rounded_to_zero(
    duration: timedelta, ms: int
) -> None:
    # Rounded to 0 ms, a 0.4 ms timeout meant "no timeout" and a sub-ms lease expired on
    # arrival.
    assert to_ms(duration) == ms


def test_a_sub_millisecond_timeout_is_sent_as_one_ms() -> None:
    args = job_args(jobs.JobConfig(timeout=0.0004, delay=0.0004))
    timeout_ms, delay_ms = args[2], args[5]
    assert (timeout_ms, delay_ms) == (1, 1)


def test_config_keeps_its_own_copy_of_metadata() -> None:
    metadata: dict[str, Any] = {"user_id": 1}
    config = jobs.JobConfig(metadata=metadata)
    metadata["user_id"] = 2
    assert config.metadata == {"user_id": 1}


def test_worker_pool_defaults() -> None:
    pool = jobs.DefaultWorkerPoolConfig()
    assert pool == jobs.WorkerPoolConfig()
    assert pool.num_workers == 10
    assert pool.lease == timedelta(seconds=30)
    assert pool.poll_interval == timedelta(seconds=1)
    assert pool.shutdown_timeout == timedelta(seconds=30)
    assert (pool.error_handler, pool.success_handler) == (None, None)


# -- backoff math -------------------------------------------------------------------------


def test_no_backoff() -> None:
    assert [jobs.NoBackoff()(n) for n in range(1, 6)] == [0, 0, 0, 0, 0]


def test_linear_backoff() -> None:
    assert [jobs.LinearBackoff(step=1)(n) for n in (1, 2, 3)] == [1, 2, 3]
    assert [jobs.LinearBackoff()(n) for n in (1, 2, 3)] == [1, 2, 3]
    assert [jobs.LinearBackoff(step=0.5)(n) for n in (1, 2, 4)] == [0.5, 1, 2]


def test_exponential_backoff() -> None:
    backoff = jobs.ExponentialBackoff()
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(12) == 2048
    assert backoff(13) == 3600  # 4096 capped at max
    assert backoff(10_000) == 3600  # past float range, still the cap
    assert [jobs.ExponentialBackoff(base=0.05)(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert jobs.ExponentialBackoff(base=2, factor=3, max=50)(4) == 50


def test_exponential_backoff_jitter_stays_within_half_to_full() -> None:
    backoff = jobs.ExponentialBackoff(jitter=True)
    plain = jobs.ExponentialBackoff()
    saved = random.getstate()
    try:
        random.seed(20240601)
        first = [backoff(n) for n in range(1, 14) for _ in range(20)]
        random.seed(20240601)
        again = [backoff(n) for n in range(1, 14) for _ in range(20)]
    finally:
        random.setstate(saved)
    assert first == again
    nominal = [plain(n) for n in range(1, 14) for _ in range(20)]
    for value, d in zip(first, nominal, strict=True):
        assert d / 2 <= value <= d
    # Jitter really spreads retries out.
    assert len(set(first)) > len(set(nominal))


def _custom(attempt: int) -> float:
    return 0.5 * attempt


@pytest.mark.parametrize(
    "backoff",
    [
        jobs.NoBackoff(),
        jobs.LinearBackoff(step=2.5),
        jobs.ExponentialBackoff(),
        jobs.ExponentialBackoff(base=0.05, factor=3, max=10, jitter=True),
        jobs.ExplicitBackoff([1, 10, 60]),
    ],
)
def test_backoff_spec_round_trip(backoff: jobs.Backoff) -> None:
    spec = json.loads(json.dumps(backoff_to_spec(backoff, max_retries=5)))
    assert backoff_from_spec(spec) == backoff


def test_custom_backoff_is_stored_as_its_delays() -> None:
    spec = json.loads(json.dumps(backoff_to_spec(_custom, max_retries=4)))
    rebuilt = backoff_from_spec(spec)
    assert [rebuilt(n) for n in (1, 2, 3, 4)] == [_custom(n) for n in (1, 2, 3, 4)]
    assert rebuilt(9) == _custom(4)  # past the stored ones: the last delay
    # max_retries=0 still stores one delay, so a rebuilt spec is never empty.
    assert backoff_from_spec(backoff_to_spec(_custom, max_retries=0))(1) == 0.5


@pytest.mark.parametrize(
    "bad",
    [
        lambda n: -1,
        lambda n: "1",
        lambda n: True,
        lambda n: 1 / 0,
        lambda n: float("nan"),
        lambda n: float("inf"),
    ],
    ids=["negative", "str", "bool", "raises", "nan", "inf"],
)
def test_custom_backoff_that_misbehaves_is_a_config_error(bad: Callable[[int], Any]) -> None:
    with pytest.raises(jobs.ConfigError, match="retry_backoff"):
        backoff_to_spec(bad, max_retries=3)


@pytest.mark.parametrize(
    "spec", [{"kind": "bogus"}, {}, {"kind": "linear"}, {"kind": "explicit", "delays": []}]
)
def test_malformed_backoff_spec(spec: dict[str, Any]) -> None:
    with pytest.raises(jobs.ConfigError):
        backoff_from_spec(spec)


# -- public names and errors --------------------------------------------------------------


def test_every_name_in_all_resolves() -> None:
    for name in jobs.__all__:
        assert getattr(jobs, name) is not None, name
    assert set(jobs.__all__) >= CONTRACT_NAMES
    assert len(jobs.__all__) == len(set(jobs.__all__))


def _all_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    modules = [jobs]
    for info in pkgutil.iter_modules(jobs.__path__, "jobs."):
        if info.name.rsplit(".", 1)[1] in ("__main__", "cli"):
            continue  # entry points: importing them may parse argv
        modules.append(importlib.import_module(info.name))
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("jobs")
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_exception_class_derives_from_jobs_error() -> None:
    classes = _all_exception_classes()
    names = {c.__name__ for c in classes}
    assert {"JobNotFound", "PayloadError", "ConfigError", "JobTimeout"} <= names
    strays = [c for c in classes if not issubclass(c, jobs.JobsError)]
    assert strays == []


def test_errors_are_also_the_natural_builtins() -> None:
    assert issubclass(jobs.ConfigError, ValueError)
    assert issubclass(jobs.PayloadError, TypeError)
    assert issubclass(jobs.JobNotFound, LookupError)
    for cls in (
        jobs.JobNotFound,
        jobs.PayloadError,
        jobs.ConfigError,
        jobs.JobTimeout,
        jobs.JobCancelled,
        jobs.WorkerShutdown,
        jobs.PermanentError,
    ):
        assert issubclass(cls, jobs.JobsError)
    assert issubclass(jobs.JobsError, Exception)


def test_job_status_is_a_str_enum() -> None:
    assert issubclass(jobs.JobStatus, enum.StrEnum)
    assert str(jobs.JobStatus.COMPLETED) == "completed"
    assert f"{jobs.JobStatus.FAILED}" == "failed"
    assert jobs.JobStatus("pending") is jobs.JobStatus.PENDING
    assert {s.name: s.value for s in jobs.JobStatus} == {
        "PENDING": "pending",
        "SCHEDULED": "scheduled",
        "WAITING": "waiting",
        "PROCESSING": "processing",
        "COMPLETED": "completed",
        "FAILED": "failed",
        "CANCELLED": "cancelled",
    }
    assert jobs.JobStatus.COMPLETED.value == "completed"
    assert isinstance(jobs.JobStatus.COMPLETED, str)


def test_cancel_reasons() -> None:
    assert {"TIMEOUT", "CANCELLED", "SHUTDOWN"} <= {r.name for r in jobs.CancelReason}
