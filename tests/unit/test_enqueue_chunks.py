"""How `RedisQueue.enqueue` splits a batch into script calls (no Redis)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from jobs.queue.redis_queue import ENQUEUE_CHUNK, ENQUEUE_CHUNK_BYTES, enqueue_chunks

MIB = 1 << 20


def sizes_of(chunks: list[range], sizes: list[int]) -> list[list[int]]:
    return [[sizes[i] for i in chunk] for chunk in chunks]


def test_small_payloads_are_chunked_by_count() -> None:
    chunks = enqueue_chunks([10] * 2500)
    assert [len(c) for c in chunks] == [ENQUEUE_CHUNK, ENQUEUE_CHUNK, 500]


def test_big_payloads_are_chunked_by_bytes() -> None:
    # The review's case: 1,000 payloads of 256 KiB went in one call (250 MiB).
    chunks = enqueue_chunks([256 * 1024] * 1000)
    assert len(chunks) == 250
    assert all(sum(256 * 1024 for _ in c) == ENQUEUE_CHUNK_BYTES for c in chunks)


def test_a_payload_over_the_bound_goes_alone() -> None:
    sizes = [10, 2 * MIB, 10, 10, MIB, 1]
    assert sizes_of(enqueue_chunks(sizes), sizes) == [[10], [2 * MIB], [10, 10], [MIB], [1]]


def test_nothing_to_chunk() -> None:
    assert enqueue_chunks([]) == []


@given(
    sizes=st.lists(st.integers(0, 3000), max_size=60),
    max_jobs=st.integers(1, 8),
    max_bytes=st.integers(1, 5000),
)
def test_chunks_cover_every_job_once_in_order_within_both_bounds(
    sizes: list[int], max_jobs: int, max_bytes: int
) -> None:
    chunks = enqueue_chunks(sizes, max_jobs, max_bytes)
    assert [i for c in chunks for i in c] == list(range(len(sizes)))
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_jobs
        total = sum(sizes[i] for i in chunk)
        assert total <= max_bytes or len(chunk) == 1
    # Greedy: no chunk could have taken the next job as well.
    for chunk, following in itertools.pairwise(chunks):
        grown = sum(sizes[i] for i in chunk) + sizes[following[0]]
        assert len(chunk) == max_jobs or grown > max_bytes
