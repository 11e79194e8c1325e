"""The fast path answers as graphql-core does: the same documents through both paths, byte for byte.

Two apps on the same servers, one with the fast path and one without. Each request goes to the
one without, then twice to the one with (the first teaches it the document, the second runs the
plan); the three answers must be the same bytes. Documents are drawn: selections of leaves,
aliases, inline fragments on members, on the Error interface and on the union, named fragments,
`__typename`, arguments as variables or inline, named operations beside others. The requests are
ones whose answer does not change when repeated (idempotent replays and refusals, every reachable
union member); confirm and cancel, which do change a booking, are compared on twin bookings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType, GraphQLUnionType, get_named_type, get_nullable_type, is_leaf_type
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from slotengine.api.app import create_app
from slotengine.api.fast_path import PlanBook
from slotengine.api.schema import schema as full_schema
from slotengine.config import Settings
from slotengine.service import reservations
from tests.e2e.conftest import ADMIN, BOOKING_FIELDS, token
from tests.loop_bridge import Bridge

EXAMPLES = 25  # documents; each is sent for every outcome its mutation can have
CAP = 2  # live bookings per holder in these apps: TooManyBookings is reachable
SCHEMA = full_schema._schema
ARGUMENTS = {"reserveSlot": ("slotId", "idempotencyKey", "units"), "confirmBooking": ("bookingId",)}
ARGUMENTS["cancelBooking"] = ("bookingId", "reason")
VARIABLE_TYPES = {
    "slotId": "ID!", "idempotencyKey": "String!", "units": "Int!", "bookingId": "ID!", "reason": "String"
}  # fmt: skip


@dataclass
class Side:
    http: httpx.AsyncClient
    book: PlanBook | None


@dataclass
class Apps:
    normal: Side
    fast: Side


def _book(app: Starlette) -> PlanBook | None:
    route = next(r for r in app.routes if isinstance(r, Route) and r.path == "/graphql")
    fast_path = route.endpoint.graphql.fast_path  # type: ignore[attr-defined]
    return None if fast_path is None else fast_path.book


@pytest.fixture(scope="module")
async def apps(settings: Settings, app: Starlette) -> AsyncIterator[Apps]:
    """Two apps on the session app's engine (one database pool and Redis client per process: a
    lifespan of their own would close the session's), with a holder's cap of CAP."""
    engine = dataclasses.replace(app.state.engine, live_bookings_per_holder=CAP)
    sides: list[Side] = []
    async with contextlib.AsyncExitStack() as stack:
        for fast in (False, True):
            side_app = create_app(settings.model_copy(update={"fast_path": fast}))
            side_app.state.engine, side_app.state.hub = engine, app.state.hub
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=side_app), base_url="http://slotengine.test"
                )
            )
            sides.append(Side(http, _book(side_app)))
        assert sides[0].book is None and sides[1].book is not None
        yield Apps(*sides)


async def post(
    side: Side, query: str, variables: Any, bearer: str | None, name: str | None
) -> httpx.Response:
    body: dict[str, Any] = {"query": query, "variables": variables}
    if name is not None:
        body["operationName"] = name
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return await side.http.post("/graphql", json=body, headers=headers)


async def run(side: Side, query: str, variables: dict[str, Any], bearer: str | None) -> dict[str, Any]:
    response = await post(side, query, variables, bearer, None)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


# --- the world the requests meet ------------------------------------------------------------------


@dataclass
class World:
    """Slots and bookings in states that answer every repeat of a request the same way."""

    calls: dict[str, dict[str, tuple[dict[str, Any], str | None]]] = field(default_factory=dict)


async def new_slot(side: Side, capacity: int, *, starts_in: timedelta, hold_seconds: int = 600) -> str:
    starts = datetime.now(UTC) + starts_in
    spec = {
        "resource": "fast-path",
        "startsAt": starts.isoformat(),
        "endsAt": (starts + timedelta(minutes=30)).isoformat(),
        "capacity": capacity,
        "holdSeconds": hold_seconds,
    }
    data = await run(
        side,
        "mutation($i: CreateSlotInput!) { createSlot(input: $i) { ... on Slot { id } } }",
        {"i": spec},
        ADMIN,
    )
    slot_id: str = data["createSlot"]["id"]
    return slot_id


RESERVE = f"""mutation($s: ID!, $k: String!) {{
  reserveSlot(slotId: $s, idempotencyKey: $k) {{ {BOOKING_FIELDS} }} }}"""
RESERVE_UNITS = """mutation($s: ID!, $k: String!, $u: Int!) {
  reserveSlot(slotId: $s, idempotencyKey: $k, units: $u) { __typename ... on Booking { state units } } }"""
CONFIRM = f"mutation($b: ID!) {{ confirmBooking(bookingId: $b) {{ {BOOKING_FIELDS} }} }}"
CANCEL = f"mutation($b: ID!) {{ cancelBooking(bookingId: $b) {{ {BOOKING_FIELDS} }} }}"


async def reserve(side: Side, bearer: str, slot_id: str, key: str) -> dict[str, Any]:
    booking: dict[str, Any] = (await run(side, RESERVE, {"s": slot_id, "k": key}, bearer))["reserveSlot"]
    return booking


async def until_past(moment: datetime, within: float = 30.0) -> None:
    """Poll the clock until `moment` has passed (by a margin for PostgreSQL's clock)."""
    deadline = asyncio.get_running_loop().time() + within
    while datetime.now(UTC) < moment + timedelta(milliseconds=100):
        assert asyncio.get_running_loop().time() < deadline, f"{moment} never came"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def world(apps: Apps) -> World:
    side = apps.fast
    tag = uuid.uuid4().hex[:6]
    held_by, queued, other, full, late, lapsed, done, party_by = (token(f"fp-{tag}-{n}") for n in range(8))
    roomy = await new_slot(side, 5, starts_in=timedelta(days=1))
    single = await new_slot(side, 1, starts_in=timedelta(days=1))
    held = await reserve(side, held_by, roomy, "k-held")
    party = (await run(side, RESERVE_UNITS, {"s": roomy, "k": "k-party", "u": 2}, party_by))["reserveSlot"]
    assert party["state"] == "RESERVED" and party["units"] == 2, party
    await reserve(side, other, single, "k-first")
    pending = await reserve(side, queued, single, "k-pending")
    assert held["state"] == "RESERVED" and pending["state"] == "PENDING", (held, pending)
    for n in range(CAP):
        await reserve(side, full, await new_slot(side, 1, starts_in=timedelta(days=1)), f"k-full-{n}")
    starts = datetime.now(UTC) + timedelta(seconds=2)
    started = await new_slot(side, 1, starts_in=starts - datetime.now(UTC))
    short = await new_slot(side, 1, starts_in=timedelta(days=1), hold_seconds=1)
    expiring = await reserve(side, lapsed, short, "k-lapsing")
    cancelled = await reserve(side, done, roomy, "k-cancelled")
    assert (await run(side, CANCEL, {"b": cancelled["id"]}, done))["cancelBooking"]["state"] == "CANCELLED"
    await until_past(max(starts, datetime.fromisoformat(expiring["expiresAt"])))
    assert (await reserve(side, late, started, "k-late"))["__typename"] == "SlotClosed"
    expired = (await run(side, CONFIRM, {"b": expiring["id"]}, lapsed))["confirmBooking"]
    assert expired["__typename"] == "HoldExpired", expired
    nowhere = str(uuid.uuid4())
    world = World()
    world.calls["reserveSlot"] = {
        "Booking RESERVED (a replay)": ({"slotId": roomy, "idempotencyKey": "k-held"}, held_by),
        "Booking PENDING (a replay)": ({"slotId": single, "idempotencyKey": "k-pending"}, queued),
        "SlotNotFound": ({"slotId": nowhere, "idempotencyKey": "k-x"}, other),
        "ValidationError": ({"slotId": "nope", "idempotencyKey": "k-x"}, other),
        "IdempotencyKeyReused": ({"slotId": single, "idempotencyKey": "k-held"}, held_by),
        "NotAuthorized": ({"slotId": roomy, "idempotencyKey": "k-anon"}, None),
        "SlotClosed": ({"slotId": started, "idempotencyKey": "k-late"}, late),
        "TooManyBookings": ({"slotId": roomy, "idempotencyKey": "k-more"}, full),
    }
    for arguments, _ in world.calls["reserveSlot"].values():
        arguments["units"] = 1
    # Parties (reserveSlot's units): sent only by documents that write the argument.
    world.calls["reserveSlot"].update(
        {
            "Booking RESERVED (a replay, units)": (
                {"slotId": roomy, "idempotencyKey": "k-party", "units": 2},
                party_by,
            ),
            "IdempotencyKeyReused (units)": (
                {"slotId": roomy, "idempotencyKey": "k-party", "units": 3},
                party_by,
            ),
            "ValidationError (units)": ({"slotId": roomy, "idempotencyKey": "k-big", "units": 6}, other),
        }
    )
    world.calls["confirmBooking"] = {
        "BookingNotFound": ({"bookingId": nowhere}, other),
        "ValidationError": ({"bookingId": "nope"}, other),
        "NotAuthorized": ({"bookingId": held["id"]}, None),
        "InvalidTransition": ({"bookingId": pending["id"]}, queued),
        "NotHolder": ({"bookingId": held["id"]}, ADMIN),
        "HoldExpired": ({"bookingId": expiring["id"]}, lapsed),
    }
    world.calls["cancelBooking"] = {
        "BookingNotFound": ({"bookingId": nowhere, "reason": "r"}, other),
        "ValidationError": ({"bookingId": "nope", "reason": None}, other),
        "ValidationError (reason)": ({"bookingId": held["id"], "reason": "x" * 501}, held_by),
        "NotAuthorized": ({"bookingId": held["id"], "reason": None}, None),
        "InvalidTransition": ({"bookingId": cancelled["id"], "reason": "again"}, done),
    }
    return world


# --- documents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One selection on the mutation's result: `kind` is typename, inline, spread, nested, history or
    directive (the last two have no plan); `fields` are (aliased?, name) pairs."""

    kind: str
    condition: str = ""
    fields: tuple[tuple[bool, str], ...] = ()


@dataclass(frozen=True)
class Document:
    root: str
    alias: bool
    named: bool
    beside: bool  # another operation in the document (so the name must be given)
    inline: bool  # arguments written in the document rather than sent as variables
    without_reason: bool
    pieces: tuple[Piece, ...]
    without_units: bool = False

    @property
    def plannable(self) -> bool:
        return all(p.kind not in ("history", "directive") for p in self.pieces)

    def render(self, arguments: dict[str, Any]) -> tuple[str, dict[str, Any] | None, str | None]:
        """The document's text, its variables and the operation name to send."""
        names = [
            a
            for a in ARGUMENTS[self.root]
            if not (a == "reason" and self.without_reason) and not (a == "units" and self.without_units)
        ]
        if self.inline:
            written = ", ".join(f"{a}: {json.dumps(arguments[a])}" for a in names)
            declared, variables = "", None
        else:
            written = ", ".join(f"{a}: ${a}" for a in names)
            declared = "(" + ", ".join(f"${a}: {VARIABLE_TYPES[a]}" for a in names) + ")"
            variables = {a: arguments[a] for a in names}
        aliases = iter(f"a{n}" for n in range(1000))
        fragments: list[str] = []
        selections = [self._piece(p, aliases, fragments) for p in self.pieces]
        head = f"mutation {'Hot' if self.named else ''}{declared}"
        root = f"{'hot: ' if self.alias else ''}{self.root}({written})"
        text = f"{head} {{ {root} {{ {' '.join(selections)} }} }}"
        if self.beside:
            text = "query Other { __typename }\n" + text
        text += "".join(f"\n{f}" for f in fragments)
        return text, variables, "Hot" if self.named and self.beside else None

    @staticmethod
    def _piece(piece: Piece, aliases: Any, fragments: list[str]) -> str:
        fields = " ".join(
            f"{next(aliases) + ': ' if aliased else ''}{name}" for aliased, name in piece.fields
        )
        if piece.kind == "typename":
            return fields
        if piece.kind == "inline":
            return f"... on {piece.condition} {{ {fields} }}"
        if piece.kind == "spread":
            fragments.append(f"fragment F{len(fragments)} on {piece.condition} {{ {fields} }}")
            return f"...F{len(fragments) - 1}"
        if piece.kind == "nested":
            return f"... on Error {{ ... on {piece.condition} {{ {fields} }} }}"
        if piece.kind == "history":
            return "... on Booking { history { event } }"
        return "__typename @include(if: true)"


def _result_union(root: str) -> GraphQLUnionType:
    mutation = SCHEMA.mutation_type
    assert mutation is not None
    union = get_nullable_type(mutation.fields[root].type)
    assert isinstance(union, GraphQLUnionType)
    return union


def _leaves(type_name: str) -> list[str]:
    named = SCHEMA.get_type(type_name)
    if isinstance(named, GraphQLUnionType):
        return ["__typename"]
    assert isinstance(named, GraphQLObjectType) or type_name == "Error"
    fields = named.fields  # type: ignore[union-attr]
    return ["__typename", *(n for n, f in fields.items() if is_leaf_type(get_named_type(f.type)))]


@st.composite
def documents(draw: st.DrawFn) -> Document:
    root = draw(st.sampled_from(sorted(ARGUMENTS)))
    union = _result_union(root)
    members = [m.name for m in union.types]
    conditions = [*members, "Error", union.name]

    def fields(condition: str) -> st.SearchStrategy[tuple[tuple[bool, str], ...]]:
        return st.lists(
            st.tuples(st.booleans(), st.sampled_from(_leaves(condition))), min_size=1, max_size=4
        ).map(tuple)

    @st.composite
    def piece(draw_piece: st.DrawFn) -> Piece:
        kind = draw_piece(
            st.sampled_from(
                ["typename", *["inline"] * 4, *["spread"] * 3, "nested"] * 2 + ["history", "directive"]
            )
        )
        if kind in ("history", "directive"):
            return Piece(kind)
        if kind == "typename":
            return Piece(kind, "", ((draw_piece(st.booleans()), "__typename"),))
        errors = [m for m in members if m != "Booking"]
        condition = draw_piece(st.sampled_from(errors if kind == "nested" else conditions))
        return Piece(kind, condition, draw_piece(fields(condition)))

    named = draw(st.booleans())
    return Document(
        root=root,
        alias=draw(st.booleans()),
        named=named,
        beside=named and draw(st.booleans()),
        inline=draw(st.booleans()),
        without_reason=draw(st.booleans()),
        pieces=tuple(draw(st.lists(piece(), min_size=1, max_size=5))),
        without_units=draw(st.booleans()),
    )


def _every_member(root: str) -> Document:
    """A document selecting every leaf of every member of the root's union: one per member."""
    pieces = [Piece("typename", "", ((False, "__typename"),))]
    for member in _result_union(root).types:
        pieces.append(Piece("inline", member.name, tuple((False, n) for n in _leaves(member.name))))
    return Document(root, False, False, False, False, False, tuple(pieces))


EVERY_MEMBER = {root: _every_member(root) for root in ARGUMENTS}


# --- the comparisons -----------------------------------------------------------------------------


def _same(expected: httpx.Response, got: httpx.Response, what: str) -> None:
    assert got.status_code == expected.status_code, what
    assert got.headers.get("content-type") == expected.headers.get("content-type"), what
    assert got.content == expected.content, f"{what}\nnormal: {expected.text}\nfast:   {got.text}"


async def test_drawn_documents_answer_the_same_bytes_on_both_paths(apps: Apps, world: World) -> None:
    bridge = Bridge(asyncio.get_running_loop(), 60.0)
    book = apps.fast.book
    assert book is not None
    seen: set[tuple[str, str]] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(document=documents())
    @example(document=EVERY_MEMBER["reserveSlot"])
    @example(document=EVERY_MEMBER["confirmBooking"])
    @example(document=EVERY_MEMBER["cancelBooking"])
    def probe(document: Document) -> None:
        calls = world.calls[document.root]
        if document.root == "cancelBooking" and document.without_reason:
            calls = {k: v for k, v in calls.items() if "reason" not in k}
        if document.root == "reserveSlot" and document.without_units:
            calls = {k: v for k, v in calls.items() if "units" not in k}
        for outcome, (arguments, bearer) in calls.items():
            text, variables, name = document.render(arguments)
            served = book.stats.served
            normal = bridge.run(post(apps.normal, text, variables, bearer, name))
            taught = bridge.run(post(apps.fast, text, variables, bearer, name))
            fast = bridge.run(post(apps.fast, text, variables, bearer, name))
            _same(normal, taught, text)
            _same(normal, fast, text)
            answer = normal.json()
            assert "errors" not in answer, answer
            member = answer["data"]["hot" if document.alias else document.root]
            if document.plannable:
                assert book.find(text, name) is not None, text
                assert book.stats.served > served, text
                seen.add((document.root, outcome))
            else:
                assert book.find(text, name) is None and book.stats.served == served, text
            if "__typename" in member:
                assert member["__typename"] == outcome.split(" ")[0]

    await asyncio.to_thread(probe)
    # The fast path answered every reachable member of every hot mutation, not just one.
    assert seen == {(root, outcome) for root, calls in world.calls.items() for outcome in calls}


@pytest.mark.parametrize(
    "document",
    [
        CONFIRM,
        """mutation Go($b: ID!) { done: confirmBooking(bookingId: $b) { ...B ... on Error { message }
              __typename } } fragment B on Booking { state createdAt expiresAt id slotId holder }""",
        CANCEL,
        """mutation($b: ID!, $r: String) { cancelBooking(bookingId: $b, reason: $r) {
              ... on Booking { a: state b: id queuePosition }
              ... on CancelBookingResult { __typename } } }""",
    ],
)
async def test_confirm_and_cancel_answer_the_same_on_twin_bookings(apps: Apps, document: str) -> None:
    """A booking confirmed or cancelled once cannot be again: the normal path moves one booking and
    the fast path its twin, and the answers are the same once the twins' own values are swapped."""
    holder = token(f"twin-{uuid.uuid4().hex[:6]}")
    variables = {"r": "changed plans"} if "$r" in document else {}
    book = apps.fast.book
    assert book is not None
    taught = await post(apps.fast, document, {"b": str(uuid.uuid4()), **variables}, holder, None)
    assert "BookingNotFound" in taught.text, taught.text
    twins: list[dict[str, Any]] = []
    for n in range(2):
        slot = await new_slot(apps.fast, 1, starts_in=timedelta(days=1))
        booking = await reserve(apps.fast, holder, slot, f"k-twin-{n}")
        seen = await run(
            apps.fast,
            "query($b: ID!) { booking(id: $b) { id slotId createdAt expiresAt } }",
            {"b": booking["id"]},
            holder,
        )
        twins.append(seen["booking"])
    served = book.stats.served
    normal = await post(apps.normal, document, {"b": twins[0]["id"], **variables}, holder, None)
    fast = await post(apps.fast, document, {"b": twins[1]["id"], **variables}, holder, None)
    assert book.stats.served == served + 1
    swapped = fast.text
    for key in ("id", "slotId", "createdAt", "expiresAt"):
        swapped = swapped.replace(twins[1][key], twins[0][key])
    assert normal.status_code == fast.status_code == 200
    assert normal.headers["content-type"] == fast.headers["content-type"]
    assert swapped == normal.text
    assert '"Booking"' in normal.text or '"state"' in normal.text


async def test_an_internal_failure_is_masked_alike_on_both_paths(
    apps: Apps, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any) -> Any:
        raise RuntimeError("the database said something private")

    arguments, bearer = world.calls["confirmBooking"]["BookingNotFound"]
    document = """mutation Hot($bookingId: ID!) {
      first: confirmBooking(bookingId: $bookingId) { __typename ... on Error { message } } }"""
    book = apps.fast.book
    assert book is not None
    await post(apps.fast, document, arguments, bearer, None)  # taught while it still answers
    monkeypatch.setattr(reservations, "confirm_booking", broken)
    served = book.stats.served
    normal = await post(apps.normal, document, arguments, bearer, None)
    fast = await post(apps.fast, document, arguments, bearer, None)
    assert book.stats.served == served + 1
    _same(normal, fast, document)
    body = fast.json()
    assert body["data"] is None and body["errors"][0]["message"] == "Internal error."
    assert body["errors"][0]["path"] == ["first"] and "private" not in fast.text


async def test_requests_the_plan_does_not_read_go_the_normal_way(apps: Apps, world: World) -> None:
    """Numbers for ids, missing variables, other content types, batches: each answered as before."""
    arguments, bearer = world.calls["reserveSlot"]["SlotNotFound"]
    document = "mutation($s: ID!, $k: String!) { reserveSlot(slotId: $s, idempotencyKey: $k) { __typename } }"
    variables = {"s": arguments["slotId"], "k": arguments["idempotencyKey"]}
    await post(apps.fast, document, variables, bearer, None)
    book = apps.fast.book
    assert book is not None and book.find(document, None) is not None
    served = book.stats.served
    odd_bodies: list[Any] = [
        {"query": document, "variables": {"s": 12345, "k": "k-x"}},
        {"query": document, "variables": {"s": arguments["slotId"]}},
        {"query": document, "variables": {"s": arguments["slotId"], "k": None}},
        {"query": document, "variables": [variables]},
        {"query": document, "variables": variables, "operationName": 7},
        {"query": document, "variables": variables, "extensions": "x"},
        [{"query": document, "variables": variables}],
    ]
    headers = {"Authorization": f"Bearer {bearer}"}
    for body in odd_bodies:
        answers = [
            await side.http.post("/graphql", json=body, headers=headers) for side in (apps.normal, apps.fast)
        ]
        _same(answers[0], answers[1], json.dumps(body))
    for content_type in ("text/plain", "application/graphql"):
        sent = json.dumps({"query": document, "variables": variables})
        answers = [
            await side.http.post("/graphql", content=sent, headers={**headers, "Content-Type": content_type})
            for side in (apps.normal, apps.fast)
        ]
        _same(answers[0], answers[1], content_type)
    assert book.stats.served == served
    # JSON with parameters is still JSON (Strawberry parses the header): the plan answers it.
    sent = json.dumps({"query": document, "variables": variables})
    charset = {**headers, "Content-Type": "application/json; charset=utf-8"}
    answers = [
        await side.http.post("/graphql", content=sent, headers=charset) for side in (apps.normal, apps.fast)
    ]
    _same(answers[0], answers[1], "charset")
    assert book.stats.served == served + 1


async def test_units_the_plan_does_not_read_go_the_normal_way(apps: Apps, world: World) -> None:
    """An Int the plan does not take as it is (a string, a float, a boolean, null, beyond 32 bits, or
    left out of a non-null variable) is answered by graphql-core, the same on both paths."""
    arguments, bearer = world.calls["reserveSlot"]["SlotNotFound"]
    book = apps.fast.book
    assert book is not None
    sides = (apps.normal, apps.fast)
    for declared in ("Int!", "Int"):
        document = (
            f"mutation($s: ID!, $k: String!, $u: {declared}) {{"
            " reserveSlot(slotId: $s, idempotencyKey: $k, units: $u)"
            " { __typename ... on Error { message } } }"
        )
        plain = {"s": arguments["slotId"], "k": arguments["idempotencyKey"]}
        await post(apps.fast, document, {**plain, "u": 2}, bearer, None)
        assert book.find(document, None) is not None
        served = book.stats.served
        for odd in ("2", 2.0, True, None, 2**31):
            variables = {**plain, "u": odd}
            answers = [
                await post(side, document, variables, bearer, None) for side in (apps.normal, apps.fast)
            ]
            _same(answers[0], answers[1], f"{declared} {odd!r}")
        answers = [await post(side, document, plain, bearer, None) for side in sides]
        _same(answers[0], answers[1], f"{declared} left out")
        # Only a nullable variable left out is read by the plan (the argument's default, 1).
        assert book.stats.served == served + (declared == "Int")


async def test_documents_that_fail_validation_are_never_learnt(apps: Apps, world: World) -> None:
    arguments, bearer = world.calls["confirmBooking"]["BookingNotFound"]
    refused = [
        "mutation($b: ID!) { confirmBooking(bookingId: $b) { ... on Booking { nope } } }",
        "mutation($b: ID!, $unused: String) { confirmBooking(bookingId: $b) { __typename } }",
        "mutation($b: ID!) { confirmBooking(bookingId: $b) { "
        + " ".join(f"a{n}: __typename" for n in range(31))
        + " } }",  # over the document budget's aliases
    ]
    book = apps.fast.book
    assert book is not None
    for document in refused:
        answers = [await post(side, document, arguments, bearer, None) for side in (apps.normal, apps.fast)]
        answers.append(await post(apps.fast, document, arguments, bearer, None))
        assert "errors" in answers[0].json()
        _same(answers[0], answers[1], document)
        _same(answers[0], answers[2], document)
        assert book.find(document, None) is None and (document, None) not in book.plans
