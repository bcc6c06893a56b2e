"""Read replies off a socket: the RESP2/RESP3 subset jobs' scripts answer with.

The packed fast path (`jobs.queue._packed`) reads its replies here instead of through
redis-py's parser: redis-py spends 8-11 us of CPU per reply on its buffer, timeout and
error wrappers (a local round trip's whole client CPU is about 17 us), and Python that
runs right after a wait runs on cold caches (12 us of it cost about 19 us there). What a
Lua script or BLPOP can answer is a small part of the protocol: integers, bulk and
simple strings, errors, nulls and arrays of those. Anything else (a RESP3 map, a double)
raises `Unreadable`, and the caller sends the calls again the generic way, as after a
lost connection: every call that goes this way may be sent twice.

RESP3 push messages (a server's maintenance notices) are read and dropped, and the
reader asks for the connection to be closed after the call (`ReplyReader.stale`): a
fresh connection is what such a notice asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis._parsers import BaseParser

from jobs.queue._reply_poll import poll_socket

if TYPE_CHECKING:
    import socket

#: Bytes asked of the socket at a time (redis-py's default socket_read_size).
READ_SIZE = 65536


class Unreadable(Exception):
    """The bytes on the connection are not a reply this reader knows: drop the connection."""


class ReplyReader:
    """Replies read from one connection's socket, in order; holds what was read ahead."""

    __slots__ = ("_buffer", "_decode", "_pos", "sock", "stale")

    def __init__(self, sock: socket.socket, decode: bool) -> None:
        self.sock = sock
        self._decode = decode
        self._buffer = b""
        self._pos = 0
        #: A push message came: the connection is to be closed once this call is done.
        self.stale = False

    @property
    def pending(self) -> bool:
        """Whether bytes read ahead are waiting in the buffer (a reply, or part of one)."""
        return self._pos < len(self._buffer)

    def poll(self, budget_ns: int) -> bool:
        """Whether bytes arrived within ``budget_ns``, read without blocking (`_reply_poll`).

        Raises:
            ConnectionError: the server closed the connection.
            OSError: the socket failed.
        """
        if self._pos < len(self._buffer):
            return True
        data = poll_socket(self.sock, READ_SIZE, budget_ns)
        if data is None:
            return False
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer, self._pos = data, 0
        return True

    def read(self) -> Any:
        """The next reply; an error reply is returned (not raised) as redis-py's exception.

        Raises:
            Unreadable: a reply of a type this reader does not know.
            ConnectionError: the server closed the connection.
            OSError: the socket failed or timed out.
        """
        while True:
            line = self._line()
            if line[:1] != b">":
                return self._value(line)
            # A push message (RESP3), not a reply: read it whole and go on.
            for _ in range(int(line[1:])):
                self._value(self._line())
            self.stale = True

    def _value(self, line: bytes) -> Any:
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            end = self._pos + size
            if end + 2 <= len(self._buffer):
                data = self._buffer[self._pos : end]
                self._pos = end + 2
            else:
                data = self._rest_of(size)
            return data.decode() if self._decode else data
        if kind == b":":
            return int(rest)
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._value(self._line()) for _ in range(count)]
        if kind == b"_":
            return None
        if kind == b"-":
            parse: Any = BaseParser.parse_error  # untyped in redis-py
            return parse(rest.decode(errors="replace"))
        if kind == b"+":
            return rest.decode() if self._decode else rest
        raise Unreadable(f"a reply of RESP type {kind!r}")

    def _rest_of(self, size: int) -> bytes:
        """A bulk string (and its CRLF) that goes past the buffer: read into place.

        Not by growing the buffer a read at a time, which copies it at every read: a
        fetch of large payloads would be quadratic in their size.
        """
        whole = bytearray(size + 2)
        have = len(self._buffer) - self._pos
        whole[:have] = self._buffer[self._pos :]
        self._buffer, self._pos = b"", 0
        view = memoryview(whole)
        while have < size + 2:
            got = self.sock.recv_into(view[have:])
            if not got:
                raise ConnectionError("the server closed the connection")
            have += got
        return bytes(view[:size])

    def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n", self._pos)
            if end >= 0:
                line = self._buffer[self._pos : end]
                self._pos = end + 2
                return line
            self._fill()

    def _fill(self) -> None:
        data = self.sock.recv(READ_SIZE)
        if not data:
            raise ConnectionError("the server closed the connection")
        if self._pos < len(self._buffer):
            self._buffer = self._buffer[self._pos :] + data
        else:
            self._buffer = data
        self._pos = 0
