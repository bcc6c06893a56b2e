"""Poll the socket for a reply due within microseconds, instead of sleeping until it comes.

On the virtual machines most servers run on, a thread that blocks in ``recv()`` and is
woken by its reply pays tens of microseconds for the wake-up alone, more than Redis takes
to run a small script. Measured on the 2-core benchmark machine (``benchmarks/
RESULTS.rst``): a local round trip of a command Redis runs in 2 us took 64-72 us when
the caller blocked and 23-26 us when it polled the socket; a one-job ``enqueue`` took
105-115 us against 71-74 us, its client CPU going from 46-50 us to 69-71 us (polling
spends on the wait what the wake-up no longer costs in time).

So the producer's small calls (a web request's one job) poll for their reply for up to
a budget that follows the replies (`POLL_NS` to `POLL_MOST_NS`) before they block as
usual, when they come close on each other's heels. What
it costs is bounded and it stops where it does not pay:

- Only a call that follows the last one within `HOT_NS`. After a pause the caller's and
  the server's CPUs have gone idle, and waking them is most of the wait: measured with
  one call every 20-40 ms, two thirds of the replies came after 100 us of polling, the
  call took 0.91-0.93 ms against 0.86-0.87 when it blocked, and a worker pool that the
  job woke on the same 2-core machine started it 30-50 us later (the polling took the
  CPU it woke on).
- Only with two CPUs or more for this process: on one, Redis (if local) could not run
  while the caller polls.
- A `ReplyPoll` serves one connection pool, i.e. one server. When `MISSES` polls in a
  row end without the reply (a server across a network, or a machine so loaded that
  the reply comes late anyway), it stops polling for the next `PAUSE` calls, then tries
  again: a remote server costs about ``MISSES * POLL_MOST_NS / PAUSE`` (12 us) a call,
  next to the round trip of a millisecond or more that makes it remote.
- The worker pool's own exchanges never poll: its threads need the CPU (and the GIL)
  for the handlers, and its fetcher sends an exchange ahead of time anyway.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.queue._resp import ReplyReader

#: How long a call polls for its reply before it blocks, at first and at least. A one-job
#: enqueue's reply comes 40-50 us after it was sent on one benchmark machine (Redis runs
#: the script in 15-20), 50-150 us on another, slower one, where a budget of 100 us
#: missed most and back-to-back enqueues took a median 275 us each. So the budget
#: follows the replies (`ReplyPoll.wait`): twice what the last reply caught took, doubled
#: after a miss, within this and `POLL_MOST_NS` (there: a median 223 us a call).
POLL_NS = 100_000

#: The longest a call polls for its reply.
POLL_MOST_NS = 400_000

#: A call polls only if the previous one began less than this long before it.
HOT_NS = 1_000_000

#: Polls in a row that end without the reply before polling pauses.
MISSES = 8

#: Calls that block at once after `MISSES` polls failed, before polling is tried again.
PAUSE = 256

#: The clock `ReplyPoll` reads (a module name, so that a test can give it a fake one).
_now = time.perf_counter_ns

#: ``recv`` without waiting on a blocking socket; None where the platform has no flag.
DONTWAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)


def _cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


#: Whether polling may pay on this machine at all (see the module's docstring).
CAN_POLL = _cpus() >= 2


class ReplyPoll:
    """When to poll for a reply rather than block: one per connection pool (one server).

    Its counters are shared by the threads that call through the pool without a lock: a
    lost update only shifts when polling pauses or resumes by a call (each thread writes
    what it computed from one read, so a count never goes below 0).
    """

    __slots__ = ("_budget", "_last", "_misses", "_never", "_paused")

    def __init__(self) -> None:
        self._never = not CAN_POLL
        self._last = 0
        self._misses = 0
        #: How long the next poll may last (ns).
        self._budget = POLL_NS
        #: Calls left that block at once.
        self._paused = 0

    def wait(self, reader: ReplyReader) -> None:
        """Poll ``reader``'s socket for the reply's first bytes, unless polling pauses.

        Either way the caller then reads as usual: what the poll read is in ``reader``'s
        buffer, and when nothing came the read blocks.
        """
        if self._never:
            return
        now = _now()
        previous, self._last = self._last, now
        if now - previous > HOT_NS:
            return  # the first call after a pause: its reply comes late anyway
        paused = self._paused
        if paused > 0:
            self._paused = paused - 1
            return
        budget = self._budget
        if reader.poll(budget):
            self._misses = 0
            took = _now() - now
            self._budget = min(max(2 * took, POLL_NS), POLL_MOST_NS)
            return
        self._misses += 1
        self._budget = min(2 * budget, POLL_MOST_NS)
        if self._misses >= MISSES:
            self._misses = 0
            self._paused = PAUSE


def poll_socket(sock: socket.socket, size: int, budget_ns: int) -> bytes | None:
    """Up to ``size`` bytes that arrive on ``sock`` within ``budget_ns``; None if none did.

    Never blocks: a socket with a timeout has a non-blocking descriptor already (CPython
    sets it so), which ``os.read`` reads as is, since ``recv`` would first wait out the
    timeout in ``poll()``; a blocking one is read with ``MSG_DONTWAIT``.

    Raises:
        OSError: the socket failed (as ``recv`` would raise it).
    """
    if sock.gettimeout() is None:
        if DONTWAIT is None:
            return None
        flags = DONTWAIT

        def attempt() -> bytes:
            return sock.recv(size, flags)

    else:
        descriptor = sock.fileno()

        def attempt() -> bytes:
            return os.read(descriptor, size)

    clock = time.perf_counter_ns
    deadline = clock() + budget_ns
    while True:
        try:
            return attempt()
        except (BlockingIOError, InterruptedError):
            if clock() >= deadline:
                return None
