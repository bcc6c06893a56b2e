"""Script calls packed by hand and sent straight on a pooled connection.

This is the producer's fast path. redis-py's generic command path costs a one-job
enqueue about as much as the round trip itself: it encodes each of the call's 26
arguments afresh, then runs its retry, event and observability wrappers. Most of those
arguments (the script, its keys, the job type's settings) are the same from one call to
the next, so a caller packs them once (`pack_args`) and adds only the id and the payload
per call. Their replies are read straight off the socket (`jobs.queue._resp`) where
redis-py would parse them in Python anyway.

Each thread keeps a connection of the pool for its own calls (up to `OWNED` threads, and
half the pool's bound): taking one from the pool and giving it back costs a lock each
way and a poll of the socket, about as much as a local round trip, and a web server's
threads would all queue on that lock. Threads past the limit borrow one per call.

`PackedCalls.send` sends without waiting, and the `Sent` it returns reads the replies
later: the worker pool's fetcher sends its next exchange, then takes the jobs of the
last one while Redis runs it. Meanwhile that thread's other calls borrow a connection.

Only what cannot go wrong quietly goes this way: a plain `redis.Redis` (so also the
master a Sentinel client names, and the node clients of a cluster, which the worker's
exchanges use: `jobs.queue._scripts.node_packed`) with the default encoding. A cluster
client itself, a client on one dedicated connection, a lost connection and a server
that lost the script all take the generic path (`UNSENT`), with its retries and its
recovery; on a cluster a stale slot map's MOVED and the like are raised for
`jobs.queue._cluster.run_on_node` to refresh the map and try again.
"""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.cluster
from redis._parsers import _RESP2Parser, _RESP3Parser
from redis.exceptions import NoScriptError

from jobs.queue._reply_poll import ReplyPoll
from jobs.queue._resp import ReplyReader, Unreadable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs.queue._scripts import Arg, RedisClient

#: At most this many threads keep a connection of their own per `PackedCalls`.
OWNED = 32

#: Connection classes whose replies `ReplyReader` may read (see `_reader`).
_PLAIN = (redis.connection.Connection, redis.connection.UnixDomainSocketConnection)
_PYTHON_PARSERS = (_RESP2Parser, _RESP3Parser)

#: What `PackedCalls.call` returns for calls it did not complete: send them the generic way.
UNSENT: Any = object()


def pack_args(args: Sequence[Arg]) -> bytes:
    """RESP bulk strings for ``args``, encoded as redis-py's default encoder does."""
    parts: list[bytes] = []
    append = parts.append
    for arg in args:
        kind = type(arg)
        # Exact types first (mypy does not narrow on them, hence the casts): nearly all.
        if kind is str:
            data = cast("str", arg).encode()
        elif kind is bytes:
            data = cast("bytes", arg)
        elif kind is int:
            data = b"%d" % cast("int", arg)
        else:
            data = _encode_other(arg)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(parts)


def _encode_other(arg: object) -> bytes:
    """A subclass of str, bytes or int (a `JobHandle` id), or a float."""
    if isinstance(arg, bytes):
        return bytes(arg)
    if isinstance(arg, str):
        return str.__str__(arg).encode()
    if isinstance(arg, int) and not isinstance(arg, bool):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode("ascii")
    raise TypeError(f"cannot pack a {type(arg).__name__} argument")


def command(count: int, packed: bytes) -> bytes:
    """A whole command of ``count`` arguments whose bulk strings are ``packed``."""
    return b"*%d\r\n%b" % (count, packed)


#: One `PackedCalls` per connection pool (by id: the value holds its pool, so the id is
#: not reused while the entry lives), while something uses it.
_SHARED: weakref.WeakValueDictionary[int, PackedCalls] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


class PackedCalls:
    """Send packed commands on a client's connection pool, when the client allows it."""

    __slots__ = (
        "__weakref__",
        "_local",
        "_lock",
        "_most",
        "_named",
        "_owners",
        "_pid",
        "_poll",
        "_pool",
    )

    def __init__(self, client: RedisClient) -> None:
        self._pool: Any = None
        self._poll = ReplyPoll()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._owners = 0
        self._most = 0
        self._pid = os.getpid()
        if isinstance(client, redis.cluster.RedisCluster):
            return
        plain: Any = client  # connection attributes are typed differently per release
        if getattr(plain, "connection", None) is not None:
            return  # single_connection_client: its lock and connection are redis-py's
        pool = plain.connection_pool
        kwargs = getattr(pool, "connection_kwargs", {})
        if kwargs.get("encoding", "utf-8") != "utf-8" or kwargs.get("encoding_errors") not in (
            None,
            "strict",
        ):
            return
        self._pool = pool
        # Kept connections count against the pool's bound: leave half of it to borrowers.
        bound = getattr(pool, "max_connections", None)
        self._most = min(OWNED, bound // 2) if isinstance(bound, int) else 0
        # redis-py 5 wants the command name, 8 warns when it is given.
        parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
        self._named = parameter is not None and parameter.default is inspect.Parameter.empty

    @classmethod
    def shared(cls, client: RedisClient) -> PackedCalls:
        """The `PackedCalls` of ``client``'s connection pool, made once per pool.

        Queues on one client (a queue and its siblings) share it, and so the kept
        connections' budget: else each would keep up to half the pool's bound.
        """
        pool = getattr(client, "connection_pool", None)
        if pool is None or getattr(client, "connection", None) is not None:
            return cls(client)  # a cluster, or a client on one dedicated connection
        with _SHARED_LOCK:
            calls = _SHARED.get(id(pool))
            if calls is None or calls._pool is not pool:
                calls = cls(client)
                if calls._pool is pool:  # usable: worth sharing
                    _SHARED[id(pool)] = calls
            return calls

    @property
    def usable(self) -> bool:
        """Whether calls can go this way at all."""
        return self._pool is not None

    def call(self, commands: Sequence[bytes], *, poll: bool = False) -> Any:
        """Send packed commands in one round trip and return their replies, or `UNSENT`.

        ``poll``: Redis answers within microseconds (a one-job enqueue), so wait for the
        reply by polling the socket rather than sleeping (`jobs.queue._reply_poll`).

        `UNSENT` when the connection failed before or after the commands went (so some
        may have run: only idempotent commands may be sent again) or the server did not
        know a script. Any other error reply is raised, as redis-py raises it, once
        every reply is read.
        """
        sent = self.send(commands)
        return sent if sent is UNSENT else sent.read(self._poll if poll else None)

    def send(self, commands: Sequence[bytes]) -> Any:
        """Send packed commands and return at once: the `Sent` returned reads their replies.

        Between the two the caller may do other work, while Redis runs the commands (the
        worker pool decodes one exchange's jobs while Redis runs the next). Its other
        calls meanwhile take another connection. Returns `UNSENT` when the commands could
        not be sent (the connection failed: some may have gone).
        """
        try:
            connection, owner = self._connection()
        except (redis.ConnectionError, redis.TimeoutError):
            return UNSENT
        try:
            connection.send_packed_command(commands)
        except BaseException as exc:
            connection.disconnect()
            if owner is None:
                self._pool.release(connection)
            if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
                return UNSENT
            raise
        if owner is not None:
            owner.busy = True  # its replies are due: this thread's next call borrows
        return Sent(self._pool, connection, owner, len(commands))

    def _connection(self) -> tuple[Any, _Owner | None]:
        """This thread's own connection and its `_Owner`, or one borrowed for this call and None.

        One is borrowed also while the thread's own awaits the replies of a `send`.
        """
        owner: _Owner | None = getattr(self._local, "owner", None)
        if owner is not None and owner.busy:
            return self._borrow(), None
        if owner is not None:
            connection = owner.connection
            if connection.pid == os.getpid():
                # A connection marked for reconnecting (a server's maintenance notice, in
                # redis-py 8) is reconnected on its next command, as the pool would.
                if getattr(connection, "should_reconnect", bool)():
                    connection.disconnect()
                return connection, owner
        if self._pid != os.getpid():
            self._forked()
        if self._owners < self._most:
            with self._lock:
                keep = self._owners < self._most
                if keep:
                    self._owners += 1
            if keep:
                try:
                    connection = self._borrow()
                except BaseException:
                    self._forget(self._pid)
                    raise
                owner = _Owner(connection)
                # A thread that ends gives its connection back to the pool, and so do all
                # threads when this object goes (its thread-local storage with it). The
                # finalizer holds the pool, not this object: a client dropped unclosed must
                # not be kept alive by the threads that used it.
                finalizer = weakref.finalize(
                    owner, _give_back, weakref.ref(self), self._pool, connection, self._pid
                )
                finalizer.atexit = False
                self._local.owner = owner
                return connection, owner
        return self._borrow(), None

    def _borrow(self) -> Any:
        pool = self._pool
        return pool.get_connection("EVALSHA") if self._named else pool.get_connection()

    def _forget(self, pid: int) -> None:
        """A kept connection was given back (or never taken): one owner less."""
        with self._lock:
            if pid == self._pid:  # else taken before a fork: the parent's to count
                self._owners -= 1

    def _forked(self) -> None:
        """In a forked child: the parent's kept connections are not this process's."""
        with self._lock:
            if self._pid != os.getpid():
                self._local = threading.local()
                self._owners = 0
                self._pid = os.getpid()


def _reader(connection: Any) -> ReplyReader | None:
    """A reader for ``connection``'s replies, or None where redis-py must read them.

    Only a plain TCP or Unix socket connection with redis-py's own Python parser, and
    nothing left unread in that parser's buffer: a Sentinel connection turns READONLY
    into a failover in its own read_response, an SSL socket buffers inside, and with
    hiredis the parsing is C already (not measured against this reader).
    """
    if type(connection) not in _PLAIN or not isinstance(connection._parser, _PYTHON_PARSERS):
        return None
    buffered = getattr(connection._parser, "_buffer", None)
    if buffered is not None and buffered.unread_bytes():
        return None
    return ReplyReader(connection._sock, connection.encoder.decode_responses)


def _read_response(connection: Any) -> Any:
    """redis-py's reading of one reply, an error reply returned as its exception."""
    try:
        return connection.read_response()
    except redis.ResponseError as exc:
        return exc  # a whole reply, read: the next one follows on the same connection


def _give_back(calls: weakref.ref[PackedCalls], pool: Any, connection: Any, pid: int) -> None:
    """A thread's kept connection goes back to its pool (the thread, or its owner, ended)."""
    owner = calls()
    if owner is not None:
        owner._forget(pid)
    # (After a fork, in the child: the pool, reset, does not take the parent's connection.)
    pool.release(connection)


class _Owner:
    """Holds a thread's own connection; its end (the thread's) gives it back."""

    __slots__ = ("__weakref__", "busy", "connection")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.busy = False  # replies of a `PackedCalls.send` are still to be read


class Sent:
    """Packed commands sent by `PackedCalls.send`, their replies still to be read.

    Exactly one of `read` and `abandon` must follow: the connection is not given back
    (nor, if it is the thread's own, used again) before.
    """

    __slots__ = ("_connection", "_count", "_owner", "_pool")

    def __init__(self, pool: Any, connection: Any, owner: _Owner | None, count: int) -> None:
        self._pool = pool
        self._connection = connection
        self._owner = owner
        self._count = count

    def read(self, poll: ReplyPoll | None = None) -> Any:
        """The replies, or `UNSENT` (see `PackedCalls.call`); raises a refusal.

        ``poll``: how to wait for the first reply, if not by blocking in ``recv``.
        """
        connection = self._connection
        try:
            reader = _reader(connection)
            if reader is not None and poll is not None:
                poll.wait(reader)
            if reader is None:
                replies = [_read_response(connection) for _ in range(self._count)]
            else:
                replies = [reader.read() for _ in range(self._count)]
                for reply in replies:
                    # LOADING and the like: redis-py raises them as connection errors.
                    if isinstance(reply, redis.ConnectionError):
                        raise reply
                if reader.stale or reader.pending:
                    connection.disconnect()  # see ReplyReader: the next call starts afresh
        except (redis.ConnectionError, redis.TimeoutError, OSError, Unreadable):
            connection.disconnect()
            return UNSENT
        except BaseException:
            # A reply half read (an interrupt) must not reach the connection's next user.
            connection.disconnect()
            raise
        finally:
            self._done()
        # The first refusal is raised, unless a script was missing.
        refusal: redis.ResponseError | None = None
        for reply in replies:
            if isinstance(reply, redis.ResponseError) and (
                refusal is None or isinstance(reply, NoScriptError)
            ):
                refusal = reply
        if isinstance(refusal, NoScriptError):
            return UNSENT
        if refusal is not None:
            raise refusal
        return replies

    def abandon(self) -> None:
        """Never read the replies: the connection is closed (they would reach its next user)."""
        self._connection.disconnect()
        self._done()

    def _done(self) -> None:
        if self._owner is None:
            self._pool.release(self._connection)
        else:
            self._owner.busy = False
