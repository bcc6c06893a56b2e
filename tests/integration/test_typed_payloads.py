"""Typed payloads and the registry's forms: attrs instances in, attrs instances out.

API.md section "Queue, registry, client" (register_func, register(..., payload_type=...),
the decorator) and the rule that an attrs payload is stored as its fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from typing import Any

import attrs
import pydantic
import pytest

import jobs
from jobs import _codec
from tests.integration._clients import make_client, wait_for_status


@attrs.frozen
class Address:
    city: str
    zip_code: str


@attrs.frozen
class Email:
    to: str
    subject: str
    address: Address
    cc: list[Address] = attrs.field(factory=list)


@attrs.frozen
class Order:
    shipping: Address | None = None
    billing: Address | None = None
    by_name: dict[str, Address] = attrs.field(factory=dict)
    stops: tuple[Address, ...] = ()
    rush: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class Secretive:
    # attrs strips the underscore for __init__: Secretive(token=...).
    _token: str
    name: str


def test_registry_forms_all_run_their_handlers(redis_url: str) -> None:
    registry = jobs.Registry()
    seen: dict[str, Any] = {}

    def by_func(ctx: jobs.JobContext, payload: Any) -> str:
        seen["func"] = payload
        return "func"

    def typed(ctx: jobs.JobContext, payload: Email) -> str:
        seen["typed"] = payload
        return "typed"

    registry.register_func("by_func", by_func)
    registry.register("typed", typed, payload_type=Email)

    @registry.job("decorated")
    def decorated(ctx: jobs.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        seen["decorated"] = payload
        return {"ok": True}

    # The decorator hands back the function itself, still callable directly.
    assert decorated.__name__ == "decorated"
    email = Email(to="a@example.com", subject="hi", address=Address(city="Oslo", zip_code="0150"))
    with make_client(redis_url, registry) as client:
        ids = [
            client.enqueue("by_func", {"n": 1}),
            client.enqueue("typed", email),
            client.enqueue("decorated", {"order": 7}),
        ]
        results = [wait_for_status(client, i, jobs.JobStatus.COMPLETED).result for i in ids]
    assert results == ["func", "typed", {"ok": True}]
    assert seen == {"func": {"n": 1}, "typed": email, "decorated": {"order": 7}}


def test_typed_payload_arrives_as_an_attrs_instance(redis_url: str) -> None:
    registry = jobs.Registry()
    received: list[object] = []

    def send(ctx: jobs.JobContext, payload: Email) -> str:
        received.append(payload)
        return payload.address.city

    registry.register("send_email", send, payload_type=Email)
    email = Email(
        to="a@example.com",
        subject="Welcome",
        address=Address(city="Oslo", zip_code="0150"),
        cc=[Address(city="Bergen", zip_code="5003"), Address(city="Tromsø", zip_code="9008")],
    )
    with make_client(redis_url, registry) as client:
        from_instance = client.enqueue("send_email", email)
        # The stored form is plain JSON: the same fields given as a dict work too.
        from_dict = client.enqueue("send_email", attrs.asdict(email))
        stored = client.get(from_instance).payload
        assert stored == attrs.asdict(email)
        done = [
            wait_for_status(client, i, jobs.JobStatus.COMPLETED) for i in (from_instance, from_dict)
        ]
    assert [j.result for j in done] == ["Oslo", "Oslo"]
    assert received == [email, email]
    for payload in received:
        assert isinstance(payload, Email)
        assert isinstance(payload.address, Address)
        assert all(isinstance(a, Address) for a in payload.cc)


@pytest.mark.parametrize(
    "payload",
    [
        Order(
            shipping=Address(city="Oslo", zip_code="0150"),
            by_name={"home": Address(city="Bergen", zip_code="5003")},
            stops=(Address(city="Molde", zip_code="6413"),),
            rush=True,
        ),
        Order(),
    ],
    ids=["full", "defaults"],
)
def test_typed_payload_with_optional_and_container_fields(redis_url: str, payload: Order) -> None:
    received: list[object] = []
    registry = jobs.Registry()
    registry.register("order", lambda ctx, p: received.append(p), payload_type=Order)
    with make_client(redis_url, registry) as client:
        wait_for_status(client, client.enqueue("order", payload), jobs.JobStatus.COMPLETED)
    assert received == [payload]


def test_typed_payload_with_a_private_field(redis_url: str) -> None:
    received: list[object] = []
    registry = jobs.Registry()
    registry.register("s", lambda ctx, p: received.append(p), payload_type=Secretive)
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("s", Secretive(token="t0k", name="n"))
        job = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED, jobs.JobStatus.FAILED)
    assert job.error is None
    assert received == [Secretive(token="t0k", name="n")]


def test_typed_payload_that_does_not_fit_fails_for_good(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register("send_email", lambda ctx, payload: None, payload_type=Email)
    bad = {"to": "x", "bogus": 1}
    with make_client(redis_url, registry) as client:
        # A producer with the registry refuses it at once ...
        with pytest.raises(jobs.PayloadError, match="bogus"):
            client.enqueue("send_email", bad)
        # ... one without (a web app that knows only the type's name) cannot: the worker
        # fails the job for good, naming the fields.
        producer = jobs.Client(jobs.ClientConfig(queue=client.queue))
        job_id = producer.enqueue("send_email", bad, jobs.JobConfig(max_retries=3))
        job = wait_for_status(client, job_id, jobs.JobStatus.FAILED)
    assert job.attempts == 1
    assert job.error is not None
    assert job.error.startswith("PayloadError: ")
    assert "payload.subject" in job.error and "bogus" in job.error


# -- real classes: cattrs ------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Line:
    sku: uuid.UUID
    price: decimal.Decimal
    colors: list[Color]


@attrs.frozen
class Invoice:
    number: int
    issued: datetime.datetime
    due: datetime.date
    lines: list[Line]
    notes: dict[str, str]
    paid_on: datetime.date | None = None


@dataclasses.dataclass(frozen=True)
class Ping:
    host: str
    at: datetime.datetime


def _invoice() -> Invoice:
    return Invoice(
        number=7,
        issued=datetime.datetime(2026, 12, 4, 9, 30, tzinfo=datetime.UTC),
        due=datetime.date(2027, 1, 4),
        lines=[Line(uuid.uuid4(), decimal.Decimal("19.99"), [Color.RED, Color.BLUE])],
        notes={"po": "A-1"},
    )


def test_dates_enums_uuids_and_decimals_round_trip(redis_url: str) -> None:
    got: list[Invoice] = []

    def bill(ctx: jobs.JobContext, invoice: Invoice) -> Invoice:
        got.append(invoice)
        return attrs.evolve(invoice, paid_on=datetime.date(2026, 12, 5))

    registry = jobs.Registry()
    registry.register("bill", bill, payload_type=Invoice)
    invoice = _invoice()
    with make_client(redis_url, registry) as client:
        result = client.enqueue("bill", invoice).result(timeout=10)
    assert got == [invoice]  # enums back as enums, exact decimals, aware datetimes
    assert got[0].lines[0].colors[0] is Color.RED
    # The result is stored as JSON data: ISO dates, enum values, UUIDs and Decimals as text.
    assert result["paid_on"] == "2026-12-05"
    assert result["lines"][0]["price"] == "19.99"
    assert result["lines"][0]["colors"] == ["red", "blue"]


def test_dataclass_payloads(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register("ping", lambda ctx, p: [p.host, p.at.isoformat()], payload_type=Ping)
    at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    with make_client(redis_url, registry) as client:
        assert client.enqueue("ping", Ping("db1", at)).result(timeout=10) == [
            "db1",
            "2026-01-01T00:00:00+00:00",
        ]


def test_a_producer_that_knows_the_class_refuses_a_payload_that_does_not_fit(
    redis_url: str,
) -> None:
    registry = jobs.Registry()
    registry.register("bill", lambda ctx, p: None, payload_type=Invoice)
    with make_client(redis_url, registry, start=False) as client:
        data = json.loads(_codec.dumps(_invoice()))
        data["lines"][0]["price"] = 19.99  # a float: not exact, refused
        with pytest.raises(jobs.PayloadError, match=r"payload\.lines\[0\]\.price"):
            client.enqueue("bill", data)
        del data["number"]
        with pytest.raises(jobs.PayloadError, match="number"):
            client.enqueue("bill", data)
        assert client.stats().total_jobs == 0


class Signup(pydantic.BaseModel):
    email: str
    at: datetime.datetime


def test_pydantic_models(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register("signup", lambda ctx, s: [s.email, s.at.year], payload_type=Signup)
    signup = Signup(email="a@example.com", at=datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC))
    with make_client(redis_url, registry) as client:
        assert client.enqueue("signup", signup).result(timeout=10) == ["a@example.com", 2026]
        with pytest.raises(jobs.PayloadError, match="email"):
            client.enqueue("signup", {"at": "2026-05-01T00:00:00Z"})
