"""Logging conventions: stdlib `logging` under ``jobs``, structured fields in ``extra``.

The library installs no handlers; configure logging in your application (the command
line is the one place that does). Records may carry these ``extra`` fields, none of
which collides with a `logging.LogRecord` attribute:

- ``job_id``, ``job_type``, ``attempt``: the job a record is about;
- ``queue``: the queue's name;
- ``duration_ms``: how long the attempt ran.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

#: The structured fields records may carry.
EXTRA_FIELDS = frozenset({"job_id", "job_type", "attempt", "queue", "duration_ms"})

#: The root of the library's loggers.
logger = logging.getLogger("jobs")


class JobLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """A `LoggerAdapter` that merges its fields with those passed in each call's ``extra``.

    The stock adapter drops the per-call ``extra`` (before Python 3.13's ``merge_extra``),
    which would lose fields a handler adds.
    """

    def __init__(self, logger: logging.Logger, extra: Mapping[str, object]) -> None:
        super().__init__(logger, extra)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the adapter's fields under the call's own ``extra``."""
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
