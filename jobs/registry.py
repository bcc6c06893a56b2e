"""`Registry`: job type name -> handler, with optional typed (attrs) payloads."""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, get_args, get_origin

import attrs

from ._codec import describe
from ._validators import require_text
from .context import JobContext
from .errors import ConfigError, PayloadError

Handler = Callable[[JobContext, Any], Any]
#: ``middleware(ctx, call_next) -> result``: runs around a handler; ``call_next()`` runs
#: the next middleware, the last one the handler, and returns its result.
Middleware = Callable[[JobContext, Callable[[], Any]], Any]
H = TypeVar("H", bound=Callable[..., Any])
M = TypeVar("M", bound=Middleware)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def structure(cls: type, value: Any) -> Any:
    """Build an instance of the attrs class ``cls`` from decoded JSON.

    Nested attrs classes, and lists, tuples and dicts of them, are built too; other
    fields are passed as decoded. attrs validators on ``cls`` run as usual.

    Raises:
        PayloadError: ``value`` does not fit ``cls``; whatever the class's own code
            raised (a validator, a converter, ``__attrs_post_init__``) is its cause.
    """
    try:
        return _structure(cls, value)
    except PayloadError:
        raise
    except Exception as exc:  # a converter may raise anything (decimal.InvalidOperation)
        raise PayloadError(f"payload does not fit {cls.__name__}: {describe(exc)}") from exc


def _structure(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and attrs.has(tp):
        if not isinstance(value, dict):
            raise PayloadError(f"{tp.__name__} expects a JSON object, got {type(value).__name__}")
        hints = _hints(tp)
        kwargs = {}
        known: set[str] = set()
        for field in attrs.fields(tp):
            # Stored under the attribute name (attrs.asdict), passed under the __init__
            # name: they differ for private fields (``_token`` -> ``token``).
            alias = field.alias or field.name
            known.update((field.name, alias))
            if not field.init:
                continue
            stored = field.name if field.name in value else alias
            if stored in value:
                kwargs[alias] = _structure(hints.get(field.name, Any), value[stored])
        unknown = set(value) - known
        if unknown:
            raise PayloadError(f"{tp.__name__} has no field(s) {', '.join(sorted(unknown))}")
        return tp(**kwargs)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple) and args and isinstance(value, list):
        item = args[0]
        built = [_structure(item, v) for v in value]
        return built if origin is list else tuple(built)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _structure(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType) and value is not None:
        for option in args:
            if isinstance(option, type) and attrs.has(option) and isinstance(value, dict):
                return _structure(option, value)
    return value


@attrs.frozen
class RegisteredHandler:
    """A handler and how to build its payload.

    .. versionadded:: 1.0
    """

    name: str
    func: Handler
    payload_type: type | None = None

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

    .. versionadded:: 1.0
    .. versionchanged:: 1.2 ``middleware``.
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

    def register(self, name: str, handler: Handler, payload_type: type | None = None) -> None:
        """Register ``handler`` for jobs of type ``name``.

        Args:
            name: the job type, as given to ``Client.enqueue``.
            handler: ``handler(ctx, payload) -> result``.
            payload_type: an attrs class; the payload then arrives as an instance of it.
                Building it must not depend on anything but the payload: an exception
                from its validators or converters fails the job for good (retrying the
                same payload cannot help).

        Raises:
            ConfigError: an empty name, a handler that is not callable, or a payload type
                that is not an attrs class.
        """
        require_text("name", name)
        if not callable(handler):
            raise ConfigError(f"handler for {name!r} must be callable")
        if payload_type is not None and not (
            isinstance(payload_type, type) and attrs.has(payload_type)
        ):
            raise ConfigError(f"payload_type for {name!r} must be an attrs class")
        self._handlers[name] = RegisteredHandler(name, handler, payload_type)

    def register_func(self, name: str, handler: Handler) -> None:
        """Register ``handler`` for ``name``; its payload arrives as decoded JSON."""
        self.register(name, handler)

    def job(self, name: str, payload_type: type | None = None) -> Callable[[H], H]:
        """Decorator form of `register`; returns the function unchanged."""

        def decorate(func: H) -> H:
            self.register(name, func, payload_type)
            return func

        return decorate

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
