"""Waiting and unique jobs measured: wake-up latency, connections held, the unique-key race.

Run from the repository root::

    python benchmarks/waits.py latency       # (a) outcome written -> client.wait() returns
    python benchmarks/waits.py connections   # (b) connections held by 1 wait vs 10,000
    python benchmarks/waits.py unique        # (c) 4 processes x 8 threads on one unique key

Each part starts its own private ``redis-server`` (``jobs._embedded``, a free port, never
6379), prints its figures, and exits non-zero when a target is missed.

- ``latency``: a worker pool of one thread, in another process (and then in the waiter's
  own process), runs ``--jobs`` (300) jobs one at a time; each handler sleeps 20 ms, so
  the waiter is already blocked in ``client.wait()`` when the outcome is written. The
  outcome's write is timed by MONITOR (``redis-cli monitor``): Redis 7 stamps each
  command with its clock as it feeds it to monitors, right after running it, so the
  stamp of complete.lua's EVALSHA is the moment its HSET and its PUBLISH are done. The
  waiter stamps ``time.time()`` as ``wait()`` returns (same host, same clock). Also
  shown: the time from just before and just after the worker's write pipeline (bounds
  that need no MONITOR), and where the waiter's time goes (the announcement reaching
  the listener thread, the waiter starting its read, the read itself). Target: p50
  under 2 ms.
- ``connections``: CLIENT LIST counts the connections of the waiters' client (by its
  client name) while 1 thread waits on 1 job, then while 1 thread more waits on
  ``--ids`` (10,000) jobs with ``wait_all``, then while ``--threads`` (10,000) threads
  each wait on a job of their own, woken by cancels from another client; a sampler
  keeps the peak, and a bystander thread enqueues through the waiters' client meanwhile.
  Target: ``wait_all`` holds what one ``wait`` holds, the threads hold at most
  ``WAIT_READERS`` more, and no bystander enqueue fails.
- ``unique``: ``--rounds`` (10) times, 4 processes x 8 threads enqueue with the same
  fresh ``unique_key`` at the same wall-clock instant. Target: one job per key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

import jobs
from jobs._embedded import RedisServer
from jobs.queue import _waiter, _worker_side
from jobs.queue._scripts import scripts
from jobs.queue.redis_queue import RedisQueue

HERE = Path(__file__).resolve()
HANDLER_SLEEP = 0.02


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [v * 1000 for v in seconds]
    return (
        f"{name}: p50 {percentile(ms, 50):.2f} ms, p90 {percentile(ms, 90):.2f} ms, "
        f"p99 {percentile(ms, 99):.2f} ms, max {max(ms):.2f} ms (n={len(ms)})"
    )


# -- (a) latency ---------------------------------------------------------------------------


def stamp_writes(log: Path) -> None:
    """Write ``job_id before after`` (time.time()) around each pipeline carrying outcomes."""
    original = _worker_side.WorkerSide.exchange
    out = log.open("a", buffering=1)

    def exchange(self: Any, outcomes: Any, count: int, lease: Any, **kwargs: Any) -> Any:
        if not outcomes:
            return original(self, outcomes, count, lease, **kwargs)
        before = time.time()
        result = original(self, outcomes, count, lease, **kwargs)
        after = time.time()
        for outcome in outcomes:
            out.write(f"{outcome.leased.job_id} {before!r} {after!r}\n")
        return result

    begin_original = _worker_side.WorkerSide.begin_exchange

    def begin_exchange(self: Any, outcomes: Any, count: int, lease: Any, **kwargs: Any) -> Any:
        # The pool's pipelined exchanges: sent now, answered when the function is called.
        before = time.time()
        answer = begin_original(self, outcomes, count, lease, **kwargs)
        if not outcomes:
            return answer

        def answered() -> Any:
            result = answer()
            after = time.time()
            for outcome in outcomes:
                out.write(f"{outcome.leased.job_id} {before!r} {after!r}\n")
            return result

        return answered

    _worker_side.WorkerSide.exchange = exchange  # type: ignore[method-assign]
    _worker_side.WorkerSide.begin_exchange = begin_exchange  # type: ignore[method-assign]


def sleepy_client(url: str, queue_name: str) -> jobs.Client:
    registry = jobs.Registry()

    @registry.job("sleepy")
    def sleepy(ctx: jobs.JobContext, payload: float) -> float:
        time.sleep(payload)
        return payload

    return jobs.Client(
        jobs.ClientConfig(
            queue=RedisQueue.from_url(url, name=queue_name),
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(num_workers=1),
        )
    )


def worker(url: str, queue_name: str, log: str) -> None:
    """The worker process: a pool of one thread until stdin closes."""
    stamp_writes(Path(log))
    client = sleepy_client(url, queue_name)
    client.start()
    print("ready", flush=True)
    sys.stdin.read()
    client.stop()
    client.queue.close()


class WaiterStamps:
    """Stamps, in the waiter's process, of the announcement's arrival and the read."""

    def __init__(self) -> None:
        self.dispatched: dict[str, float] = {}
        self.read: dict[str, tuple[float, float]] = {}
        original_dispatch = _waiter.FinishedListener._dispatch
        original_get_many = RedisQueue.get_many
        stamps = self

        def dispatch(listener: Any, data: Any) -> None:
            now = time.time()
            for job_id in json.loads(data):
                stamps.dispatched.setdefault(job_id, now)
            original_dispatch(listener, data)

        def get_many(queue: Any, job_ids: Any) -> Any:
            start = time.time()
            found = original_get_many(queue, job_ids)
            end = time.time()
            for job_id in job_ids:
                stamps.read[job_id] = (start, end)
            return found

        _waiter.FinishedListener._dispatch = dispatch  # type: ignore[method-assign,assignment]
        RedisQueue.get_many = get_many  # type: ignore[method-assign,assignment]


def latency_once(url: str, port: int, n: int, in_process: bool, stamps: WaiterStamps) -> float:
    queue_name = f"latency-{'in' if in_process else 'apart'}"
    directory = Path(tempfile.mkdtemp())
    writes_log, monitor_log = directory / "writes.log", directory / "monitor.log"
    writes_log.touch()
    proc: subprocess.Popen[str] | None = None
    pool: jobs.Client | None = None
    if in_process:
        stamp_writes(writes_log)
        pool = sleepy_client(url, queue_name)
        pool.start()
    else:
        proc = subprocess.Popen(
            [sys.executable, str(HERE), "worker", url, queue_name, str(writes_log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the worker process did not start")
    producer = jobs.Client(jobs.ClientConfig(queue=RedisQueue.from_url(url, name=queue_name)))
    with monitor_log.open("wb") as out:
        monitor = subprocess.Popen(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "monitor"],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    returned: dict[str, float] = {}
    try:
        for _ in range(5):  # warm-up: the listener subscribes, the scripts load
            producer.wait(producer.enqueue("sleepy", HANDLER_SLEEP), timeout=10)
        warm = set(writes_log.read_text().splitlines())
        for _ in range(n):
            handle = producer.enqueue("sleepy", HANDLER_SLEEP)
            job = producer.wait(handle, timeout=10)
            returned[str(handle)] = time.time()
            if job.status is not jobs.JobStatus.COMPLETED:
                raise RuntimeError(f"job {handle} ended {job.status}")
    finally:
        time.sleep(0.5)  # the monitor's last lines
        monitor.terminate()
        monitor.wait(10)
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            proc.wait(30)
        if pool is not None:
            pool.stop()
            pool.queue.close()
        producer.queue.close()
    writes: dict[str, tuple[float, float]] = {}
    for line in writes_log.read_text().splitlines():
        if line and line not in warm:
            job_id, before, after = line.split()
            writes[job_id] = (float(before), float(after))
    complete = f'"EVALSHA" "{scripts().complete.sha}"'
    script_end: dict[str, float] = {}
    for line in monitor_log.read_text(errors="replace").splitlines():
        if complete in line:
            for arg in line.split('" "'):  # a job id is one of its arguments
                if arg in returned:
                    script_end[arg] = float(line.split(" ", 1)[0])
    ids = [i for i in returned if i in writes and i in script_end and i in stamps.dispatched]
    where = "in the waiter's process" if in_process else "in another process"
    print(f"-- pool {where}: {len(ids)} of {n} jobs stamped")
    from_write = [returned[i] - script_end[i] for i in ids]
    print(summary("   complete.lua ran (MONITOR) -> wait() returned", from_write))
    rows = {
        "   before the write pipeline  -> wait() returned": [
            returned[i] - writes[i][0] for i in ids
        ],
        "   after the write pipeline   -> wait() returned": [
            returned[i] - writes[i][1] for i in ids
        ],
        "     complete.lua ran -> listener has the message": [
            stamps.dispatched[i] - script_end[i] for i in ids
        ],
        "     listener has it  -> waiter starts its read  ": [
            stamps.read[i][0] - stamps.dispatched[i] for i in ids
        ],
        "     the read (HGETALL round trip, decode)       ": [
            stamps.read[i][1] - stamps.read[i][0] for i in ids
        ],
    }
    for label, values in rows.items():
        print(summary(label, values))
    return percentile(from_write, 50)


def measure_latency(args: argparse.Namespace, server: RedisServer) -> bool:
    stamps = WaiterStamps()
    apart = latency_once(server.url, server.port, args.jobs, False, stamps)
    together = latency_once(server.url, server.port, args.jobs, True, stamps)
    met = max(apart, together) * 1000 < 2.0
    print(f"target p50 under 2 ms: {'met' if met else 'NOT met'}")
    return met


# -- (b) connections -----------------------------------------------------------------------


def measure_connections(args: argparse.Namespace, server: RedisServer) -> bool:
    observer = server.client()
    name = f"waiters-{os.getpid()}"
    raw = redis.Redis.from_url(server.url, client_name=name)
    queue = RedisQueue(jobs.RedisQueueConfig(client=raw, name="connections"))
    waiters = jobs.Client(jobs.ClientConfig(queue=queue))
    # Another client, with a pool of its own, ends the waits.
    other = jobs.Client(jobs.ClientConfig(queue=RedisQueue.from_url(server.url, name=queue.name)))
    limit = getattr(raw.connection_pool, "max_connections", "?")
    print(
        f"redis-py {redis.__version__}, pool max_connections {limit}, "
        f"WAIT_READERS {_waiter.WAIT_READERS}"
    )

    def held() -> tuple[int, int]:
        mine = [c for c in observer.client_list() if c.get("name") == name]
        return len(mine), sum(int(c.get("sub", 0)) > 0 for c in mine)

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], held()[0])
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    failures: list[str] = []
    bystanding = threading.Event()
    delayed = jobs.JobConfig(delay=3600)  # nobody runs them: the waits block

    def bystander() -> None:
        while not bystanding.is_set():
            try:
                waiters.enqueue("bystander", None, delayed)
            except jobs.JobsError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            bystanding.wait(0.01)

    def waiting(target: Any) -> threading.Thread:
        thread = threading.Thread(target=lambda: _quiet(target), daemon=True)
        thread.start()
        return thread

    def report(label: str) -> tuple[int, int]:
        time.sleep(2.0)  # the waits subscribe and read their jobs once
        now = held()
        print(f"{label}: {now[0]} connections ({now[1]} subscribed), peak so far {peak[0]}")
        return now

    one = waiters.enqueue_many("x", [0], delayed)
    first = waiting(lambda: waiters.wait(one[0], timeout=600))
    single = report("1 thread in wait() on 1 job")
    many = waiters.enqueue_many("x", list(range(args.ids)), delayed)
    second = waiting(lambda: waiters.wait_all(many, timeout=600))
    with_all = report(f"+ 1 thread in wait_all() on {args.ids:,} jobs")
    for job_id in one + many:
        other.cancel(job_id)
    first.join(60)
    second.join(60)
    by = threading.Thread(target=bystander, daemon=True)
    by.start()
    threading.stack_size(256 * 1024)
    ids = waiters.enqueue_many("x", list(range(args.threads)), delayed)
    peak[0] = 0
    started = time.monotonic()
    threads = [waiting(lambda i=i: waiters.wait(i, timeout=600)) for i in ids]
    threads_held = report(
        f"{args.threads:,} threads each in wait() on 1 job "
        f"(started in {time.monotonic() - started:.1f} s)"
    )
    cancelling = time.monotonic()
    for job_id in ids:
        other.cancel(job_id)
    for thread in threads:
        thread.join(600)
    print(
        f"all {args.threads:,} woke and returned {time.monotonic() - cancelling:.1f} s after "
        f"the cancels began; peak {peak[0]} connections "
        f"(the bystander's enqueues included); {len(failures)} bystander enqueues failed"
        + (f", e.g. {failures[0]}" if failures else "")
    )
    bystanding.set()
    done.set()
    by.join(10)
    sampler.join(10)
    queue.close()
    raw.close()
    other.queue.close()
    met = (
        with_all == single
        and threads_held[0] <= single[0] + _waiter.WAIT_READERS
        and not failures
        and not any(t.is_alive() for t in threads)
    )
    verdict = "met" if met else "NOT met"
    print(f"targets (wait_all holds what 1 wait holds; threads bounded; no failures): {verdict}")
    return met


def _quiet(target: Any) -> None:
    with contextlib.suppress(jobs.JobsError):
        target()


# -- (c) unique race ------------------------------------------------------------------------

RACER = """
import sys, threading, time, jobs
url, name, key, at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
queue = jobs.RedisQueue.from_url(url, name=name)
client = jobs.Client(jobs.ClientConfig(queue=queue))
client.stats()  # connected, scripts loaded, before the start
config = jobs.JobConfig(unique_key=key)
ids = []
def race():
    while time.time() < at:
        pass
    ids.append(str(client.enqueue("t", None, config)))
threads = [threading.Thread(target=race) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(" ".join(ids))
queue.close()
"""


def measure_unique(args: argparse.Namespace, server: RedisServer) -> bool:
    created: list[int] = []
    for round_ in range(args.rounds):
        name = f"race-{round_}"
        at = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, server.url, name, f"order-{round_}", repr(at)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        returned: list[str] = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise RuntimeError("a racer failed")
            returned += out.split()
        queue = RedisQueue.from_url(server.url, name=name)
        created.append(jobs.Client(jobs.ClientConfig(queue=queue)).stats().total_jobs)
        queue.close()
        print(
            f"round {round_}: {len(returned)} enqueues, {len(set(returned))} distinct id(s), "
            f"{created[-1]} job(s) created"
        )
    met = set(created) == {1}
    verdict = "met" if met else "NOT met"
    print(f"target one job per key: {verdict} (jobs created per key: {sorted(set(created))})")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("part", choices=["latency", "connections", "unique", "all", "worker"])
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=300, help="latency: jobs timed (300)")
    parser.add_argument("--ids", type=int, default=10_000, help="connections: wait_all ids")
    parser.add_argument("--threads", type=int, default=10_000, help="connections: threads")
    parser.add_argument("--rounds", type=int, default=10, help="unique: races (10)")
    args = parser.parse_args(argv)
    if args.part == "worker":
        worker(*args.rest)
        return 0
    met = True
    with RedisServer() as server:
        print(f"private redis-server at {server.url}")
        if args.part in ("latency", "all"):
            met &= measure_latency(args, server)
        if args.part in ("connections", "all"):
            met &= measure_connections(args, server)
        if args.part in ("unique", "all"):
            met &= measure_unique(args, server)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
