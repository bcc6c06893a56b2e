"""The WSGI application: routing, the session and CSRF checks, and the actions."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import redis

from jobs.dashboard import _html, _pages
from jobs.dashboard._data import Store, valid_name
from jobs.errors import ConfigError, JobNotFound, RedisUnavailable
from jobs.job import JobStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from jobs.queue._scripts import RedisClient

    StartResponse = Callable[..., Any]

logger = logging.getLogger("jobs.dashboard")

COOKIE = "jobs_dashboard"
#: How long a login lasts (seconds).
SESSION_SECONDS = 12 * 3600
#: The largest form body read (bytes); forms here are a few hundred bytes.
MAX_BODY = 64 * 1024
_STATIC = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
_SECURITY_HEADERS = [
    # Nothing but the dashboard's own files; inline SVG is markup, not a resource.
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
]


class _Response(Exception):
    """Raised to answer at once (a redirect, an error page)."""

    def __init__(
        self, status: HTTPStatus, body: str = "", headers: list[tuple[str, str]] | None = None
    ):
        super().__init__(status.phrase)
        self.status = status
        self.body = body
        self.headers = headers or []


class Dashboard:
    """The jobs dashboard as a WSGI application, mountable under any prefix.

    Example::

        app = jobs.dashboard.Dashboard(redis.Redis(), prefix="jobs", secret="s3cret")
        # Flask: app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/jobs": dashboard})

    Args:
        client: the Redis (or Redis Cluster) client the queues live in.
        prefix: the key namespace whose queues are shown (`RedisQueueConfig.prefix`).
        secret: enables the actions (retry, cancel, delete, bulk retry) for whoever logs
            in with it; without it the dashboard is read-only.
        queues: show these queues instead of discovering them with SCAN.

    Pages are read-only for everyone who can reach them: put the dashboard behind your
    own authentication (or keep it on localhost) when payloads are sensitive.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "jobs",
        secret: str | None = None,
        queues: list[str] | None = None,
    ) -> None:
        self.store = Store(client, prefix, queues)
        self.prefix = prefix
        self._secret = secret or None
        self._key = hashlib.sha256(b"jobs-dashboard\0" + (secret or "").encode()).digest()

    @property
    def actions_enabled(self) -> bool:
        """Whether a secret is configured, so that logged-in users may act."""
        return self._secret is not None

    # -- sessions ----------------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _session(self, environ: dict[str, Any]) -> str | None:
        """The session id of a valid, unexpired login cookie, else None."""
        if self._secret is None:
            return None
        cookies: str = environ.get("HTTP_COOKIE", "")
        for part in cookies.split(";"):
            name, _, value = part.strip().partition("=")
            if name != COOKIE:
                continue
            sid, _, rest = value.partition(".")
            expires, _, sig = rest.partition(".")
            if not expires.isdigit() or int(expires) < time.time():
                continue
            if hmac.compare_digest(sig, self._sign(f"session:{sid}.{expires}")):
                return sid
        return None

    def _csrf(self, sid: str | None) -> str | None:
        return None if sid is None else self._sign(f"csrf:{sid}")

    def _cookie(
        self, environ: dict[str, Any], base: str, value: str, max_age: int
    ) -> tuple[str, str]:
        # Secure when served over HTTPS (behind a proxy that says so); plain on localhost.
        secure = "; Secure" if environ.get("wsgi.url_scheme") == "https" else ""
        return (
            "Set-Cookie",
            f"{COOKIE}={value}; Path={base or '/'}; Max-Age={max_age}; HttpOnly; "
            f"SameSite=Strict{secure}",
        )

    # -- WSGI --------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (the WSGI entry point)."""
        base = environ.get("SCRIPT_NAME", "").rstrip("/")
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        sid = self._session(environ)
        page = _html.Page(
            base,
            datetime.now(UTC),
            actions=self.actions_enabled,
            csrf=self._csrf(sid),
            logged_in=sid is not None,
        )
        headers: list[tuple[str, str]] = []
        try:
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :], start_response)
            status, body = self._route(environ, page, method, path, headers)
        except _Response as answer:
            status, body, headers = answer.status, answer.body, answer.headers
        except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
            status = HTTPStatus.SERVICE_UNAVAILABLE
            body = _pages.message_page(page, "Redis unavailable", str(exc), self.prefix)
        data = body.encode("utf-8")
        start_response(
            f"{status.value} {status.phrase}",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
                *_SECURITY_HEADERS,
                *headers,
            ],
        )
        return [data] if method != "HEAD" else []

    def _static(self, name: str, start_response: StartResponse) -> Iterable[bytes]:
        if name not in _STATIC:
            start_response("404 Not Found", [("Content-Type", "text/plain"), *_SECURITY_HEADERS])
            return [b"not found"]
        data = (resources.files("jobs.dashboard") / "static" / name).read_bytes()
        start_response(
            "200 OK",
            [
                ("Content-Type", _STATIC[name]),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "max-age=3600"),
                *_SECURITY_HEADERS,
            ],
        )
        return [data]

    def _route(
        self,
        environ: dict[str, Any],
        page: _html.Page,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
    ) -> tuple[HTTPStatus, str]:
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        back = path + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        notice = query.get("notice", "")
        if method == "GET" and path != "/login":
            page.here = back
        posts = {"/action", "/login", "/logout"}
        if path in posts and method != "POST" and path != "/login":
            raise _Response(HTTPStatus.METHOD_NOT_ALLOWED, "POST only", [("Allow", "POST")])
        if path not in posts and method not in ("GET", "HEAD"):
            raise _Response(HTTPStatus.METHOD_NOT_ALLOWED, "GET only", [("Allow", "GET, HEAD")])
        if path == "/":
            names = self.store.queue_names()
            summaries = [self.store.summary(n) for n in names]
            return HTTPStatus.OK, _pages.overview(page, summaries, self.prefix, notice)
        if path == "/jobs":
            queue = self._queue_arg(page, query)
            try:
                status = JobStatus(query.get("status") or "pending")
            except ValueError:
                raise self._not_found(page, "No such status.") from None
            try:
                start = max(0, int(query.get("start") or 0))
            except ValueError:
                start = 0
            job_type, error_text = query.get("type", ""), query.get("error", "")
            result = self.store.page(queue, status, start, job_type, error_text)
            return HTTPStatus.OK, _pages.jobs_list(
                page, queue, status.value, result, job_type, error_text, notice, self.prefix, back
            )
        if path == "/job":
            queue = self._queue_arg(page, query)
            job_id = query.get("id", "").strip()
            try:
                job = self.store.queue(queue).get(job_id)
            except JobNotFound:
                raise self._not_found(
                    page, f"No job {job_id!r} in queue {queue!r} (or its record expired)."
                ) from None
            return HTTPStatus.OK, _pages.job_page(page, job, notice, self.prefix, back)
        if path == "/workers":
            names = self.store.queue_names()
            return HTTPStatus.OK, _pages.workers_page(
                page, {n: self.store.workers(n) for n in names}, self.prefix
            )
        if path == "/crons":
            names = self.store.queue_names()
            return HTTPStatus.OK, _pages.crons_page(
                page, {n: self.store.crons(n) for n in names}, self.prefix
            )
        if path == "/login":
            return self._login(environ, page, method, query, headers)
        if path == "/logout":
            form = self._form(environ)
            self._check_csrf(page, form)
            raise _Response(
                HTTPStatus.SEE_OTHER,
                "",
                [("Location", page.url("/")), self._cookie(environ, page.base, "", 0)],
            )
        if path == "/action":
            return self._action(environ, page)
        raise self._not_found(page, "No such page.")

    def _not_found(self, page: _html.Page, text: str) -> _Response:
        return _Response(
            HTTPStatus.NOT_FOUND, _pages.message_page(page, "Not found", text, self.prefix)
        )

    def _queue_arg(self, page: _html.Page, query: dict[str, str]) -> str:
        name = query.get("queue", "")
        if not valid_name(self.store, name):
            raise self._not_found(page, f"No queue {name!r}.")
        return name

    def _form(self, environ: dict[str, Any]) -> dict[str, str]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise _Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in fields.items()}

    def _check_csrf(self, page: _html.Page, form: dict[str, str]) -> None:
        if not page.actions:
            raise _Response(
                HTTPStatus.FORBIDDEN,
                _pages.message_page(
                    page, "Actions disabled", "Start the dashboard with a secret.", self.prefix
                ),
            )
        if page.csrf is None:
            raise _Response(
                HTTPStatus.FORBIDDEN,
                _pages.message_page(
                    page, "Log in first", "Your session is missing or expired.", self.prefix
                ),
            )
        if not hmac.compare_digest(form.get("csrf", ""), page.csrf):
            raise _Response(
                HTTPStatus.FORBIDDEN,
                _pages.message_page(
                    page, "Refused", "The form's token does not match.", self.prefix
                ),
            )

    def _back(self, page: _html.Page, back: str, notice: str) -> _Response:
        """A 303 to a page of this app (never elsewhere), with a notice to show."""
        parts = urlsplit(back)
        path = parts.path if back.startswith("/") and not back.startswith("//") else "/"
        if parts.scheme or parts.netloc or "\\" in back:
            path = "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items() if k != "notice"}
        query["notice"] = notice
        return _Response(
            HTTPStatus.SEE_OTHER, "", [("Location", page.base + path + "?" + urlencode(query))]
        )

    def _login(
        self,
        environ: dict[str, Any],
        page: _html.Page,
        method: str,
        query: dict[str, str],
        headers: list[tuple[str, str]],
    ) -> tuple[HTTPStatus, str]:
        if self._secret is None:
            raise _Response(
                HTTPStatus.FORBIDDEN,
                _pages.message_page(
                    page, "Actions disabled", "Start the dashboard with a secret.", self.prefix
                ),
            )
        if method != "POST":
            return HTTPStatus.OK, _pages.login_page(
                page, self.prefix, False, query.get("back", "/")
            )
        form = self._form(environ)
        if not hmac.compare_digest(form.get("secret", "").encode(), self._secret.encode()):
            logger.warning("dashboard: a login with a wrong secret")
            return HTTPStatus.UNAUTHORIZED, _pages.login_page(
                page, self.prefix, True, form.get("back", "/")
            )
        sid = secrets.token_urlsafe(16)
        expires = str(int(time.time()) + SESSION_SECONDS)
        value = f"{sid}.{expires}.{self._sign(f'session:{sid}.{expires}')}"
        answer = self._back(page, form.get("back", "/"), "Logged in.")
        answer.headers.append(self._cookie(environ, page.base, value, SESSION_SECONDS))
        raise answer

    def _action(self, environ: dict[str, Any], page: _html.Page) -> tuple[HTTPStatus, str]:
        form = self._form(environ)
        self._check_csrf(page, form)
        action, job_id, back = form.get("action", ""), form.get("id", ""), form.get("back", "/")
        queue = form.get("queue", "")
        if not valid_name(self.store, queue):
            raise self._not_found(page, f"No queue {queue!r}.")
        client = self.store.client_of(queue)
        try:
            if action == "retry":
                done = client.retry(job_id)
                notice = (
                    f"Job {job_id} is pending again."
                    if done
                    else (f"Job {job_id} was not failed or cancelled: nothing to retry.")
                )
            elif action == "cancel":
                done = client.cancel(job_id)
                notice = (
                    f"Job {job_id} cancelled."
                    if done
                    else (f"Job {job_id} had already finished: nothing to cancel.")
                )
            elif action == "delete":
                code = self.store.delete(queue, job_id)
                notice = {
                    1: f"Job {job_id} deleted.",
                    0: f"Job {job_id} is not finished: cancel it before deleting it.",
                }.get(code, f"No job {job_id}.")
                if code == 1 and back.startswith("/job?"):
                    back = "/jobs?" + urlencode({"queue": queue, "status": "failed"})
            elif action == "retry_failed":
                job_type = form.get("type", "").strip()
                if not job_type:
                    raise ConfigError("a job type is needed")
                count = client.retry_failed(job_type)
                notice = f"{count} failed job(s) of type {job_type} are pending again."
            else:
                raise _Response(HTTPStatus.BAD_REQUEST, "unknown action")
        except JobNotFound:
            notice = f"No job {job_id} (or its record expired)."
        except ConfigError as exc:
            notice = f"Refused: {exc}"
        logger.info("dashboard action %s on %s %s: %s", action, queue, job_id, notice)
        raise self._back(page, back, notice)
