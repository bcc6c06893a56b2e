"""Groups and dependencies: what a large group costs, and what depends_on costs enqueue.

Run: ``python benchmarks/flows.py`` (``--help`` for the knobs). On a private
redis-server it:

- creates a group of ``--members`` tasks with a callback (``jobs.group(..., then=...)``)
  in one ``Client.enqueue_flow`` call, ``--rounds`` times, and prints the median wall
  time of the call and the longest the script blocked Redis (``INFO commandstats``);
- drains one such group through the queue's own fetch and complete calls (no worker
  threads, so nothing but the scripts is measured) and counts how many times the
  callback was delivered: it must be exactly once, after the last member;
- times ``enqueue`` of single jobs with no ``depends_on`` and with one, the median of
  ``--rounds`` runs of ``--enqueues`` calls.

Exit code 0 when the callback fired exactly once in every drain, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta

import redis

import jobs
from jobs._embedded import RedisServer
from jobs.worker._protocol import Completed, Leased


def _script_usec(store: redis.Redis) -> tuple[int, float]:
    """EVALSHA calls so far and their total microseconds on the server."""
    info = store.info("commandstats")
    stat = info.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(stat["calls"]), float(stat["usec"])


def _create(client: jobs.Client, store: redis.Redis, members: int) -> tuple[float, float, str]:
    flow = jobs.group([jobs.Task("m", n) for n in range(members)], then=jobs.Task("cb"))
    calls_before, usec_before = _script_usec(store)
    began = time.perf_counter()
    handle = client.enqueue_flow(flow)
    wall = time.perf_counter() - began
    calls, usec = _script_usec(store)
    if calls - calls_before != 1:
        raise RuntimeError(f"the group took {calls - calls_before} script calls, not 1")
    return wall, (usec - usec_before) / 1000, handle.last


def _drain(client: jobs.Client, callback: str, members: int) -> int:
    """Complete every job; how many times the callback was delivered (must be 1)."""
    fired = done = 0
    while True:
        fetched = client.queue.fetch(1000, timedelta(minutes=5))
        if not fetched.jobs:
            return fired
        for leased in fetched.jobs:
            if leased.job_id == callback:
                fired += 1
                if done != members:
                    raise RuntimeError(f"callback delivered after {done} of {members} members")
            else:
                done += 1
        client.queue.write([Completed(Leased(j.job_id, j.token), b"1") for j in fetched.jobs])


def _enqueue_rate(client: jobs.Client, n: int, config: jobs.JobConfig) -> float:
    began = time.perf_counter()
    for i in range(n):
        client.enqueue("e", i, config)
    return n / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000, help="group size (10000)")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions (5)")
    parser.add_argument("--enqueues", type=int, default=5_000, help="enqueues per round (5000)")
    args = parser.parse_args(argv)
    with RedisServer() as server:
        store = redis.Redis.from_url(server.url)
        queue = jobs.RedisQueue.from_url(server.url, name="flows", max_completed_jobs=0)
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        try:
            client.enqueue_flow(jobs.chain(jobs.Task("warm-up")))  # loads the scripts
            store.flushdb()
            walls, blocked, fired = [], [], []
            for _ in range(args.rounds):
                wall, script_ms, callback = _create(client, store, args.members)
                walls.append(wall)
                blocked.append(script_ms)
                fired.append(_drain(client, callback, args.members))
                store.flushdb()
            print(
                f"group of {args.members:,} + callback, one call: median "
                f"{statistics.median(walls) * 1000:.0f} ms wall (min {min(walls) * 1000:.0f}), "
                f"script {statistics.median(blocked):.0f} ms (max {max(blocked):.0f}); "
                f"callback deliveries per drain: {fired}"
            )
            dependency = client.enqueue("dep")
            plain = jobs.JobConfig()
            waiting = jobs.JobConfig(depends_on=[dependency])
            rates: dict[str, list[float]] = {"without depends_on": [], "with depends_on": []}
            for _ in range(args.rounds):
                rates["without depends_on"].append(_enqueue_rate(client, args.enqueues, plain))
                rates["with depends_on"].append(_enqueue_rate(client, args.enqueues, waiting))
            for label, values in rates.items():
                print(f"enqueue one job, {label}: median {statistics.median(values):,.0f} jobs/s")
        finally:
            queue.close()
        store.close()
    return 0 if all(count == 1 for count in fired) else 1


if __name__ == "__main__":
    sys.exit(main())
