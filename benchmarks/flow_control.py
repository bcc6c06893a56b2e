"""Flow control measured: rate limits, concurrency caps, and what a throttled pool costs.

Run from the repository root::

    python benchmarks/flow_control.py rate     # (a) 1,000 jobs at 50/s beside a free type
    python benchmarks/flow_control.py cap      # (b) max_concurrency=3, a worker SIGKILLed
    python benchmarks/flow_control.py idle     # commands/s: idle pools vs throttled pools

Each part starts its own private ``redis-server`` (``jobs._embedded_redis``) and worker
processes (this file run as ``worker``: a `jobs.Client` with ``WorkerPoolConfig(num_workers=
--threads)``), prints its figures, and exits non-zero when a target is missed.

- ``rate``: ``--processes`` (4) workers x ``--threads`` (8) drain ``--limited`` (1,000) jobs
  of a type declared ``rate_limit=--rate`` (50/s) and, at the same time, ``--free``
  (50,000) jobs of a type without limits. Each limited handler records its start time;
  the rate is (starts - 1) / (last start - first start), and the densest one-second window
  is reported too. The free type's drain rate is measured alone first, then beside the
  limited one.
- ``cap``: the same pools drain ``--capped`` (300) jobs of a type declared
  ``max_concurrency=3`` that sleep ``--sleep`` (0.2 s); at ``--kill-after`` (3 s) one worker
  process that is running one of them is SIGKILLed. From the handlers' own start and end
  times (the killed one ends at the kill): the most running at once, and how long after
  the kill three ran at once again (target: within 1.5 x ``--lease``).
- ``idle``: Redis commands per second (``INFO commandstats``) sent by the pools over
  ``--seconds`` (10) when the queue is empty, then when every pending job is held back
  by a rate limit (one per minute) and by a full concurrency cap.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

import jobs
from jobs import RateLimit
from jobs._embedded import RedisServer

if TYPE_CHECKING:
    from collections.abc import Iterator

QUEUE = "flow"
STARTS = "fc:starts"  # JSON {"id", "pid", "at"} per limited or capped start
ENDS = "fc:ends"  # JSON {"id", "pid", "at"} per capped end
FREE_DONE = "fc:free"  # INCR per free job
HERE = Path(__file__).resolve()


# -- the worker process ---------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """One pool: 'limited' (rate_limit), 'capped' (max_concurrency, sleeps), 'free'."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    recorder = redis.Redis.from_url(args.url)
    registry = jobs.Registry()
    pid = os.getpid()

    def limited(ctx: jobs.JobContext, payload: Any) -> None:
        recorder.rpush(STARTS, json.dumps({"id": ctx.job.id, "pid": pid, "at": time.time()}))

    def capped(ctx: jobs.JobContext, payload: Any) -> None:
        recorder.rpush(STARTS, json.dumps({"id": ctx.job.id, "pid": pid, "at": time.time()}))
        time.sleep(float(payload))
        recorder.rpush(ENDS, json.dumps({"id": ctx.job.id, "pid": pid, "at": time.time()}))

    def free(ctx: jobs.JobContext, payload: Any) -> None:
        recorder.incr(FREE_DONE)

    registry.register("limited", limited, rate_limit=args.rate)
    registry.register("capped", capped, max_concurrency=args.cap)
    registry.register("free", free)
    queue = jobs.RedisQueue.from_url(args.url, name=QUEUE)
    client = jobs.Client(
        jobs.ClientConfig(
            queue=queue,
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(num_workers=args.threads, lease=args.lease),
        )
    )
    client.start()
    print("READY", flush=True)
    while not stop.wait(0.2):
        pass
    client.stop()
    queue.close()
    os._exit(0)


# -- the driver -------------------------------------------------------------------------------


@contextmanager
def pools(args: argparse.Namespace, url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``--processes`` worker processes, READY, terminated at the end."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    command = [sys.executable, str(HERE), "worker", "--url", url]
    command += ["--threads", str(args.threads), "--lease", str(args.lease)]
    command += ["--rate", args.rate, "--cap", str(args.cap)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, env=env) for _ in range(args.processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"READY":
                raise RuntimeError(f"worker {proc.pid} did not start")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def entries(r: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(key, 0, -1)]


def free_drain(client: jobs.Client, r: redis.Redis, n: int) -> float:
    """Enqueue n free jobs; their drain rate (jobs/s, from the enqueue to the last one)."""
    r.delete(FREE_DONE)
    began = time.monotonic()
    for start in range(0, n, 1000):
        client.enqueue_many("free", [None] * min(1000, n - start))
    wait_for(lambda: int(r.get(FREE_DONE) or 0) >= n, 600, "the free drain")
    return n / (time.monotonic() - began)


def measure_rate(args: argparse.Namespace, r: redis.Redis, client: jobs.Client) -> bool:
    alone = free_drain(client, r, args.free)
    print(f"free type alone: {alone:,.0f} jobs/s ({args.free:,} jobs)")
    r.delete(STARTS)
    client.enqueue_many("limited", [None] * args.limited)
    beside = free_drain(client, r, args.free)
    wait_for(lambda: r.llen(STARTS) >= args.limited, 600, "the limited drain")
    starts: list[float] = sorted(e["at"] for e in entries(r, STARTS))
    span = starts[-1] - starts[0]
    rate = (len(starts) - 1) / span
    densest = max(sum(1 for t in starts[i:] if t < first + 1.0) for i, first in enumerate(starts))
    wanted = RateLimit.parse(args.rate)
    target = wanted.count * 1000 / wanted.period_ms
    print(f"free type beside the limited one: {beside:,.0f} jobs/s ({beside / alone:.0%} of alone)")
    print(
        f"limited type: {len(starts)} starts over {span:.2f} s = {rate:.2f}/s "
        f"(target {target:g}/s, {rate / target - 1:+.1%}); densest 1 s window: {densest}"
    )
    return abs(rate / target - 1) <= 0.05


def measure_cap(
    args: argparse.Namespace,
    r: redis.Redis,
    client: jobs.Client,
    procs: list[subprocess.Popen[bytes]],
) -> bool:
    r.delete(STARTS, ENDS)
    client.enqueue_many("capped", [args.sleep] * args.capped)
    time.sleep(args.kill_after)
    # A process running one now: started, not ended.
    ended = {e["id"] for e in entries(r, ENDS)}
    running = [e for e in entries(r, STARTS) if e["id"] not in ended]
    pids = {p.pid: p for p in procs}
    victim = next(pids[e["pid"]] for e in reversed(running) if e["pid"] in pids)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    wait_for(lambda: r.llen(ENDS) >= args.capped, 600, "the capped drain")
    starts, ends = entries(r, STARTS), entries(r, ENDS)
    end_of = {(e["id"], e["pid"]): e["at"] for e in ends}
    spans = []
    for s in starts:
        end = end_of.get((s["id"], s["pid"]))
        if end is None:  # killed mid-run: it ran until the kill
            assert s["pid"] == victim.pid, s
            end = killed_at
        spans.append((s["at"], end))
    events = sorted(
        [(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1])
    )
    peak = level = 0
    regained = None
    for at, step in events:
        level += step
        peak = max(peak, level)
        if regained is None and at > killed_at and level == args.cap:
            regained = at - killed_at
    bound = 1.5 * args.lease
    print(
        f"capped type: {len(starts)} starts ({args.capped} jobs), "
        f"most running at once: {peak} (cap {args.cap})"
    )
    if regained is None:
        print("the cap was never regained")
    else:
        print(
            f"killed pid {victim.pid} at +{args.kill_after:g} s; {args.cap} running again "
            f"{regained:.2f} s later (bound 1.5 x lease = {bound:g} s)"
        )
    return peak <= args.cap and regained is not None and regained <= bound


def commands(r: redis.Redis) -> tuple[int, int]:
    """Commands served so far (those scripts call inside Redis included), and EVALSHAs."""
    stats = r.info("commandstats")
    total = sum(int(v["calls"]) for v in stats.values())
    return total, int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def commands_per_second(r: redis.Redis, seconds: float) -> tuple[float, float]:
    before = commands(r)
    time.sleep(seconds)
    after = commands(r)
    # The first INFO call is counted by the second one: left out.
    return (after[0] - before[0] - 1) / seconds, (after[1] - before[1]) / seconds


def measure_idle(args: argparse.Namespace, r: redis.Redis, client: jobs.Client) -> bool:
    time.sleep(2)  # past the pools' start-up
    figures: dict[str, tuple[float, float]] = {}

    def measure(label: str) -> None:
        figures[label] = commands_per_second(r, args.seconds)
        total, scripts = figures[label]
        print(f"{label}: {total:.1f} commands/s ({scripts:.1f} script calls/s)")

    queue = client.queue
    measure("idle pools, empty queue")
    queue.set_type_limits("limited", rate_limit="1/m")
    client.enqueue_many("limited", [None] * 100)
    wait_for(lambda: r.llen(STARTS) >= 1, 30, "the first limited start")
    time.sleep(1)
    measure("99 jobs held back by a rate limit (1/m), nothing running")
    client.purge("pending")
    # Pools holding running jobs beat every 0.5 s: the baseline is jobs running with
    # nothing pending, then the same with jobs waiting for the full cap.
    queue.set_type_limits("capped", max_concurrency=args.cap)
    client.enqueue_many("capped", [3600] * args.cap)
    wait_for(lambda: r.llen(STARTS) >= 1 + args.cap, 30, "the capped starts")
    time.sleep(1)
    measure(f"{args.cap} capped jobs running, nothing pending")
    client.enqueue_many("capped", [3600] * 100)
    time.sleep(1)
    measure(f"{args.cap} capped jobs running, 100 held back by the cap")
    (idle, _), (throttled, _), (running, _), (capped, _) = figures.values()
    # Within 10 % (the heartbeats' pace varies with what each pool holds).
    return throttled <= idle * 1.1 and capped <= running * 1.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("part", choices=["rate", "cap", "idle", "worker"])
    parser.add_argument("--url", help="(worker) the queue's Redis")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--lease", type=float, default=2.0, help="seconds")
    parser.add_argument("--rate", default="50/s", help="the limited type's rate_limit")
    parser.add_argument("--cap", type=int, default=3, help="the capped type's max_concurrency")
    parser.add_argument("--limited", type=int, default=1000)
    parser.add_argument("--free", type=int, default=50_000)
    parser.add_argument("--capped", type=int, default=300)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--kill-after", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.part == "worker":
        worker(args)
        return 0
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        r = stack.enter_context(redis.Redis.from_url(server.url))
        queue = jobs.RedisQueue.from_url(server.url, name=QUEUE)
        stack.callback(queue.close)
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        procs = stack.enter_context(pools(args, server.url))
        print(f"{args.processes} worker processes x {args.threads} threads, lease {args.lease:g} s")
        if args.part == "rate":
            ok = measure_rate(args, r, client)
        elif args.part == "cap":
            ok = measure_cap(args, r, client, procs)
        else:
            ok = measure_idle(args, r, client)
    print("OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
