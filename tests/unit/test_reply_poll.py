"""`jobs.queue._reply_poll`: waiting for a reply by polling the socket, bounded and adaptive."""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING

import pytest

from jobs.queue import _reply_poll
from jobs.queue._reply_poll import MISSES, PAUSE, POLL_MOST_NS, POLL_NS, ReplyPoll, poll_socket
from jobs.queue._resp import ReplyReader

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Far longer than any test waits for: a poll that never sees its bytes fails by timeout.
NEVER = 60 * 1_000_000_000


@pytest.fixture(params=[5.0, None], ids=["socket timeout", "blocking socket"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """Both kinds of socket redis-py makes: with a timeout (non-blocking descriptor), or not."""
    ours, theirs = socket.socketpair()
    ours.settimeout(request.param)
    with ours, theirs:
        yield ours, theirs


def test_nothing_on_the_socket_is_none_within_the_budget(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    assert poll_socket(ours, 1024, 1_000_000) is None


def test_bytes_already_there_are_returned(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b":1\r\n")
    assert poll_socket(ours, 1024, NEVER) == b":1\r\n"


def test_bytes_that_arrive_while_it_polls_are_returned(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    polling = threading.Event()
    got: list[bytes | None] = []

    def poll() -> None:
        polling.set()
        got.append(poll_socket(ours, 1024, NEVER))

    poller = threading.Thread(target=poll)
    poller.start()
    polling.wait()
    theirs.sendall(b"+OK\r\n")
    poller.join()
    assert got == [b"+OK\r\n"]


def test_a_closed_peer_reads_as_no_bytes_and_the_reader_raises(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.close()
    assert poll_socket(ours, 1024, NEVER) == b""
    with pytest.raises(ConnectionError):
        ReplyReader(ours, decode=False).poll(NEVER)


def test_the_reader_reads_on_from_what_the_poll_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    reader = ReplyReader(ours, decode=False)
    assert not reader.poll(1_000_000)
    theirs.sendall(b"*2\r\n:1\r\n$3\r\nab")
    assert reader.poll(NEVER)
    assert reader.poll(NEVER)  # bytes read ahead: nothing more to wait for
    theirs.sendall(b"c\r\n")
    assert reader.read() == [1, b"abc"]  # the rest by the usual read


class _Reader:
    """A reader whose replies come, or not, within any budget."""

    def __init__(self, comes: bool) -> None:
        self.comes = comes
        self.polls = 0

    def poll(self, budget_ns: int) -> bool:
        self.polls += 1
        return self.comes


@pytest.fixture(autouse=True)
def hot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call follows the previous one closely, unless a test says otherwise."""
    monkeypatch.setattr(_reply_poll, "HOT_NS", 1 << 62)


def test_a_call_after_a_pause_blocks_and_the_next_close_one_polls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_reply_poll, "CAN_POLL", True)
    monkeypatch.setattr(_reply_poll, "HOT_NS", -1)
    policy, prompt = ReplyPoll(), _Reader(comes=True)
    for _ in range(3):
        policy.wait(prompt)  # type: ignore[arg-type]
    assert prompt.polls == 0  # each came longer than HOT_NS after the last
    monkeypatch.setattr(_reply_poll, "HOT_NS", 1 << 62)
    policy.wait(prompt)  # type: ignore[arg-type]
    assert prompt.polls == 1


def test_polling_pauses_after_misses_in_a_row_then_tries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_reply_poll, "CAN_POLL", True)
    policy, late = ReplyPoll(), _Reader(comes=False)
    for _ in range(MISSES + PAUSE):
        policy.wait(late)  # type: ignore[arg-type]
    assert late.polls == MISSES  # then PAUSE calls blocked at once
    prompt = _Reader(comes=True)
    policy.wait(prompt)  # type: ignore[arg-type]
    assert prompt.polls == 1


def test_a_reply_in_time_resets_the_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reply_poll, "CAN_POLL", True)
    policy, late, prompt = ReplyPoll(), _Reader(comes=False), _Reader(comes=True)
    for _ in range(3):
        for _ in range(MISSES - 1):
            policy.wait(late)  # type: ignore[arg-type]
        policy.wait(prompt)  # type: ignore[arg-type]
    assert late.polls == 3 * (MISSES - 1)  # never paused


class _Timed:
    """A reader whose reply comes ``takes_ns`` after the call, on a fake clock."""

    def __init__(self, clock: list[int]) -> None:
        self.clock = clock
        self.takes_ns = 0
        self.budgets: list[int] = []

    def poll(self, budget_ns: int) -> bool:
        self.budgets.append(budget_ns)
        comes = self.takes_ns <= budget_ns
        self.clock[0] += self.takes_ns if comes else budget_ns
        return comes


def test_the_poll_budget_follows_the_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reply_poll, "CAN_POLL", True)
    clock = [10**12]
    monkeypatch.setattr(_reply_poll, "_now", lambda: clock[0])
    policy, reader = ReplyPoll(), _Timed(clock)
    us = 1000
    reader.takes_ns = 150 * us  # a slower machine than POLL_NS was set for
    for _ in range(3):
        policy.wait(reader)  # type: ignore[arg-type]
    # Missed once, caught with twice the budget, then polls twice what replies take.
    assert reader.budgets == [POLL_NS, 2 * POLL_NS, 300 * us]
    reader.takes_ns = 10 * us  # never below POLL_NS
    for _ in range(2):
        policy.wait(reader)  # type: ignore[arg-type]
    assert reader.budgets[-1] == POLL_NS
    reader.takes_ns = 10 * POLL_MOST_NS  # late replies: never past POLL_MOST_NS
    for _ in range(MISSES - 1):
        policy.wait(reader)  # type: ignore[arg-type]
    assert max(reader.budgets) == POLL_MOST_NS
    assert reader.budgets[-3:] == [POLL_MOST_NS] * 3


def test_one_cpu_never_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reply_poll, "CAN_POLL", False)
    policy, prompt = ReplyPoll(), _Reader(comes=True)
    for _ in range(PAUSE * 2):
        policy.wait(prompt)  # type: ignore[arg-type]
    assert prompt.polls == 0
