"""Which validated documents get a plan, and what a plan reads from a request's variables."""

from __future__ import annotations

import pytest
from graphql import parse

from slotengine.api.operation_plans import NotPlain, compile_plan
from slotengine.api.schema import schema

SCHEMA = schema._schema
RESERVE = "mutation($s: ID!, $k: String!) { reserveSlot(slotId: $s, idempotencyKey: $k) { __typename } }"


def plan_of(document: str, operation_name: str | None = None):  # type: ignore[no-untyped-def]
    return compile_plan(SCHEMA, parse(document), operation_name)


@pytest.mark.parametrize(
    "document",
    [
        "{ __typename }",  # a query
        "mutation { a: __typename }",  # no hot field
        "mutation($i: CreateSlotInput!) { createSlot(input: $i) { __typename } }",  # not a hot mutation
        "mutation($b: ID!) { completeBooking(bookingId: $b) { __typename } }",
        "mutation($b: ID!) { confirmBooking(bookingId: $b) { __typename @include(if: true) } }",
        "mutation($b: ID!) { confirmBooking(bookingId: $b) { ... on Booking { history { event } } } }",
        'mutation($b: ID! = "x") { confirmBooking(bookingId: $b) { __typename } }',  # a default
        "mutation($b: ID!) { a: confirmBooking(bookingId: $b) { __typename }"
        " b: confirmBooking(bookingId: $b) { __typename } }",  # two root fields
        "mutation($b: ID!) { confirmBooking(bookingId: $b) { __typename } __typename }",
        "query A { __typename } mutation B($b: ID!) { confirmBooking(bookingId: $b) { __typename } }",
    ],
)
def test_documents_a_plan_does_not_fully_understand_have_none(document: str) -> None:
    assert plan_of(document) is None


def test_a_plan_names_its_resolver_arguments_and_every_member_of_the_union() -> None:
    plan = plan_of(
        'mutation Hot($k: String!) { r: reserveSlot(slotId: "abc", idempotencyKey: $k) {'
        " __typename ... on Error { message } ... on SlotNotFound { slotId message } } }",
        "Hot",
    )
    assert plan is not None
    assert (plan.key, plan.field_name) == ("r", "reserveSlot")
    assert plan.keyword_arguments({"k": "key-1", "extra": 5}) == {
        "slot_id": "abc",
        "idempotency_key": "key-1",
        "units": 1,  # left out: the argument's default
    }
    shapes = {shape.typename: [leaf.key for leaf in shape.leaves] for shape in plan.shapes.values()}
    assert shapes["Booking"] == ["__typename"]
    assert shapes["SlotNotFound"] == ["__typename", "message", "slotId"]  # merged, first place kept
    assert shapes["ValidationError"] == ["__typename", "message"]
    assert len(shapes) == 8  # every member of ReserveSlotResult


@pytest.mark.parametrize(
    "variables", [None, {}, {"s": "a"}, {"s": 1, "k": "x"}, {"s": "a", "k": None}, {"s": ["a"], "k": "x"}]
)
def test_variables_that_are_not_plain_strings_go_the_normal_way(variables: dict[str, object] | None) -> None:
    plan = plan_of(RESERVE)
    assert plan is not None
    with pytest.raises(NotPlain):
        plan.keyword_arguments(variables)


def test_an_optional_argument_may_be_absent_null_or_a_string() -> None:
    plan = plan_of(
        "mutation($b: ID!, $r: String) { cancelBooking(bookingId: $b, reason: $r) { __typename } }"
    )
    assert plan is not None
    assert plan.keyword_arguments({"b": "x"}) == {"booking_id": "x", "reason": None}
    assert plan.keyword_arguments({"b": "x", "r": None}) == {"booking_id": "x", "reason": None}
    assert plan.keyword_arguments({"b": "x", "r": "because"}) == {"booking_id": "x", "reason": "because"}
    omitted = plan_of("mutation($b: ID!) { cancelBooking(bookingId: $b) { __typename } }")
    assert omitted is not None and omitted.keyword_arguments({"b": "x"}) == {
        "booking_id": "x",
        "reason": None,
    }


def test_units_is_read_as_a_literal_a_32_bit_integer_variable_or_its_default() -> None:
    literal = plan_of('mutation { reserveSlot(slotId: "s", idempotencyKey: "k", units: 3) { __typename } }')
    assert literal is not None and literal.keyword_arguments(None)["units"] == 3
    for declared in ("Int!", "Int"):
        plan = plan_of(
            f'mutation($u: {declared}) {{ reserveSlot(slotId: "s", idempotencyKey: "k", units: $u)'
            " { __typename } }"
        )
        assert plan is not None
        assert plan.keyword_arguments({"u": 4})["units"] == 4
        for odd in (None, "4", 4.0, True, 2**31):
            with pytest.raises(NotPlain):
                plan.keyword_arguments({"u": odd})
        if declared == "Int":
            assert plan.keyword_arguments({})["units"] == 1
        else:
            with pytest.raises(NotPlain):
                plan.keyword_arguments({})
    as_float = (
        'mutation($u: Float!) { reserveSlot(slotId: "s", idempotencyKey: "k", units: $u) { __typename } }'
    )
    assert plan_of(as_float) is None  # not valid anyway; never planned


def test_an_operation_beside_others_is_planned_when_the_request_names_it() -> None:
    document = "query A { __typename } mutation B($b: ID!) { confirmBooking(bookingId: $b) { __typename } }"
    assert plan_of(document) is None
    assert plan_of(document, "A") is None
    planned = plan_of(document, "B")
    assert planned is not None and planned.field_name == "confirmBooking"
