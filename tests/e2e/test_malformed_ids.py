"""One answer for a malformed id in every operation: a ValidationError naming the field.

Union results carry it as their ValidationError member; nullable reads and subscriptions answer
null with an error coded "ValidationError". A well-formed id that names nothing stays null,
SlotNotFound or BookingNotFound. The malformed ids are generated (wrong lengths, non-hex,
empty, huge, NUL, controls, unicode, lone surrogates), from a fixed seed so a failure repeats.
"""

from __future__ import annotations

import logging
import random
import string
import uuid
from typing import Any

import pytest
from starlette.applications import Starlette
from strawberry.types import ExecutionResult

from slotengine.api.context import Context
from slotengine.api.schema import schema
from slotengine.service.ids import parse_id
from slotengine.service.views import Caller
from tests.e2e.conftest import ADMIN, GraphQL, token

_HEX = "0123456789abcdef"


def _malformed_ids(count: int, seed: int = 11) -> list[str]:
    """Strings UUID() refuses, of every shape a hostile or careless client might send."""
    rng = random.Random(seed)
    valid = str(uuid.UUID(int=rng.getrandbits(128)))
    makers = [
        lambda: "",
        lambda: valid[: rng.randrange(1, 36)],  # too short
        lambda: valid + rng.choice(_HEX) * rng.randrange(1, 5),  # too long
        lambda: "".join(rng.choice(string.ascii_letters) for _ in range(32)),  # non-hex, right length
        lambda: valid.replace(valid[rng.randrange(36)], rng.choice("ghxz-"), 1),  # one bad character
        lambda: "x" * rng.choice([1_000, 20_000]),  # huge
        lambda: valid[:10] + "\x00" + valid[11:],  # NUL
        lambda: valid[:5] + rng.choice("\t\n\r\x1b\x7f") + valid[6:],  # controls
        lambda: valid[:8] + rng.choice(["é", "\u0663", "\uff10", "🦀", "\u200b"]) + valid[9:],  # unicode
        lambda: valid[:3] + "\ud800" + valid[4:],  # lone surrogate
        lambda: "slot-" + str(rng.randrange(10**6)),
        lambda: " " * rng.randrange(1, 40),
    ]
    ids: list[str] = []
    while len(ids) < count:
        candidate = rng.choice(makers)()
        try:
            parse_id("id", candidate)
        except Exception:
            ids.append(candidate)
    return ids


MALFORMED = _malformed_ids(24)

READS = {
    "slot": ("query($v: ID!) { slot(id: $v) { id } }", "slot", "id"),
    "booking": ("query($v: ID!) { booking(id: $v) { id } }", "booking", "id"),
    "queuePosition": (
        "query($v: ID!) { queuePosition(bookingId: $v) { position } }",
        "queuePosition",
        "bookingId",
    ),
}
MUTATIONS = {
    "reserveSlot": (
        'mutation($v: ID!) { reserveSlot(slotId: $v, idempotencyKey: "k") {'
        " __typename ... on ValidationError { field } } }",
        "slotId",
    ),
    "confirmBooking": (
        "mutation($v: ID!) { confirmBooking(bookingId: $v) { __typename ... on ValidationError { field } } }",
        "bookingId",
    ),
    "cancelBooking": (
        "mutation($v: ID!) { cancelBooking(bookingId: $v) { __typename ... on ValidationError { field } } }",
        "bookingId",
    ),
    "completeBooking": (
        "mutation($v: ID!) { completeBooking(bookingId: $v) {"
        " __typename ... on ValidationError { field } } }",
        "bookingId",
    ),
    "extendHold": (
        "mutation($v: ID!) { extendHold(bookingId: $v) { __typename ... on ValidationError { field } } }",
        "bookingId",
    ),
    "closeSlot": (
        "mutation($v: ID!) { closeSlot(slotId: $v) { __typename ... on ValidationError { field } } }",
        "slotId",
    ),
    "reopenSlot": (
        "mutation($v: ID!) { reopenSlot(slotId: $v) { __typename ... on ValidationError { field } } }",
        "slotId",
    ),
    "updateSlot": (
        "mutation($v: ID!) { updateSlot(slotId: $v, input: {}) {"
        " __typename ... on ValidationError { field } } }",
        "slotId",
    ),
}


async def _post(gql: GraphQL, query: str, value: str, as_: str) -> dict[str, Any]:
    # httpx's JSON encoder refuses lone surrogates; an escaped one is what a client would send.
    import json

    body = json.dumps({"query": query, "variables": {"v": value}})
    response = await gql.http.post(
        "/graphql",
        content=body.encode(),
        headers={"Authorization": f"Bearer {as_}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("operation", sorted(READS))
async def test_a_malformed_id_in_a_read_is_a_validation_error_naming_the_field(
    gql: GraphQL, operation: str
) -> None:
    query, root, field = READS[operation]
    for raw in MALFORMED:
        for who in (token("ids-reader"), ADMIN):
            answer = await _post(gql, query, raw, who)
            assert answer["data"] == {root: None}, (raw, answer)
            (error,) = answer["errors"]
            assert error["extensions"]["code"] == "ValidationError", (raw, error)
            assert error["message"].startswith(f"{field}: "), (raw, error)
            assert len(error["message"]) < 200, "the error does not echo a huge id back"


@pytest.mark.parametrize("operation", sorted(MUTATIONS))
async def test_a_malformed_id_in_a_mutation_is_its_validation_error_member(
    gql: GraphQL, operation: str
) -> None:
    query, field = MUTATIONS[operation]
    for raw in MALFORMED:
        answer = await _post(gql, query, raw, ADMIN)
        assert "errors" not in answer, (raw, answer)
        assert answer["data"][operation] == {"__typename": "ValidationError", "field": field}, raw


async def test_well_formed_ids_that_name_nothing_are_not_found_in_any_spelling(gql: GraphQL) -> None:
    missing = uuid.uuid4()
    for spelling in (str(missing), str(missing).upper(), missing.hex, f"{{{missing}}}", missing.urn):
        slot = await gql.run("query($v: ID!) { slot(id: $v) { id } }", {"v": spelling}, as_=ADMIN)
        booking = await gql.run("query($v: ID!) { booking(id: $v) { id } }", {"v": spelling}, as_=ADMIN)
        reserve = await gql.reserve(token("ids-spelling"), spelling, f"k-{spelling}")
        confirm = await gql.confirm(ADMIN, spelling)
        assert slot == {"slot": None} and booking == {"booking": None}
        assert reserve["__typename"] == "SlotNotFound"
        assert confirm["__typename"] == "BookingNotFound"


async def test_an_existing_slot_reads_the_same_in_every_spelling(gql: GraphQL) -> None:
    slot_id = uuid.UUID(await gql.create_slot())
    for spelling in (str(slot_id).upper(), slot_id.hex, f"{{{slot_id}}}", slot_id.urn):
        data = await gql.run("query($v: ID!) { slot(id: $v) { id } }", {"v": spelling}, as_=ADMIN)
        assert data["slot"] == {"id": str(slot_id)}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("subscription($v: ID!) { slotStatus(slotId: $v) { id } }", "slotId"),
        ("subscription($v: ID!) { queuePosition(bookingId: $v) { position } }", "bookingId"),
        ("subscription($v: ID!) { bookingUpdates(bookingId: $v) { id } }", "bookingId"),
    ],
)
async def test_a_malformed_id_ends_a_subscription_with_a_validation_error(
    app: Starlette, document: str, field: str
) -> None:
    for raw in MALFORMED[:8]:
        context = Context(engine=app.state.engine, hub=app.state.hub, caller=Caller("ids-listener"))
        stream = await schema.subscribe(document, variable_values={"v": raw}, context_value=context)
        assert not isinstance(stream, ExecutionResult)
        first = await anext(stream)
        await stream.aclose()
        assert first.errors is not None, raw
        (error,) = first.errors
        assert (error.extensions or {}).get("code") == "ValidationError", (raw, error)
        assert error.message.startswith(f"{field}: ")


async def test_refused_reads_are_answers_not_logged_failures(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="strawberry.execution")
    for raw in MALFORMED[:5]:
        await _post(gql, READS["slot"][0], raw, ADMIN)
    broken = await gql.post("{ slots(first: 1, after: 42) { id } }", as_=ADMIN)  # wrong type: not a refusal

    assert broken.json()["errors"]
    logged = [r.getMessage() for r in caplog.records if r.name == "strawberry.execution"]
    assert len(logged) == 1 and "cannot represent a non string value" in logged[0]
    assert not any("is not a valid id" in r.getMessage() for r in caplog.records)
