"""The benchmark bodies as a `jobs.Registry`, for ``python -m jobs worker jobs_app:registry``.

Both ways the harness runs ``jobs`` workers use this one registry: ``jobs_worker.py``
(one pool per process, started by the harness) and the library's own supervisor,
``python -m jobs worker jobs_app:registry --processes N``. Each handler calls the shared
body from ``workloads.py``, so a drain is detected the same way whichever started the
workers: by the INCR counter, or the empty body's per-process counts.
"""

from __future__ import annotations

from typing import Any

import workloads

import jobs


def _handler(body: str) -> jobs.registry.Handler:
    function = workloads.BODY_FUNCTIONS[body]

    def handle(ctx: jobs.JobContext, payload: Any) -> None:
        function(payload)

    return handle


registry = jobs.Registry()
for _body in workloads.BODY_FUNCTIONS:
    registry.register_func(_body, _handler(_body))
