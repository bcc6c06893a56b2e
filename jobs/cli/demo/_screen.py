"""The demo's terminal output: narration lines, and a live progress line below them."""

from __future__ import annotations

import shutil
import threading
import time
from typing import TYPE_CHECKING, TextIO

import redis

if TYPE_CHECKING:
    from jobs.client import Client


class Screen:
    """Narration lines; on a terminal, a live progress line kept below them."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.tty = out.isatty()
        self._lock = threading.Lock()
        self._status = ""

    def say(self, text: str = "") -> None:
        with self._lock:
            clear = "\r\x1b[2K" if self.tty else ""
            self._out.write(f"{clear}{text}\n{self._status if self.tty else ''}")
            self._out.flush()

    def status(self, text: str) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size().columns - 1
        with self._lock:
            # A line wider than the terminal wraps, and "\r" would then redraw only its tail.
            self._status = text[:width]
            self._out.write(f"\r\x1b[2K{self._status}")
            self._out.flush()

    def clear(self) -> None:
        with self._lock:
            if self.tty and self._status:
                self._out.write("\r\x1b[2K")
                self._out.flush()
            self._status = ""


class Progress:
    """Redraws the progress line from `Client.stats` five times a second, on a terminal."""

    def __init__(self, screen: Screen, client: Client) -> None:
        self._screen = screen
        self._client = client
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobs-demo-progress", daemon=True)

    def __enter__(self) -> Progress:
        if self._screen.tty:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._screen.clear()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                s = self._client.stats()
            except redis.RedisError:
                continue
            self._screen.status(
                f"  {time.monotonic() - self._started:4.1f}s  pending {s.pending_jobs}  "
                f"scheduled {s.scheduled_jobs}  running {s.processing_jobs}  "
                f"completed {s.completed_jobs}  failed {s.failed_jobs}  "
                f"cancelled {s.cancelled_jobs}"
            )
