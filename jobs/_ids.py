"""Job ids: 128 random bits in hex, from the system's random source, read in blocks.

Unguessable, so ids can be shown to users. One ``os.urandom`` read serves 256 ids: a
read per id was a system call on every one-job enqueue, about a tenth of the Python a
producer runs for it. A forked child drops what its parent had read ahead, or parent
and child would hand out the same ids.
"""

from __future__ import annotations

import os
import secrets
import threading

#: Ids drawn from one read of the random source.
IDS_PER_READ = 256

_lock = threading.Lock()
_hex = ""
_used = 0


def new_job_ids(count: int) -> list[str]:
    """``count`` fresh job ids."""
    global _hex, _used
    size = 32 * count
    with _lock:
        if _used + size > len(_hex):
            _hex, _used = secrets.token_hex(16 * max(count, IDS_PER_READ)), 0
        start = _used
        _used += size
        block = _hex
    return [block[i : i + 32] for i in range(start, start + size, 32)]


def new_job_id() -> str:
    """A fresh job id."""
    return new_job_ids(1)[0]


def _forget_read_ahead() -> None:
    global _hex, _used, _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork
    _hex, _used = "", 0


os.register_at_fork(after_in_child=_forget_read_ahead)
