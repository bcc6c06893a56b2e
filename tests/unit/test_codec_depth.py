"""JSON nesting has one fixed bound, whatever the stack it is encoded or decoded on.

json's C code counts its recursion against the interpreter's limit from wherever it is
called: without a bound of its own, a payload a shallow caller could encode failed at the
worker, deeper in its stack, as a ``CorruptRecord`` (issue 17, finding 14).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeVar

import hypothesis
import pytest
from hypothesis import strategies as st

from jobs import PayloadError
from jobs._codec import MAX_JSON_DEPTH, dumps, loads

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def nested(depth: int, kind: str = "list") -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def at_stack_depth(frames: int, call: Callable[[], T]) -> T:
    """``call()`` from ``frames`` Python frames deeper than here."""
    if frames <= 0:
        return call()
    return at_stack_depth(frames - 1, call)


#: As deep as a caller can be and still leave room for the bound (and a margin for the
#: frames pytest and this module add).
DEEP = sys.getrecursionlimit() - MAX_JSON_DEPTH - 150


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("frames", [0, DEEP], ids=["shallow", "deep"])
def test_the_bound_is_the_same_from_any_stack(kind: str, frames: int) -> None:
    data = at_stack_depth(frames, lambda: dumps(nested(MAX_JSON_DEPTH, kind)))
    with pytest.raises(PayloadError, match=f"result nests deeper than {MAX_JSON_DEPTH} levels"):
        at_stack_depth(frames, lambda: dumps(nested(MAX_JSON_DEPTH + 1, kind), "result"))
    # What was accepted decodes from a stack as deep as the encoder's, or deeper.
    assert at_stack_depth(DEEP, lambda: loads(data)) == nested(MAX_JSON_DEPTH, kind)


def test_brackets_inside_strings_are_text() -> None:
    text = '[{"\\"[' * 1000  # brackets, quotes and backslashes, all inside one string
    value = {"s": text, "t": ["]" * 500, "[" * 500], "deep": nested(MAX_JSON_DEPTH - 2)}
    assert loads(dumps(value)) == value
    with pytest.raises(PayloadError, match="nests deeper"):
        dumps({"s": text, "deep": nested(MAX_JSON_DEPTH)})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def wrapped(depth: int, value: Any) -> Any:
    for _ in range(depth):
        value = {"k": value}
    return value


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(_json, st.integers(min_value=MAX_JSON_DEPTH - 8, max_value=MAX_JSON_DEPTH))
def test_the_scan_measures_the_depth_the_value_has(value: Any, around: int) -> None:
    # Wrapped close to the bound, so that the value's own depth decides.
    container = wrapped(around, value)
    if _depth(container) > MAX_JSON_DEPTH:
        with pytest.raises(PayloadError, match="nests deeper"):
            dumps(container)
    else:
        assert loads(dumps(container)) == container


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_value_that_contains_itself_is_refused_and_the_encoder_serves_on(kind: str) -> None:
    loop: Any = []
    if kind == "list":
        loop.append(loop)
    else:
        loop = {"k": [1]}
        loop["k"].append(loop)
    with pytest.raises(PayloadError, match="contains itself"):
        dumps({"ok": 1, "loop": loop})
    # The encoder is made once (jobs._codec): a failed call leaves nothing behind in it.
    assert dumps({"ok": [1, {"k": "v"}]}) == b'{"ok":[1,{"k":"v"}]}'
