"""A web dashboard for the queues of one Redis: a plain WSGI application (stdlib only).

``python -m jobs dashboard`` serves it; any WSGI application can mount it under a prefix
(it honours ``SCRIPT_NAME``). See `Dashboard`.
"""

from __future__ import annotations

import logging
import socket
import socketserver
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from jobs.dashboard._app import Dashboard

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Dashboard", "make_dashboard_server"]

logger = logging.getLogger("jobs.dashboard")


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so that a slow page never holds the others up."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def make_dashboard_server(
    app: Callable[..., Any], host: str = "127.0.0.1", port: int = 8765
) -> WSGIServer:
    """A threaded wsgiref server for ``app``, bound (port 0 picks a free port).

    Call ``serve_forever()`` on it, and ``shutdown()`` from another thread to stop it.
    """
    server_class = _Server6 if ":" in host else _Server
    return make_server(host, port, app, server_class=server_class, handler_class=_Handler)
