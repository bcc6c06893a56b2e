"""What Redis spends inside jobs' Lua scripts: the figures behind RESULTS.rst's enqueue rows.

    python benchmarks/script_costs.py [--calls 5000] [--rounds 5]

On a private redis-server started here, each figure is the median over the rounds of
Redis's own time per call (``INFO commandstats``, ``usec_per_call``), the variants of a
round measured one after the other so that a busy moment of the machine hits them all:

- an empty EVALSHA with 0 and with 18 arguments: the price of any script call;
- one command from inside a script, out of a loop of 200 in one call: what each
  ``redis.call`` adds to a script;
- each hot script's library prelude alone (the ``_lib.lua`` functions it carries, then
  ``return 1``): what Redis runs at every call before the script does anything, since
  a script's whole text runs each time;
- one new job enqueued through ``enqueue.lua`` and through ``enqueue_plain.lua``, with
  the same settings (the producer takes the latter unless the job has a unique key or
  dependencies).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import uuid
from typing import TYPE_CHECKING

import redis

from jobs._embedded import RedisServer
from jobs.queue._scripts import _source

if TYPE_CHECKING:
    from collections.abc import Callable

#: enqueue.lua's KEYS and its ARGV up to the ids, for one job of the default config.
_KEYS = ["{b}:pending", "{b}:scheduled", "{b}:seq", "{b}:stats", "{b}:wake", "{b}:types"]
_SETTINGS = ["{b}:job:", "t", "0", "3", "1800000", "", "{}", "0"]
_FULL_HEAD = [*_SETTINGS, "", "0", "rpbt", "0", "", "0", "0", "0"]
_PLAIN_HEAD = [*_SETTINGS, "rpbt", "0", "1"]  # fresh ids, as a Client sends

#: Commands measured from inside a script, each as a loop body (i: the iteration).
_COMMANDS = {
    "TIME": "redis.call('TIME')",
    "EXISTS": "redis.call('EXISTS', KEYS[1] .. i)",
    "INCRBY": "redis.call('INCRBY', KEYS[1], 1)",
    "HINCRBY": "redis.call('HINCRBY', KEYS[1] .. 'h', 'f', 1)",
    "HGET": "redis.call('HGET', KEYS[1] .. 'h', 'f')",
    "LLEN": "redis.call('LLEN', KEYS[1] .. 'l')",
    "HSET of 11 fields": (
        "redis.call('HSET', KEYS[1] .. i .. 'x', 'id', ARGV[1], 'type', 't', 'payload',"
        " ARGV[2], 'status', 'pending', 'priority', '0', 'max_retries', '3', 'created_at',"
        " '1796536703498', 'run_at', '1796536703498', 'score', '4398046511104123',"
        " 'timeout_ms', '1800000', 'attempts', '0')"
    ),
    "ZADD": "redis.call('ZADD', KEYS[1] .. 'z', i, ARGV[1] .. i)",
}
_LOOP = 200


def _per_call(r: redis.Redis, call: Callable[[], object], calls: int) -> float:
    r.config_resetstat()
    for _ in range(calls):
        call()
    stats: dict[str, dict[str, float]] = r.info("commandstats")
    return stats["cmdstat_evalsha"]["usec_per_call"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="script calls per figure")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        for _ in range(args.rounds):
            for name, call, calls, per in _calls(r, args.calls):
                r.flushall()
                figures.setdefault(name, []).append(_per_call(r, call, calls) / per)
    width = max(map(len, figures))
    print(f"{'figure':{width}}  us (median of {args.rounds}; min .. max)")
    for name, values in figures.items():
        spread = f"({min(values):.2f} .. {max(values):.2f})"
        print(f"{name:{width}}  {statistics.median(values):6.2f}  {spread}")


def _calls(r: redis.Redis, calls: int) -> list[tuple[str, Callable[[], object], int, int]]:
    """(figure, one script call, how many calls, commands per call) for each figure."""
    empty = r.script_load("return 1")
    out: list[tuple[str, Callable[[], object], int, int]] = [
        ("empty EVALSHA, 0 args", functools.partial(r.evalsha, empty, 0), calls, 1),
        (
            "empty EVALSHA, 18 args",
            functools.partial(r.evalsha, empty, 0, *["x" * 16] * 18),
            calls,
            1,
        ),
    ]
    for name, body in _COMMANDS.items():
        sha = r.script_load(f"for i = 1, {_LOOP} do {body} end return 1")
        call = functools.partial(r.evalsha, sha, 1, "{b}:k", "x" * 32, '{"i":1}')
        out.append((f"  {name}, inside a script", call, calls // 20, _LOOP))
    for name in ("enqueue", "enqueue_plain", "fetch", "complete", "fail"):
        source = _source(name)
        lib = source[: source.rindex(f"-- {name}.lua: ")]  # the script's own file follows
        sha = r.script_load(lib + "\nreturn 1")
        label = f"{name}.lua prelude ({lib.count('local function')} library functions)"
        out.append((label, functools.partial(r.evalsha, sha, 0), calls, 1))
    for name, head in (("enqueue", _FULL_HEAD), ("enqueue_plain", _PLAIN_HEAD)):
        sha = r.script_load(_source(name))

        def enqueue(sha: str = sha, head: list[str] = head) -> object:
            return r.evalsha(sha, len(_KEYS), *_KEYS, *head, uuid.uuid4().hex, '{"i":1}')

        out.append((f"one new job through {name}.lua", enqueue, calls, 1))
    return out


if __name__ == "__main__":
    main()
