"""Turning a Redis URL into a client: plain Redis, Sentinel, or Cluster.

`RedisQueue.from_url` (and so the command line's ``--redis-url``) accepts:

- ``redis://``, ``rediss://``, ``unix://``: one server, as ``redis.Redis.from_url``;
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``: the
  current master of a Sentinel-monitored ``service``, found through the listed
  sentinels (port 26379 by default); the client follows failovers by itself;
- ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]``: a Redis Cluster,
  discovered from any of the listed nodes (port 6379 by default).

``rediss+sentinel`` and ``rediss+cluster`` use TLS. The password in the URL is the
data nodes' password. Query options (all optional): ``socket_timeout`` and
``socket_connect_timeout`` (seconds), and for Sentinel ``sentinel_username`` and
``sentinel_password`` when the sentinels themselves require a login.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import redis
import redis.cluster
import redis.sentinel

from .errors import ConfigError

if TYPE_CHECKING:
    from ._scripts import RedisClient

SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
#: Default ports of a sentinel and of a data node.
SENTINEL_PORT = 26379
REDIS_PORT = 6379
#: The socket timeout given when the URL names none: redis-py's own default, made
#: explicit so that the worker pool can keep its blocking waits below it.
DEFAULT_SOCKET_TIMEOUT = 5.0

_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")
_SENTINEL_AUTH = ("sentinel_username", "sentinel_password")


@attrs.frozen
class Connection:
    """A client made from a URL, and how to close everything it opened."""

    client: RedisClient
    sentinel: redis.sentinel.Sentinel | None = None

    def close(self) -> None:
        """Close the client, and the sentinel connections when there are any."""
        self.client.close()
        if self.sentinel is not None:
            # Sentinel.close() is newer than the oldest redis-py we support.
            for sentinel in self.sentinel.sentinels:
                sentinel.close()


def connect(url: str) -> Connection:
    """A client for ``url`` (see the module docstring for the schemes).

    Raises:
        ConfigError: the URL is malformed, or has an unknown option.
    """
    scheme = url.partition("://")[0].lower()
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(url)
    if scheme in CLUSTER_SCHEMES:
        return _cluster(url)
    try:
        return Connection(redis.Redis.from_url(url))
    except ValueError as exc:
        raise ConfigError(f"redis url {_redacted(url)!r} is invalid: {exc}") from exc


def _redacted(url: str) -> str:
    # Error messages end up in logs: never print the password.
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{hosts}"


def _hosts(netloc: str, default_port: int, url: str) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [IPv6]:port
            host, _, port_text = part[1:].partition("]")
            port_text = port_text.removeprefix(":")
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigError(f"redis url {url!r}: bad port in {part!r}") from None
        if not host or not 0 < port < 65536:
            raise ConfigError(f"redis url {url!r}: bad host or port in {part!r}")
        hosts.append((host, port))
    if not hosts:
        raise ConfigError(f"redis url {url!r} names no host")
    return hosts


def _parse(url: str, default_port: int, allowed: tuple[str, ...]) -> tuple[Any, ...]:
    redacted = _redacted(url)
    parts = urlsplit(url)
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    auth: dict[str, Any] = {}
    if username:
        auth["username"] = unquote(username)
    if password:
        auth["password"] = unquote(password)
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in allowed:
            raise ConfigError(
                f"redis url {redacted!r}: unknown option {name!r} (known: {', '.join(allowed)})"
            )
        if name in _TIMEOUTS:
            try:
                options[name] = float(value)
            except ValueError:
                raise ConfigError(
                    f"redis url {redacted!r}: {name} must be a number of seconds, got {value!r}"
                ) from None
        else:
            options[name] = value
    options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    hosts = _hosts(netloc, default_port, redacted)
    tls = parts.scheme.lower().startswith("rediss")
    return hosts, auth, options, parts.path, tls


def _sentinel(url: str) -> Connection:
    hosts, auth, options, path, tls = _parse(url, SENTINEL_PORT, _TIMEOUTS + _SENTINEL_AUTH)
    segments = [unquote(s) for s in path.split("/") if s]
    if not 1 <= len(segments) <= 2:
        raise ConfigError(
            f"redis url {_redacted(url)!r}: the path must be /service or /service/db, got {path!r}"
        )
    service = segments[0]
    try:
        db = int(segments[1]) if len(segments) == 2 else 0
    except ValueError:
        raise ConfigError(f"redis url {_redacted(url)!r}: bad db {segments[1]!r}") from None
    sentinel_kwargs: dict[str, Any] = {k: v for k, v in options.items() if k in _TIMEOUTS}
    for name in _SENTINEL_AUTH:
        if name in options:
            sentinel_kwargs[name.removeprefix("sentinel_")] = options.pop(name)
    if tls:
        sentinel_kwargs["ssl"] = True
        options["ssl"] = True
    # Through Any: these are untyped in some redis-py releases and typed in others, so no
    # `type: ignore` could be right for both.
    sentinel_class: Any = redis.sentinel.Sentinel
    sentinel: redis.sentinel.Sentinel = sentinel_class(
        hosts, sentinel_kwargs=sentinel_kwargs, **options
    )
    master_for: Any = sentinel.master_for
    client: redis.Redis = master_for(service, db=db, **auth)
    return Connection(client, sentinel)


def _cluster(url: str) -> Connection:
    hosts, auth, options, path, tls = _parse(url, REDIS_PORT, _TIMEOUTS)
    if path.strip("/") not in ("", "0"):
        raise ConfigError(f"redis url {_redacted(url)!r}: a cluster has only db 0, got {path!r}")
    node_class: Any = redis.cluster.ClusterNode  # untyped in some redis-py releases
    nodes = [node_class(host, port) for host, port in hosts]
    client = redis.cluster.RedisCluster(startup_nodes=nodes, ssl=tls, **auth, **options)
    return Connection(client)
