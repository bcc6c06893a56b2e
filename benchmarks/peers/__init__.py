"""The small interface every benchmarked library implements, and how its workers are run.

One `Adapter` per library: ``jobs`` (in ``jobs_worker.py``) and each peer in
``peers/<name>_peer.py``. An adapter enqueues jobs from the harness process and starts
worker processes with the library's own CLI (or, for ``jobs``, a small script), so every
library runs in fresh processes of the same interpreter against its own private
redis-server. The job bodies themselves live in ``workloads.py`` and are shared by all.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from workloads import COUNT_DIR_ENV, URL_ENV

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: What a job does: one INCR on the counter, nothing (a process-local count), or report
#: the moment its handler started (for pickup latency).
Body = Literal["incr", "noop", "stamp"]
BODIES: tuple[Body, ...] = ("incr", "noop", "stamp")

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent

#: The peers in report order; ``jobs`` is always measured first.
PEERS = ("rq", "huey", "dramatiq", "celery")


def _die_with_parent() -> Callable[[], None] | None:
    # A harness killed hard must not leave workers draining someone's CPU; the kernel
    # ties PR_SET_PDEATHSIG to the forking thread, so only the main thread may ask.
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


#: Where worker processes import ``jobs`` from: the repository, or the snapshot of it
#: that the harness took at the start of the run (see `use_source`).
_source_dir = REPO_DIR


def use_source(directory: Path) -> None:
    """Make worker processes import ``jobs`` from ``directory`` (a copy of the package)."""
    global _source_dir
    _source_dir = directory


def worker_env(url: str, count_dir: Path) -> dict[str, str]:
    """The environment of a worker process: imports ``workloads`` and ``peers`` by name."""
    env = dict(os.environ)
    path = [str(BENCH_DIR), str(_source_dir)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env[URL_ENV] = url
    env[COUNT_DIR_ENV] = str(count_dir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


def venv_script(name: str) -> str:
    """A console script installed next to the running interpreter (``rq``, ``huey_consumer``)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise RuntimeError(f"{name} is not installed next to {sys.executable}")


class Workers:
    """The OS processes one adapter started for one measurement."""

    def __init__(
        self, procs: list[subprocess.Popen[bytes]], logs: list[Path], stop_signal: int
    ) -> None:
        self.procs = procs
        self.logs = logs
        self.stop_signal = stop_signal
        self.started = time.time()

    @property
    def pids(self) -> list[int]:
        """The processes started directly (their children are found with psutil)."""
        return [p.pid for p in self.procs]

    def check(self) -> None:
        """Raise if a worker process has exited on its own."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"worker {proc.args!r} exited with {code}; log {log}:\n{tail(log)}"
                )

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every process to stop gracefully; kill its process group after ``timeout``."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, self.stop_signal)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            # Prefork and multi-process workers leave children in the group we created.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"


def spawn(argv: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start one worker process in its own process group, its output going to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=BENCH_DIR,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )


class Adapter(abc.ABC):
    """How the harness drives one library.

    Args:
        url: the library's private Redis, for its queue and for the job bodies.
        count_dir: where empty-body jobs count themselves (see ``workloads.noop``).
        log_dir: where worker logs go.
    """

    #: The library's name in tables.
    name = ""
    #: False when one process runs one job at a time whatever the thread count (RQ).
    threaded = True
    #: How `stop` asks the workers to finish (the library's graceful signal).
    stop_signal = int(signal.SIGTERM)
    #: ``enqueue_bulk(body, args)``: many jobs in one call, or None if the library has none.
    enqueue_bulk: Callable[[Body, Sequence[int]], None] | None = None

    def __init__(self, url: str, count_dir: Path, log_dir: Path) -> None:
        self.url = url
        self.count_dir = count_dir
        self.log_dir = log_dir
        self._started = 0

    @abc.abstractmethod
    def version(self) -> str:
        """The library's installed version."""

    @abc.abstractmethod
    def enqueue_one(self, body: Body, arg: int) -> None:
        """Enqueue one job running ``body`` with the library's ordinary one-job call."""

    @abc.abstractmethod
    def worker_argv(self, processes: int, threads: int) -> list[list[str]]:
        """The command lines to start: ``processes`` processes of ``threads`` threads."""

    def describe(self, processes: int, threads: int) -> str:
        """How the workers are run, for the report."""
        argv = self.worker_argv(processes, threads)
        shown = [" ".join(Path(a).name if i == 0 else a for i, a in enumerate(c)) for c in argv]
        shown = [s.replace(self.url, "URL") for s in shown]
        return shown[0] if len(shown) == 1 else f"{len(shown)} x {shown[0]}"

    def start_workers(self, processes: int, threads: int) -> Workers:
        """Start the workers and return at once; drains are timed from here."""
        env = worker_env(self.url, self.count_dir)
        procs, logs = [], []
        for argv in self.worker_argv(processes, threads):
            self._started += 1
            log = self.log_dir / f"{self.name}-worker-{self._started}.log"
            logs.append(log)
            procs.append(spawn(argv, env, log))
        return Workers(procs, logs, self.stop_signal)

    def close(self) -> None:  # noqa: B027 (most adapters hold nothing to close)
        """Release the producer's connections."""


def load(name: str, url: str, count_dir: Path, log_dir: Path) -> Adapter:
    """The adapter for ``name``: ``jobs`` or one of `PEERS`."""
    module = importlib.import_module("jobs_worker" if name == "jobs" else f"peers.{name}_peer")
    factory: type[Adapter] = module.ADAPTER
    return factory(url, count_dir, log_dir)
