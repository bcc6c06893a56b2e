"""`JobHandle`: what `Client.enqueue` returns, the job's id with ways to follow the job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import timedelta

    from jobs.client import Client
    from jobs.job import Job


class JobHandle(str):
    """A job's id (a ``str``, usable wherever the id is) that can also wait for the job.

    Equal to, hashed like, JSON-encoded and pickled as the plain id string, so code that
    stores or compares ids keeps working; the methods go through the client that
    enqueued the job.

    Example::

        print(client.enqueue("resize", {"path": "a.png"}).result(timeout=10))

    .. versionadded:: 0.1
    """

    _client: Client

    def __new__(cls, job_id: str, client: Client) -> JobHandle:
        """The handle of job ``job_id``, enqueued by ``client``."""
        handle = str.__new__(cls, job_id)
        handle._client = client
        return handle

    @property
    def id(self) -> str:
        """The job's id, as a plain string."""
        return str.__str__(self)

    @property
    def client(self) -> Client:
        """The client that enqueued the job."""
        return self._client

    def get(self) -> Job:
        """The job's current state (`Client.get`)."""
        return self.client.get(self.id)

    def wait(self, timeout: float | timedelta | None = None) -> Job:
        """Block until the job is final and return it (`Client.wait`)."""
        return self.client.wait(self.id, timeout)

    def result(self, timeout: float | timedelta | None = None) -> Any:
        """Block until the job is final; its result, or its failure raised (`Client.result`)."""
        return self.client.result(self.id, timeout)

    def cancel(self) -> bool:
        """Cancel the job (`Client.cancel`)."""
        return self.client.cancel(self.id)

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # A handle pickles (and deep-copies) as its id: a client does not travel.
        return (str, (self.id,))
