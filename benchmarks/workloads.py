"""The job bodies every library runs, and how each figure of the report is measured.

Bodies (imported by every worker process, so this module imports little at the top):

- ``incr``: one Redis ``INCR`` on ``bench:counter`` (one round trip on the process's own
  client, shared by its threads); drains are detected by reading that counter. The
  scale-out drains on a cluster name another key with ``$BENCH_COUNTER_KEY``.
- ``noop``: the empty body. It only bumps a process-local count kept in a small mmap'd
  file, one per process (about a microsecond), so the harness can tell when an empty-body
  drain is over without sending any command to Redis.
- ``stamp``: records ``time.time()`` on its first line and pushes it to ``bench:stamps``:
  pickup latency is that moment minus the moment the enqueue call began.

``python workloads.py ceiling ...`` is the no-queue ceiling: the same bodies submitted to
a bare ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from peers import Adapter, Body, Workers

    from jobs._embedded import RedisServer


def tail(path: Path, lines: int) -> str:
    """The last lines of a worker log."""
    from peers import tail as peers_tail

    return peers_tail(path, lines)


#: Environment of every worker process: the private Redis of the library under test
#: (queue and job bodies alike) and where empty-body jobs count themselves.
URL_ENV = "BENCH_REDIS_URL"
COUNT_DIR_ENV = "BENCH_COUNT_DIR"
#: The INCR body's counter, when not `COUNTER_KEY`: on a cluster each queue's workers
#: count in a key of their queue's own slot, so the body stays on the queue's shard.
COUNTER_KEY_ENV = "BENCH_COUNTER_KEY"

COUNTER_KEY = "bench:counter"
STAMPS_KEY = "bench:stamps"

#: How often the harness looks at the counter while a drain runs.
POLL_INTERVAL = 0.005
#: A drain whose count has not moved for this long has failed.
STALL_SECONDS = 60.0

# -- job bodies ----------------------------------------------------------------------

_clients: dict[int, redis.Redis | redis.cluster.RedisCluster] = {}
_clients_lock = threading.Lock()
_counter_key = os.environ.get(COUNTER_KEY_ENV) or COUNTER_KEY


def _connect(url: str) -> redis.Redis | redis.cluster.RedisCluster:
    if url.startswith("redis+cluster://"):
        # Any one node is enough for the client to discover the cluster.
        host, _, port = url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
        return redis.cluster.RedisCluster(host=host, port=int(port))
    return redis.Redis.from_url(url)


def _redis() -> redis.Redis | redis.cluster.RedisCluster:
    # One client per process (keyed by pid: prefork children get their own), shared by
    # its threads through redis-py's thread-safe connection pool.
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _clients_lock:
            client = _clients.get(pid)
            if client is None:
                client = _clients[pid] = _connect(os.environ[URL_ENV])
    return client


def incr(arg: int = 0) -> None:
    """The benchmark's job: one INCR, one round trip."""
    # redis-py's incr() sends INCRBY; the benchmark's body is the plain command.
    command: Callable[..., object] = _redis().execute_command
    command("INCR", _counter_key)


def stamp(arg: int = 0) -> None:
    """Report when the handler started, for pickup latency."""
    started = time.time()
    _redis().rpush(STAMPS_KEY, repr(started))


class _Count:
    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, str(os.getpid()))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, 8)
            self.map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        self.value = 0


_counts: dict[int, _Count] = {}
_counts_lock = threading.Lock()


def noop(arg: int = 0) -> None:
    """The empty body: counts itself where the harness can see it, and nothing else."""
    with _counts_lock:
        count = _counts.get(os.getpid())
        if count is None:
            count = _counts[os.getpid()] = _Count(os.environ[COUNT_DIR_ENV])
        count.value += 1
        struct.pack_into("<q", count.map, 0, count.value)


BODY_FUNCTIONS: dict[str, Callable[[int], None]] = {"incr": incr, "noop": noop, "stamp": stamp}


def noop_count(directory: Path) -> int:
    """How many empty-body jobs have run, over every process that ran some."""
    total = 0
    for entry in os.scandir(directory):
        with open(entry.path, "rb") as file:
            data = file.read(8)
        if len(data) == 8:
            total += struct.unpack("<q", data)[0]
    return total


def clear_counts(directory: Path) -> None:
    """Forget the empty-body counts of earlier drains (their processes have exited)."""
    for entry in os.scandir(directory):
        os.unlink(entry.path)


# -- small statistics ----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- the harness's own view of a library's Redis --------------------------------------


class Probe:
    """The harness's one connection to a library's private Redis.

    It counts the commands it sends, so that they can be taken out of the server's totals.
    """

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.client = redis.Redis(host=server.host, port=server.port, single_connection_client=True)
        self.commands = 0
        info = self._call(self.client.client_info)
        self.addr = str(info["addr"])

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        self.commands += 1
        return method(*args)

    def close(self) -> None:
        self.client.close()

    def info(self, section: str) -> dict[str, Any]:
        info: dict[str, Any] = self._call(self.client.info, section)
        return info

    def total_commands(self) -> tuple[int, int]:
        """The server's command count, and how many of them this probe had sent.

        INFO reports the commands completed before it, so the probe's share of a
        difference between two calls is the difference of the second values.
        """
        before = self.commands
        return int(self.info("stats")["total_commands_processed"]), before

    def used_memory(self) -> int:
        return int(self.info("memory")["used_memory"])

    def counter(self) -> int:
        value = self._call(self.client.get, COUNTER_KEY)
        return int(value) if value is not None else 0

    def reset(self) -> None:
        self._call(self.client.delete, COUNTER_KEY, STAMPS_KEY)

    def pop_stamp(self, timeout: float) -> float:
        item = self._call(self.client.blpop, [STAMPS_KEY], timeout)
        if item is None:
            raise TimeoutError(f"no job started within {timeout} s")
        return float(item[1])

    def mark(self, text: str) -> None:
        self._call(self.client.echo, text)


class CommandTally:
    """Counts the commands a server runs, through MONITOR, apart from the probe's own.

    A command sent by a client (one round trip may carry several, in a pipeline) counts
    as *top-level*; a ``redis.call`` inside a Lua script counts as *in-script*. Redis 7
    adds both to ``total_commands_processed``, so only MONITOR tells them apart. MONITOR
    slows the server: the drain it watches is not timed.
    """

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._ignore = probe.addr.encode()
        self._sock = socket.create_connection((probe.server.host, probe.server.port))
        self._sock.sendall(b"MONITOR\r\n")
        self.top: dict[str, int] = {}
        self.inner: dict[str, int] = {}
        self._marks: list[tuple[dict[str, int], dict[str, int]]] = []
        self._marked = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="bench-monitor", daemon=True)
        self._buffer = b""
        first = self._readline()
        if first != b"+OK":
            raise RuntimeError(f"MONITOR refused: {first!r}")
        self._thread.start()

    def _readline(self) -> bytes | None:
        while b"\r\n" not in self._buffer:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _read(self) -> None:
        while True:
            try:
                line = self._readline()
            except OSError:
                return
            if line is None:
                return
            start = line.find(b" [")
            end = line.find(b"] ", start)
            if start < 0 or end < 0:
                continue
            source = line[start + 2 : end]
            rest = line[end + 2 :]
            quote = rest.find(b'"', 1)
            name = rest[1:quote].decode("ascii", "replace").lower()
            if source.endswith(b" lua"):
                self.inner[name] = self.inner.get(name, 0) + 1
            elif source.endswith(self._ignore):
                if name == "echo":
                    with self._marked:
                        self._marks.append((dict(self.top), dict(self.inner)))
                        self._marked.notify_all()
            else:
                self.top[name] = self.top.get(name, 0) + 1

    def mark(self) -> tuple[dict[str, int], dict[str, int]]:
        """The counts so far, in step with the server (a marker command is sent through)."""
        with self._marked:
            seen = len(self._marks)
        self._probe.mark("bench-mark")
        with self._marked:
            if not self._marked.wait_for(lambda: len(self._marks) > seen, timeout=60):
                raise TimeoutError("MONITOR fell behind by more than 60 s")
            return self._marks[seen]

    def close(self) -> None:
        # shutdown() wakes the reader blocked in recv(); close() alone would not.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


def difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Per-command counts of ``after`` minus ``before``, zeros dropped."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# -- worker processes as psutil sees them --------------------------------------------


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:  # RSS and CPU are then reported as n/a
        return None
    return psutil


def process_tree(pids: Iterable[int]) -> list[Any]:
    """The processes and all their descendants (prefork children, dramatiq's workers)."""
    psutil = _psutil()
    if psutil is None:
        return []
    found: list[Any] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found.append(proc)
            found.extend(proc.children(recursive=True))
        except psutil.Error:
            continue
    return found


def cpu_seconds(procs: Sequence[Any]) -> float | None:
    """User + system CPU time of the processes (None without psutil)."""
    psutil = _psutil()
    if psutil is None or not procs:
        return None
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def rss_bytes(procs: Sequence[Any]) -> int | None:
    """Resident memory of the processes, summed (None without psutil)."""
    psutil = _psutil()
    if psutil is None or not procs:
        return None
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


# -- measurements --------------------------------------------------------------------


def timed_enqueue(adapter: Adapter, body: Body, n: int, *, bulk: bool, batch: int = 1000) -> float:
    """Enqueue ``n`` jobs one call each, or ``batch`` per bulk call; returns jobs/s."""
    started = time.perf_counter()
    if bulk:
        enqueue_bulk = adapter.enqueue_bulk
        if enqueue_bulk is None:
            raise ValueError(f"{adapter.name} has no bulk enqueue")
        for start in range(0, n, batch):
            enqueue_bulk(body, range(start, min(n, start + batch)))
    else:
        for i in range(n):
            adapter.enqueue_one(body, i)
    return n / (time.perf_counter() - started)


@dataclass
class Drain:
    """One drain of pre-enqueued jobs."""

    processes: int
    threads: int
    body: str
    jobs: int
    #: Jobs/s from the first completed job to the last (worker start-up excluded).
    rate: float
    #: Seconds from starting the worker processes to the first completed job.
    startup: float
    #: Jobs/s from starting the worker processes to the last job.
    rate_with_startup: float
    #: The queue's own Redis commands per job, top-level and in-script alike (INFO).
    commands_per_job: float | None = None
    #: CPU time of the worker processes per job, microseconds, while draining.
    worker_cpu_us: float | None = None
    #: CPU time of redis-server per job, microseconds, while draining.
    redis_cpu_us: float | None = None
    #: Resident memory of the worker processes once the drain is over, MB.
    rss_mb: float | None = None
    #: How many OS processes the workers were (a supervisor and its children count).
    os_processes: int = 0


def redis_cpu(server: RedisServer) -> float | None:
    """CPU seconds redis-server has used so far (None without psutil)."""
    pid = server.pid
    return cpu_seconds(process_tree([pid])) if pid is not None else None


def drain(
    adapter: Adapter,
    probe: Probe,
    *,
    processes: int,
    threads: int,
    body: Body,
    n: int,
    timeout: float,
    after: Callable[[Workers], None] | None = None,
) -> Drain:
    """Start workers on ``n`` pre-enqueued jobs and time them until all have run."""

    def read() -> int:
        if body == "incr":
            return probe.counter()
        return noop_count(adapter.count_dir)

    total0, probe0 = probe.total_commands()
    started = time.time()
    workers = adapter.start_workers(processes, threads)
    try:
        first: tuple[float, int, float | None, float | None] | None = None
        polls = 0
        last = (started, 0)
        while True:
            count = read()
            now = time.time()
            if first is None and count > 0:
                tree = process_tree(workers.pids)
                first = (now, count, cpu_seconds(tree), redis_cpu(probe.server))
            if count >= n:
                break
            if count != last[1]:
                last = (now, count)
            if now - started > timeout or now - last[0] > STALL_SECONDS:
                raise TimeoutError(
                    f"{adapter.name}: only {count} of {n} jobs ran in {now - started:.0f} s"
                    f" (none in the last {now - last[0]:.0f} s); worker log:\n"
                    + "\n".join(tail(log, 12) for log in workers.logs)
                )
            polls += 1
            if polls % 50 == 0:
                workers.check()
            time.sleep(POLL_INTERVAL)
        done = now
        tree = process_tree(workers.pids)
        cpu_done = cpu_seconds(tree)
        redis_cpu_done = redis_cpu(probe.server)
        rss = rss_bytes(tree)
        total1, probe1 = probe.total_commands()
        incrs = probe.counter() if body == "incr" else 0
        if after is not None:
            after(workers)
    finally:
        workers.stop()
    assert first is not None
    t_first, c_first, cpu_first, redis_cpu_first = first
    steady = n - c_first
    span = done - t_first
    rate_with_startup = n / max(done - started, 1e-9)
    rate = steady / span if steady > 0 and span > 0 else rate_with_startup
    result = Drain(
        processes=processes,
        threads=threads,
        body=body,
        jobs=n,
        rate=rate,
        startup=t_first - started,
        rate_with_startup=rate_with_startup,
        rss_mb=None if rss is None else rss / 1e6,
        os_processes=len(tree),
    )
    queue_commands = total1 - total0 - (probe1 - probe0) - incrs
    result.commands_per_job = queue_commands / n
    if steady > 0 and cpu_first is not None and cpu_done is not None:
        result.worker_cpu_us = (cpu_done - cpu_first) / steady * 1e6
    if steady > 0 and redis_cpu_first is not None and redis_cpu_done is not None:
        result.redis_cpu_us = (redis_cpu_done - redis_cpu_first) / steady * 1e6
    return result


@dataclass
class Commands:
    """Redis commands per job as MONITOR saw them (see `CommandTally`)."""

    jobs: int
    enqueue_top: float
    enqueue_inner: float
    drain_top: float
    drain_inner: float
    #: Per-command counts per job while draining, top-level then in-script.
    drain_top_by_command: dict[str, float] = field(default_factory=dict)
    drain_inner_by_command: dict[str, float] = field(default_factory=dict)
    enqueue_top_by_command: dict[str, float] = field(default_factory=dict)


def command_counts(adapter: Adapter, probe: Probe, *, threads: int, n: int) -> Commands:
    """Enqueue ``n`` INCR jobs one call each, then drain them, under MONITOR."""
    probe.reset()
    tally = CommandTally(probe)
    try:
        top0, inner0 = tally.mark()
        for i in range(n):
            adapter.enqueue_one("incr", i)
        top1, inner1 = tally.mark()
        workers = adapter.start_workers(1, threads)
        try:
            deadline = time.monotonic() + max(120.0, n / 20)
            while probe.counter() < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{adapter.name}: MONITOR drain did not finish")
                workers.check()
                time.sleep(0.02)
        finally:
            workers.stop()
        top2, inner2 = tally.mark()
    finally:
        tally.close()
    enqueue_top = difference(top1, top0)
    drain_top = difference(top2, top1)
    drain_top["incr"] = drain_top.get("incr", 0) - n  # the body's own
    drain_top = {k: v for k, v in drain_top.items() if v}
    drain_inner = difference(inner2, inner1)

    def per_job(counts: dict[str, int]) -> dict[str, float]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])
        return {k: v / n for k, v in ordered}

    return Commands(
        jobs=n,
        enqueue_top=sum(enqueue_top.values()) / n,
        enqueue_inner=sum(difference(inner1, inner0).values()) / n,
        drain_top=sum(drain_top.values()) / n,
        drain_inner=sum(drain_inner.values()) / n,
        drain_top_by_command=per_job(drain_top),
        drain_inner_by_command=per_job(drain_inner),
        enqueue_top_by_command=per_job(enqueue_top),
    )


@dataclass
class Latency:
    """Enqueue call to the handler's first line, one job at a time, idle worker (ms)."""

    samples: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass
class Idle:
    """A started worker pool with nothing to do."""

    seconds: float
    commands_per_s: float
    cpu_percent: float | None
    rss_mb: float | None


class Pickup:
    """One library's part of the interleaved pickup measurement (`pickup_latencies`)."""

    def __init__(self, name: str, adapter: Adapter, probe: Probe) -> None:
        self.name = name
        self.adapter = adapter
        self.probe = probe
        self.workers: Workers | None = None
        self.latencies: list[float] = []
        self.error: Exception | None = None

    def start(self, threads: int) -> None:
        """Start its idle pool (1 process) and run 3 warm-up jobs."""
        self.probe.reset()
        self.workers = self.adapter.start_workers(1, threads)
        for i in range(3):  # imports, connections, script loading
            self.adapter.enqueue_one("stamp", -1 - i)
            self.probe.pop_stamp(120)

    def sample(self, i: int) -> None:
        """One job to the idle pool: enqueue call to the handler's first line (ms)."""
        began = time.time()
        self.adapter.enqueue_one("stamp", i)
        self.latencies.append((self.probe.pop_stamp(30) - began) * 1000)

    def latency(self) -> Latency:
        """The percentiles of the samples taken."""
        latencies = self.latencies
        return Latency(
            samples=len(latencies),
            p50=percentile(latencies, 50),
            p95=percentile(latencies, 95),
            p99=percentile(latencies, 99),
            max=max(latencies),
        )

    def idle(self, idle_seconds: float) -> Idle:
        """The idle pool's commands/s, CPU and RSS over ``idle_seconds``."""
        assert self.workers is not None
        tree = process_tree(self.workers.pids)
        total0, probe0 = self.probe.total_commands()
        cpu0 = cpu_seconds(tree)
        began = time.monotonic()
        time.sleep(idle_seconds)
        cpu1 = cpu_seconds(tree)
        total1, probe1 = self.probe.total_commands()
        elapsed = time.monotonic() - began
        rss = rss_bytes(tree)
        self.workers.check()
        return Idle(
            seconds=elapsed,
            commands_per_s=(total1 - total0 - (probe1 - probe0)) / elapsed,
            cpu_percent=None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / elapsed * 100,
            rss_mb=None if rss is None else rss / 1e6,
        )

    def stop(self) -> None:
        """Stop its workers, if they run."""
        if self.workers is not None:
            self.workers.stop()
            self.workers = None


def pickup_latencies(
    libraries: list[Pickup], *, threads: int, samples: int, gap: float = 0.02
) -> None:
    """Pickup latency of every library's idle pool, their samples interleaved.

    All pools are started first; then each round enqueues one job to each library in
    turn (the order rotating), each after a jittered pause: a busy moment of the machine
    falls on all of them alike, which a phase per library would not ensure (the machine
    drifts by more than the gaps being judged). A library that fails leaves the rounds
    (its ``error`` set); the others go on.
    """
    for library in libraries:
        try:
            library.start(threads)
        except Exception as exc:
            library.error = exc
    time.sleep(0.5)
    rng = random.Random(7)
    for i in range(samples):
        live = [lib for lib in libraries if lib.error is None]
        shift = i % len(live) if live else 0
        for library in live[shift:] + live[:shift]:
            # Jitter keeps the enqueues out of step with any polling period.
            time.sleep(gap + rng.random() * gap)
            try:
                library.sample(i)
            except Exception as exc:
                library.error = exc
    for library in libraries:
        if library.error is None and library.workers is not None:
            try:
                library.workers.check()
            except Exception as exc:
                library.error = exc


def ceiling(
    url: str, count_dir: Path, *, body: Body, processes: int, threads: int, n: int
) -> float:
    """Jobs/s of the bare body on ``processes`` x ``ThreadPoolExecutor(threads)``, no queue."""
    from peers import worker_env

    env = worker_env(url, count_dir)
    per_process = n // processes
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "ceiling",
        "--body",
        body,
        "--jobs",
        str(per_process),
        "--threads",
        str(threads),
    ]
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("a ceiling process failed to start")
        for proc in procs:  # all start together
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        spans = []
        for proc in procs:
            assert proc.stdout is not None
            start, end = proc.stdout.readline().split()
            spans.append((float(start), float(end)))
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait(30)
    return per_process * processes / (max(e for _, e in spans) - min(s for s, _ in spans))


def _ceiling_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="workloads.py ceiling")
    parser.add_argument("--body", choices=sorted(BODY_FUNCTIONS), required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    body = BODY_FUNCTIONS[args.body]
    body(-1)  # connect before the clock starts, as a running worker would have
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    with ThreadPoolExecutor(args.threads) as executor:
        futures = [executor.submit(body, i) for i in range(args.jobs)]
        for future in futures:
            future.result()
    end = time.time()
    print(f"{start!r} {end!r}", flush=True)


def latency_stats(call: Callable[[], object], repeat: int = 200) -> tuple[float, float]:
    """p50 and p99 of ``call()`` in milliseconds."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return percentile(times, 50), percentile(times, 99)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "ceiling":
        sys.exit("usage: workloads.py ceiling --body BODY --jobs N --threads T")
    _ceiling_main(sys.argv[2:])
