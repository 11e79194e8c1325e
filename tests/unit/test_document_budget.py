"""The document budget against hostile documents: generated, compared with a naive walk, linear in size.

Small documents are measured twice: by the budget's one memoised pass and by a reference that
expands every fragment spread in full (what Strawberry's limiters did), and the two must agree on
every figure and every verdict. Large hostile documents (fragment chains spreading the previous one
k times, nested inline fragments, repeated fields, directives, aliases) are only measured by the
pass, which must look at each selection of the document exactly once, and refuse with the right
code. Work is counted in nodes visited, never timed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import graphql
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    specified_rules,
    validate,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from slotengine.api.document_budget import (
    DocumentBudget,
    document_budget_rule,
    measure,
    refusals,
)
from slotengine.api.schema import DOCUMENT_BUDGET
from slotengine.api.schema import schema as engine_schema

# Types that refer to each other, so depth can grow (the engine's own types nest two levels).
SCHEMA = graphql.build_schema(
    """
    type Query { node: Node  nodes: [Node!]!  count: Int }
    type Node { id: ID!  name: String  child: Node  children: [Node!]!  tags: [String!]! }
    """
)
LIST_FIELDS = {"nodes", "children", "tags"}
# Small limits, so generated documents land on both sides of each of them.
SMALL = DocumentBudget(
    max_depth=3,
    max_aliases=3,
    max_cost=60,
    list_field_cost=4,
    max_fragments=3,
    max_directives=1,
    max_repeats=2,
)
ALIASES = ("a", "b", "c")
DIRECTIVES = ("@include(if: true)", "@skip(if: false)", "@include(if: true)")


# --- a naive reference: every spread expanded in full, nothing memoised ---------------------------


@dataclass
class Naive:
    depth: int
    aliases: int
    cost: int


def _naive(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    budget: DocumentBudget,
    on_path: frozenset[str] = frozenset(),
) -> Naive:
    total = Naive(0, 0, 0)
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            name = selection.name.value
            cost = budget.list_field_cost if name in LIST_FIELDS else 1
            inner = (
                _naive(selection.selection_set, fragments, budget, on_path)
                if selection.selection_set
                else None
            )
            depth = 0 if inner is None or name.startswith("__") else inner.depth + 1
            part = Naive(
                depth,
                (1 if selection.alias else 0) + (inner.aliases if inner else 0),
                cost + (inner.cost if inner else 0),
            )
        elif isinstance(selection, InlineFragmentNode):
            part = _naive(selection.selection_set, fragments, budget, on_path)
        else:
            assert isinstance(selection, FragmentSpreadNode)
            name = selection.name.value
            if name in on_path or name not in fragments:
                continue
            part = _naive(fragments[name].selection_set, fragments, budget, on_path | {name})
        total = Naive(max(total.depth, part.depth), total.aliases + part.aliases, total.cost + part.cost)
    return total


def _most_repeats(selection_set: SelectionSetNode) -> int:
    """The most times one response name occurs in one selection set, inline fragments merged in."""
    most = 0

    def walk(node: SelectionSetNode, names: Counter[str]) -> None:
        nonlocal most
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                names[(selection.alias or selection.name).value] += 1
                most = max(most, max(names.values()))
                if selection.selection_set:
                    walk(selection.selection_set, Counter())
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set, names)

    walk(selection_set, Counter())
    return most


def _naive_codes(source: str, budget: DocumentBudget) -> set[str]:
    document = parse(source)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    codes: set[str] = set()
    measured = [_naive(op.selection_set, fragments, budget) for op in operations]
    if len(fragments) > budget.max_fragments:
        codes.add("TOO_MANY_FRAGMENTS")
    if sum(m.aliases for m in measured) > budget.max_aliases:
        codes.add("TOO_MANY_ALIASES")
    if any(m.depth > budget.max_depth for m in measured):
        codes.add("QUERY_TOO_DEEP")
    if any(m.cost > budget.max_cost for m in measured):
        codes.add("QUERY_TOO_COMPLEX")
    sets = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, (FragmentDefinitionNode, OperationDefinitionNode))
    ]
    if max((_most_repeats(s) for s in sets), default=0) > budget.max_repeats:
        codes.add("TOO_MANY_REPEATS")
    directives = [len(n.directives or ()) for n in _all_nodes(document)]
    if max(directives, default=0) > budget.max_directives:
        codes.add("TOO_MANY_DIRECTIVES")
    return codes


def _all_nodes(document: graphql.DocumentNode) -> list[graphql.Node]:
    """Every definition and selection of the document as written (no spread followed)."""
    found: list[graphql.Node] = []

    class Collect(graphql.Visitor):
        def enter(self, node: graphql.Node, *_args: object) -> None:
            if isinstance(
                node,
                (
                    OperationDefinitionNode,
                    FragmentDefinitionNode,
                    FieldNode,
                    InlineFragmentNode,
                    FragmentSpreadNode,
                ),
            ):
                found.append(node)

    graphql.visit(document, Collect())
    return found


# --- generated documents over SCHEMA ---------------------------------------------------------------


@st.composite
def selection_sets(draw: st.DrawFn, fragments: list[str], depth: int, most_directives: int = 1) -> str:
    """A selection set on Node: fields (aliased, with directives, nested), inline fragments, spreads."""
    items: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["leaf", "leaf", "nested", "nested", "inline", "spread"]))
        directives = " ".join(DIRECTIVES[: draw(st.sampled_from([0, 0, 0, most_directives]))])
        if kind == "spread" and fragments:
            items.append(f"...{draw(st.sampled_from(fragments))} {directives}")
        elif kind == "inline" and depth > 0:
            items.append(
                f"... on Node {directives} {draw(selection_sets(fragments, depth - 1, most_directives))}"
            )
        elif kind == "nested" and depth > 0:
            alias = draw(st.sampled_from(("", *[f"{a}: " for a in ALIASES])))
            field = draw(st.sampled_from(["child", "children"]))
            items.append(
                f"{alias}{field} {directives} {draw(selection_sets(fragments, depth - 1, most_directives))}"
            )
        else:
            alias = draw(st.sampled_from(("", "", *[f"{a}: " for a in ALIASES])))
            field = draw(st.sampled_from(["id", "name", "tags", "__typename"]))
            items.append(f"{alias}{field} {directives}")
    return "{ " + " ".join(items) + " }"


@st.composite
def documents(draw: st.DrawFn) -> str:
    """An operation and up to five fragments, each spreading only the ones before it (no cycles)."""
    most_directives = draw(st.sampled_from([0, 1, 2, 3]))  # per document, so most stay under the limit
    names: list[str] = []
    definitions: list[str] = []
    for index in range(draw(st.integers(0, 5))):
        body = draw(selection_sets(names, draw(st.integers(0, 3)), most_directives))
        definitions.append(f"fragment F{index} on Node {body}")
        names.append(f"F{index}")
    root = draw(st.sampled_from(["node", "nodes"]))
    body = draw(selection_sets(names, draw(st.integers(0, 4)), most_directives))
    return f"query Q {{ {root} {body} }} " + " ".join(definitions)


@given(documents())
@settings(max_examples=300, deadline=None)
def test_the_one_pass_agrees_with_expanding_every_spread_on_small_documents(source: str) -> None:
    document = parse(source)
    measured = measure(SCHEMA, document, SMALL)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    naive = _naive(operation.selection_set, fragments, SMALL)
    summary = measured.operations["Q"]
    assert (summary.depth, summary.aliases, summary.cost) == (naive.depth, naive.aliases, naive.cost)
    assert {r.code for r in refusals(measured, SMALL)} == _naive_codes(source, SMALL)


@given(documents())
@settings(max_examples=100, deadline=None)
def test_the_rule_answers_each_broken_limit_with_its_code_and_stops_validation(source: str) -> None:
    expected = _naive_codes(source, SMALL)
    errors = validate(SCHEMA, parse(source), [*specified_rules, document_budget_rule(SMALL)])
    codes = [(e.extensions or {}).get("code") for e in errors]
    assert set(codes) - {None} == expected
    if expected:  # refused: graphql-core's own rules never ran on the document
        assert len(codes) == len(expected) and None not in codes


# --- hostile documents: work is linear ------------------------------------------------------------


def _fragment_chain(n: int, k: int, leaf: str = "tags") -> str:
    """n fragments, each spreading the previous one k times: k**n fields once expanded."""
    lines = [f"fragment F0 on Node {{ {leaf} }}"]
    lines += [f"fragment F{i} on Node {{ {' '.join([f'...F{i - 1}'] * k)} }}" for i in range(1, n + 1)]
    return f"query Q {{ node {{ ...F{n} }} }} " + " ".join(lines)


@st.composite
def hostile_documents(draw: st.DrawFn) -> tuple[str, str]:
    """A large document of one hostile shape, and the code it must be refused with."""
    shape = draw(st.sampled_from(["chain", "inline", "repeats", "directives", "aliases", "deep"]))
    n = draw(st.integers(30, 300))
    if shape == "chain":
        return _fragment_chain(n, draw(st.integers(2, 6))), "QUERY_TOO_COMPLEX"
    if shape == "inline":  # inline fragments nested n deep around fields that nest too
        # Deeper than 10 fields, within graphql-core parser's 200 levels of nesting.
        n = max(10, n // 4)
        inner = "{ id " + "... on Node { child { id " * n + "}" * (2 * n) + " }"
        return f"query Q {{ node {inner} }}", "QUERY_TOO_DEEP"
    if shape == "repeats":
        return "query Q { node { " + "name " * n + "} }", "TOO_MANY_REPEATS"
    if shape == "directives":
        return "query Q { node { id " + "@include(if: true) " * n + "} }", "TOO_MANY_DIRECTIVES"
    if shape == "aliases":
        return "query Q { " + " ".join(f"a{i}: count" for i in range(n + 1)) + " }", "TOO_MANY_ALIASES"
    n = min(n, 190)
    return "query Q { node " + "{ child " * n + "{ id }" + " }" * n + " }", "QUERY_TOO_DEEP"


@given(hostile_documents())
@settings(max_examples=60, deadline=None)
def test_hostile_documents_are_measured_visiting_each_selection_once_and_refused_with_their_code(
    case: tuple[str, str],
) -> None:
    source, code = case
    document = parse(source, max_tokens=None)
    measured = measure(SCHEMA, document, DOCUMENT_BUDGET)
    assert measured.visited == len(_all_nodes(document))
    assert code in {r.code for r in refusals(measured, DOCUMENT_BUDGET)}


@given(st.integers(2, 400), st.integers(2, 9))
@settings(max_examples=40, deadline=None)
def test_a_fragment_chain_is_costed_by_arithmetic_as_k_to_the_n(n: int, k: int) -> None:
    measured = measure(SCHEMA, parse(_fragment_chain(n, k)), DOCUMENT_BUDGET)
    assert measured.visited == 1 + (n + 1) + (1 + 1) + 1 + n * k  # definitions, spreads, fields
    expected = DOCUMENT_BUDGET.list_field_cost * k**n + 1  # tags at every leaf, plus `node`
    assert measured.operations["Q"].cost == min(expected, 1 << 62)


def test_fragment_cycles_end_the_pass() -> None:
    source = "query Q { node { ...A } } fragment A on Node { id ...B } fragment B on Node { name ...A }"
    measured = measure(SCHEMA, parse(source), DOCUMENT_BUDGET)
    assert measured.operations["Q"].cost == 3  # node, id, name: the cycle adds nothing
    errors = validate(SCHEMA, parse(source), [*specified_rules, document_budget_rule(DOCUMENT_BUDGET)])
    assert any("cycle" in e.message.lower() or "itself" in e.message for e in errors), errors


def test_the_rule_class_is_built_once_per_budget() -> None:
    assert document_budget_rule(DocumentBudget()) is document_budget_rule(DocumentBudget())
    assert document_budget_rule(SMALL) is not document_budget_rule(DocumentBudget())


def test_graphiqls_introspection_query_fits_the_engines_budget() -> None:
    query = graphql.get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    engine: GraphQLSchema = engine_schema._schema
    assert refusals(measure(engine, parse(query), DOCUMENT_BUDGET), DOCUMENT_BUDGET) == []


def test_every_operation_counts_even_two_of_one_name() -> None:
    source = "query Q { a: count } query Q { b: count } { c: count }"
    measured = measure(SCHEMA, parse(source), DocumentBudget(max_aliases=2))
    assert sorted(measured.operations) == ["Q", "Q#1", "anonymous"]
    assert [r.code for r in refusals(measured, DocumentBudget(max_aliases=2))] == ["TOO_MANY_ALIASES"]


@given(st.lists(st.lists(st.integers(0, 7), max_size=4), min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_any_graph_of_spreads_cycles_included_is_measured_visiting_each_selection_once(
    spreads: list[list[int]],
) -> None:
    # Fragment i spreads the fragments listed at i: any of them, itself and unknown ones included.
    fragments = [
        f"fragment F{i} on Node {{ id {' '.join(f'...F{j}' for j in targets)} }}"
        for i, targets in enumerate(spreads)
    ]
    document = parse("query Q { node { ...F0 } } " + " ".join(fragments))
    measured = measure(SCHEMA, document, DOCUMENT_BUDGET)
    assert measured.visited == len(_all_nodes(document))
    assert measured.operations["Q"].cost >= 2  # node and F0's id, at least
