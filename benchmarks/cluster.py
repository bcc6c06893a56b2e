"""Scale-out over Redis Cluster shards: one queue on one master versus three on three.

`Cluster` is three masters and no replicas (a replica would add replication work to
every write), private ``redis-server`` processes joined with ``redis-cli --cluster
create``: a small equivalent of the test suite's ``ClusterTopology``, which depends on
pytest. `measure` drains ``jobs`` queues on it:

- *one queue*: one queue, so one shard does all the queue's work, drained by W worker
  processes (``jobs_worker.py --queue NAME`` on ``redis+cluster://``);
- *three queues*: three queues whose hash tags land on three different masters, each
  drained by its own W worker processes (3W in all);
- *one queue, 3W processes*: the control, as many processes as the three-queue drain on
  one shard, telling more processes apart from more shards.

The INCR body counts in ``{jobs:NAME}:counter``, a key in the slot of the queue it
serves, so each shard's body is local to it and the harness reads each queue's counter
on its own master. Each shard's CPU (``INFO cpu``) is read at the first completed job and
at the last.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import workloads
from peers import Workers, spawn, tail, worker_env

import jobs
from jobs._embedded import RedisServer, find_redis_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from subprocess import Popen

    import redis

HOST = "127.0.0.1"
#: Queue names are tried in this order until each master has one.
NAME_PREFIX = "bench-"
#: Jobs per enqueue_many call.
BATCH = 1000
_PORT_ATTEMPTS = 5


def find_redis_cli(server_binary: str) -> str | None:
    """``redis-cli`` next to the server binary, else on PATH."""
    beside = Path(server_binary).resolve().parent / "redis-cli"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("redis-cli")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    # The cluster bus listens on port + 10000: both must be free. Below the usual
    # ephemeral range (32768+), so outgoing connections rarely take one meanwhile.
    while True:
        port = random.randrange(20000, 30000)
        if _port_free(port) and _port_free(port + 10000):
            return port


def _command(client: redis.Redis, *args: str) -> Any:
    # redis-py leaves execute_command untyped.
    return cast("Any", client).execute_command(*args)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Cluster:
    """``masters`` private redis-servers forming a Redis Cluster without replicas."""

    def __init__(self, base: Path, masters: int = 3) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server found")
        cli = find_redis_cli(binary)
        if cli is None:
            raise RuntimeError("no redis-cli found (needed to create the cluster)")
        self.binary, self.cli, self.base, self.masters = binary, cli, base, masters
        self.nodes: list[RedisServer] = []
        self._clients: dict[int, redis.Redis] = {}

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, assign the slots and wait until every node says ``ok``."""
        for _ in range(self.masters):
            self._start_node()
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        create = [self.cli, "--cluster", "create", *addresses]
        result = subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster was not ready after {timeout} s")
            time.sleep(0.05)

    def _start_node(self) -> None:
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip
        for _ in range(_PORT_ATTEMPTS):
            directory = self.base / f"node-{len(self.nodes)}"
            node = RedisServer(
                binary=self.binary, port=_cluster_port(), directory=directory, extra_args=args
            )
            try:
                node.start()
            except RuntimeError:
                node.close()
                continue
            self.nodes.append(node)
            return
        raise RuntimeError(f"no free port pair for a cluster node in {_PORT_ATTEMPTS} tries")

    def _ready(self) -> bool:
        # Every node must know the whole map, or a client may be sent to one that does not.
        for node in self.nodes:
            info = _text(_command(self.client(node), "CLUSTER", "INFO"))
            fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
            if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384":
                return False
            if int(fields.get("cluster_known_nodes", 0)) != self.masters:
                return False
        return True

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node."""
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def client(self, node: RedisServer) -> redis.Redis:
        """The harness's own plain connection to one node (kept until `close`)."""
        client = self._clients.get(node.port)
        if client is None:
            client = self._clients[node.port] = node.client(socket_timeout=10)
        return client

    def owner(self, key: str) -> RedisServer:
        """The master serving ``key``'s slot."""
        first = self.client(self.nodes[0])
        slot = int(_command(first, "CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in _command(first, "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(master[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no master serves slot {slot}")

    def queues_on_distinct_masters(self, count: int) -> list[str]:
        """``count`` queue names whose hash tags land on ``count`` different masters."""
        chosen: dict[int, str] = {}
        for i in range(10_000):
            name = f"{NAME_PREFIX}{i}"
            chosen.setdefault(self.owner(tag(name)).port, name)
            if len(chosen) == count:
                return list(chosen.values())
        raise RuntimeError(f"no {count} queue names on {count} different masters")

    def cpu_seconds(self, node: RedisServer) -> float:
        """The node's CPU time so far (``INFO cpu``: user + system)."""
        info = self.client(node).info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def flush(self) -> None:
        for node in self.nodes:
            self.client(node).flushall()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for node in reversed(self.nodes):
            node.close()


def _machine_busy() -> float | None:
    """CPU seconds all cores have spent busy since boot (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def tag(queue: str) -> str:
    """The hash tag of a ``jobs`` queue's keys (default prefix)."""
    return f"{{jobs:{queue}}}"


def counter_key(queue: str) -> str:
    """The INCR body's counter for ``queue``: in the queue's own slot."""
    return tag(queue) + ":counter"


@contextlib.contextmanager
def _workers(
    cluster: Cluster, queues: list[str], per_queue: int, threads: int, tmp: Path
) -> Iterator[Workers]:
    script = str(Path(workloads.__file__).resolve().parent / "jobs_worker.py")
    procs: list[Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for queue in queues:
            env = worker_env(cluster.url, tmp / "counts")
            env[workloads.COUNTER_KEY_ENV] = counter_key(queue)
            argv = [sys.executable, script, "--threads", str(threads), "--queue", queue]
            for _ in range(per_queue):
                log = tmp / "logs" / f"worker-{len(logs) + 1}-{queue}.log"
                logs.append(log)
                procs.append(spawn(argv, env, log))
        yield Workers(procs, logs, int(signal.SIGTERM))
    finally:
        Workers(procs, logs, int(signal.SIGTERM)).stop()


def drain(
    cluster: Cluster, queues: list[str], *, per_queue: int, threads: int, n: int, tmp: Path
) -> dict[str, Any]:
    """Enqueue ``n`` INCR jobs on each queue, then time their drain by ``per_queue`` each."""
    cluster.flush()
    for queue in queues:
        producer = jobs.RedisQueue.from_url(cluster.url, name=queue)
        try:
            client = jobs.Client(jobs.ClientConfig(queue=producer))
            for start in range(0, n, BATCH):
                client.enqueue_many("incr", range(start, min(n, start + BATCH)))
        finally:
            producer.close()
    owners = [cluster.owner(tag(q)) for q in queues]
    counters = [
        (cluster.client(node), counter_key(q)) for node, q in zip(owners, queues, strict=True)
    ]
    total = n * len(queues)

    def counts() -> list[int]:
        return [int(client.get(key) or 0) for client, key in counters]

    started = time.time()
    first_at: list[float | None] = [None] * len(queues)
    first_count = [0] * len(queues)
    done_at: list[float | None] = [None] * len(queues)
    first: tuple[float, int, list[float], float | None, float | None] | None = None
    with _workers(cluster, queues, per_queue, threads, tmp) as workers:
        polls = 0
        last = (started, 0)
        while True:
            now_counts = counts()
            now = time.time()
            count = sum(now_counts)
            for i, c in enumerate(now_counts):
                if first_at[i] is None and c > 0:
                    first_at[i], first_count[i] = now, c
                if done_at[i] is None and c >= n:
                    done_at[i] = now
            if first is None and count > 0:
                first = (
                    now,
                    count,
                    [cluster.cpu_seconds(node) for node in cluster.nodes],
                    workloads.cpu_seconds(workloads.process_tree(workers.pids)),
                    _machine_busy(),
                )
            if count >= total:
                break
            if count != last[1]:
                last = (now, count)
            if now - last[0] > workloads.STALL_SECONDS or now - started > max(180.0, total / 40):
                raise TimeoutError(
                    f"cluster drain: only {count} of {total} jobs ran in {now - started:.0f} s;"
                    " worker logs:\n" + "\n".join(tail(log, 12) for log in workers.logs)
                )
            polls += 1
            if polls % 50 == 0:
                workers.check()
            time.sleep(workloads.POLL_INTERVAL)
        done = now
        shard_cpu = [cluster.cpu_seconds(node) for node in cluster.nodes]
        worker_cpu = workloads.cpu_seconds(workloads.process_tree(workers.pids))
        machine_busy = _machine_busy()
    assert first is not None
    t_first, c_first, cpu_first, worker_cpu_first, machine_busy_first = first
    span = max(done - t_first, 1e-9)
    per_queue_rates = []
    for i in range(len(queues)):
        began, ended = first_at[i], done_at[i]
        assert began is not None and ended is not None
        per_queue_rates.append((n - first_count[i]) / max(ended - began, 1e-9))
    return {
        "queues": queues,
        "shards": [node.port for node in owners],
        "processes": per_queue * len(queues),
        "threads": threads,
        "jobs": total,
        "rate": (total - c_first) / span if total > c_first else total / (done - started),
        "startup": t_first - started,
        "per_queue_rates": per_queue_rates,
        # Each master's CPU from the first completed job to the last, % of one core.
        "shard_cpu_percent": {
            str(node.port): 100 * (after - before) / span
            for node, before, after in zip(cluster.nodes, cpu_first, shard_cpu, strict=True)
        },
        "worker_cpu_percent": (
            None
            if worker_cpu is None or worker_cpu_first is None
            else 100 * (worker_cpu - worker_cpu_first) / span
        ),
        # Every process's, the harness's and the kernel's: % of all cores.
        "machine_busy_percent": (
            None
            if machine_busy is None or machine_busy_first is None
            else 100 * (machine_busy - machine_busy_first) / span / (os.cpu_count() or 1)
        ),
    }


DRAINS = ("one", "three", "one_wide")


def measure(
    base: Path,
    *,
    n: int,
    processes: int,
    threads: int,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build the cluster and run the three drains ``rounds`` times; the report's figures.

    The drains take turns, round after round, so that a burst of load from elsewhere
    falls on all three alike; each drain's rate is the median of its rounds, its CPU
    figures the mean.
    """
    (base / "counts").mkdir(parents=True)
    (base / "logs").mkdir()
    cluster = Cluster(base / "nodes")
    try:
        began = time.time()
        cluster.start()
        queues = cluster.queues_on_distinct_masters(3)
        out: dict[str, Any] = {
            "masters": [node.port for node in cluster.nodes],
            "queues": {q: cluster.owner(tag(q)).port for q in queues},
            "jobs_per_queue": n,
            "processes_per_queue": processes,
            "threads": threads,
            "rounds": rounds,
            "setup_seconds": time.time() - began,
        }
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in DRAINS}
        for _ in range(rounds):
            for label, names, per_queue in (
                ("one", queues[:1], processes),
                ("three", queues, processes),
                ("one_wide", queues[:1], 3 * processes),
            ):
                run = drain(cluster, names, per_queue=per_queue, threads=threads, n=n, tmp=base)
                runs[label].append(run)
                if progress is not None:
                    shards = ", ".join(f"{v:.0f}%" for v in run["shard_cpu_percent"].values())
                    busy = run["machine_busy_percent"]
                    progress(
                        f"cluster {label}: {len(names)} queue(s) x {per_queue} process(es):"
                        f" {run['rate']:,.0f} jobs/s (shard CPU {shards};"
                        f" machine {busy or 0:.0f}% busy)"
                    )
        for label in DRAINS:
            out[label] = _combine(runs[label])
        out["seconds"] = time.time() - began
        return out
    finally:
        cluster.close()


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One drain's rounds as one: the median rate, mean CPU figures, every round's rate."""

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.fmean(present) if present else None

    first = runs[0]
    return {
        **{k: first[k] for k in ("queues", "shards", "processes", "threads", "jobs")},
        "rate": statistics.median(r["rate"] for r in runs),
        "rates": [r["rate"] for r in runs],
        "startup": mean([r["startup"] for r in runs]),
        "per_queue_rates": [
            statistics.median(r["per_queue_rates"][i] for r in runs)
            for i in range(len(first["per_queue_rates"]))
        ],
        "shard_cpu_percent": {
            port: mean([r["shard_cpu_percent"][port] for r in runs])
            for port in first["shard_cpu_percent"]
        },
        "worker_cpu_percent": mean([r["worker_cpu_percent"] for r in runs]),
        "machine_busy_percent": mean([r["machine_busy_percent"] for r in runs]),
    }
