"""`Registry`: job type name -> handler, with optional typed payloads (see `jobs._typed`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from . import _typed
from ._validators import require_text
from .context import JobContext
from .errors import ConfigError

Handler = Callable[[JobContext, Any], Any]
H = TypeVar("H", bound=Callable[..., Any])


def structure(cls: type, value: Any) -> Any:
    """Build an instance of ``cls`` (attrs, dataclass or pydantic) from decoded JSON.

    Raises:
        PayloadError: ``value`` does not fit ``cls``, naming the field; whatever the
            class's own code raised (a validator, a converter) is its cause.
    """
    return _typed.structure(cls, value)


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

    .. versionadded:: 1.0
    """

    def __init__(self) -> None:
        self._handlers: dict[str, RegisteredHandler] = {}

    def register(self, name: str, handler: Handler, payload_type: type | None = None) -> None:
        """Register ``handler`` for jobs of type ``name``.

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

        Raises:
            ConfigError: an empty name, a handler that is not callable, or a payload type
                that is none of those.
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
