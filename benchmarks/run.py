"""Benchmark ``jobs`` against RQ, Huey, Dramatiq and Celery in one run.

    python benchmarks/run.py                 # everything (about 18 minutes on 2 cores)
    python benchmarks/run.py --no-peers      # jobs only, in the current environment
    python benchmarks/run.py --quick         # skip the depth test and the cluster drains

With peers, the harness makes (once) and then re-runs itself inside its own virtualenv,
``benchmarks/.venv-peers``, with the pinned ``requirements-peers.txt`` and ``jobs``
installed in editable mode, so all five libraries run on the same interpreter and
redis-py. Each library gets a fresh private redis-server. The results are written to
``benchmarks/RESULTS.rst`` (regenerated on every run) and summarised on stdout;
``benchmarks/README.rst`` explains every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    import workloads
    from peers import Body

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENV_DIR = BENCH_DIR / ".venv-peers"
REQUIREMENTS = BENCH_DIR / "requirements-peers.txt"
DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.rst"
ALL_PEERS = ("rq", "huey", "dramatiq", "celery")
#: Jobs per bulk call, for every library that has one.
BULK_BATCH = 1000
#: py-spy samples per second.
PROFILE_RATE = 250


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark jobs against RQ, Huey, Dramatiq and Celery.",
    )
    parser.add_argument("--no-peers", action="store_true", help="measure jobs only")
    parser.add_argument(
        "--peers", default=",".join(ALL_PEERS), help="comma-separated subset of the peers"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip the queue-depth test (1,000,000 pending jobs) and the cluster drains",
    )
    parser.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the 1-versus-3-shard drains on a Redis Cluster (default: unless --quick)",
    )
    parser.add_argument(
        "--cluster-jobs", type=int, default=None, help="jobs per queue on the cluster (--jobs)"
    )
    parser.add_argument(
        "--cluster-processes",
        type=int,
        default=1,
        help="worker processes per queue on the cluster (1); threads: --threads-2p",
    )
    parser.add_argument(
        "--cluster-rounds", type=int, default=3, help="times each cluster drain is run (3)"
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (20000)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times each drain is run, every library in turn; figures are medians (3)",
    )
    parser.add_argument(
        "--threads", default="8,16,32", help="thread counts of the 1-process drains (8,16,32)"
    )
    parser.add_argument(
        "--threads-2p", type=int, default=8, help="threads per process in 2-process drains (8)"
    )
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument(
        "--monitor-jobs", type=int, default=2000, help="jobs of the MONITOR-counted drain (2000)"
    )
    parser.add_argument("--depth", type=int, default=1_000_000, help="the deep queue's size")
    parser.add_argument(
        "--profile", action="store_true", help="also profile a jobs drain with py-spy"
    )
    parser.add_argument(
        "--jobs-ref",
        default=None,
        help="measure jobs as committed at this git ref (default: the working tree)",
    )
    parser.add_argument(
        "--jobs-metrics",
        action="store_true",
        help="run jobs' worker processes with Prometheus worker metrics on "
        "(jobs.metrics.WorkerMetrics as the pools' events; not the supervised drains)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the .rst report")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)
    args.peer_list = [] if args.no_peers else [p for p in args.peers.split(",") if p]
    unknown = set(args.peer_list) - set(ALL_PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    args.thread_list = [int(t) for t in args.threads.split(",") if t]
    if args.cluster is None:
        args.cluster = not args.quick
    if args.cluster_jobs is None:
        args.cluster_jobs = args.jobs
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


# -- the peers' environment ----------------------------------------------------------


def in_peers_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_DIR.resolve()


def ensure_peers_venv() -> Path:
    """Create or update ``.venv-peers``; returns its interpreter."""
    python = VENV_DIR / "bin" / "python"
    digest = hashlib.sha256(
        REQUIREMENTS.read_bytes() + (REPO_DIR / "setup.cfg").read_bytes()
    ).hexdigest()
    stamp = VENV_DIR / ".installed"
    if not python.exists():
        print(f"creating {VENV_DIR} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    ignore = VENV_DIR / ".gitignore"
    if not ignore.exists():  # as Python 3.13's venv does: git never sees the venv
        ignore.write_text("*\n")
    if not stamp.exists() or stamp.read_text().strip() != digest:
        print(f"installing {REQUIREMENTS.name} into {VENV_DIR} ...", file=sys.stderr, flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True
        )
        subprocess.run(
            [
                str(python), "-m", "pip", "install", "--quiet",
                "-r", str(REQUIREMENTS), "-e", str(REPO_DIR),
            ],
            check=True,
        )  # fmt: skip
        stamp.write_text(digest + "\n")
    return python


# -- measuring -----------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Contention:
    """How much CPU other processes on the machine use while we measure.

    The machine's busy CPU time minus that of the harness and all its descendants (the
    redis-servers and workers, live or already reaped), as a share of all cores, summed
    over the periods measured with `during`.
    """

    def __init__(self) -> None:
        self.wall = 0.0
        self.others = 0.0
        self.known = True

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            import psutil
        except ImportError:
            return None
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        me = psutil.Process()
        mine = me.cpu_times()
        ours = mine.user + mine.system + mine.children_user + mine.children_system
        for child in me.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            ours += times.user + times.system
        return time.monotonic(), busy, ours

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        start = self._sample()
        try:
            yield
        finally:
            end = self._sample()
            if start is None or end is None:
                self.known = False
            else:
                self.wall += end[0] - start[0]
                self.others += max(0.0, (end[1] - start[1]) - (end[2] - start[2]))

    def share(self) -> float | None:
        """Others' CPU as a fraction of all cores' time over the measured periods."""
        if not self.known or self.wall <= 0:
            return None
        return self.others / (self.wall * (os.cpu_count() or 1))


def drain_configs(args: argparse.Namespace) -> list[tuple[int, int]]:
    return [(1, t) for t in args.thread_list] + [(2, args.threads_2p)]


def key(processes: int, threads: int) -> str:
    return f"{processes}x{threads}"


class Ceiling:
    """The no-queue ceiling, on its own private redis-server."""

    def __init__(self, tmp: Path, n: int) -> None:
        from jobs._embedded import RedisServer

        self.n = n
        self.count_dir = tmp / "ceiling-counts"
        self.count_dir.mkdir()
        self.server = RedisServer()
        self.server.start()
        # One sample per round (see `medians`).
        self.rates: dict[str, dict[str, list[float]]] = {"incr": {}, "noop": {}}
        # redis-server's CPU per job (us) for the bare body: what the body alone costs
        # Redis, next to each library's figure for body and queue together.
        self.redis_cpu_us: dict[str, dict[str, list[float]]] = {"incr": {}, "noop": {}}

    def measure(self, body: Body, processes: int, threads: int) -> None:
        import workloads

        before = workloads.redis_cpu(self.server)
        rate = workloads.ceiling(
            self.server.url,
            self.count_dir,
            body=body,
            processes=processes,
            threads=threads,
            n=self.n,
        )
        after = workloads.redis_cpu(self.server)
        self.rates[body].setdefault(key(processes, threads), []).append(rate)
        if before is not None and after is not None:
            ran = self.n // processes * processes
            self.redis_cpu_us[body].setdefault(key(processes, threads), []).append(
                (after - before) / ran * 1e6
            )
        workloads.clear_counts(self.count_dir)
        progress(f"no queue {body} {key(processes, threads)}: {rate:,.0f} jobs/s")

    @staticmethod
    def medians(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
        """Each body and configuration's figure: the median of its rounds."""
        return {
            body: {config: statistics.median(values) for config, values in configs.items()}
            for body, configs in samples.items()
        }

    def close(self) -> None:
        self.server.close()


class Library:
    """One library under test: its private redis-server, adapter, probe and figures."""

    def __init__(self, name: str, args: argparse.Namespace, tmp: Path) -> None:
        import workloads
        from peers import load

        from jobs._embedded import RedisServer

        self.name = name
        self.args = args
        base = tmp / name
        self.count_dir, log_dir = base / "counts", base / "logs"
        self.count_dir.mkdir(parents=True)
        log_dir.mkdir()
        self.server = RedisServer()
        self.server.start()
        try:
            self.adapter = load(name, self.server.url, self.count_dir, log_dir)
        except BaseException:
            self.server.close()
            raise
        self.probe = workloads.Probe(self.server)
        self.log_dir = log_dir
        self.failures: list[str] = []
        self.contention = Contention()
        self.one_rates: list[float] = []
        self.bulk_rates: list[float] = []
        #: Each drain's rounds, in order (a failed one is its error), merged by `finish`.
        self.drains: dict[str, dict[str, list[dict[str, Any]]]] = {"incr": {}, "noop": {}}
        self.memory: dict[str, float] = {}
        #: jobs only: drains by the library's own ``python -m jobs worker --processes N``.
        self.supervised: dict[str, list[dict[str, Any]]] = {}
        self.result: dict[str, Any] = {
            "version": self.adapter.version(),
            "threaded": self.adapter.threaded,
            "has_bulk": self.adapter.enqueue_bulk is not None,
            "worker_commands": {
                key(p, t): self.adapter.describe(p, t if self.adapter.threaded else 1)
                for p, t in drain_configs(args)
            },
        }

    def _failed(self, what: str, exc: Exception) -> dict[str, Any]:
        """Record a failed measurement and start the library afresh for the next one."""
        from peers import load

        message = f"{self.name} {what}: {type(exc).__name__}: {exc}"
        progress("FAILED: " + message)
        self.failures.append(message)
        # Whatever the failure left queued must not run in the next measurement.
        self.probe.client.flushall()
        self.adapter.close()
        self.adapter = load(self.name, self.server.url, self.count_dir, self.log_dir)
        return {"error": message}

    def drain(self, body: Body, processes: int, threads: int) -> None:
        """Enqueue ``--jobs`` jobs, timing the enqueue, then time their drain."""
        try:
            self._drain(body, processes, threads)
        except Exception as exc:
            self.drains[body].setdefault(key(processes, threads), []).append(
                self._failed(f"drain {body} {key(processes, threads)}", exc)
            )

    def _drain(self, body: Body, processes: int, threads: int) -> None:
        import workloads

        adapter, probe, n = self.adapter, self.probe, self.args.jobs
        used = threads if adapter.threaded else 1
        rounds = self.drains[body].setdefault(key(processes, threads), [])
        for done in self.drains[body].values():
            # RQ: the thread count changes nothing, so it is measured once a round.
            if (
                len(done) > len(rounds)
                and "error" not in done[-1]
                and (done[-1]["processes"], done[-1]["threads"]) == (processes, used)
            ):
                rounds.append(done[-1])
                return
        with self.contention.during():
            probe.reset()
            workloads.clear_counts(self.count_dir)
            memory_before = probe.used_memory()
            first = not self.memory
            # Every library's one-call rate is the median of several drains' enqueues (a
            # single sample swung 15-45% between runs on a noisy VM): one with a bulk
            # call takes turns, one call per job before one drain, bulk before the next.
            bulk = adapter.enqueue_bulk is not None and len(self.one_rates) > len(self.bulk_rates)
            if bulk:
                rate = workloads.timed_enqueue(adapter, body, n, bulk=True, batch=BULK_BATCH)
                self.bulk_rates.append(rate)
            else:
                self.one_rates.append(workloads.timed_enqueue(adapter, body, n, bulk=False))
            if first:
                self.memory["queued"] = (probe.used_memory() - memory_before) / n
            measured = workloads.drain(
                adapter,
                probe,
                processes=processes,
                threads=used,
                body=body,
                n=n,
                timeout=max(180.0, n / 40),
            )
            if first:
                # The workers are stopped: their connections' buffers are gone too.
                self.memory["completed"] = (probe.used_memory() - memory_before) / n
        rounds.append(asdict(measured))
        progress(
            f"{self.name} {body} {key(processes, used)}: {measured.rate:,.0f} jobs/s"
            f" (start-up {measured.startup:.2f} s)"
        )

    def drain_supervised(self, body: Body, processes: int, threads: int) -> None:
        """jobs only: the same drain, run by ``python -m jobs worker --processes N``."""
        try:
            self._drain_supervised(body, processes, threads)
        except Exception as exc:
            self.supervised.setdefault(key(processes, threads), []).append(
                self._failed(
                    f"drain {body} {key(processes, threads)} with --processes {processes}", exc
                )
            )

    def _drain_supervised(self, body: Body, processes: int, threads: int) -> None:
        import workloads
        from jobs_worker import SupervisedJobsAdapter

        n = self.args.jobs
        adapter = SupervisedJobsAdapter(self.server.url, self.count_dir, self.log_dir)
        try:
            self.result["supervised_command"] = adapter.describe(processes, threads)
            with self.contention.during():
                self.probe.reset()
                workloads.clear_counts(self.count_dir)
                for start in range(0, n, BULK_BATCH):
                    adapter.client.enqueue_many(body, range(start, min(n, start + BULK_BATCH)))
                measured = workloads.drain(
                    adapter,
                    self.probe,
                    processes=processes,
                    threads=threads,
                    body=body,
                    n=n,
                    timeout=max(180.0, n / 40),
                )
        finally:
            adapter.close()
        workers = adapter.last
        assert workers is not None
        record = asdict(measured)
        record["exit_code"] = workers.exit_code
        record["leftover_children"] = workers.leftover_children
        self.supervised.setdefault(key(processes, threads), []).append(record)
        progress(
            f"jobs --processes {processes} {body} {key(processes, threads)}:"
            f" {measured.rate:,.0f} jobs/s (start-up {measured.startup:.2f} s;"
            f" supervisor exit code {workers.exit_code})"
        )
        if workers.exit_code != 0 or workers.leftover_children:
            message = (
                f"jobs --processes {processes}: the supervisor exited with {workers.exit_code}"
                f" after SIGTERM, {workers.leftover_children} worker process(es) left running;"
                f" log:\n" + workloads.tail(workers.logs[0], 20)
            )
            progress("FAILED: " + message)
            self.failures.append(message)

    def commands(self) -> None:
        import workloads

        try:
            with self.contention.during():
                commands = workloads.command_counts(
                    self.adapter,
                    self.probe,
                    threads=self.args.thread_list[0],
                    n=min(self.args.jobs, self.args.monitor_jobs),
                )
        except Exception as exc:
            self._failed("MONITOR-counted drain", exc)
            return
        self.result["commands"] = asdict(commands)
        progress(f"{self.name} commands/job: {commands.drain_top:.2f} top-level while draining")

    def pickup(self) -> workloads.Pickup:
        """This library's part of the interleaved pickup measurement."""
        import workloads

        return workloads.Pickup(self.name, self.adapter, self.probe)

    def pickup_done(self, pickup: workloads.Pickup) -> None:
        """Record the pickup latencies, then measure the idle pool (its workers stop)."""
        try:
            if pickup.error is not None:
                raise pickup.error
            latency = pickup.latency()
            time.sleep(min(2.0, self.args.idle_seconds))  # let acks and heartbeats settle
            with self.contention.during():
                idle = pickup.idle(self.args.idle_seconds)
        except Exception as exc:
            pickup.stop()
            self._failed("latency and idle", exc)
            return
        pickup.stop()  # before the next library's idle figures
        self.result["latency"] = asdict(latency)
        self.result["idle"] = asdict(idle)
        progress(
            f"{self.name} pickup p50 {latency.p50:.2f} ms p99 {latency.p99:.2f} ms;"
            f" idle {idle.commands_per_s:.1f} commands/s"
        )

    def finish(self) -> dict[str, Any]:
        import workloads

        self.result["enqueue_one"] = workloads.median(self.one_rates) if self.one_rates else None
        self.result["enqueue_one_samples"] = self.one_rates
        self.result["enqueue_bulk"] = workloads.median(self.bulk_rates) if self.bulk_rates else None
        self.result["drain"] = {
            body: {config: merge_rounds(rounds) for config, rounds in configs.items()}
            for body, configs in self.drains.items()
        }
        self.result["memory"] = self.memory
        if self.supervised:
            self.result["supervised"] = {
                config: merge_rounds(rounds) for config, rounds in self.supervised.items()
            }
        self.result["others_cpu"] = self.contention.share()
        return self.result

    def close(self) -> None:
        try:
            self.probe.close()
            self.adapter.close()
        finally:
            self.server.close()


#: A drain's figures that `merge_rounds` takes the median of.
_MEDIAN_FIELDS = (
    "rate",
    "startup",
    "rate_with_startup",
    "commands_per_job",
    "worker_cpu_us",
    "redis_cpu_us",
    "rss_mb",
)


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One drain's rounds as one record: each figure the median of its rounds.

    A single sample swings 15-45% between runs on a noisy VM; the median of rounds taken
    with every library in turn does not hang a verdict on one of them. ``rates`` keeps
    every round's rate. A failed round is left out (it is reported as a failure); if
    every round failed, the record is the last error. The supervisor's exit code and
    leftover children are the worst of its rounds.
    """
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1]
    merged = dict(good[0])
    for name in _MEDIAN_FIELDS:
        values = [r[name] for r in good if r.get(name) is not None]
        merged[name] = statistics.median(values) if values else None
    merged["rates"] = [r["rate"] for r in good]
    if "exit_code" in merged:
        merged["exit_code"] = next((r["exit_code"] for r in good if r["exit_code"]), 0)
        merged["leftover_children"] = max(r["leftover_children"] for r in good)
    return merged


def measure_depth(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """jobs only: drain rate and stats() latency with 1,000 and ``args.depth`` pending."""
    import workloads
    from jobs_worker import JobsAdapter

    from jobs._embedded import RedisServer

    window = 1000
    threads = args.thread_list[0]
    out: dict[str, Any] = {"window": window, "threads": threads}
    for depth in (1000, args.depth):
        base = tmp / f"depth-{depth}"
        (base / "counts").mkdir(parents=True)
        (base / "logs").mkdir()
        with RedisServer() as server:
            adapter = JobsAdapter(server.url, base / "counts", base / "logs")
            probe = workloads.Probe(server)
            try:
                memory_before = probe.used_memory()
                began = time.perf_counter()
                for start in range(0, depth, 10_000):
                    adapter.client.enqueue_many("incr", range(start, min(depth, start + 10_000)))
                enqueue_rate = depth / (time.perf_counter() - began)
                bytes_per_job = (probe.used_memory() - memory_before) / depth
                stats_p50, stats_p99 = workloads.latency_stats(adapter.stats)
                rates = []
                for repeat in range(3):
                    if repeat and depth == 1000:
                        adapter.client.enqueue_many("incr", range(depth))
                    probe.reset()
                    measured = workloads.drain(
                        adapter,
                        probe,
                        processes=1,
                        threads=threads,
                        body="incr",
                        n=window,
                        timeout=120,
                    )
                    rates.append(measured.rate)
            finally:
                probe.close()
                adapter.close()
        out[str(depth)] = {
            "enqueue_rate": enqueue_rate,
            "bytes_per_job": bytes_per_job,
            "stats_p50_ms": stats_p50,
            "stats_p99_ms": stats_p99,
            "drain_rate": workloads.median(rates),
            "drain_rates": rates,
        }
        progress(
            f"depth {depth:,}: enqueue {enqueue_rate:,.0f}/s, stats() p50 {stats_p50:.3f} ms,"
            f" drain {workloads.median(rates):,.0f} jobs/s"
        )
    return out


def measure_cluster(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """jobs only: drains on one shard of a 3-master Redis Cluster, then on all three."""
    import cluster

    return cluster.measure(
        tmp / "cluster",
        n=args.cluster_jobs,
        processes=args.cluster_processes,
        threads=args.threads_2p,
        rounds=args.cluster_rounds,
        progress=progress,
    )


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_jobs(args: argparse.Namespace, tmp: Path) -> dict[str, Any] | None:
    """Sample a jobs worker with py-spy during a 1-process INCR drain."""
    import workloads
    from jobs_worker import JobsAdapter

    from jobs._embedded import RedisServer

    py_spy = _py_spy()
    if py_spy is None:
        progress("py-spy not found: no profile")
        return None
    base = tmp / "profile"
    (base / "counts").mkdir(parents=True)
    (base / "logs").mkdir()
    raw, wall = base / "gil.txt", base / "wall.txt"
    threads = args.thread_list[0]
    with RedisServer() as server:
        adapter = JobsAdapter(server.url, base / "counts", base / "logs")
        probe = workloads.Probe(server)
        try:
            for start in range(0, args.jobs, BULK_BATCH):
                adapter.client.enqueue_many(
                    "incr", range(start, min(args.jobs, start + BULK_BATCH))
                )
            sampler: list[subprocess.Popen[bytes]] = []

            def attach(pid: int) -> None:
                # Two samplers at once, so neither may stop the process (--nonblocking):
                # Python time (whoever holds the GIL), and every thread's wall time.
                for extra, output in (("--gil",), raw), (("--idle", "--threads"), wall):
                    sampler.append(
                        subprocess.Popen(
                            [
                                py_spy, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE),
                                "--nonblocking", "--format", "raw", "--function",
                                "--output", str(output), *extra,
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )  # fmt: skip

            workers = adapter.start_workers(1, threads)
            try:
                began = time.time()
                # Sampling starts with the first completed job: imports are not the drain.
                while probe.counter() == 0:
                    if time.time() - began > 120:
                        raise TimeoutError("the profiled worker ran no job")
                    workers.check()
                    time.sleep(0.005)
                attach(workers.pids[0])
                began = time.time()
                while probe.counter() < args.jobs:
                    if time.time() - began > max(180.0, args.jobs / 40):
                        raise TimeoutError("profiled drain did not finish")
                    workers.check()
                    time.sleep(0.01)
                elapsed = time.time() - began
            finally:
                for proc in sampler:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(60)
                workers.stop()
        finally:
            probe.close()
            adapter.close()
    if not raw.exists():
        progress("py-spy wrote no profile")
        return None
    summary = summarise_profile(raw.read_text(), elapsed)
    if wall.exists():
        summary["threads"] = summarise_threads(wall.read_text())
    return summary


#: Leaf frames that mean a thread is waiting rather than running Python.
_WAITS = {
    "Condition.wait": "waiting on a Condition/Event",
    "SocketBuffer._read_from_socket": "waiting for a Redis reply (socket read)",
    "AbstractConnection.send_packed_command": "sending to Redis (socket write)",
    "BlockingConnectionPool.get_connection": "waiting for a pooled connection",
    "_worker": "executor thread idle",
    "Thread.join": "joining a thread",
}


def _thread_role(frames: list[str]) -> str:
    # The thread's outermost frame in jobs/ (past the generic loop runner) names it.
    for frame in frames:
        if "(jobs/" in frame and "_loops.py" not in frame and "Loop._run" not in frame:
            return frame.split(" (", 1)[0]
    for frame in frames:
        if "(jobs/" in frame or "jobs_worker.py" in frame or "jobs_app.py" in frame:
            return frame.split(" (", 1)[0]
    return frames[-1].split(" (", 1)[0] if frames else "?"


def summarise_threads(text: str) -> list[dict[str, Any]]:
    """Where each kind of thread spends its wall time (py-spy --idle --threads)."""
    roles: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        raw_frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        thread = raw_frames[0] if raw_frames and raw_frames[0].startswith("thread ") else "?"
        frames = [_frame_name(f) for f in raw_frames if not f.startswith("thread ")]
        if not frames:
            continue
        role = roles.setdefault(
            _thread_role(frames), {"threads": set(), "samples": 0, "states": {}}
        )
        role["threads"].add(thread)
        role["samples"] += int(count_text)
        leaf = frames[-1].split(" (", 1)[0]
        state = _WAITS.get(leaf, "running Python: " + frames[-1])
        role["states"][state] = role["states"].get(state, 0) + int(count_text)
    out = []
    everything = sum(role["samples"] for role in roles.values())
    for name, role in sorted(roles.items(), key=lambda kv: -kv[1]["samples"]):
        if role["samples"] < 0.02 * everything:
            continue  # torn stacks: --nonblocking reads a thread while it runs
        states = sorted(role["states"].items(), key=lambda kv: -kv[1])
        other = sum(c for s, c in states if s.startswith("running Python"))
        top = [(s, 100 * c / role["samples"]) for s, c in states if not s.startswith("running")]
        top.append(("running Python (all frames)", 100 * other / role["samples"]))
        out.append(
            {
                "role": "main thread" if name == "<module>" else name,
                "threads": len(role["threads"]),
                "states": sorted(top, key=lambda sp: -sp[1]),
            }
        )
    return out


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:12)" -> "function (jobs/_pool.py:12)"
    if " (" not in frame:
        return frame
    function, location = frame.rsplit(" (", 1)
    location = location.rstrip(")")
    path = location
    for marker in ("site-packages/", str(REPO_DIR) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if path.startswith("/"):
        parts = path.split("/")
        if "python3" in "".join(parts[:-1]):
            path = "<stdlib>/" + parts[-1]
    return f"{function} ({path})"


def summarise_profile(text: str, seconds: float) -> dict[str, Any]:
    total = 0
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    by_file: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        leaf_file = frames[-1].rsplit(" (", 1)[-1].split(":")[0]
        by_file[leaf_file] = by_file.get(leaf_file, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def top(counts: dict[str, int], limit: int) -> list[tuple[str, float]]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        return [(name, 100 * c / total) for name, c in ordered]

    return {
        "samples": total,
        "seconds": seconds,
        "gil_busy": total / (seconds * PROFILE_RATE),
        "self": top(own, 20),
        "inclusive": top(inclusive, 25),
        "by_file": top(by_file, 15),
    }


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def versions(peers: list[str], source: Path, ref: str | None) -> dict[str, str]:
    from jobs._embedded import RedisServer, find_redis_server

    out = {}
    binary = find_redis_server()
    if binary is not None:
        out["redis-server"] = ".".join(map(str, RedisServer(binary=binary).version))
        out["redis-server binary"] = binary
    for package in ("jobs", "redis", "hiredis", "psutil", *peers):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", ref or "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "jobs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = bool(dirty) and ref is None
        out["jobs commit"] = commit + (" (jobs/ has uncommitted changes)" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        out["jobs commit"] = "unknown"
    out["jobs code measured"] = (
        f"jobs/ at git {ref}" if ref else "a copy of the working tree's jobs/ taken at the start"
    ) + f" (files sha256 {tree_digest(source)})"
    return out


def run(args: argparse.Namespace, command: str, tmp: Path, source: Path) -> dict[str, Any]:
    began = time.time()
    contention = Contention()
    results: dict[str, Any] = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(args.peer_list, source, args.jobs_ref),
        "settings": {
            "jobs": args.jobs,
            "rounds": args.rounds,
            "threads": args.thread_list,
            "threads_2p": args.threads_2p,
            "latency_samples": args.latency_samples,
            "idle_seconds": args.idle_seconds,
            "monitor_jobs": min(args.jobs, args.monitor_jobs),
            "bulk_batch": BULK_BATCH,
            "depth": None if args.quick else args.depth,
            "cluster_jobs": args.cluster_jobs if args.cluster else None,
            "cluster_processes": args.cluster_processes,
            "jobs_metrics": args.jobs_metrics,
        },
        "libraries": {},
        "depth": None,
        "cluster": None,
        "profile": None,
        "failures": [],
    }
    # Every library's server stays up for the whole run, and each measurement is taken
    # for all libraries (and the no-queue ceiling) in turn: load from elsewhere on the
    # machine then falls on all of them alike, not on whoever ran at the time.
    with contextlib.ExitStack() as stack, contention.during():
        ceiling = Ceiling(tmp, args.jobs)
        stack.callback(ceiling.close)
        libraries = []
        for name in ["jobs", *args.peer_list]:
            library = Library(name, args, tmp)
            stack.callback(library.close)
            libraries.append(library)
        for round_number in range(args.rounds):
            if args.rounds > 1:
                progress(f"round {round_number + 1} of {args.rounds}")
            # Each round starts with another library, so that none always drains right
            # after the ceiling (or last, when the machine has warmed up).
            turn = round_number % len(libraries)
            in_turn = libraries[turn:] + libraries[:turn]
            for body in ("incr", "noop"):
                for processes, threads in drain_configs(args):
                    ceiling.measure(body, processes, threads)
                    for library in in_turn:
                        library.drain(body, processes, threads)
                        if library.name == "jobs" and body == "incr" and processes > 1:
                            # Right after the separate processes: both meet the same load.
                            library.drain_supervised(body, processes, threads)
        for library in libraries:
            library.commands()
        import workloads

        pickups = [library.pickup() for library in libraries]
        try:
            workloads.pickup_latencies(
                pickups, threads=args.thread_list[0], samples=args.latency_samples
            )
            for library, pickup in zip(libraries, pickups, strict=True):
                library.pickup_done(pickup)
        finally:
            for pickup in pickups:
                pickup.stop()
        results["ceiling"] = ceiling.medians(ceiling.rates)
        results["ceiling_rates"] = ceiling.rates
        results["ceiling_redis_cpu_us"] = ceiling.medians(ceiling.redis_cpu_us)
        results["libraries"] = {lib.name: lib.finish() for lib in libraries}
        for library in libraries:
            results["failures"] += library.failures
        for label, phase, wanted in (
            ("depth", measure_depth, not args.quick),
            ("cluster", measure_cluster, args.cluster),
            ("profile", profile_jobs, args.profile),
        ):
            if not wanted:
                continue
            try:
                results[label] = phase(args, tmp)
            except Exception as exc:
                progress(f"{label} FAILED: {exc}")
                results["failures"].append(f"jobs {label}: {exc}")
    results["seconds"] = time.time() - began
    results["others_cpu"] = contention.share()
    return results


def snapshot_jobs(tmp: Path, ref: str | None) -> Path:
    """Copy the jobs package (the working tree's, or git ``ref``'s); the run measures that.

    Others may edit the working tree while a run takes its quarter of an hour; worker
    processes started later would import the new code, mixing versions in one report.
    """
    source = tmp / "src"
    if ref is None:
        shutil.copytree(
            REPO_DIR / "jobs", source / "jobs", ignore=shutil.ignore_patterns("__pycache__")
        )
        return source
    archive = subprocess.run(
        ["git", "-C", str(REPO_DIR), "archive", "--format=tar", ref, "jobs"],
        capture_output=True,
        check=True,
    ).stdout
    source.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    return source


def tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(directory)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# -- reporting -----------------------------------------------------------------------

Value = float | None

DASH = "-"
FAILED = "failed"


def num(value: Value, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}{unit}"


def rst_table(headers: list[str], rows: list[list[str]]) -> str:
    """A reStructuredText simple table (also readable as plain text)."""
    cells = [headers, *rows]
    widths = [max(len(row[i]) or 1 for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join((c or DASH).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    rule = "  ".join("=" * w for w in widths)
    return "\n".join([rule, line(headers), rule, *(line(r) for r in rows), rule])


def _dig(data: Any, *path: str) -> Value:
    for part in path:
        if not isinstance(data, dict) or data.get(part) is None:
            return None
        data = data[part]
    return float(data) if isinstance(data, int | float) else None


def config_label(config: str) -> str:
    processes, threads = config.split("x")
    return f"{processes} process{'es' if processes != '1' else ''} x {threads} threads"


class Metric:
    """One row of the comparison: a value per library, and which way is better."""

    def __init__(
        self,
        label: str,
        values: dict[str, Value],
        *,
        higher_is_better: bool,
        digits: int = 0,
        ceiling: Value = None,
        notes: dict[str, str] | None = None,
    ) -> None:
        self.label = label
        self.values = values
        self.higher_is_better = higher_is_better
        self.digits = digits
        self.ceiling = ceiling
        self.notes = notes or {}

    def best_peer(self) -> tuple[str, float] | None:
        peers = [(n, v) for n, v in self.values.items() if n != "jobs" and v is not None]
        if not peers:
            return None
        choose = max if self.higher_is_better else min
        return choose(peers, key=lambda nv: nv[1])

    def advantage(self) -> Value:
        """How many times better jobs is than the best peer (> 1: jobs is better)."""
        mine, best = self.values.get("jobs"), self.best_peer()
        if mine is None or best is None:
            return None
        if self.higher_is_better:
            return mine / best[1] if best[1] else None
        return best[1] / mine if mine else None

    def cell(self, name: str) -> str:
        note = self.notes.get(name, "")
        if note == FAILED:
            return FAILED
        return num(self.values.get(name), self.digits) + note


def metrics(results: dict[str, Any]) -> list[Metric]:
    libs: dict[str, Any] = results["libraries"]
    settings = results["settings"]
    first = f"1x{settings['threads'][0]}"

    def each(*path: str) -> dict[str, Value]:
        return {name: _dig(data, *path) for name, data in libs.items()}

    def rq_note(body: str, config: str) -> dict[str, str]:
        notes = {}
        for name, data in libs.items():
            drain = data["drain"][body].get(config)
            if drain and "error" in drain:
                notes[name] = FAILED
            elif drain and drain["threads"] != int(config.split("x")[1]):
                notes[name] = "*"
        return notes

    rows = [
        Metric("enqueue, one call per job (jobs/s)", each("enqueue_one"), higher_is_better=True),
        Metric(
            f"enqueue, bulk {BULK_BATCH} per call (jobs/s)",
            each("enqueue_bulk"),
            higher_is_better=True,
        ),
    ]
    rows.extend(
        Metric(
            f"drain {title}, {config_label(config)} (jobs/s)",
            each("drain", body, config, "rate"),
            higher_is_better=True,
            ceiling=results["ceiling"][body][config],
            notes=rq_note(body, config),
        )
        for body, title in (("incr", "INCR body"), ("noop", "empty body"))
        for config in results["ceiling"][body]
    )
    rows += [
        Metric(
            f"worker start-up to first job, {first} (s)",
            each("drain", "incr", first, "startup"),
            higher_is_better=False,
            digits=2,
        ),
        Metric(
            "Redis commands per job, draining, top-level",
            each("commands", "drain_top"),
            higher_is_better=False,
            digits=2,
        ),
        Metric(
            "Redis commands per job, draining, inside scripts",
            each("commands", "drain_inner"),
            higher_is_better=False,
            digits=2,
        ),
        Metric(
            f"Redis commands per job, draining, all (INFO, {first})",
            each("drain", "incr", first, "commands_per_job"),
            higher_is_better=False,
            digits=2,
        ),
        Metric(
            "Redis commands per job, enqueue one call, top-level",
            each("commands", "enqueue_top"),
            higher_is_better=False,
            digits=2,
        ),
        Metric(
            f"worker CPU per job, {first} INCR drain (us)",
            each("drain", "incr", first, "worker_cpu_us"),
            higher_is_better=False,
        ),
        Metric(
            f"redis-server CPU per job, {first} INCR drain (us)",
            each("drain", "incr", first, "redis_cpu_us"),
            higher_is_better=False,
            ceiling=_dig(results, "ceiling_redis_cpu_us", "incr", first),
        ),
        Metric("pickup latency p50 (ms)", each("latency", "p50"), higher_is_better=False, digits=2),
        Metric("pickup latency p95 (ms)", each("latency", "p95"), higher_is_better=False, digits=2),
        Metric("pickup latency p99 (ms)", each("latency", "p99"), higher_is_better=False, digits=2),
        Metric("pickup latency max (ms)", each("latency", "max"), higher_is_better=False, digits=2),
        Metric(
            "idle Redis commands/s (one pool)",
            each("idle", "commands_per_s"),
            higher_is_better=False,
            digits=1,
        ),
        Metric(
            "idle CPU (% of one core)",
            each("idle", "cpu_percent"),
            higher_is_better=False,
            digits=2,
        ),
        Metric("worker RSS idle (MB)", each("idle", "rss_mb"), higher_is_better=False, digits=1),
        Metric(
            f"worker RSS after {settings['jobs']:,} jobs, {first} (MB)",
            each("drain", "incr", first, "rss_mb"),
            higher_is_better=False,
            digits=1,
        ),
        Metric(
            "Redis bytes per queued job",
            each("memory", "queued"),
            higher_is_better=False,
        ),
        Metric(
            "Redis bytes per completed job (records kept)",
            each("memory", "completed"),
            higher_is_better=False,
        ),
    ]
    others = {name: _dig(data, "others_cpu") for name, data in libs.items()}
    rows.append(
        Metric(
            "other processes' CPU while measuring (% of all cores)",
            {n: None if v is None else 100 * v for n, v in others.items()},
            higher_is_better=False,
            digits=1,
        )
    )
    return rows


def comparison_table(results: dict[str, Any], rows: list[Metric]) -> str:
    names = list(results["libraries"])
    headers = ["metric", *names, "no queue", "best peer", "jobs vs best peer", "jobs / no queue"]
    body = []
    for metric in rows:
        best = metric.best_peer()
        advantage = metric.advantage()
        mine = metric.values.get("jobs")
        body.append(
            [
                metric.label,
                *(metric.cell(n) for n in names),
                num(metric.ceiling),
                best[0] if best else DASH,
                num(advantage, 2, "x"),
                num(100 * mine / metric.ceiling, 0, "%") if mine and metric.ceiling else DASH,
            ]
        )
    return rst_table(headers, body)


def _best(values: dict[str, Value], *, peers: bool) -> Value:
    chosen = [v for n, v in values.items() if v is not None and (n != "jobs") == peers]
    return max(chosen) if chosen else None


def targets(results: dict[str, Any]) -> list[list[str]]:
    libs: dict[str, Any] = results["libraries"]
    ceiling = results["ceiling"]["incr"]
    jobs_data = libs["jobs"]
    one = [c for c in ceiling if c.startswith("1x")]
    two = [c for c in ceiling if c.startswith("2x")]
    has_peers = len(libs) > 1
    rows: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else "met" if ok else "NOT met"

    def drain_best(name: str, configs: list[str]) -> Value:
        rates = [_dig(libs[name], "drain", "incr", c, "rate") for c in configs]
        present = [r for r in rates if r is not None]
        return max(present) if present else None

    def by_round(lists: list[Any]) -> list[float] | None:
        """Each round's best of several lists of rounds (None unless each has them all)."""
        if not lists or not all(isinstance(rates, list) and rates for rates in lists):
            return None
        if len({len(rates) for rates in lists}) != 1:
            return None
        return [max(values) for values in zip(*lists, strict=True)]

    def drain_rounds(name: str, configs: list[str]) -> list[float] | None:
        drains = (libs[name].get("drain") or {}).get("incr", {})
        return by_round([(drains.get(c) or {}).get("rates") for c in configs])

    def round_range(
        mine: list[float] | None, other: list[float] | None, scale: float, digits: int, unit: str
    ) -> str:
        """'; by round a-b': ``scale * mine / other`` in each round, when both ran them all."""
        if not mine or not other or len(mine) != len(other) or len(mine) < 2:
            return ""
        values = [scale * m / o for m, o in zip(mine, other, strict=True) if o]
        if not values:
            return ""
        return f"; by round {num(min(values), digits, unit)}-{num(max(values), digits, unit)}"

    # The targets of issue 16 ("Speed, second round"), each measured in this run.
    first = f"1x{results['settings']['threads'][0]}"
    for label, configs, peer_factor, ceiling_share in (
        (f"1 process x {first[2:]} threads", [first] if first in one else [], 2.5, 0.70),
        ("2 processes", two, 1.6, None),
    ):
        mine = drain_best("jobs", configs)
        peer = _best({n: drain_best(n, configs) for n in libs}, peers=True)
        top = max((ceiling[c] for c in configs), default=None)
        ratio = mine / peer if mine and peer else None
        # The verdicts stand on medians; each round's own figure shows how firmly.
        mine_rounds = drain_rounds("jobs", configs)
        peer_rounds = by_round([drain_rounds(n, configs) for n in libs if n != "jobs"])
        rows.append(
            [
                f"drain {label} >= {peer_factor}x best peer",
                num(ratio, 2, "x")
                + f" ({num(mine)} vs {num(peer)} jobs/s"
                + f"{round_range(mine_rounds, peer_rounds, 1, 2, 'x')})",
                verdict(None if ratio is None else ratio >= peer_factor),
            ]
        )
        if ceiling_share is None:
            continue
        share = mine / top if mine and top else None
        ceiling_rates = results.get("ceiling_rates", {}).get("incr", {})
        ceilings = by_round([ceiling_rates.get(c) for c in configs])
        rows.append(
            [
                f"drain {label} >= {ceiling_share:.0%} of the no-queue ceiling",
                num(None if share is None else 100 * share, 0, "%")
                + f" ({num(mine)} vs {num(top)} jobs/s"
                + f"{round_range(mine_rounds, ceilings, 100, 0, '%')})",
                verdict(None if share is None else share >= ceiling_share),
            ]
        )
    empty = max(
        (r for c in one if (r := _dig(jobs_data, "drain", "noop", c, "rate")) is not None),
        default=None,
    )
    rows.append(
        [
            "drain, empty body, 1 process >= 20,000 jobs/s",
            f"{num(empty)} jobs/s",
            verdict(None if empty is None else empty >= 20_000),
        ]
    )
    everything = _dig(jobs_data, "drain", "incr", first, "commands_per_job")
    rows.append(
        [
            f"Redis commands per job, all (incl. inside scripts, {first} drain) <= 8",
            f"{num(everything, 2)}",
            verdict(None if everything is None else everything <= 8),
        ]
    )
    redis_cpu = _dig(jobs_data, "drain", "incr", first, "redis_cpu_us")
    body_cpu = _dig(results, "ceiling_redis_cpu_us", "incr", first)
    rows.append(
        [
            f"redis-server CPU per job ({first} drain) <= 40 us",
            f"{num(redis_cpu)} us (the INCR body alone, no queue: {num(body_cpu)} us)",
            verdict(None if redis_cpu is None else redis_cpu <= 40),
        ]
    )
    mine = _dig(jobs_data, "enqueue_one")
    peer = _best({n: _dig(d, "enqueue_one") for n, d in libs.items()}, peers=True)
    ratio = mine / peer if mine and peer else None
    rows.append(
        [
            "enqueue one per call >= 1.1x best peer",
            num(ratio, 2, "x") + f" ({num(mine)} vs {num(peer)} jobs/s)",
            verdict(None if ratio is None or not has_peers else ratio >= 1.1),
        ]
    )
    bulk = _dig(jobs_data, "enqueue_bulk")
    rows.append(
        [
            "enqueue_many (1,000 per call) >= 150,000 jobs/s",
            f"{num(bulk)} jobs/s",
            verdict(None if bulk is None else bulk >= 150_000),
        ]
    )
    p50, p99 = _dig(jobs_data, "latency", "p50"), _dig(jobs_data, "latency", "p99")
    huey = _dig(libs.get("huey", {}), "latency", "p50")
    rows.append(
        [
            "pickup p50 <= Huey's p50",
            f"{num(p50, 2)} ms (Huey {num(huey, 2)} ms)",
            verdict(None if p50 is None or huey is None else p50 <= huey),
        ]
    )
    rows.append(
        ["pickup p99 <= 2 ms", f"{num(p99, 2)} ms", verdict(None if p99 is None else p99 <= 2)]
    )
    idle = _dig(jobs_data, "idle", "commands_per_s")
    rows.append(
        [
            "idle <= 2 Redis commands/s per pool",
            f"{num(idle, 2)} commands/s",
            verdict(None if idle is None else idle <= 2),
        ]
    )
    cpu = _dig(jobs_data, "idle", "cpu_percent")
    rows.append(
        [
            "idle CPU not measurable (< 0.5% of a core)",
            f"{num(cpu, 2)}%",
            verdict(None if cpu is None else cpu < 0.5),
        ]
    )
    depth = results.get("depth")
    if depth:
        deep, shallow = depth[str(results["settings"]["depth"])], depth["1000"]
        share = deep["drain_rate"] / shallow["drain_rate"]
        rows.append(
            [
                f"{results['settings']['depth']:,} pending: drain >= 80% of the 1,000-pending rate",
                f"{100 * share:.0f}% ({num(deep['drain_rate'])} vs"
                f" {num(shallow['drain_rate'])} jobs/s)",
                verdict(share >= 0.8),
            ]
        )
        rows.append(
            [
                f"{results['settings']['depth']:,} pending: stats() < 1 ms (p50)",
                f"p50 {deep['stats_p50_ms']:.3f} ms, p99 {deep['stats_p99_ms']:.3f} ms",
                verdict(deep["stats_p50_ms"] < 1),
            ]
        )
    else:
        rows.append(["1,000,000 pending: drain >= 80% of 1,000-pending", DASH, verdict(None)])
        rows.append(["1,000,000 pending: stats() < 1 ms", DASH, verdict(None)])
    rss = _dig(jobs_data, "drain", "incr", first, "rss_mb")
    rows.append(
        [
            "worker RSS <= 40 MB (after the 1-process drain)",
            f"{num(rss, 1)} MB",
            verdict(None if rss is None else rss <= 40),
        ]
    )
    return rows


def commands_section(results: dict[str, Any]) -> str:
    parts = []
    for name, data in results["libraries"].items():
        commands = data.get("commands")
        if not commands:
            continue

        def show(counts: dict[str, float]) -> str:
            return ", ".join(f"{k} {v:.2f}" for k, v in list(counts.items())[:8]) or DASH

        parts.append(
            f"{name}\n    draining, top-level: {show(commands['drain_top_by_command'])}\n"
            f"    draining, inside scripts: {show(commands['drain_inner_by_command'])}\n"
            f"    enqueue one call, top-level: {show(commands['enqueue_top_by_command'])}"
        )
    return "\n\n".join(parts)


def profile_section(profile: dict[str, Any] | None) -> str:
    if not profile:
        return "Not run (pass ``--profile``; needs py-spy, installed in ``.venv-peers``)."
    lines = [
        f"py-spy ``--gil``: {profile['samples']:,} samples of whichever thread of one jobs"
        f" worker held the GIL, over {profile['seconds']:.1f} s of a 1-process INCR drain"
        f" (sampling from the first completed job). The GIL was held in about"
        f" {100 * profile['gil_busy']:.0f}% of the sampling instants: percentages below are"
        " shares of that Python time.",
        "",
    ]
    for title, entries in (
        ("Own time (the sampled frame itself)", profile["self"]),
        ("Inclusive time (the function or anything it calls)", profile["inclusive"]),
        ("Own time by file", profile["by_file"]),
    ):
        lines.append(title)
        lines.append("")
        lines.append(rst_table(["% of samples", "where"], [[f"{p:.1f}", n] for n, p in entries]))
        lines.append("")
    threads = profile.get("threads")
    if threads:
        lines.append(
            "Wall time of each kind of thread (py-spy ``--idle --threads``; a thread's kind"
            " is its outermost frame in jobs/)"
        )
        lines.append("")
        rows = [
            [role["role"], str(role["threads"]), f"{share:.0f}", state]
            for role in threads
            for state, share in role["states"]
            if share >= 1
        ]
        lines.append(rst_table(["thread", "count", "% of its time", "state"], rows))
        lines.append("")
    return "\n".join(lines)


def processes_table(results: dict[str, Any]) -> str | None:
    """jobs INCR drains: 1 process, 2 separate processes, and ``--processes 2``."""
    jobs_data = results["libraries"]["jobs"]
    drains = jobs_data["drain"]["incr"]
    threads = results["settings"]["threads_2p"]
    one_config = (
        f"1x{threads}" if f"1x{threads}" in drains else f"1x{results['settings']['threads'][0]}"
    )
    one = _dig(drains, one_config, "rate")
    rows = []
    for label, data, command in (
        (
            f"1 process x {one_config.split('x')[1]} threads (jobs_worker.py)",
            drains.get(one_config),
            None,
        ),
        *(
            (f"{config_label(c)}, separate (jobs_worker.py)", drains.get(c), None)
            for c in drains
            if not c.startswith("1x")
        ),
        *(
            (
                f"{config_label(c)}, one ``--processes {c.split('x')[0]}`` supervisor",
                data,
                data,
            )
            for c, data in (jobs_data.get("supervised") or {}).items()
        ),
    ):
        if data is None:
            continue
        rate = _dig(data, "rate")
        if command is None:
            stopped = DASH
        elif "error" in data:
            stopped = FAILED
        else:
            leftover = data.get("leftover_children") or 0
            stopped = f"exit {data.get('exit_code')}" + (
                f", {leftover} left running" if leftover else ""
            )
        rows.append(
            [
                label,
                FAILED if "error" in data else num(rate),
                num(rate / one, 2, "x") if rate and one else DASH,
                num(_dig(data, "startup"), 2),
                str(data.get("os_processes") or DASH),
                num(_dig(data, "worker_cpu_us")),
                stopped,
            ]
        )
    if len(rows) < 2:
        return None
    return rst_table(
        [
            "workers",
            "jobs/s",
            "vs 1 process",
            "start-up (s)",
            "OS processes",
            "worker CPU/job (us)",
            "after SIGTERM",
        ],
        rows,
    )


def cluster_table(cluster: dict[str, Any]) -> str:
    """The three cluster drains, with each master's CPU."""
    # Masters in the order of the queues they serve: the one-queue drain's master first.
    order = [str(port) for port in cluster["queues"].values()]
    one = cluster["one"]["rate"]
    w = cluster["processes_per_queue"]
    rows = []
    for label, name in (
        (f"(a) 1 queue, {w} process{'es' if w > 1 else ''}: one shard busy", "one"),
        (f"(b) 3 queues on 3 masters, {w} process{'es' if w > 1 else ''} each", "three"),
        (f"(c) control: 1 queue, {3 * w} processes", "one_wide"),
    ):
        data = cluster[name]
        shards = data["shard_cpu_percent"]
        rows.append(
            [
                label,
                str(data["processes"]),
                f"{data['jobs']:,}",
                num(data["rate"]),
                ", ".join(num(r) for r in data.get("rates", ())),
                num(data["rate"] / one, 2, "x"),
                " / ".join(num(shards.get(port)) for port in order),
                num(data.get("worker_cpu_percent")),
                num(data.get("machine_busy_percent")),
            ]
        )
    return rst_table(
        [
            "drain",
            "worker processes",
            "jobs run",
            "jobs/s",
            "rounds",
            "vs (a)",
            "CPU % of a core: each master (q1 / q2 / q3)",
            "workers' CPU % of a core",
            "machine busy (% of all cores)",
        ],
        rows,
    )


def cluster_note(results: dict[str, Any]) -> str:
    cluster = results["cluster"]
    three, one, wide = cluster["three"], cluster["one"], cluster["one_wide"]
    cores = os.cpu_count() or 1
    busiest = max(max(d["shard_cpu_percent"].values()) for d in (one, three, wide))
    queues = ", ".join(f"``{q}``" for q in cluster["queues"])
    text = (
        f"A Redis Cluster of 3 masters and no replicas (private redis-servers, formed in"
        f" {cluster['setup_seconds']:.1f} s); queues {queues}, whose hash tags land on"
        f" three different masters; {cluster['jobs_per_queue']:,} INCR jobs per queue,"
        f" pre-enqueued; each worker process is ``jobs_worker.py --queue NAME --threads"
        f" {cluster['threads']}`` on ``redis+cluster://``, and the INCR body counts in"
        " ``{jobs:NAME}:counter``, in its queue's slot, so every shard's work stays on it."
        " Rates run from the first completed job to the last, and CPU over the same span"
        " (``INFO cpu`` of each master, psutil for the workers and the machine); the three"
        f" drains took turns {cluster['rounds']} times: jobs/s is the median of the rounds,"
        " CPU their mean."
        f" **(b)/(a) = {three['rate'] / one['rate']:.2f}x** (three shards versus one);"
        f" (b)/(c) = {three['rate'] / wide['rate']:.2f}x (the same {wide['processes']}"
        " processes, on three shards versus one)."
    )
    busy = three.get("machine_busy_percent")
    text += (
        f" This machine has {cores} cores for the harness, every worker and every master;"
        f" no master used more than {busiest:.0f}% of one core in any of the drains"
    )
    if busy is not None and busy >= 85:
        text += (
            f", while during (b) all cores were {busy:.0f}% busy: the ratios are bounded by"
            " the machine's CPU (the Python workers), not by a shard, and say little about"
            " three shards on machines of their own."
        )
    else:
        text += f", and during (b) the cores were {DASH if busy is None else f'{busy:.0f}%'} busy."
    return text


def contention_note(results: dict[str, Any]) -> str:
    share = results.get("others_cpu")
    if share is None:
        return "Other processes' CPU during the run: unknown (no psutil)."
    text = (
        f"Other processes used {100 * share:.0f}% of the machine's CPU during the run"
        " (busy time of all cores minus the harness, its redis-servers and workers)."
    )
    if share > 0.05:
        text += (
            " **The machine was not quiet: the figures are depressed and noisy, unevenly"
            " across libraries (see the last row of the table); rerun on a quiet machine"
            " before drawing conclusions.**"
        )
    return text


def rounds_text(settings: dict[str, Any]) -> str:
    """How many times each drain ran, for the report's settings line."""
    rounds = settings.get("rounds", 1)
    if rounds == 1:
        return "each drain run once;"
    return (
        f"each drain figure (and the no-queue ceiling's) is the median of {rounds} rounds,"
        " every library in turn in each round, the first one changing from round to round;"
    )


def heading(text: str, char: str = "-") -> str:
    return f"{text}\n{char * len(text)}\n"


def render(results: dict[str, Any]) -> str:
    settings = results["settings"]
    rows = metrics(results)
    out = [
        heading("Benchmark results", "="),
        ".. Generated by benchmarks/run.py; every run rewrites this file. Do not edit.",
        "",
        f"Command: ``{results['command']}``, run {results['date']},"
        f" took {results['seconds'] / 60:.1f} minutes.",
        "",
        "How each figure is measured: ``benchmarks/README.rst``.",
        "",
        heading("Machine and versions"),
        rst_table(
            ["what", "value"],
            [[k, v] for k, v in results["machine"].items()]
            + [[k, v] for k, v in results["versions"].items()],
        ),
        "",
        contention_note(results),
        "",
        f"Drains: {settings['jobs']:,} pre-enqueued jobs; {rounds_text(settings)}"
        f" latency: {settings['latency_samples']}"
        f" jobs one at a time; idle: {settings['idle_seconds']:g} s; MONITOR-counted drain:"
        f" {settings['monitor_jobs']:,} jobs; bulk calls carry {settings['bulk_batch']:,} jobs.",
        "",
        heading("Targets for jobs"),
        rst_table(["target", "measured", "verdict"], targets(results)),
        "",
        heading("All figures side by side"),
        "``jobs vs best peer`` is how many times better jobs is than the best peer on that"
        " row (above 1: jobs is better; for latencies, commands, CPU and memory it is"
        " best peer / jobs). ``no queue`` is the same body on a bare ThreadPoolExecutor"
        " (on the redis-server CPU row: what the bare INCR body alone costs Redis).",
        "``*``: RQ runs one job at a time per process whatever the thread count.",
        "",
        comparison_table(results, rows),
        "",
        heading("Redis commands per job, by command (MONITOR)"),
        "::",
        "",
        "\n".join("    " + line for line in commands_section(results).splitlines()),
        "",
    ]
    failures = results.get("failures") or []
    if failures:
        out += [heading("Failures"), "These measurements failed; their figures are missing::", ""]
        for failure in failures:
            out += ["    " + line for line in failure.splitlines()] + [""]
    depth = results.get("depth")
    out.append(heading("Queue depth (jobs only)"))
    if depth:
        table = []
        for size in ("1000", str(settings["depth"])):
            d = depth[size]
            table.append(
                [
                    f"{int(size):,}",
                    num(d["enqueue_rate"]),
                    num(d["bytes_per_job"]),
                    f"{d['stats_p50_ms']:.3f}",
                    f"{d['stats_p99_ms']:.3f}",
                    num(d["drain_rate"]),
                    ", ".join(num(r) for r in d["drain_rates"]),
                ]
            )
        out += [
            f"Drain rate over the first {depth['window']:,} jobs with 1 process x"
            f" {depth['threads']} threads (median of 3); stats() timed 200 times.",
            "",
            rst_table(
                [
                    "pending",
                    "enqueue_many jobs/s",
                    "bytes/job",
                    "stats() p50 ms",
                    "stats() p99 ms",
                    "drain jobs/s",
                    "runs",
                ],
                table,
            ),
            "",
        ]
    else:
        out += ["Skipped (``--quick``).", ""]
    out += scaleout_section(results)
    out += [heading("Profile of a jobs worker"), profile_section(results.get("profile")), ""]
    out += [heading("How each library's workers ran")]
    commands = []
    for name, data in results["libraries"].items():
        for config, argv in data["worker_commands"].items():
            commands.append([name, config_label(config), f"``{argv}``"])
        for config in data.get("supervised") or {}:
            label = f"{config_label(config)} (--processes)"
            commands.append([name, label, f"``{data['supervised_command']}``"])
    out += [rst_table(["library", "drain", "command"], commands), ""]
    return "\n".join(out)


SCALEOUT = "Scale-out (jobs only): worker processes and cluster shards"


def scaleout_section(results: dict[str, Any]) -> list[str]:
    """The figures of issue 6: 1 versus 2 worker processes, 1 versus 3 cluster shards."""
    out = [heading(SCALEOUT)]
    table = processes_table(results)
    out += [
        f"INCR body, {results['settings']['jobs']:,} jobs, {results['settings']['threads_2p']}"
        " threads per process: the 2-process drains as separate ``jobs_worker.py``"
        " processes started by the harness, and as the library's own supervisor"
        " (``python -m jobs worker jobs_app:registry --processes 2``, the same registry and"
        " body), measured right after them and stopped with SIGTERM (its exit code).",
        "",
        table or "Not measured.",
        "",
    ]
    if results.get("cluster"):
        out += [cluster_note(results), "", cluster_table(results["cluster"]), ""]
    elif results["settings"].get("cluster_jobs") is None:
        out += ["Cluster drains skipped (``--quick`` or ``--no-cluster``).", ""]
    else:
        out += ["Cluster drains failed: see *Failures*.", ""]
    return out


def summary(results: dict[str, Any]) -> str:
    rows = metrics(results)
    scaleout = [processes_table(results) or "1 vs 2 processes: not measured", ""]
    cluster = results.get("cluster")
    if cluster:
        ratio = cluster["three"]["rate"] / cluster["one"]["rate"]
        scaleout += [
            cluster_table(cluster),
            f"cluster: 3 shards / 1 shard = {ratio:.2f}x (CPU-bound on"
            f" {os.cpu_count()} cores; see RESULTS.rst)",
            "",
        ]
    return "\n".join(
        [
            comparison_table(results, rows),
            "",
            rst_table(["target", "measured", "verdict"], targets(results)),
            "",
            *scaleout,
            contention_note(results).replace("**", ""),
            *(f"FAILED: {f.splitlines()[0]}" for f in results.get("failures") or []),
            f"run took {results['seconds'] / 60:.1f} minutes",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.peer_list and not in_peers_venv():
        python = ensure_peers_venv()
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])
    # Started in the background, SIGINT may be ignored; SIGTERM would skip the clean-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    command = "python benchmarks/run.py" + "".join(" " + shlex.quote(a) for a in argv)
    if args.jobs_metrics:
        # The worker processes (jobs_worker.py) inherit it.
        os.environ["BENCH_JOBS_METRICS"] = "1"
    with tempfile.TemporaryDirectory(prefix="jobs-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = snapshot_jobs(tmp, args.jobs_ref)
        sys.path.insert(0, str(source))  # before anything imports jobs
        import peers

        peers.use_source(source)
        results = run(args, command, tmp, source)
    text = render(results)
    args.output.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(summary(results))
    print(f"\nfull results: {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
