"""`jobs.queue._resp.ReplyReader`: replies read straight off a socket, as redis-py reads them."""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any

import pytest
import redis
from redis.exceptions import BusyLoadingError, NoScriptError

from jobs.queue._resp import ReplyReader, Unreadable

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    with ours, theirs:
        yield ours, theirs


def _replies(
    pair: tuple[socket.socket, socket.socket],
    wire: bytes,
    count: int,
    *,
    decode: bool = False,
    chunk: int | None = None,
) -> tuple[list[Any], ReplyReader]:
    ours, theirs = pair
    reader = ReplyReader(ours, decode)
    if chunk is None:
        theirs.sendall(wire)
        return [reader.read() for _ in range(count)], reader

    def send() -> None:
        # In pieces, from another thread: reads find parts of replies.
        for i in range(0, len(wire), chunk):
            theirs.sendall(wire[i : i + chunk])

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return [reader.read() for _ in range(count)], reader
    finally:
        sender.join()


_WIRE = (
    b":42\r\n"
    b"$5\r\nhello\r\n"
    b"$0\r\n\r\n"
    b"$-1\r\n"
    b"*-1\r\n"
    b"_\r\n"
    b"+OK\r\n"
    b"*3\r\n:1\r\n*2\r\n$2\r\n\xc3\xa9\r\n_\r\n$4\r\na\r\nb\r\n"
    b"*0\r\n"
)
_EXPECTED: list[Any] = [
    42,
    b"hello",
    b"",
    None,
    None,
    None,
    b"OK",
    [1, [b"\xc3\xa9", None], b"a\r\nb"],
    [],
]


def test_it_reads_what_scripts_and_blpop_answer(pair: tuple[socket.socket, socket.socket]) -> None:
    replies, reader = _replies(pair, _WIRE, len(_EXPECTED))
    assert replies == _EXPECTED
    assert not reader.pending and not reader.stale


def test_replies_split_anywhere_read_the_same(pair: tuple[socket.socket, socket.socket]) -> None:
    replies, _ = _replies(pair, _WIRE, len(_EXPECTED), chunk=1)
    assert replies == _EXPECTED


def test_decoded_as_the_connection_decodes(pair: tuple[socket.socket, socket.socket]) -> None:
    replies, _ = _replies(pair, b"$2\r\n\xc3\xa9\r\n+OK\r\n*1\r\n$1\r\nx\r\n", 3, decode=True)
    assert replies == ["é", "OK", ["x"]]


def test_error_replies_are_returned_as_redis_py_would_raise_them(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    wire = b"-NOSCRIPT No matching script\r\n-LOADING loading\r\n-UNKNOWN_TYPE t\r\n:1\r\n"
    (noscript, loading, refusal, after), _ = _replies(pair, wire, 4)
    assert isinstance(noscript, NoScriptError)
    assert isinstance(loading, BusyLoadingError)  # a connection error, for the caller
    assert type(refusal) is redis.ResponseError and str(refusal) == "UNKNOWN_TYPE t"
    assert after == 1


def test_a_push_message_is_skipped_and_marks_the_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    wire = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n:7\r\n"
    (reply,), reader = _replies(pair, wire, 1)
    assert reply == 7
    assert reader.stale


def test_bytes_read_ahead_are_reported(pair: tuple[socket.socket, socket.socket]) -> None:
    (reply,), reader = _replies(pair, b":1\r\n:2\r\n", 1)
    assert reply == 1 and reader.pending


def test_a_type_it_does_not_know_is_unreadable(pair: tuple[socket.socket, socket.socket]) -> None:
    with pytest.raises(Unreadable):
        _replies(pair, b"%1\r\n+a\r\n:1\r\n", 1)


def test_a_closed_connection_is_a_connection_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(b"$10\r\nabc")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError):
        ReplyReader(ours, False).read()


def test_a_large_bulk_string_arrives_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    payload = bytes(range(256)) * (20 * 1024)  # 5 MiB, over many reads
    wire = b"*2\r\n$%d\r\n%b\r\n:3\r\n" % (len(payload), payload)
    (reply,), reader = _replies(pair, wire, 1, chunk=100_000)
    assert reply == [payload, 3]
    assert not reader.pending
