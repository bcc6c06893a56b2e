"""Helpers of the dashboard tests: a queue with real jobs in every state, the WSGI app
called in-process, and the app served on a free port."""

from __future__ import annotations

import io
import re
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import attrs

import jobs
from jobs.dashboard import Dashboard, make_dashboard_server
from tests.integration._clients import make_client, wait_for_status

if TYPE_CHECKING:
    from collections.abc import Iterator

#: What the failing handler raises, and part of a payload: must show as text, never run.
EVIL = "<script>window.pwned=1</script>"


class Boom(Exception):
    """The failing handler's error."""


def _boom(ctx: jobs.JobContext, payload: Any) -> None:
    raise Boom(f"bad input {EVIL}")


@attrs.frozen
class Filled:
    """A queue filled by `fill_queue`: the ids of its jobs by what happened to them."""

    queue: str
    completed: list[str]
    failed: list[str]
    pending: list[str]


def fill_queue(redis_url: str, name: str) -> Filled:
    """Run real jobs on queue ``name``: completed, failed with a traceback, then pending."""
    registry = jobs.Registry()
    registry.register_func("resize", lambda ctx, payload: {"ok": payload})
    registry.register_func("charge", _boom)
    once = jobs.JobConfig(max_retries=0)
    with make_client(redis_url, registry, name=name) as client:
        completed = [str(client.enqueue("resize", {"n": i})) for i in range(3)]
        failed = [str(client.enqueue("charge", {"card": EVIL, "n": i}, once)) for i in range(2)]
        for job_id in completed:
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        for job_id in failed:
            wait_for_status(client, job_id, jobs.JobStatus.FAILED)
    with make_client(redis_url, name=name) as producer:  # no worker: these stay pending
        pending = [str(producer.enqueue("resize", {"n": 10 + i})) for i in range(2)]
    return Filled(name, completed, failed, pending)


@attrs.frozen
class Reply:
    """One response of the app."""

    status: int
    headers: dict[str, str]
    cookies: list[str]
    text: str


def call(
    app: Dashboard,
    path: str,
    query: dict[str, str] | None = None,
    *,
    method: str = "GET",
    form: dict[str, str] | None = None,
    cookie: str = "",
    script_name: str = "",
) -> Reply:
    """Call the WSGI app in-process, as a server would."""
    body = urlencode(form or {}).encode()
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "QUERY_STRING": urlencode(query or {}),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "HTTP_COOKIE": cookie,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started["status"], started["headers"] = status, headers

    data = b"".join(app(environ, start_response))
    headers = started["headers"]
    return Reply(
        status=int(started["status"].split()[0]),
        headers={k: v for k, v in headers if k != "Set-Cookie"},
        cookies=[v for k, v in headers if k == "Set-Cookie"],
        text=data.decode("utf-8"),
    )


def login(app: Dashboard, secret: str, script_name: str = "") -> tuple[str, str]:
    """Log in; the Cookie header to send and the CSRF token the pages then carry."""
    reply = call(app, "/login", method="POST", form={"secret": secret}, script_name=script_name)
    assert reply.status == 303, reply
    (cookie,) = reply.cookies
    pair = cookie.split(";")[0]
    page = call(app, "/", cookie=pair, script_name=script_name)
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match, page.text
    return pair, match.group(1)


@contextmanager
def served(app: Dashboard) -> Iterator[str]:
    """The app on a free port of 127.0.0.1, in a thread; yields its base URL."""
    server = make_dashboard_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="test-dashboard", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
