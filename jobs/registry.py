"""`Registry`: job type name -> handler, with optional typed payloads (see `jobs._typed`)."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from jobs import _typed
from jobs._limits import RateLimit, TypeLimits, parse_cap
from jobs._validators import check_name, require_text
from jobs.config import JobConfig
from jobs.context import JobContext
from jobs.errors import ConfigError
from jobs.job_type import JobType, payload_type_of, result_type_of
from jobs.queue._wire import job_args

if TYPE_CHECKING:
    from datetime import timedelta

    from jobs.backoff import Backoff

Handler = Callable[[JobContext, Any], Any]
#: ``middleware(ctx, call_next) -> result``: runs around a handler; ``call_next()`` runs
#: the next middleware, the last one the handler, and returns its result.
Middleware = Callable[[JobContext, Callable[[], Any]], Any]
H = TypeVar("H", bound=Callable[..., Any])
P = TypeVar("P")
R = TypeVar("R")
M = TypeVar("M", bound=Middleware)


def structure(cls: type, value: Any) -> Any:
    """Build an instance of ``cls`` (attrs, dataclass or pydantic) from decoded JSON.

    Raises:
        PayloadError: ``value`` does not fit ``cls``, naming the field; whatever the
            class's own code raised (a validator, a converter) is its cause.
    """
    return _typed.structure(cls, value)


class _NotSet(enum.Enum):
    TOKEN = "not set"


#: "Not declared" for `Registry.register`'s job settings (None is a value: no timeout).
NOT_SET = _NotSet.TOKEN


@attrs.frozen
class RegisteredHandler:
    """A handler, how to build its payload, and the job settings its type declares.

    .. versionadded:: 0.1
    """

    name: str
    func: Handler
    payload_type: type | None = None
    #: The job type's declared settings (a `JobConfig` holding them), and their names.
    defaults: JobConfig = attrs.field(factory=JobConfig)
    declared: frozenset[str] = frozenset()
    #: The type's declared rate limit and concurrency cap (enforced by the queue).
    limits: TypeLimits = attrs.field(factory=TypeLimits)
    #: The queue the type's jobs go to (None: the producer's own).
    queue: str | None = None

    def apply(self, config: JobConfig) -> JobConfig:
        """``config`` with the declared settings in every field it left at the default."""
        fill = self.declared & config.defaulted()
        if not fill:
            return config
        return attrs.evolve(config, **{name: getattr(self.defaults, name) for name in fill})

    def declaration(self) -> str:
        """The declared settings as enqueue.lua reads them from the queue's types hash.

        JSON with string values under one-letter names (p priority, r max_retries,
        t timeout_ms, b backoff spec, q queue), only for the declared ones. (enqueue.lua
        reads p, r, t and b; a producer without the registry reads q to route its jobs.)
        """
        priority, max_retries, timeout_ms, backoff, _, _ = job_args(self.defaults)
        values = {"p": priority, "r": max_retries, "t": timeout_ms, "b": backoff}
        names = {"priority": "p", "max_retries": "r", "timeout": "t", "retry_backoff": "b"}
        declared = {names[n]: str(values[names[n]]) for n in sorted(self.declared)}
        if self.queue is not None:
            declared["q"] = self.queue
        return json.dumps(declared)

    def payload(self, raw: Any) -> Any:
        """The payload as the handler wants it: ``raw``, or an instance of ``payload_type``.

        Raises:
            PayloadError: ``raw`` does not fit ``payload_type``.
        """
        return raw if self.payload_type is None else structure(self.payload_type, raw)


class Registry:
    """Maps job type names to handlers.

    Example::

        registry = jobs.Registry()
        registry.register_func("send_email", send_email)          # payload arrives as JSON
        registry.register("send_email", send_email, payload_type=Email)  # ... as an Email

        @registry.job("process_order")
        def process_order(ctx: jobs.JobContext, payload: dict) -> dict: ...

    A handler is ``handler(ctx, payload) -> result``: the result must be JSON-serializable
    (it is stored on the job); raising fails the attempt (retried by policy) and raising
    `PermanentError` fails the job at once. Registering a name again replaces its handler.

    Middleware runs around every handler of the registry (see `add_middleware`).

    Args:
        middleware: the first middleware, outermost first (`add_middleware` adds more).

    .. versionadded:: 0.1
    """

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self._handlers: dict[str, RegisteredHandler] = {}
        self._middleware: tuple[Middleware, ...] = ()
        for each in middleware:
            self.add_middleware(each)

    def add_middleware(self, middleware: M, *, outermost: bool = False) -> M:
        """Run ``middleware(ctx, call_next)`` around every handler; returns it (a decorator).

        Middleware added first is outermost: with ``a`` then ``b`` added, an attempt runs
        ``a``'s code before ``call_next()``, then ``b``'s, then the handler, then ``b``'s
        code after ``call_next()``, then ``a``'s (``outermost=True`` puts it ahead of
        every middleware added before). ``call_next()`` takes no arguments and
        returns the handler's result (or raises its exception); what the middleware
        returns is the attempt's result, and an exception it raises fails the attempt
        exactly as the handler's would (`PermanentError`: at once, anything else:
        retried by policy). A middleware that does not call ``call_next()`` skips the
        handler. The job is ``ctx.job`` (its raw payload ``ctx.job.payload``).

        Middleware runs in the handler's thread, once the handler is found and its
        payload built; the pool's success and error handlers see the outcome it shaped.
        A context manager is wrapped in one line::

            @registry.add_middleware
            def in_transaction(ctx, call_next):
                with database.transaction():
                    return call_next()

        Raises:
            ConfigError: ``middleware`` is not callable.
        """
        if not callable(middleware):
            raise ConfigError(f"middleware must be callable, got {middleware!r}")
        if outermost:
            self._middleware = (middleware, *self._middleware)
        else:
            self._middleware = (*self._middleware, middleware)
        return middleware

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The middleware, outermost first."""
        return self._middleware

    def call(self, handler: RegisteredHandler, ctx: JobContext, payload: Any) -> Any:
        """Run ``handler`` with ``payload`` inside every middleware; its result.

        Raises:
            Exception: whatever the handler or a middleware raised.
        """
        chain = self._middleware
        if not chain:
            return handler.func(ctx, payload)

        def step(index: int) -> Any:
            if index == len(chain):
                return handler.func(ctx, payload)
            return chain[index](ctx, lambda: step(index + 1))

        return step(0)

    def register(
        self,
        name: str,
        handler: Handler,
        payload_type: type | None = None,
        *,
        max_retries: int | _NotSet = NOT_SET,
        retry_backoff: Backoff | _NotSet = NOT_SET,
        timeout: float | timedelta | _NotSet | None = NOT_SET,
        priority: int | _NotSet = NOT_SET,
        rate_limit: str | RateLimit | None = None,
        max_concurrency: int | None = None,
        queue: str | None = None,
    ) -> None:
        """Register ``handler`` for jobs of type ``name``, declaring its job settings once.

        The declared settings (``max_retries``, ``retry_backoff``, ``timeout``,
        ``priority``, as in `JobConfig`) apply to every job of the type whose enqueue left
        them at the library default: from a client that has this registry, and, once a
        worker pool with it has started, from any producer of the queue (it publishes
        them in Redis, where the enqueue script reads them). An explicit `JobConfig`
        field wins.

        Args:
            name: the job type, as given to ``Client.enqueue``.
            handler: ``handler(ctx, payload) -> result``.
            payload_type: an attrs class, a dataclass or a pydantic model; the payload
                then arrives as an instance of it (nested classes, ``Optional``, lists,
                dicts, ``datetime``, ``date``, ``Enum``, ``UUID`` and ``Decimal`` fields
                included).
                Building it must not depend on anything but the payload: an exception
                from its validators or converters fails the job for good (retrying the
                same payload cannot help).
            max_retries: declared retries after the first attempt.
            retry_backoff: declared delay before each retry.
            timeout: declared per-attempt timeout (None: none).
            priority: declared priority.
            rate_limit: at most this many jobs of the type start per second, minute or
                hour across every worker (``"10/s"``, ``"5/m"``, ``"100/h"``; see
                `RateLimit` for the spacing); None: no limit.
            max_concurrency: at most this many jobs of the type run at once across every
                worker; None: no cap.
            queue: the name of the queue the type's jobs go to, on the producer's Redis
                and prefix (None: the producer's own queue). A client with this registry
                sends them there; so does a producer without it, once a worker pool
                with it has started (looked up once a minute per type). A pool with this
                registry serves the queues its types name along with its own, unless
                ``WorkerPoolConfig.queues`` says which to serve.

        The two limits are published by every worker pool with this registry when it
        starts (a queue may override them: `RedisQueueConfig.rate_limits` and
        ``concurrency_limits``) and enforced when jobs are fetched: a job over its
        type's limits waits, still pending, while other types' jobs go on.

        Raises:
            ConfigError: an empty name, a handler that is not callable, a payload type
                that is none of those, or an invalid setting (named).
        """
        require_text("name", name)
        if not callable(handler):
            raise ConfigError(f"handler for {name!r} must be callable")
        if payload_type is not None and not (
            isinstance(payload_type, type) and _typed.is_typed(payload_type)
        ):
            raise ConfigError(
                f"payload_type for {name!r} must be an attrs class, a dataclass or a pydantic model"
            )
        given = {
            "max_retries": max_retries,
            "retry_backoff": retry_backoff,
            "timeout": timeout,
            "priority": priority,
        }
        declared: dict[str, Any] = {k: v for k, v in given.items() if v is not NOT_SET}
        defaults = JobConfig(**declared)  # validates them, naming the field
        limits = TypeLimits(
            None if rate_limit is None else RateLimit.parse(rate_limit),
            None if max_concurrency is None else parse_cap(max_concurrency),
        )
        if queue is not None:
            check_name("queue", queue)
        self._handlers[name] = RegisteredHandler(
            name, handler, payload_type, defaults, frozenset(declared), limits, queue
        )

    def register_func(self, name: str, handler: Handler, **settings: Any) -> None:
        """Register ``handler`` for ``name``; its payload arrives as decoded JSON.

        ``settings``: the job settings to declare, as in `register`.
        """
        self.register(name, handler, **settings)

    def job(self, name: str, payload_type: type | None = None, **settings: Any) -> Callable[[H], H]:
        """Decorator form of `register`; returns the function unchanged.

        Example::

            @registry.job("resize", timeout=60, max_retries=5, rate_limit="10/s", max_concurrency=3)
            def resize(ctx: jobs.JobContext, payload: dict) -> dict: ...
        """

        def decorate(func: H) -> H:
            self.register(name, func, payload_type, **settings)
            return func

        return decorate

    def job_type(
        self, name: str, **settings: Any
    ) -> Callable[[Callable[[JobContext, P], R]], JobType[P, R]]:
        """Decorator: register the handler, and return it as a typed `JobType`.

        The payload class comes from the handler's second parameter's annotation, the
        result class from its return annotation (see `jobs.job_type`); ``settings`` are
        declared as in `register`. Pass the returned `JobType` to `Client.enqueue` for a
        payload checked by mypy and a result typed as the handler returns it.
        """

        def decorate(func: Callable[[JobContext, P], R]) -> JobType[P, R]:
            self.register(name, func, payload_type_of(func), **settings)
            return JobType(name, func, result_type_of(func))

        return decorate

    def declarations(self) -> dict[str, str]:
        """Every registered type's declared settings, as a worker pool publishes them."""
        return {name: handler.declaration() for name, handler in self._handlers.items()}

    def queues(self, besides: str | None = None) -> list[str]:
        """The queues the registered types name (`register`'s ``queue``), in order.

        ``besides``: a queue name to leave out (the client's own).
        """
        named = (handler.queue for handler in self._handlers.values())
        return list(dict.fromkeys(n for n in named if n is not None and n != besides))

    def limits(self) -> dict[str, TypeLimits]:
        """Every registered type's declared limits (empty ones included: they clear)."""
        return {name: handler.limits for name, handler in self._handlers.items()}

    def get(self, name: str) -> RegisteredHandler | None:
        """The handler registered for ``name``, or None."""
        return self._handlers.get(name)

    def names(self) -> list[str]:
        """The registered job types, sorted."""
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
