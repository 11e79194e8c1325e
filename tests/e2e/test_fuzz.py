"""Fuzzing the GraphQL API: Schemathesis writes queries and mutations from schema.graphql.

Every operation of the exported schema gets generated documents, valid ones (positive mode) and
ones the schema forbids (negative mode), sent over HTTP to the real ASGI app on the suite's
PostgreSQL and Redis, once with the admin's token and once with a holder's. Whatever comes in,
the answer must be a client's answer, never the engine tripping over it:

- no 5xx, and a JSON object as the body;
- no error raised by a resolver (an `errors` entry with a `path`): the engine's refusals are
  typed union members, and an exception is masked as "Internal error." (a bug by definition);
- no traceback or Python exception class name leaking into any message.

Generated IDs are random strings, so a small strategy of our own swaps in, most of the time,
ids of real slots and bookings (seeded first, then harvested from answers), real IANA zones and
other values the engine accepts, and puts the end of a range after its start half the time;
DateTime, Date and Time values lean towards the near future, with naive ones and the edges of the
calendar mixed in. Every root field also asks for `__typename`, so the figures say which members
came back.

A document's string literals cannot carry a lone surrogate, so a second, hand-rolled test sends
hostile strings (NUL, lone surrogates, controls, 5,000 characters) as JSON variables to every
string and ID argument.

Driving the app from Hypothesis: the pool and the Redis client belong to the session's event loop,
so Hypothesis runs in a worker thread and hands each request back to that loop (as the model test
does). Failures are collected rather than raised, so one run reports all of them, each with the
shortest document that showed it.

SLOTENGINE_FUZZ_EXAMPLES (default 40) is the number of positive documents per operation and role;
negative ones are a third of that, hostile strings half of it per argument. The default was 80
while the schema had half as many operations: the suite's total stays what it was, and a deeper
run sets it higher. The figures (cases,
seconds, the union members that came back) are printed at the end.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

import graphql
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.graphql import nodes
from schemathesis.schemas import APIOperation

from slotengine.domain.errors import DomainError
from slotengine.domain.recurrence import Weekday
from tests.e2e.conftest import ADMIN, GraphQL, token
from tests.loop_bridge import Bridge

T = TypeVar("T")

EXAMPLES = int(os.environ.get("SLOTENGINE_FUZZ_EXAMPLES") or 40)
NEGATIVE_EXAMPLES = max(1, EXAMPLES // 3)
HOSTILE_EXAMPLES = max(1, EXAMPLES // 2)
CALL_TIMEOUT = 30.0
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"

ROLES = {"admin": ADMIN, "holder": token("fuzz-holder")}
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Apia")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Every exception class Python has, as a word: none may reach a client in a message.
EXCEPTION_NAMES = re.compile(
    r"\b("
    + "|".join(
        sorted(
            name
            for name, value in vars(builtins).items()
            if isinstance(value, type) and issubclass(value, BaseException) and name != "Warning"
        )
    )
    + r"|asyncpg|tortoise|psycopg|redis\.exceptions|IntegrityError|OperationalError)\b"
)
MASKED = "Internal error."


def _names(cls: type[DomainError]) -> set[str]:
    return {cls.__name__}.union(*(_names(sub) for sub in cls.__subclasses__()))


REFUSALS = _names(DomainError) - {"DomainError"}
NOW = datetime.now(UTC).replace(microsecond=0)


# --- values the schema's scalars get -------------------------------------------------------------

_offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_soon = st.integers(-3 * 86_400, 60 * 86_400).map(lambda seconds: NOW + timedelta(seconds=seconds))
# The first branch of a one_of is drawn most: usable values first, then the odd and the extreme.
_instants = st.one_of(
    _soon.map(datetime.isoformat),
    st.one_of(
        _soon.map(lambda moment: moment.replace(tzinfo=None).isoformat()),  # no offset
        st.datetimes(timezones=st.none() | st.just(UTC) | _offsets).map(datetime.isoformat),
        st.sampled_from(
            [
                "0001-01-01T00:00:00+00:00",
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59.999999+00:00",
                "9999-12-31T23:59:59-14:00",
                "9999-12-31T00:00:00Z",
            ]
        ),
    ),
)
_days = st.one_of(
    st.integers(-3, 60).map(lambda days: (NOW.date() + timedelta(days=days)).isoformat()),
    st.dates().map(date.isoformat)
    | st.sampled_from(["0001-01-01", "1900-01-01", "9998-12-31", "9999-12-31"]),
)
_clock = st.one_of(
    st.times().map(lambda moment: moment.isoformat()),
    st.times(timezones=st.just(UTC) | _offsets).map(lambda moment: moment.isoformat()),
    st.sampled_from(["00:00", "09:00", "17:00", "23:59:59.999999"]),
)
schemathesis.graphql.scalar("DateTime", _instants.map(nodes.String))
schemathesis.graphql.scalar("Date", _days.map(nodes.String))
schemathesis.graphql.scalar("Time", _clock.map(nodes.String))

SCHEMA = schemathesis.graphql.from_path(SCHEMA_FILE)
Operation = APIOperation[Any, Any, Any, Any]
OPERATIONS: list[Operation] = [
    result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)
]


# --- driving the app from Hypothesis's thread ---------------------------------------------------


@dataclass
class Findings:
    """Cases run, members seen, and the failures: the shortest document for each kind."""

    cases: Counter[str] = field(default_factory=Counter)
    members: Counter[str] = field(default_factory=Counter)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    occurrences: Counter[tuple[str, str]] = field(default_factory=Counter)

    def fail(self, label: str, kind: str, document: str) -> None:
        key = (label, kind)
        self.occurrences[key] += 1
        if key not in self.failures or len(document) < len(self.failures[key]):
            self.failures[key] = document


class RealIds:
    """Ids of real slots and bookings: seeded, then taken from the members answers name."""

    LIMIT = 300

    def __init__(self, slots: list[str], bookings: list[str]) -> None:
        self.slots = list(slots)
        self.bookings = list(bookings)

    def harvest(self, data: object) -> None:
        if isinstance(data, list):
            for item in data:
                self.harvest(item)
        elif isinstance(data, dict):
            kind = data.get("__typename")  # asked of every root field (and list item) we send
            found = {
                "Slot": [(self.slots, data.get("id"))],
                "Booking": [(self.bookings, data.get("id")), (self.slots, data.get("slotId"))],
                "QueuePosition": [(self.bookings, data.get("bookingId"))],
            }.get(str(kind), [])
            for pool, value in found:
                fresh = isinstance(value, str) and UUID_RE.match(value) and value not in pool
                if fresh and len(pool) < self.LIMIT:
                    pool.append(str(value))
            for value in data.values():
                self.harvest(value)


# (earlier, later, step): createSlot's times, createSlots's dates and daily window.
ORDERED_PAIRS = (
    ("startsAt", "endsAt", timedelta(minutes=15)),
    ("firstDate", "lastDate", timedelta(days=1)),
    ("windowStart", "windowEnd", timedelta(minutes=30)),
)


def _after(value: str, delta: timedelta) -> str | None:
    """The same kind of value (DateTime, Date or Time) `delta` later; None when there is none."""
    try:
        if len(value) == 10:
            return (date.fromisoformat(value) + delta).isoformat()
        if "T" in value:
            return (datetime.fromisoformat(value) + delta).isoformat()
        clock = time.fromisoformat(value)
        later = datetime.combine(date(2000, 1, 1), clock) + delta
        return later.timetz().isoformat() if later.date() == date(2000, 1, 1) else None
    except (ValueError, OverflowError):
        return None


def _plausible() -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """Values the engine accepts, for arguments and input fields random ones rarely get right."""
    return {
        "timeZone": st.sampled_from(ZONES).map(nodes.String),
        "resource": st.just("fuzz-room").map(nodes.String),
        "capacity": st.integers(1, 3).map(nodes.Int),
        "holdSeconds": st.integers(1, 600).map(nodes.Int),
        "slotMinutes": st.sampled_from([15, 30, 60]).map(nodes.Int),
        "everyMinutes": st.sampled_from([20, 30, 90]).map(nodes.Int),
        "idempotencyKey": st.text("abc-", min_size=1, max_size=8).map(nodes.String),
    }


class _Substitute(graphql.Visitor):
    """Swaps in a real id, or a value the engine accepts, for a generated one (most of the time)."""

    def __init__(self, draw: st.DataObject, real: RealIds) -> None:
        super().__init__()
        self.draw = draw
        self.plausible = _plausible()
        slots = st.sampled_from(real.slots).map(nodes.String)
        bookings = st.sampled_from(real.bookings).map(nodes.String)
        # `id` is a slot's in slot(id:) and a booking's in booking(id:): either may be asked.
        self.plausible.update(slotId=slots, bookingId=bookings, id=slots | bookings)

    def _value(self, name: str) -> graphql.ValueNode | None:
        strategy = self.plausible.get(name)
        if strategy is None:
            return None
        # Hypothesis leans to the first branch: the plausible value, about four times in five.
        chosen: graphql.ValueNode | None = self.draw.draw(strategy | st.none(), label=name)
        return chosen

    def enter_object_value(self, node: graphql.ObjectValueNode, *_: object) -> graphql.ObjectValueNode | None:
        """Half the time, the later of a pair of bounds follows the earlier by a few steps."""
        fields = {field.name.value: field for field in node.fields}
        for earlier, later, step in ORDERED_PAIRS:
            start, end = fields.get(earlier), fields.get(later)
            if start is None or end is None or not isinstance(start.value, graphql.StringValueNode):
                continue
            if not self.draw.draw(st.booleans(), label=f"{later} after {earlier}"):
                continue
            bound = _after(start.value.value, step * self.draw.draw(st.integers(1, 20), label=later))
            if bound is not None:
                fields[later] = graphql.ObjectFieldNode(name=end.name, value=nodes.String(bound))
        return graphql.ObjectValueNode(fields=tuple(fields.values()))

    def enter_argument(self, node: graphql.ArgumentNode, *_: object) -> graphql.ArgumentNode | None:
        value = self._value(node.name.value)
        return None if value is None else graphql.ArgumentNode(name=node.name, value=value)

    def enter_object_field(self, node: graphql.ObjectFieldNode, *_: object) -> graphql.ObjectFieldNode | None:
        value = self._value(node.name.value)
        return None if value is None else graphql.ObjectFieldNode(name=node.name, value=value)


def _with_typename(document: graphql.DocumentNode) -> graphql.DocumentNode:
    """The document with `__typename` asked first of every root field that has a selection."""

    def field(selection: graphql.SelectionNode) -> graphql.SelectionNode:
        if not isinstance(selection, graphql.FieldNode) or selection.selection_set is None:
            return selection
        typename = graphql.FieldNode(name=graphql.NameNode(value="__typename"))
        selections = (typename, *selection.selection_set.selections)
        return replace(selection, selection_set=graphql.SelectionSetNode(selections=selections))

    def operation(definition: graphql.DefinitionNode) -> graphql.DefinitionNode:
        if not isinstance(definition, graphql.OperationDefinitionNode):
            return definition
        roots = tuple(field(selection) for selection in definition.selection_set.selections)
        return replace(definition, selection_set=graphql.SelectionSetNode(selections=roots))

    return replace(document, definitions=tuple(operation(d) for d in document.definitions))


def prepare(case: Case[Operation], draw: st.DataObject, real: RealIds) -> str:
    """The document to send: the generated one with real values swapped in now and then."""
    try:
        document = graphql.parse(str(case.body))
    except graphql.GraphQLError:
        return str(case.body)  # negative mode may write what does not parse: send it as it is
    # A negative case's arguments are wrong on purpose: left alone, they stay wrong.
    if case.meta is None or case.meta.generation.mode.is_positive:
        document = _with_typename(graphql.visit(document, _Substitute(draw, real)))
    return graphql.print_ast(document)


def problems(case: Case[Operation], response: httpx.Response) -> list[str]:
    """What is wrong with the answer, as failure kinds; empty when it is a client's answer."""
    found = _own_problems(response)
    if not found and not _refused(response):
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except FailureGroup as group:  # Schemathesis's own verdict: a 5xx or a resolver error
            found += [f"schemathesis: {failure.title}" for failure in group.exceptions]
    return found


def _refused(response: httpx.Response) -> bool:
    """Every error is a read's refusal, coded with its name (NotAuthorized, SlotNotFound, ...): an
    answer the engine meant. Schemathesis knows only a few codes for client errors (ValidationError
    among them) and takes any other error with a path for a resolver that failed."""
    errors = response.json().get("errors") or []
    return bool(errors) and all((e.get("extensions") or {}).get("code") in REFUSALS for e in errors)


def _own_problems(response: httpx.Response) -> list[str]:
    found: list[str] = []
    if response.status_code >= 500:
        found.append(f"HTTP {response.status_code}")
    if "Traceback" in response.text:
        found.append("a traceback in the body")
    try:
        body = response.json()
    except ValueError:
        return [*found, f"not JSON: {response.text[:80]!r}"]
    if not isinstance(body, dict):
        return [*found, "the body is not a JSON object"]
    for error in body.get("errors") or []:
        message = str(error.get("message"))
        code = (error.get("extensions") or {}).get("code")
        if message == MASKED:
            found.append(f"masked internal error at {error.get('path')}")
        elif "path" in error and code not in REFUSALS:
            # A read has no union to carry a refusal: it comes as an error coded with its name.
            found.append(f"a resolver raised: {message[:120]}")
        leaked = EXCEPTION_NAMES.search(json.dumps(error))
        if leaked:
            found.append(f"{leaked.group(0)} leaks in: {message[:120]}")
    return found


def run_operation(
    bridge: Bridge,
    gql: GraphQL,
    operation: Operation,
    mode: GenerationMode,
    examples: int,
    bearer: str,
    real: RealIds,
    findings: Findings,
) -> None:
    headers = {"Authorization": f"Bearer {bearer}"}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        # Every example is a request to real servers; slowness is the point, not a strategy's.
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), draw=st.data())
    def probe(case: Case[Operation], draw: st.DataObject) -> None:
        document = prepare(case, draw, real)
        case.body = document
        response = bridge.run(gql.http.post("/graphql", json={"query": document}, headers=headers))
        findings.cases[operation.label] += 1
        for kind in problems(case, response):
            findings.fail(operation.label, kind, document)
        try:
            data = response.json().get("data") or {}
        except (ValueError, AttributeError):
            return
        real.harvest(data)
        for value in data.values():
            if isinstance(value, dict) and "__typename" in value:
                findings.members[f"{operation.label} -> {value['__typename']}"] += 1

    probe()


# --- the test ------------------------------------------------------------------------------------


async def seed(gql: GraphQL) -> RealIds:
    """Slots and bookings in every live state and a final one, the holder's and others'."""
    holder, other, third = ROLES["holder"], token("fuzz-other"), token("fuzz-third")
    run = uuid.uuid4().hex[:8]
    roomy = await gql.create_slot(capacity=2, resource="fuzz-room")
    single = await gql.create_slot(capacity=1, resource="fuzz-room")
    started = await gql.create_slot(starts_in=-timedelta(minutes=5), resource="fuzz-room")
    held = await gql.reserve(holder, roomy, f"{run}-1")
    confirmed = await gql.confirm(holder, (await gql.reserve(holder, single, f"{run}-2"))["id"])
    waiting = await gql.reserve(other, single, f"{run}-3")
    theirs = await gql.reserve(other, roomy, f"{run}-4")
    cancelled = await gql.cancel(third, (await gql.reserve(third, roomy, f"{run}-5"))["id"], "fuzzing")
    bookings = [held, confirmed, waiting, theirs, cancelled]
    states = ["RESERVED", "CONFIRMED", "PENDING", "RESERVED", "CANCELLED"]
    assert [b["state"] for b in bookings] == states, bookings
    return RealIds([roomy, single, started], [b["id"] for b in bookings])


@pytest.mark.no_cover  # CPU-bound in process: twice as long under coverage's tracer
@pytest.mark.parametrize("role", list(ROLES))
async def test_no_generated_request_trips_the_engine(
    gql: GraphQL, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    real = await seed(gql)
    bridge = Bridge(asyncio.get_running_loop(), CALL_TIMEOUT)
    findings = Findings()
    started = perf_counter()

    def fuzz() -> None:
        for operation in OPERATIONS:
            run_operation(
                bridge, gql, operation, GenerationMode.POSITIVE, EXAMPLES, ROLES[role], real, findings
            )
            run_operation(
                bridge,
                gql,
                operation,
                GenerationMode.NEGATIVE,
                NEGATIVE_EXAMPLES,
                ROLES[role],
                real,
                findings,
            )

    await asyncio.to_thread(fuzz)
    report(findings, f"fuzz as {role}", perf_counter() - started, capsys)


def report(findings: Findings, title: str, elapsed: float, capsys: pytest.CaptureFixture[str]) -> None:
    """Print the figures; fail with the shortest document of every kind of failure."""
    with capsys.disabled():
        print(
            f"\n{title}: {sum(findings.cases.values())} cases over {len(findings.cases)} operations"
            f" in {elapsed:.1f} s, {sum(findings.occurrences.values())} failing"
            f" ({len(findings.failures)} distinct)"
        )
        for member, count in sorted(findings.members.items()):
            print(f"  {member}: {count}")
    details = "\n\n".join(
        f"{label}: {kind} ({findings.occurrences[(label, kind)]}x), e.g.\n{document}"
        for (label, kind), document in sorted(findings.failures.items())
    )
    if findings.failures:
        pytest.fail(f"{title} tripped the engine:\n\n{details}", pytrace=False)


# --- strings no GraphQL literal can carry --------------------------------------------------------

# A document's string literals cannot hold a lone surrogate, but JSON variables can (as "\ud800"),
# and both can hold NUL, which PostgreSQL's text cannot. Each target puts the hostile string `v` in
# one argument; the other arguments are real, so the string gets as far as it can.
HOSTILE = st.one_of(
    st.sampled_from(["\x00", "key\x00", "\ud800", "a\udfffb", "\u202e", "\ufeff", " ", "x" * 5_000]),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zs", "L", "N", "P", "S"]), max_size=40),
)
SLOT_INPUT = {
    "startsAt": (NOW + timedelta(days=2)).isoformat(),
    "endsAt": (NOW + timedelta(days=2, hours=1)).isoformat(),
}
PATTERN = {
    "resource": "fuzz-room",
    "timeZone": "Europe/Berlin",
    "firstDate": (NOW + timedelta(days=2)).date().isoformat(),
    "lastDate": (NOW + timedelta(days=2)).date().isoformat(),
    "weekdays": [day.name for day in Weekday],
    "windowStart": "09:00",
    "windowEnd": "10:00",
    "slotMinutes": 60,
}


@dataclass(frozen=True)
class Target:
    label: str
    document: str
    role: str
    variables: Callable[[RealIds, str], dict[str, Any]]
    fresh_booking: bool = False  # reserve a slot first, as `role`, and pass the booking as $b


TARGETS = [
    Target("slot(id:)", "query($v: ID!) { slot(id: $v) { id } }", "holder", lambda r, v: {"v": v}),
    Target(
        "slots(resource:)",
        "query($v: String) { slots(resource: $v) { id } }",
        "holder",
        lambda r, v: {"v": v},
    ),
    Target("booking(id:)", "query($v: ID!) { booking(id: $v) { id } }", "admin", lambda r, v: {"v": v}),
    Target(
        "queuePosition(bookingId:)",
        "query($v: ID!) { queuePosition(bookingId: $v) { state } }",
        "holder",
        lambda r, v: {"v": v},
    ),
    Target(
        "reserveSlot(slotId:)",
        'mutation($v: ID!) { reserveSlot(slotId: $v, idempotencyKey: "k") { __typename } }',
        "holder",
        lambda r, v: {"v": v},
    ),
    Target(
        "reserveSlot(idempotencyKey:)",
        "mutation($s: ID!, $v: String!) { reserveSlot(slotId: $s, idempotencyKey: $v) { __typename } }",
        "holder",
        lambda r, v: {"s": r.slots[0], "v": v},
    ),
    Target(
        "confirmBooking(bookingId:)",
        "mutation($v: ID!) { confirmBooking(bookingId: $v) { __typename } }",
        "holder",
        lambda r, v: {"v": v},
    ),
    Target(
        "cancelBooking(bookingId:)",
        "mutation($v: ID!) { cancelBooking(bookingId: $v) { __typename } }",
        "holder",
        lambda r, v: {"v": v},
    ),
    Target(
        "cancelBooking(reason:)",
        "mutation($b: ID!, $v: String) { cancelBooking(bookingId: $b, reason: $v) { __typename } }",
        "admin",
        lambda r, v: {"v": v},
        # A live booking each time, so a reason that passes is stored.
        fresh_booking=True,
    ),
    Target(
        "completeBooking(bookingId:)",
        "mutation($v: ID!) { completeBooking(bookingId: $v) { __typename } }",
        "admin",
        lambda r, v: {"v": v},
    ),
    Target(
        "createSlot(input.resource:)",
        "mutation($i: CreateSlotInput!) { createSlot(input: $i) { __typename } }",
        "admin",
        lambda r, v: {"i": {**SLOT_INPUT, "resource": v}},
    ),
    Target(
        "createSlots(input.resource:)",
        "mutation($i: CreateSlotsInput!) { createSlots(input: $i) { __typename } }",
        "admin",
        lambda r, v: {"i": {**PATTERN, "resource": v}},
    ),
    Target(
        "createSlots(input.timeZone:)",
        "mutation($i: CreateSlotsInput!) { createSlots(input: $i) { __typename } }",
        "admin",
        lambda r, v: {"i": {**PATTERN, "timeZone": v}},
    ),
]


async def send(gql: GraphQL, document: str, variables: dict[str, Any], bearer: str) -> httpx.Response:
    """Post with variables as ASCII JSON: "\\ud800" escapes travel where raw surrogates cannot."""
    return await gql.http.post(
        "/graphql",
        content=json.dumps({"query": document, "variables": variables}).encode(),
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
    )


async def hostile_case(gql: GraphQL, target: Target, real: RealIds, value: str) -> httpx.Response:
    bearer = ROLES[target.role]
    variables = target.variables(real, value)
    if target.fresh_booking:
        variables["b"] = (await gql.reserve(bearer, real.slots[0], uuid.uuid4().hex))["id"]
    return await send(gql, target.document, variables, bearer)


async def test_hostile_strings_in_variables_are_refused_not_tripped_over(
    gql: GraphQL, capsys: pytest.CaptureFixture[str]
) -> None:
    real = await seed(gql)
    bridge = Bridge(asyncio.get_running_loop(), CALL_TIMEOUT)
    findings = Findings()
    started = perf_counter()

    def fuzz(target: Target) -> None:
        @settings(
            max_examples=HOSTILE_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(value=HOSTILE)
        def probe(value: str) -> None:
            response = bridge.run(hostile_case(gql, target, real, value))
            findings.cases[target.label] += 1
            for kind in _own_problems(response):
                findings.fail(target.label, kind, json.dumps(value))
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                for answer in (response.json().get("data") or {}).values():
                    member = answer.get("__typename") if isinstance(answer, dict) else None
                    if member is not None:
                        findings.members[f"{target.label} -> {member}"] += 1

        probe()

    for target in TARGETS:
        await asyncio.to_thread(fuzz, target)
    report(findings, "hostile strings", perf_counter() - started, capsys)
