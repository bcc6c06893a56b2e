"""Soak: 100k jobs, 10% failing, worker processes killed at random, then the accounting.

Run: ``python benchmarks/soak.py`` (``--help`` for the knobs). It starts a private
redis-server, enqueues the jobs, runs worker processes that it SIGKILLs one at a time
every few seconds (starting a replacement each time), waits until every job has ended,
and prints:

- the accounting: enqueued = completed + failed + cancelled, by ``stats()`` and by reading
  every job's record, and no job in two states (the six indexes are disjoint);
- how many executions were duplicates (at-least-once after a kill: a job whose worker
  died is run again elsewhere);
- the Redis memory and keys left once the records' retention has expired.

Exit code 0 when the accounting holds, 1 otherwise. This is a benchmark, not a test: it
runs for about a minute.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import redis

import jobs
from jobs._embedded import RedisServer

QUEUE = "soak"
RUNS = "soak:runs"  # executions, counted by the handler


def worker_main(url: str, threads: int, lease: float, retention: float, fail_rate: float) -> int:
    """One worker process (``--worker``): runs until SIGTERM or SIGKILL."""
    # Ten thousand "failed for good" records would bury the summary.
    logging.getLogger("jobs").setLevel(logging.CRITICAL)
    counter = redis.Redis.from_url(url)
    registry = jobs.Registry()

    def soak(ctx: jobs.JobContext, payload: Any) -> int:
        counter.incr(RUNS)
        if random.random() < fail_rate:
            raise jobs.PermanentError("the 10% that fail")
        return int(payload)

    registry.register_func("soak", soak)
    queue = _queue(url, retention)
    client = jobs.Client(
        jobs.ClientConfig(
            queue=queue,
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(num_workers=threads, lease=lease),
        )
    )
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    client.start()
    print("READY", flush=True)
    while not stop:
        signal.pause()
    client.stop()
    os._exit(0)  # a handler thread stuck past the shutdown would block a normal exit


def _queue(url: str, retention: float) -> jobs.RedisQueue:
    return jobs.RedisQueue.from_url(
        url,
        name=QUEUE,
        completed_ttl=timedelta(seconds=retention),
        failed_ttl=timedelta(seconds=retention),
        max_failed_jobs=1_000_000,
    )


def _spawn(args: argparse.Namespace, url: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        url,
        "--threads",
        str(args.threads),
        "--lease",
        str(args.lease),
        "--retention",
        str(args.retention),
        "--fail-rate",
        str(args.fail_rate),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # READY
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=3, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--fail-rate", type=float, default=0.1)
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument(
        "--retention", type=float, default=60.0, help="completed/failed ttl, s (> the drain)"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, args.threads, args.lease, args.retention, args.fail_rate)

    with RedisServer() as server:
        url = server.url
        store = redis.Redis.from_url(url)
        queue = _queue(url, args.retention)
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        ids: list[str] = []
        config = jobs.JobConfig(max_retries=0)
        for start in range(0, args.jobs, 1000):
            ids += client.enqueue_many("soak", range(start, min(start + 1000, args.jobs)), config)
        print(f"enqueued {len(ids)} jobs; {args.processes} worker processes x {args.threads}")
        started = time.monotonic()
        workers = [_spawn(args, url) for _ in range(args.processes)]
        kills = 0
        next_kill = started + args.kill_every
        try:
            while True:
                stats = client.stats()
                if stats.completed_jobs + stats.failed_jobs + stats.cancelled_jobs >= len(ids):
                    break
                if time.monotonic() > started + args.timeout:
                    print(f"TIMEOUT: {stats}")
                    return 1
                if time.monotonic() >= next_kill:
                    victim = workers.pop(random.randrange(len(workers)))
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    kills += 1
                    workers.append(_spawn(args, url))
                    next_kill = time.monotonic() + args.kill_every
                time.sleep(0.2)
            elapsed = time.monotonic() - started
        finally:
            for proc in workers:
                proc.send_signal(signal.SIGTERM)
            for proc in workers:
                proc.wait(30)
        ok = _report(store, client, ids, elapsed, kills)
        ok &= _leftovers(store, queue, args.retention)
        queue.close()
        store.close()
    return 0 if ok else 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _report(
    store: redis.Redis, client: jobs.Client, ids: list[str], elapsed: float, kills: int
) -> bool:
    stats = client.stats()
    keys = client.queue.keys
    indexes = {
        name: {_text(m) for m in store.zrange(getattr(keys, name), 0, -1)}
        for name in ("pending", "scheduled", "processing", "completed", "failed", "cancelled")
    }
    pipe = store.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "status")
    statuses: dict[str, int] = {}
    for status in pipe.execute():
        name = "missing" if status is None else status.decode()
        statuses[name] = statuses.get(name, 0) + 1
    members = [m for found in indexes.values() for m in found]
    in_two = len(members) - len(set(members))
    runs = int(store.get(RUNS) or 0)
    ended = stats.completed_jobs + stats.failed_jobs + stats.cancelled_jobs
    print(f"drained in {elapsed:.1f} s ({len(ids) / elapsed:,.0f} jobs/s) with {kills} kills")
    print(
        f"stats: total {stats.total_jobs}, completed {stats.completed_jobs}, failed "
        f"{stats.failed_jobs}, cancelled {stats.cancelled_jobs}, lost leases "
        f"{stats.lost_leases}, rejected writes {stats.rejected_writes}"
    )
    print(f"records by status: {dict(sorted(statuses.items()))}")
    print(f"executions {runs}, duplicates {runs - len(ids)} ({(runs - len(ids)) / len(ids):.3%})")
    checks = {
        "enqueued = completed + failed + cancelled (stats)": stats.total_jobs == ended == len(ids),
        "every record ended, none missing": statuses.get("completed", 0)
        + statuses.get("failed", 0)
        + statuses.get("cancelled", 0)
        == len(ids),
        "records agree with stats": statuses.get("completed", 0) == stats.completed_jobs
        and statuses.get("failed", 0) == stats.failed_jobs,
        "no job in two indexes": in_two == 0,
        "nothing left pending, scheduled or processing": not (
            indexes["pending"] or indexes["scheduled"] or indexes["processing"]
        ),
        "every job ran at least once": runs >= len(ids),
    }
    for name, held in checks.items():
        print(f"  [{'ok' if held else 'FAILED'}] {name}")
    return all(checks.values())


def _leftovers(store: redis.Redis, queue: jobs.RedisQueue, retention: float) -> bool:
    before = int(store.info("memory")["used_memory"])
    print(f"Redis memory with every record kept: {before / 1e6:.1f} MB")
    time.sleep(retention + 1)  # let the records' TTLs run out
    queue.reap(trim=True)  # what a live worker's heartbeat does every minute
    store.delete(RUNS)
    left = sorted(_text(k) for k in store.keys("*"))
    after = int(store.info("memory")["used_memory"])
    print(f"after retention: {after / 1e6:.2f} MB, {len(left)} keys: {left}")
    return len(left) <= 6  # stats, seq, lease_seq, wake, ... never one per job


if __name__ == "__main__":
    sys.exit(main())
