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

TLS options, for every ``rediss`` scheme (with Sentinel they apply to the sentinels and
to the data nodes alike): ``ssl_ca_certs`` (the CA file to verify the server with),
``ssl_certfile`` and ``ssl_keyfile`` (a client certificate, for servers that require
one), ``ssl_cert_reqs`` (``required``, the default, ``optional`` or ``none``) and
``ssl_check_hostname`` (``true``/``false``). Each is checked here (a file must exist)
and raises `ConfigError` naming it.

No error message shows a password: neither the URL's, nor a ``password`` query value.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import redis
import redis.cluster
import redis.sentinel

from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.queue._scripts import RedisClient

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
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_TLS = (*_TLS_FILES, "ssl_cert_reqs", "ssl_check_hostname")
_CERT_REQS = ("required", "optional", "none")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
#: A query option whose value is a secret: its value never shows in a message.
_SECRET_OPTION = re.compile(
    r"([?&;][^=&;#]*(?:password|passwd|secret|token)[^=&;#]*=)[^&;#]*", re.IGNORECASE
)
#: What splits a password when a URL is mangled (an unescaped ``/`` in it, say), so that
#: a parser's own error may show a piece of it.
_URL_DELIMITERS = re.compile(r"[/?#@:\[\]]")


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
    try:
        if scheme in SENTINEL_SCHEMES:
            return _sentinel(url)
        if scheme in CLUSTER_SCHEMES:
            return _cluster(url)
        _tls_options(url, parse_qsl(urlsplit(url).query, keep_blank_values=True))
        return Connection(redis.Redis.from_url(url))
    except ConfigError:
        raise
    except ValueError as exc:  # urllib's or redis-py's parser; either may quote the URL
        message = scrub(str(exc), url)
        raise ConfigError(f"redis url {redacted(url)!r} is invalid: {message}") from None


def redacted(url: str) -> str:
    """``url`` for a message: its password and every secret query value as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # Up to the last "@", so that a password with an unescaped "@", "/" or "?" is hidden
    # whole; an "@" in the query hides more than needed, which is the safe side.
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}{':***' if colon else ''}{rest[at:]}"
    return scheme + sep + _SECRET_OPTION.sub(r"\1***", rest)


def _secrets(url: str) -> list[str]:
    rest = url.partition("://")[2] or url
    found = []
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        found.append(rest[:at].partition(":")[2])
    found += [m.group(0).partition("=")[2] for m in _SECRET_OPTION.finditer(rest)]
    found += [unquote(f) for f in found]
    pieces = [p for f in found for p in _URL_DELIMITERS.split(f) if len(p) >= 3]
    return sorted({*found, *pieces} - {""}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (a parser's error message about ``url``) with the URL's secrets as ``***``."""
    text = text.replace(url, redacted(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _tls_options(url: str, query: list[tuple[str, str]]) -> dict[str, Any]:
    """The TLS options of ``query``, checked and converted for redis-py.

    Raises:
        ConfigError: naming the option: a bad value, a missing file, or TLS options on a
            URL that does not use TLS.
    """
    options: dict[str, Any] = {}
    tls = url.partition("://")[0].lower().startswith("rediss")
    for name, value in query:
        if name not in _TLS:
            continue
        where = f"redis url {redacted(url)!r}: {name}"
        if not tls:
            raise ConfigError(f"{where} needs a TLS URL (rediss://, rediss+sentinel://, ...)")
        if name in _TLS_FILES:
            if not os.path.isfile(value):
                raise ConfigError(f"{where}: no such file: {value!r}")
            options[name] = value
        elif name == "ssl_cert_reqs":
            if value not in _CERT_REQS:
                raise ConfigError(f"{where} must be one of {', '.join(_CERT_REQS)}, got {value!r}")
            options[name] = value
        elif value.lower() in _BOOLEANS:
            options[name] = _BOOLEANS[value.lower()]
        else:
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise ConfigError(f"redis url {redacted(url)!r}: ssl_keyfile needs ssl_certfile")
    return options


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
    shown = redacted(url)
    allowed = (*allowed, *_TLS)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed "["
        raise ConfigError(f"redis url {shown!r} is invalid: {scrub(str(exc), url)}") from None
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    auth: dict[str, Any] = {}
    if username:
        auth["username"] = unquote(username)
    if password:
        auth["password"] = unquote(password)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = _tls_options(url, query)
    for name, value in query:
        if name not in allowed:
            raise ConfigError(
                f"redis url {shown!r}: unknown option {name!r} (known: {', '.join(allowed)})"
            )
        if name in _TIMEOUTS:
            try:
                options[name] = float(value)
            except ValueError:
                raise ConfigError(
                    f"redis url {shown!r}: {name} must be a number of seconds, got {value!r}"
                ) from None
        elif name not in _TLS:
            options[name] = value
    options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    hosts = _hosts(netloc, default_port, shown)
    tls = parts.scheme.lower().startswith("rediss")
    return hosts, auth, options, parts.path, tls


def _sentinel(url: str) -> Connection:
    hosts, auth, options, path, tls = _parse(url, SENTINEL_PORT, _TIMEOUTS + _SENTINEL_AUTH)
    segments = [unquote(s) for s in path.split("/") if s]
    if not 1 <= len(segments) <= 2:
        raise ConfigError(
            f"redis url {redacted(url)!r}: the path must be /service or /service/db, got {path!r}"
        )
    service = segments[0]
    try:
        db = int(segments[1]) if len(segments) == 2 else 0
    except ValueError:
        raise ConfigError(f"redis url {redacted(url)!r}: bad db {segments[1]!r}") from None
    # The sentinels get the same timeouts, and over TLS the same TLS options.
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in options.items() if k in _TIMEOUTS or k in _TLS
    }
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
        raise ConfigError(f"redis url {redacted(url)!r}: a cluster has only db 0, got {path!r}")
    node_class: Any = redis.cluster.ClusterNode  # untyped in some redis-py releases
    nodes = [node_class(host, port) for host, port in hosts]
    client = redis.cluster.RedisCluster(startup_nodes=nodes, ssl=tls, **auth, **options)
    return Connection(client)
