"""Where a lost or refused Redis connection becomes `RedisUnavailable`.

Context managers written as classes, not ``@contextmanager`` generators: every Redis
call of a queue runs inside one, and a generator-based one costs 1.3 us a call against
0.2 (timeit), a tenth of a one-job enqueue's Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import redis
import redis.exceptions

from jobs.errors import RedisUnavailable
from jobs.queue._wire import address

if TYPE_CHECKING:
    from types import TracebackType

    from jobs.queue._scripts import RedisClient


class AsUnavailable:
    """Raise `RedisUnavailable` for a connection lost or a server refusing credentials.

    With ``any_error``: for every other Redis error too, except an ACL refusal (NOPERM),
    the operator's to fix. A worker pool treats whatever Redis answers instead of doing
    the call (READONLY during a failover, LOADING, CLUSTERDOWN, a cluster being
    resharded) as a pause: it retries while its leases hold, so it sees one error type.

    Holds no state of a call: one instance serves every thread.
    """

    __slots__ = ("_any_error", "_client")

    def __init__(self, client: RedisClient, *, any_error: bool) -> None:
        self._client = client
        self._any_error = any_error

    def _address(self) -> str:
        return address(self._client)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            return False
        if isinstance(exc, redis.AuthenticationError):
            raise self._refused_credentials(exc) from exc
        if isinstance(exc, redis.ResponseError):
            # Older redis-py send no handshake, so a server that wants a password answers
            # the first command itself: NOAUTH, or for a long one a protocol error.
            text = str(exc)
            if text.startswith("NOAUTH") or "unauthenticated" in text:
                raise self._refused_credentials(exc) from redis.AuthenticationError(text)
        elif isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            raise RedisUnavailable(f"cannot reach Redis at {self._address()}: {exc}") from exc
        if (
            self._any_error
            and isinstance(exc, (redis.RedisError, redis.exceptions.RedisClusterException))
            and not isinstance(exc, redis.exceptions.NoPermissionError)
        ):
            raise RedisUnavailable(
                f"Redis at {self._address()} refused the call for now: {type(exc).__name__}: {exc}"
            ) from exc
        return False

    def _refused_credentials(self, exc: BaseException) -> RedisUnavailable:
        return RedisUnavailable(
            f"Redis at {self._address()} refused the credentials (wrong or missing "
            f"password or user): {exc}"
        )
