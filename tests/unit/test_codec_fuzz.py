"""Fuzzing the record decoder: whatever bytes sit in a job hash, the worker gets a `Job` or a
`CorruptRecord`, never another exception.

A worker decodes every record it leases (`jobs.worker._attempt.Attempt.from_leased`) and turns a
`CorruptRecord` into a permanent failure of that one job; any other exception would escape
into the fetch loop instead and take the job's batch-mates down with it. Records come
from Redis, so anything a foreign tool, a bug or an attacker wrote must be survivable.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import Job, JobStatus
from jobs._codec import FETCHED_FIELDS, CorruptRecord, dumps
from jobs._record import decode_job

#: The fields a real record has: those a fetch reads, and those only the record keeps.
FIELDS = (*FETCHED_FIELDS, "score", "traceback", "written_by", "progress")

#: Values that are each a plausible way for one field to be wrong.
_tricky_text = st.sampled_from(
    [
        "",
        "0",
        "-1",
        "1e3",
        "nan",
        "inf",
        "9" * 30,
        "9" * 5000,  # past int()'s default digit limit
        "-" + "9" * 20,
        "\uff11\uff12",  # full-width digits: int() accepts them
        " 7 ",
        "null",
        "[]",
        "{}",
        '{"a":',
        "\ufeff{}",
        "[" * 5000 + "]" * 5000,  # nesting deep enough to hit RecursionError
        "\ud800",
        "pending",
        "processing",
        "PENDING",
        "\x00",
    ]
)
_values = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    _tricky_text,
    _tricky_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda i: str(i).encode()),
)
_keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=10))
_records = st.dictionaries(_keys, _values, max_size=len(FIELDS) + 3)


def _valid_record() -> dict[str, Any]:
    return {
        "id": "abc",
        "type": "t",
        "payload": dumps({"x": [1, 2]}),
        "status": "pending",
        "priority": b"5",
        "max_retries": "3",
        "timeout_ms": "1500",
        "backoff": json.dumps({"kind": "none"}),
        "metadata": "{}",
        "created_at": "1700000000000",
        "run_at": "1700000000000",
        "attempts": "0",
        "failures": "0",
        "lost": "0",
        "score": "4398046511104",
    }


@st.composite
def _mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    # Mostly-valid records reach much deeper into decode_job than random dicts do.
    record: dict[str, Any] = _valid_record()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            record.pop(name, None)
        else:
            record[name] = draw(_values)
    return record


def _decodes_or_is_corrupt(record: dict[str, Any]) -> None:
    try:
        job = decode_job(record, "q")
    except CorruptRecord as exc:
        assert str(exc)  # a message the failed job's error can show
        return
    assert isinstance(job, Job)
    assert isinstance(job.status, JobStatus)
    assert job.queue == "q"


@settings(max_examples=400, deadline=None)
@given(_records)
def test_arbitrary_records_decode_or_raise_corrupt_record(record: dict[str, Any]) -> None:
    _decodes_or_is_corrupt(record)


@settings(max_examples=400, deadline=None)
@given(_mutated_records())
def test_mutated_records_decode_or_raise_corrupt_record(record: dict[str, Any]) -> None:
    _decodes_or_is_corrupt(record)


def test_a_valid_record_decodes_with_bytes_or_str_values() -> None:
    record = _valid_record()
    as_bytes = {k: v if isinstance(v, bytes) else v.encode() for k, v in record.items()}
    for fields in (record, as_bytes):
        job = decode_job(fields, "q")
        assert job.id == "abc"
        assert job.payload == {"x": [1, 2]}
        assert job.priority == 5
        assert job.timeout == timedelta(milliseconds=1500)
        assert job.status is JobStatus.PENDING


def test_each_kind_of_damage_is_named_in_the_error() -> None:
    cases: dict[str, dict[str, Any]] = {
        "'type'": {k: v for k, v in _valid_record().items() if k != "type"},
        "'id'": {k: v for k, v in _valid_record().items() if k != "id"},
        "unknown status": {**_valid_record(), "status": "exploded"},
        "payload is not valid JSON": {**_valid_record(), "payload": b"\x80\x04K\x01."},
        "'attempts' is not an integer": {**_valid_record(), "attempts": "many"},
        "'priority' is not an integer": {**_valid_record(), "priority": "high"},
        "metadata": {**_valid_record(), "metadata": "[1]"},
        "does not decode": {**_valid_record(), "created_at": "9" * 25},
    }
    for expected, record in cases.items():
        try:
            decode_job(record, "q")
        except CorruptRecord as exc:
            assert expected in str(exc), (expected, str(exc))
        else:
            raise AssertionError(f"{expected}: decoded without complaint")
