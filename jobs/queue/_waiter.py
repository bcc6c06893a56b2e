"""Waiting for jobs to finish, woken by Redis rather than by polling.

Every script that finalizes jobs (complete, fail, cancel, reap) publishes their ids on
the queue's ``finished`` channel in one message (``finish_call`` in ``_lib.lua``).
One `FinishedListener` per queue object holds one pub/sub connection and wakes exactly
the waiters of the announced ids, however many threads wait on however many ids: 10,000
waited ids cost the same connection as one. The waiters read records themselves, at
most `WAIT_READERS` at a time, so that however many threads wait, they hold at most that
many pooled connections besides the subscription's.

Pub/sub delivers at most once: a message published while the listener is disconnected
is gone. So the listener marks every watched id as "to re-read" each time it
(re)subscribes, and waiters also re-read on their own every `RECHECK` seconds, which
covers a record that vanished (purged or expired) without any announcement.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster

from jobs._loops import backoff_delay
from jobs.queue._cluster import refresh

if TYPE_CHECKING:
    from collections.abc import Iterable

    from jobs.queue._scripts import RedisClient

logger = logging.getLogger("jobs.client")

#: A waiter re-reads what it waits for at least this often, even without a message.
RECHECK = 10.0
#: How long the listener blocks for one message (bounds how fast `stop` takes effect).
LISTEN_TIMEOUT = 1.0
#: At most this many waiting threads of one queue object read records at once. Each read
#: holds a pooled connection: without a bound, 10,000 threads each in ``wait()`` (woken by
#: one announcement, or starting together) take the whole pool (redis-py 6+ caps it at
#: 100 and then refuses), and the process's other calls fail with "Too many connections".
WAIT_READERS = 4


class Watch:
    """One waiter's interest: the ids it waits for, and those it must read again now."""

    __slots__ = ("_due", "_lock", "event", "ids")

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = frozenset(ids)
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._due: set[str] = set(self.ids)  # read everything once at first

    def mark(self, ids: Iterable[str]) -> None:
        """Some of the ids may have finished: wake the waiter to read them."""
        with self._lock:
            self._due.update(ids)
        self.event.set()

    def take_due(self) -> set[str]:
        """The ids to read now (and forget them until marked again)."""
        with self._lock:
            self.event.clear()
            due, self._due = self._due, set()
        return due


class FinishedListener:
    """The queue's subscription to its ``finished`` channel, shared by every waiter."""

    def __init__(self, client: RedisClient, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._lock = threading.Lock()
        self._watches: dict[str, set[Watch]] = {}
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Held while a waiter reads records (`WAIT_READERS` at once).
        self.readers = threading.BoundedSemaphore(WAIT_READERS)

    def watch(self, ids: Iterable[str]) -> Watch:
        """Start watching ``ids``; `unwatch` the result when done."""
        watch = Watch(ids)
        with self._lock:
            for job_id in watch.ids:
                self._watches.setdefault(job_id, set()).add(watch)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="jobs-wait-listener", daemon=True
                )
                self._thread.start()
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop watching (a finished, failed or timed-out wait)."""
        with self._lock:
            for job_id in watch.ids:
                watches = self._watches.get(job_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watches[job_id]

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the subscription is live (a status read after it cannot miss a finish)."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """End the listener thread and close its connection."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            pubsub: Any = None
            try:
                # Through Any: RedisCluster.pubsub is untyped before redis-py 8.2.
                client: Any = self._client
                pubsub = client.pubsub()
                pubsub.subscribe(self._channel)
                self._await_confirmation(pubsub)
                self._subscribed.set()
                if failures:
                    logger.info("wait listener: subscribed again after %d failed tries", failures)
                failures = 0
                # Anything announced while we were not listening is lost: every waiter
                # reads all it waits for again.
                self._mark_all()
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_TIMEOUT)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message.get("data"))
            except (redis.RedisError, OSError) as exc:
                self._subscribed.clear()
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                logger.log(level, "wait listener: Redis error (%s: %s)", type(exc).__name__, exc)
                if isinstance(self._client, redis.cluster.RedisCluster):
                    refresh(self._client)
                self._stopping.wait(backoff_delay(failures))
            except Exception:  # a bug must not leave waiters hanging: they re-read on RECHECK
                self._subscribed.clear()
                failures += 1
                logger.exception("wait listener: unexpected error")
                self._stopping.wait(backoff_delay(failures))
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # closing a broken connection may fail; it is gone anyway
                        logger.debug("wait listener: closing failed", exc_info=True)
        self._subscribed.clear()

    def _await_confirmation(self, pubsub: Any) -> None:
        # subscribe() only sends the command; until the server confirms, a PUBLISH could
        # pass us by, and a waiter reading a status now could then miss the finish.
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=LISTEN_TIMEOUT)
            if message is not None and message.get("type") == "subscribe":
                return
            if message is not None and message.get("type") == "message":
                self._dispatch(message.get("data"))

    def _dispatch(self, data: Any) -> None:
        try:
            ids = json.loads(data)
        except (TypeError, ValueError):
            logger.warning("wait listener: ignoring a malformed message %.100r", data)
            return
        if not isinstance(ids, list):
            return
        woken: dict[Watch, list[str]] = {}
        with self._lock:
            for job_id in ids:
                for watch in self._watches.get(job_id, ()) if isinstance(job_id, str) else ():
                    woken.setdefault(watch, []).append(job_id)
        for watch, found in woken.items():
            watch.mark(found)

    def _mark_all(self) -> None:
        with self._lock:
            watches = {w for ws in self._watches.values() for w in ws}
        for watch in watches:
            watch.mark(watch.ids)
