"""The hot mutations' fast path over HTTP: a document seen before runs its compiled plan.

The first request with a document text and operation name goes the normal way (Strawberry's view:
parse under the token limit, validation with the document budget, graphql-core's execution). Once
it has passed parsing and validation (LearnPlans, as execution begins), the document passed every
edge rule, and those depend on its text and operation name alone: the plan book then compiles it
(operation_plans.py), so that even the rest of the burst it arrived in can use it. Later requests
with the same text and name, sent the same way (POST, JSON, no streaming), run the plan: the same
resolver with the same context, the same masked errors, the same JSON bytes. Everything else
(other documents, unusual variables, other content types) goes the normal way, untouched.

Outer edge rules are not this module's: the bearer check, body limit, browser headers and request
timing wrap both paths alike. Schema extensions do not run on a plan: today's act only on parsing
and validation (done once, on the normal path) and on errors (masked here as MaskErrors would);
one that must see every execution (tracing, say) has to be mirrored here or turn the fast path off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, GraphQLSchema, located_error, parse
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope
from strawberry.extensions import SchemaExtension
from strawberry.http.parse_content_type import parse_content_type

from slotengine.api.context import Context
from slotengine.api.document_cache import MAX_CACHED_DOCUMENT_CHARS, BoundedCache
from slotengine.api.operation_plans import NotPlain, Plan, compile_plan

log = logging.getLogger(__name__)

PlanKey = tuple[str, str | None]  # the document's text, the operation name
MAX_PLANS = 200


class _NoPlan:
    """Kept for documents that have no plan, so they are compiled once, not on every request."""


NO_PLAN = _NoPlan()


@dataclass
class PlanStats:
    """How the fast path has fared: requests it answered, documents it compiled."""

    served: int = 0
    compiled: int = 0


@dataclass
class PlanBook:
    """Plans by document text and operation name, learnt from documents the normal path validated."""

    plans: BoundedCache[PlanKey, Plan | _NoPlan] = field(
        default_factory=lambda: BoundedCache(
            max_entries=MAX_PLANS,
            max_chars=64 * MAX_CACHED_DOCUMENT_CHARS,
            max_item_chars=MAX_CACHED_DOCUMENT_CHARS,
        )
    )
    stats: PlanStats = field(default_factory=PlanStats)

    def find(self, query: str, operation_name: str | None) -> Plan | None:
        known = self.plans.get((query, operation_name))
        return known if isinstance(known, Plan) else None

    def learn(self, schema: GraphQLSchema, query: str, operation_name: str | None) -> None:
        """Compile the plan of a document that passed parsing and validation against `schema`."""
        key = (query, operation_name)
        if len(query) > MAX_CACHED_DOCUMENT_CHARS or key in self.plans:
            return
        plan = compile_plan(schema, parse(query), operation_name)
        self.stats.compiled += plan is not None
        self.plans.put(key, plan or NO_PLAN, len(query))


class LearnPlans(SchemaExtension):
    """Hands the plan book each document that passed parsing and validation, as it starts running."""

    def __init__(self, book: PlanBook) -> None:
        self.book = book

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None:
            # The name the request gave (None when it gave none), not the one Strawberry derives
            # from the document: requests are looked up by what they send.
            name = getattr(context, "_provided_operation_name", context.operation_name)
            self.book.learn(context.schema._schema, context.query, name)
        yield


@dataclass(frozen=True, slots=True)
class _Info:
    """What the hot resolvers read of Strawberry's Info: the context."""

    context: Context


@dataclass
class FastPath:
    """Answers a POST whose document has a plan; says None to anything else."""

    book: PlanBook
    parse_json: Callable[[bytes], Any]  # the view's: the same strictness, the same refusals
    encode_json: Callable[[object], str | bytes]
    streams: Callable[[Headers], object | None]  # the view's streaming transport for these headers
    report_errors: Callable[[list[GraphQLError]], None]  # logs, as the schema does
    mask_error: Callable[[GraphQLError], GraphQLError]

    def wants(self, scope: Scope) -> bool:
        """A POST of JSON, answered as one JSON document: the only requests plans serve."""
        if scope["method"] != "POST":
            return False
        headers = Headers(scope=scope)
        content_type = headers.get("content-type") or ""
        if content_type != "application/json":  # the usual header needs no parsing (an email parser)
            content_type, _ = parse_content_type(content_type)
        return "application/json" in content_type and self.streams(headers) is None

    async def answer(self, scope: Scope, body: bytes) -> Response | None:
        """The response to a request `wants` accepted, or None when the normal path must answer."""
        try:
            data = self.parse_json(body)
        except Exception:  # the normal path refuses it, in its own words
            return None
        query = data.get("query")
        name = data.get("operationName")
        variables = data.get("variables")
        if (
            type(query) is not str
            or not (name is None or type(name) is str)
            or not (variables is None or type(variables) is dict)
            or not (data.get("extensions") is None or type(data.get("extensions")) is dict)
        ):
            return None
        plan = self.book.find(query, name)
        if plan is None:
            return None
        try:
            arguments = plan.keyword_arguments(variables)
        except NotPlain:
            return None
        self.book.stats.served += 1
        return Response(
            self.encode_json(await self._run(plan, scope, arguments)), media_type="application/json"
        )

    async def _run(self, plan: Plan, scope: Scope, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await plan.resolver(None, _Info(Context.of_request(scope)), **arguments)
            return {"data": plan.data(answer)}
        except Exception as exc:
            # As graphql-core answers a resolver that raised: the field is null, and being
            # non-null, so is `data`; the error is logged whole and shown masked.
            error = located_error(exc, [plan.node], [plan.key])
            self.report_errors([error])
            return {"data": None, "errors": [self.mask_error(error).formatted]}


async def read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The request's whole body (None when the client left before sending it all), and a
    `receive` that hands out the same messages again before what follows."""
    seen: list[Message] = []
    while True:
        message = await receive()
        seen.append(message)
        if message["type"] != "http.request":
            return None, _replay(seen, receive)
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in seen), _replay(seen, receive)


def _replay(seen: list[Message], receive: Receive) -> Receive:
    pending = list(seen)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
