"""``python -m jobs dashboard``: serve the web dashboard until SIGINT or SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from jobs.cli._logging import configure_logging

if TYPE_CHECKING:
    import argparse

logger = logging.getLogger("jobs.cli")

SECRET_ENV = "JOBS_DASHBOARD_SECRET"


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    """The dashboard subcommand's own options."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this host only)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="port to listen on (default: 8765; 0: any free)"
    )
    parser.add_argument(
        "--secret",
        metavar="SECRET",
        help=f"enables retry/cancel/delete for whoever logs in with it (default: ${SECRET_ENV}; "
        "without one the dashboard is read-only)",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard of every queue under --prefix until SIGINT or SIGTERM."""
    # Imported here: cli imports this module, and other commands need no web server.
    from jobs.cli._connect import open_queue, ping
    from jobs.dashboard import Dashboard, make_dashboard_server

    configure_logging(args.log_level, args.log_format)
    queue = open_queue(args)
    try:
        ping(queue)
        secret = args.secret or os.environ.get(SECRET_ENV) or None
        app = Dashboard(queue.client, prefix=args.prefix, secret=secret)
        server = make_dashboard_server(app, args.host, args.port)
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"jobs dashboard: http://{shown}:{server.server_port}/", flush=True)
        if secret is None:
            logger.info("read-only: set --secret or $%s to enable actions", SECRET_ENV)
        if not _is_loopback(args.host):
            logger.warning(
                "listening on %s: anyone who can reach it can read every job's payload",
                args.host,
            )
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        thread = threading.Thread(target=server.serve_forever, name="jobs-dashboard", daemon=True)
        thread.start()
        try:
            stop.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            server.shutdown()
            server.server_close()
            thread.join()
        logger.info("dashboard stopped")
    finally:
        queue.close()
    return 0
