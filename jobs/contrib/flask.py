"""Flask integration: `Jobs`, an extension with app-context handlers and ``flask jobs`` commands.

Three lines give a Flask application background jobs::

    from jobs.contrib.flask import Jobs

    background = Jobs(app)            # or Jobs() ... background.init_app(app)

    @background.job("send_email")
    def send_email(ctx, payload):     # runs inside app.app_context()
        ...

and ``flask jobs worker`` runs them (``flask jobs scheduler``, ``flask jobs stats``).

Settings, read from ``app.config`` by `Jobs.init_app`:

===========================  ===========================================================
``JOBS_REDIS_URL``           where the queue lives (else ``$REDIS_URL``, else
                             ``redis://localhost:6379/0``); any URL
                             `RedisQueue.from_url` takes
``JOBS_QUEUE``               the queue's name (``default``)
``JOBS_PREFIX``              the key prefix (``jobs``)
``JOBS_QUEUE_OPTIONS``       more `RedisQueueConfig` fields, as a dict
``JOBS_WORKER_POOL_CONFIG``  a `WorkerPoolConfig`, or a dict of its fields, for
                             ``flask jobs worker``
``JOBS_BEFORE_ENQUEUE``      ``ClientConfig.before_enqueue`` hooks
===========================  ===========================================================

Each application gets one producer `Client` (thread-safe: every request thread shares
it), at ``background.client`` inside its app context. Handlers run inside the
application's ``app_context()`` (a middleware, outermost: other middleware runs inside
it too), so ``flask.current_app``, ``flask.g`` and Flask-SQLAlchemy's ``db.session``
work in them; ``Jobs(app_context=False)`` leaves it out. `Jobs.enqueue_after_commit`
enqueues once the SQLAlchemy transaction commits, and never if it rolls back.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

import attrs
import click
import flask
from flask.cli import AppGroup

from jobs import _codec
from jobs._client_config import ClientConfig
from jobs.cli import _format as fmt
from jobs.cli._logging import configure_logging
from jobs.cli._serve import exit_now, serve
from jobs.client import Client
from jobs.config import JobConfig, WorkerPoolConfig
from jobs.errors import ConfigError
from jobs.queue.redis_queue import RedisQueue
from jobs.registry import Registry
from jobs.schedule.scheduler import Scheduler

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs.context import JobContext
    from jobs.handle import JobHandle
    from jobs.registry import H
    from jobs.schedule.cron_job import CronJob

__all__ = ["Jobs"]

#: Where the queue is when neither ``JOBS_REDIS_URL`` nor ``$REDIS_URL`` says.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

#: The key of ``app.extensions`` and of ``session.info`` this module uses.
EXTENSION = "jobs"
_PENDING = "jobs.after_commit"


@attrs.frozen
class _AppState:
    """What the extension keeps for one application (``app.extensions["jobs"]``)."""

    jobs: Jobs
    queue: RedisQueue
    client: Client


class Jobs:
    """The Flask extension: one queue and one producer client per app, handlers in its context.

    Args:
        app: the application; or call `init_app` later (application factories).
        registry: the handlers; a new `Registry` by default (``background.registry``).
        app_context: run every handler inside the application's ``app_context()``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        registry: Registry | None = None,
        app_context: bool = True,
    ) -> None:
        #: The handlers every app of this extension runs.
        self.registry = registry if registry is not None else Registry()
        #: The cron jobs ``flask jobs scheduler`` (and ``worker --scheduler``) runs.
        self.cron_jobs: list[CronJob] = []
        self._lock = threading.Lock()
        # Which app a client belongs to (a worker's client resolves its app through it),
        # and every app, for a client that no app made (a test's).
        self._apps: weakref.WeakKeyDictionary[Client, flask.Flask] = weakref.WeakKeyDictionary()
        self._all_apps: weakref.WeakSet[flask.Flask] = weakref.WeakSet()
        if app_context:
            self.registry.add_middleware(self._in_app_context, outermost=True)
        if app is not None:
            self.init_app(app)

    # -- set-up ----------------------------------------------------------------------

    def init_app(self, app: flask.Flask) -> None:
        """Read the settings from ``app.config``, make the app's client, add ``flask jobs``.

        No connection is made here.

        Raises:
            ConfigError: a setting is invalid (a malformed URL, an unknown option).
        """
        config = app.config
        url = config.get("JOBS_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
        queue = RedisQueue.from_url(
            url,
            name=config.get("JOBS_QUEUE", "default"),
            prefix=config.get("JOBS_PREFIX", "jobs"),
            **dict(config.get("JOBS_QUEUE_OPTIONS") or {}),
        )
        try:
            client = Client(
                ClientConfig(
                    queue=queue,
                    registry=self.registry,
                    worker_pool_config=_pool_config(config.get("JOBS_WORKER_POOL_CONFIG")),
                    before_enqueue=tuple(config.get("JOBS_BEFORE_ENQUEUE") or ()),
                )
            )
        except BaseException:
            queue.close()
            raise
        app.extensions[EXTENSION] = _AppState(self, queue, client)
        with self._lock:
            self._apps[client] = app
            self._all_apps.add(app)
        app.cli.add_command(self._commands())

    @staticmethod
    def _state(app: flask.Flask | None = None) -> _AppState:
        if app is None:
            if not flask.has_app_context():
                raise RuntimeError(
                    "jobs.contrib.flask: no application context (use it in a request, a "
                    "CLI command, or inside app.app_context())"
                )
            app = flask.current_app
        state = app.extensions.get(EXTENSION)
        if not isinstance(state, _AppState):
            raise RuntimeError(f"Jobs.init_app was not called for the application {app.name!r}")
        return state

    def job(self, name: str, payload_type: type | None = None) -> Callable[[H], H]:
        """Decorator: register a handler (`Registry.job`)."""
        return self.registry.job(name, payload_type)

    def schedule(self, cron_job: CronJob) -> CronJob:
        """Add a cron job for ``flask jobs scheduler`` (and ``flask jobs worker --scheduler``)."""
        self.cron_jobs.append(cron_job)
        return cron_job

    # -- producing -------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The current application's client (thread-safe, shared by every request)."""
        return self._state().client

    def client_for(self, app: flask.Flask) -> Client:
        """``app``'s client, outside its application context."""
        return self._state(app).client

    def enqueue(
        self, job_type: str, payload: Any = None, config: JobConfig | None = None
    ) -> JobHandle:
        """Enqueue with the current application's client (`Client.enqueue`)."""
        return self.client.enqueue(job_type, payload, config)

    def enqueue_after_commit(
        self,
        job_type: str,
        payload: Any = None,
        config: JobConfig | None = None,
        *,
        session: Any = None,
    ) -> None:
        """Enqueue once ``session``'s transaction commits; never if it rolls back.

        For a job that reads what the request writes: enqueued at once, a worker could
        run it before the commit (or after a rollback) and find nothing. The payload is
        checked now (`PayloadError` here, not at commit). The jobs are enqueued, in
        order, by SQLAlchemy's ``after_commit`` event, with the current application's
        client; a failure there (Redis unreachable) comes out of ``commit()``, the
        database change already made. Tied to the outermost transaction: a savepoint
        rolled back does not drop them, and jobs asked for while no transaction has
        begun wait for the session's next commit.

        Args:
            job_type: the handler name to run it with.
            payload: JSON-serializable data, or an attrs instance.
            config: as for `Client.enqueue`.
            session: a SQLAlchemy ``Session`` or ``scoped_session``; Flask-SQLAlchemy's
                ``db.session`` of the current application by default.

        Raises:
            PayloadError: the payload is not JSON.
            ConfigError: no session given and no Flask-SQLAlchemy on the application.
        """
        from sqlalchemy import event
        from sqlalchemy.orm import scoped_session

        client = self.client
        _codec.dumps(payload)
        if session is None:
            db = flask.current_app.extensions.get("sqlalchemy")
            if db is None:
                raise ConfigError(
                    "enqueue_after_commit needs session= (no Flask-SQLAlchemy on this app)"
                )
            session = db.session
        if isinstance(session, scoped_session):
            session = session()
        if not event.contains(session, "after_commit", _after_commit):
            event.listen(session, "after_commit", _after_commit)
            event.listen(session, "after_transaction_end", _after_transaction_end)
        session.info.setdefault(_PENDING, []).append((client, job_type, payload, config))

    # -- running ---------------------------------------------------------------------

    def _app_for(self, client: Client | None) -> flask.Flask:
        with self._lock:
            app = self._apps.get(client) if client is not None else None
            if app is not None:
                return app
            apps = list(self._all_apps)
        if len(apps) == 1:
            return apps[0]
        raise RuntimeError(
            f"jobs.contrib.flask: cannot tell which of {len(apps)} applications runs this job "
            "(run it with a client the extension made: Jobs.client_for(app))"
        )

    def _in_app_context(self, ctx: JobContext, call_next: Callable[[], Any]) -> Any:
        """Middleware: run the handler inside its application's context."""
        if flask.has_app_context():
            return call_next()  # a test (or a command) pushed one already
        with self._app_for(ctx.client).app_context():
            return call_next()

    def worker_client(self, app: flask.Flask, **pool_options: Any) -> Client:
        """A client to run ``app``'s worker pool with: its settings, ``pool_options`` on top.

        ``pool_options`` are `WorkerPoolConfig` fields (``num_workers=20`` ...).
        """
        base = self._state(app).client
        pool = attrs.evolve(base.config.worker_pool_config, **pool_options)
        client = Client(attrs.evolve(base.config, worker_pool_config=pool))
        with self._lock:
            self._apps[client] = app
        return client

    def _scheduler(self, client: Client) -> Scheduler | None:
        if not self.cron_jobs:
            return None
        scheduler = Scheduler(client)
        for cron_job in self.cron_jobs:
            scheduler.register(cron_job)
        return scheduler

    def _commands(self) -> click.Group:
        group = AppGroup("jobs", help="Run jobs workers and schedulers; show the queue's counts.")
        log_level = click.option("--log-level", default="INFO", show_default=True)
        log_format = click.option(
            "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
        )

        @group.command("worker")
        @click.option("--workers", type=int, default=None, help="Handler threads.")
        @click.option("--scheduler", "with_scheduler", is_flag=True, help="Also run the cron jobs.")
        @log_level
        @log_format
        def worker(
            workers: int | None, with_scheduler: bool, log_level: str, log_format: str
        ) -> None:
            """Run a worker pool until SIGINT/SIGTERM, then stop gracefully."""
            configure_logging(log_level, log_format)
            app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
            options = {} if workers is None else {"num_workers": workers}
            client = self.worker_client(app, **options)
            scheduler = self._scheduler(client) if with_scheduler else None
            exit_now(serve(client, scheduler, "worker"))

        @group.command("scheduler")
        @log_level
        @log_format
        def scheduler(log_level: str, log_format: str) -> None:
            """Run the cron jobs (Jobs.schedule) until SIGINT/SIGTERM."""
            configure_logging(log_level, log_format)
            runner = self._scheduler(self.client)
            if runner is None:
                raise click.ClickException("no cron jobs: add some with Jobs.schedule()")
            sys.exit(serve(None, runner, "scheduler"))

        @group.command("stats")
        @click.option("--json", "as_json", is_flag=True, help="One JSON object.")
        def stats(as_json: bool) -> None:
            """Print the queue's counts, one ``field: value`` per line."""
            counts = self.client.stats()
            if as_json:
                click.echo(json.dumps(fmt.stats_dict(counts), indent=2))
            else:
                click.echo("\n".join(fmt.stats_lines(counts)))

        return group


def _pool_config(value: object) -> WorkerPoolConfig:
    if value is None:
        return WorkerPoolConfig()
    if isinstance(value, WorkerPoolConfig):
        return value
    if isinstance(value, dict):
        return WorkerPoolConfig(**value)
    raise ConfigError(
        f"JOBS_WORKER_POOL_CONFIG must be a WorkerPoolConfig or a dict, got {value!r}"
    )


def _after_commit(session: Any) -> None:
    for client, job_type, payload, config in session.info.pop(_PENDING, []):
        client.enqueue(job_type, payload, config)


def _after_transaction_end(session: Any, transaction: Any) -> None:
    # The outermost transaction ended without a commit (a rollback, a close): the jobs
    # it would have enqueued are dropped. After a commit, `_after_commit` took them.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
