"""Typed payloads and results: classes to JSON data and back, with one cattrs converter.

A payload (or result) that is an instance of an attrs class, a dataclass or a pydantic
model is stored as JSON data, and a handler registered with ``payload_type=`` gets an
instance back. cattrs, the attrs project's own converter, does the work: nested classes,
``Optional``, ``list[...]``, ``dict[str, ...]``, ``datetime``/``date`` (ISO 8601),
``Enum`` (its value), ``UUID`` and ``Decimal`` (as strings, exactly). Pydantic models
(an optional extra) go through their own ``model_dump``/``model_validate``.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from typing import TYPE_CHECKING, Any

import attrs

from jobs.errors import PayloadError

if TYPE_CHECKING:
    import decimal

    from cattrs.preconf.json import JsonConverter


@functools.cache
def _converter() -> JsonConverter:
    # Made (and cattrs imported) on first use: a process whose jobs carry no classes,
    # most worker processes, does not pay cattrs' import time and ~1.6 MB for it.
    import decimal

    from cattrs.preconf.json import make_converter

    converter = make_converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(uuid.UUID, str)
    converter.register_structure_hook(uuid.UUID, lambda value, _: uuid.UUID(value))
    converter.register_unstructure_hook(decimal.Decimal, str)
    converter.register_structure_hook(decimal.Decimal, lambda value, _: _decimal(value))
    return converter


def _decimal(value: Any) -> decimal.Decimal:
    # A float would carry its binary error into the Decimal: only text and ints are exact.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"a Decimal is stored as a string, got {type(value).__name__}")
    import decimal  # imported already, by _converter

    return decimal.Decimal(value)


def _is_pydantic(cls: type) -> bool:
    return callable(getattr(cls, "model_validate", None)) and callable(
        getattr(cls, "model_dump", None)
    )


def is_typed(cls: type) -> bool:
    """Whether instances of ``cls`` are stored through the converter."""
    return attrs.has(cls) or dataclasses.is_dataclass(cls) or _is_pydantic(cls)


def unstructure(value: Any) -> Any:
    """``value`` (an attrs, dataclass or pydantic instance) as JSON data."""
    if _is_pydantic(type(value)):
        return value.model_dump(mode="json")
    return _converter().unstructure(value)


def structure(cls: type, data: Any) -> Any:
    """An instance of ``cls`` built from JSON ``data``; its validators run as usual.

    Raises:
        PayloadError: ``data`` does not fit ``cls``; the message names the field, and
            whatever the class's own code raised is the cause.
    """
    try:
        if _is_pydantic(cls):
            model: Any = cls
            return model.model_validate(data)
        return _converter().structure(data, cls)
    except PayloadError:
        raise
    except Exception as exc:  # a validator or converter may raise anything
        raise PayloadError(f"payload does not fit {cls.__name__}: {_why(exc)}") from exc


def _why(exc: Exception) -> str:
    import cattrs  # an error path: importing it here costs nothing worth saving

    if isinstance(exc, cattrs.BaseValidationError):
        # "invalid value for type, expected int @ payload.cents": each failing field, by path.
        return "; ".join(cattrs.transform_error(exc, path="payload", format_exception=_say))
    return f"{type(exc).__name__}: {exc}"


def _say(exc: BaseException, type_: type | None) -> str:
    from cattrs.v import format_exception

    said = format_exception(exc, type_)
    # cattrs words the errors it knows; for the rest (a converter's own) the class's
    # exception, named, says more than "unknown error".
    return f"{type(exc).__name__}: {exc}" if said.startswith("unknown error") else said
