"""`RedisQueue`: one queue in Redis, with one typed method per Lua script.

The class is assembled from one part per kind of caller: `Producer` (enqueue),
`Reader` (read, wait), `Admin` (cancel, retry, purge, list), `Monitor` (stats,
history, workers), `Crons` (the scheduler's fire times), `WorkerSide` (what a worker
pool asks) and `FlowControl` (job types' rate limits and concurrency caps), all on
`QueueBase` (client, key schema, scripts, error mapping). Only the `jobs.queue` package
talks to Redis: it knows the key schema (`jobs.queue._keys`) and the scripts' argument
layouts (documented at the top of each ``jobs/queue/lua/*.lua``); the client and the
worker pool speak in Python values.
"""

from jobs.queue._admin import Admin
from jobs.queue._base import ENQUEUE_CHUNK, ENQUEUE_CHUNK_BYTES, enqueue_chunks, new_request_id
from jobs.queue._crons import Crons
from jobs.queue._flow import FlowControl
from jobs.queue._monitor import Monitor
from jobs.queue._producer import Producer
from jobs.queue._reader import Reader
from jobs.queue._worker_side import WorkerSide

__all__ = [
    "ENQUEUE_CHUNK",
    "ENQUEUE_CHUNK_BYTES",
    "RedisQueue",
    "enqueue_chunks",
    "new_request_id",
]


class RedisQueue(Producer, Reader, Admin, Monitor, Crons, WorkerSide, FlowControl):
    """A job queue stored in Redis.

    Example::

        queue = jobs.RedisQueue(jobs.RedisQueueConfig(client=redis.Redis(), name="emails"))
        queue = jobs.RedisQueue.from_url("redis://localhost:6379/0", name="emails")

    One queue is a handful of keys under the hash tag ``{prefix:name}``; any number of
    producers and worker pools, in any number of processes and hosts, may share it.

    .. versionadded:: 0.1
    """
