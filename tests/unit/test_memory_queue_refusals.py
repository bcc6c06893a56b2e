"""What `jobs.testing.MemoryQueue` does not model is refused with a clear error."""

from __future__ import annotations

import pytest

import jobs
from jobs.testing import MemoryQueue


def test_dependencies_and_flows_are_refused_and_nothing_is_written() -> None:
    client = jobs.Client(jobs.ClientConfig(queue=MemoryQueue()))
    first = client.enqueue("a", {})
    with pytest.raises(jobs.ConfigError, match="depends_on, groups and chains need a RedisQueue"):
        client.enqueue("b", {}, jobs.JobConfig(depends_on=[first]))
    with pytest.raises(jobs.ConfigError, match="need a RedisQueue"):
        client.enqueue_flow(jobs.chain(jobs.Task("a", {}), jobs.Task("b", {})))
    assert client.stats().total_jobs == 1
