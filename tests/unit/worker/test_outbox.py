"""The outbox on its own: outcomes a slot puts, the writer thread, and `Outbox.drain`.

A `jobs.testing.MemoryQueue` holds the jobs; the attempts are real ones, fetched from it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

import jobs
from jobs.testing import MemoryQueue
from jobs.worker._attempt import Attempt
from jobs.worker._outbox import Outbox
from jobs.worker._protocol import Completed

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from jobs.worker._protocol import Written

pytestmark = pytest.mark.timeout(10)

#: Longer than the test's own timeout: a drain() that is never woken fails the test.
NEVER = 60.0


class Rig:
    """An outbox whose writer thread runs, and the attempts it reported written."""

    def __init__(self) -> None:
        self.queue = MemoryQueue()
        self.written: list[tuple[str, bool]] = []
        self.outbox = Outbox("default", self._on_written, self._on_dropped, logging.getLogger())

    def _on_written(self, batch: Sequence[Attempt], replies: Sequence[Written]) -> None:
        self.written += [(a.leased.job_id, w.recorded) for a, w in zip(batch, replies, strict=True)]

    def _on_dropped(self, attempt: Attempt, why: str) -> None:
        raise AssertionError(f"{attempt.leased.job_id} dropped: {why}")

    def decided(self, count: int) -> list[Attempt]:
        """``count`` jobs enqueued, fetched and run: attempts whose outcome is decided."""
        client = jobs.Client(jobs.ClientConfig(queue=self.queue))
        client.enqueue_many("work", range(count))
        fetched = self.queue.fetch(count, timedelta(seconds=30))
        attempts = []
        for leased in fetched.jobs:
            attempt = Attempt.from_leased(leased, self.queue, time.monotonic() + 30)
            attempt.outcome = Completed(leased, b"null")
            attempts.append(attempt)
        return attempts


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    rig.outbox.loop.start()
    yield rig
    rig.outbox.loop.stop(timeout=5)


def test_the_writer_thread_writes_what_a_slot_puts_and_drain_sees_it_done(rig: Rig) -> None:
    (attempt,) = rig.decided(1)
    rig.outbox.put(attempt)
    assert rig.outbox.drain(NEVER)
    assert rig.written == [(attempt.leased.job_id, True)]
    assert rig.queue.get(attempt.leased.job_id).status is jobs.JobStatus.COMPLETED


def test_drain_waits_for_a_batch_the_fetcher_took_until_it_is_reported_written(
    rig: Rig,
) -> None:
    # The fetcher's part: it claims, a slot's outcome rides with its fetch, the fetcher
    # takes the batch and writes it itself (here: another thread, later).
    first, second = rig.decided(2)
    assert rig.outbox.claim() == []
    rig.outbox.put(first, fetch_soon=True)
    rig.outbox.put(second, fetch_soon=True)
    batch = rig.outbox.claim()
    assert batch == [first, second]
    assert not rig.outbox.drain(0.05)  # taken, not yet written

    def write() -> None:
        rig.outbox.written(batch, rig.queue.write([a.outcome for a in batch if a.outcome]))

    writer = threading.Thread(target=write)
    writer.start()
    assert rig.outbox.drain(NEVER)
    writer.join()
    assert rig.written == [(first.leased.job_id, True), (second.leased.job_id, True)]
    rig.outbox.release()
    # The writer thread still answers to what comes next.
    (third,) = rig.decided(1)
    rig.outbox.put(third)
    assert rig.outbox.drain(NEVER)
    assert rig.written[-1] == (third.leased.job_id, True)
