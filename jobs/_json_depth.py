"""The one bound on how deep JSON may nest, checked on the encoded bytes without recursion."""

from __future__ import annotations

import re
from itertools import accumulate

#: How deep a payload, result or metadata value may nest. json's C code counts against the
#: recursion limit from wherever it is called, so without a fixed bound what a shallow
#: caller could encode, a worker deeper in its own stack could not decode (the job then
#: failed as a CorruptRecord): far below the limit, the same bound holds in every thread.
MAX_JSON_DEPTH = 200

# JSON strings (any bracket inside one is text), and a table that keeps only brackets,
# as +1 (opening) or -1 (closing) once read as signed bytes.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNED = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def too_deep(data: bytes) -> bool:
    """Whether the JSON ``data`` nests deeper than `MAX_JSON_DEPTH`: C-speed, no recursion."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return False  # the common case: fewer brackets than the bound in all
    brackets = _JSON_STRING.sub(b"", data).translate(_SIGNED, _NOT_BRACKETS)
    return max(accumulate(memoryview(brackets).cast("b")), default=0) > MAX_JSON_DEPTH
