"""A TCP proxy with a fault switch, to put a bad network between a worker pool and Redis.

`FaultyProxy` listens on a free loopback port and forwards each accepted connection to
the target, one thread per direction. The test flips it between:

- forwarding (the default, and what `resume` returns to);
- `stall`: bytes stop moving but every socket stays open, so commands hang until the
  client's socket timeout (a long GC pause, a congested link). What was sent during the
  stall is delivered on `resume`, even for a connection its client has given up on since:
  that is how a late write reaches Redis in real networks, and what fencing must catch;
- `blackhole`: connections are still accepted, but every byte in either direction is
  dropped (a partition behind a load balancer). On `resume`, connections that lost bytes
  are cut, since their byte streams are no longer in step;
- `cut`: closes every current connection at once (a reset, a restarted middlebox); new
  connections work as before;
- `drop_reply_to`: the next command whose bytes contain a marker reaches Redis and runs,
  but its reply is swallowed and its connection cut (a reset or a failover at the worst
  moment): the client cannot know whether the command ran.

stdlib only. `close` stops everything and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

_CHUNK = 65536
#: How often blocked threads look at the closing flag.
_POLL = 0.05


class Mode(enum.Enum):
    """What the proxy does with the bytes it reads."""

    FORWARD = "forward"
    STALL = "stall"
    BLACKHOLE = "blackhole"


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultyProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.broken = False  # dropped bytes: its streams are out of step
        self.lose_reply = False  # the command just sent is the one whose reply is dropped
        self._closed = False
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.upstream):
            # shutdown wakes a thread blocked in recv on this socket; close alone may not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.proxy._forget(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while True:
                try:
                    data = source.recv(_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                mode = self.proxy._wait_unless_stalled(self)
                if mode is None:
                    return  # the proxy or this link closed while stalled
                if mode is Mode.BLACKHOLE:
                    self.broken = True
                    continue
                if replies and self.lose_reply:
                    self.proxy.dropped_replies += 1
                    return  # the reply is lost with the connection (finally: close)
                if not replies and self.proxy._is_marked(data):
                    self.lose_reply = True
                try:
                    sink.sendall(data)
                except OSError:
                    return
        finally:
            self.close()


class FaultyProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``, with `stall`, `blackhole` and `cut`.

    Example::

        with FaultyProxy(("127.0.0.1", redis_port)) as proxy:
            client = redis.Redis(port=proxy.port, socket_timeout=1)
            proxy.stall()
            ...
            proxy.resume()
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._cv = threading.Condition()
        self._mode = Mode.FORWARD
        self._closing = False
        self._links: set[_Link] = set()
        self._threads: list[threading.Thread] = []
        #: Connections accepted so far (a test can see that clients reconnected).
        self.accepted = 0
        #: `accepted` as it was when the last `cut` took its list of connections: any
        #: connection accepted later is a reconnect, even one made before `cut` returned.
        self.accepted_at_cut = 0
        #: Replies swallowed by `drop_reply_to` so far.
        self.dropped_replies = 0
        self._marker: bytes | None = None
        self._acceptor = threading.Thread(target=self._accept, name="faulty-proxy", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def mode(self) -> Mode:
        with self._cv:
            return self._mode

    # -- controls ----------------------------------------------------------------------

    def stall(self) -> None:
        """Stop moving bytes; sockets stay open and nothing is lost."""
        self._set(Mode.STALL)

    def blackhole(self) -> None:
        """Accept connections, drop every byte."""
        self._set(Mode.BLACKHOLE)

    def resume(self) -> None:
        """Forward again: bytes held by a stall flow on; black-holed connections are cut."""
        self._set(Mode.FORWARD)
        with self._cv:
            broken = [link for link in self._links if link.broken]
        for link in broken:
            link.close()

    def cut(self) -> int:
        """Close every current connection; returns how many there were."""
        with self._cv:
            links = list(self._links)
            self.accepted_at_cut = self.accepted
        for link in links:
            link.close()
        return len(links)

    def drop_reply_to(self, marker: bytes) -> None:
        """Lose the reply to the next command containing ``marker``, and its connection.

        The command itself reaches Redis and runs. Only the next such command is hit.
        """
        with self._cv:
            self._marker = marker

    def _is_marked(self, data: bytes) -> bool:
        with self._cv:
            if self._marker is None or self._marker not in data:
                return False
            self._marker = None
            return True

    def connections(self) -> int:
        """How many connections are open right now."""
        with self._cv:
            return len(self._links)

    def close(self) -> None:
        """Stop accepting, close every connection and join every thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._acceptor.join(5)
        self._listener.close()
        self.cut()
        with self._cv:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    # -- internals ---------------------------------------------------------------------

    def _set(self, mode: Mode) -> None:
        with self._cv:
            self._mode = mode
            self._cv.notify_all()

    def _wait_unless_stalled(self, link: _Link) -> Mode | None:
        with self._cv:
            while self._mode is Mode.STALL and not self._closing and not link.closed:
                self._cv.wait(_POLL)
            if self._closing or link.closed:
                return None
            return self._mode

    def _forget(self, link: _Link) -> None:
        with self._cv:
            self._links.discard(link)

    def _accept(self) -> None:
        while True:
            with self._cv:
                if self._closing:
                    return
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the target is down: the client sees a reset, as it would
                continue
            upstream.settimeout(None)
            link = _Link(self, client, upstream)
            with self._cv:
                if self._closing:
                    client.close()
                    upstream.close()
                    return
                self._links.add(link)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.extend(link.threads)
                self.accepted += 1
            link.start()
