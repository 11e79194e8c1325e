"""Bounded work for any GraphQL document: depth, aliases, cost and shape, measured in one linear pass.

Each fragment definition is summarised once and its summary reused at every spread, so a chain of
fragments that each spread the previous one k times is costed as k**n by arithmetic, never walked.
The rule class is built once per budget, so Strawberry's validation cache keys stay equal across
requests and repeated documents are validated once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from graphql import (
    ASTValidationRule,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    ValidationContext,
    VisitorAction,
    get_named_type,
)
from graphql.language.visitor import SKIP
from graphql.validation.validate import ValidationAbortedError

# Sums and products stop growing here: anything this large is far over every limit anyway,
# and the numbers stay machine-sized whatever the document multiplies.
SATURATED = 1 << 62


@dataclass(frozen=True)
class DocumentBudget:
    """What one document may ask for; each limit refused with its own `extensions.code`."""

    max_depth: int = 10  # nested fields with selections; introspection fields (`__schema`…) exempt
    max_aliases: int = 30  # aliased fields, counted after fragment expansion
    max_cost: int = 500  # fields after fragment expansion; a list-returning field costs list_field_cost
    list_field_cost: int = 10
    max_fragments: int = 20  # fragment definitions in one document
    max_directives: int = 5  # directives on one field, spread, fragment or operation
    # One response name in one selection set (inline fragments included): graphql-core checks
    # that repeated fields can merge pair by pair, so its work grows with the square of this.
    max_repeats: int = 10


@dataclass(frozen=True)
class Summary:
    """What a selection set asks for once expanded: its depth, aliases and cost."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0

    def plus(self, other: Summary) -> Summary:
        """Both side by side: the deeper depth, the summed aliases and cost."""
        return Summary(
            max(self.depth, other.depth),
            min(self.aliases + other.aliases, SATURATED),
            min(self.cost + other.cost, SATURATED),
        )


NOTHING = Summary()


@dataclass(frozen=True)
class Refusal:
    """One limit a document broke: the error code, and the message the client reads."""

    code: str
    message: str


@dataclass
class DocumentMeasure:
    """A document measured: each operation's summary, and the shape limits it broke on the way."""

    operations: dict[str, Summary] = field(default_factory=dict)
    fragment_count: int = 0
    most_directives: int = 0
    most_repeats: int = 0
    visited: int = 0  # selections and definitions looked at; linear in the document, for tests


def measure(
    schema: GraphQLSchema, document: DocumentNode, budget: DocumentBudget = DocumentBudget()
) -> DocumentMeasure:
    """Measure every operation of `document`, each fragment definition analysed once."""
    return _Measurer(schema, document, budget.list_field_cost).run()


def refusals(measured: DocumentMeasure, budget: DocumentBudget) -> list[Refusal]:
    """The limits of `budget` that a measured document breaks, in a fixed order."""
    found: list[Refusal] = []
    if measured.fragment_count > budget.max_fragments:
        found.append(
            Refusal(
                "TOO_MANY_FRAGMENTS",
                f"{measured.fragment_count} fragments defined. Allowed: {budget.max_fragments}",
            )
        )
    if measured.most_directives > budget.max_directives:
        found.append(
            Refusal(
                "TOO_MANY_DIRECTIVES",
                f"{measured.most_directives} directives in one place. Allowed: {budget.max_directives}",
            )
        )
    if measured.most_repeats > budget.max_repeats:
        found.append(
            Refusal(
                "TOO_MANY_REPEATS",
                f"a field asked {measured.most_repeats} times in one place. Allowed: {budget.max_repeats}",
            )
        )
    aliases = min(sum(s.aliases for s in measured.operations.values()), SATURATED)
    if aliases > budget.max_aliases:
        found.append(
            Refusal("TOO_MANY_ALIASES", f"{_figure(aliases)} aliases found. Allowed: {budget.max_aliases}")
        )
    for name, summary in measured.operations.items():
        if summary.depth > budget.max_depth:
            found.append(
                Refusal("QUERY_TOO_DEEP", f"'{name}' exceeds maximum operation depth of {budget.max_depth}")
            )
        if summary.cost > budget.max_cost:
            found.append(
                Refusal(
                    "QUERY_TOO_COMPLEX",
                    f"'{name}' costs {_figure(summary.cost)}, over the budget of {budget.max_cost} "
                    f"(a field costs 1, a list {budget.list_field_cost}, fragments counted at every spread)",
                )
            )
    return found


def _figure(n: int) -> str:
    return "more than 4e18" if n >= SATURATED else str(n)


@cache
def document_budget_rule(budget: DocumentBudget) -> type[ASTValidationRule]:
    """The validation rule enforcing `budget`; one class per budget, so cache keys stay equal."""

    class DocumentBudgetRule(ASTValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> VisitorAction:
            context = self.context
            assert isinstance(context, ValidationContext)
            found = refusals(measure(context.schema, node, budget), budget)
            for refusal in found[:-1]:
                context.report_error(GraphQLError(refusal.message, extensions={"code": refusal.code}))
            if found:
                # Stop graphql-core's own rules here: some of them (fields that must merge) grow
                # with the square of what a refused document asks, and its answer is already known.
                last = found[-1]
                raise ValidationAbortedError(last.message, extensions={"code": last.code})
            return SKIP  # the measure above looked at everything this rule needs

    return DocumentBudgetRule


class _Measurer:
    """One pass over one document; a fragment's summary is computed on first use and reused."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, list_field_cost: int) -> None:
        self.schema = schema
        self.document = document
        self.list_field_cost = list_field_cost
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        self.summaries: dict[str, Summary] = {}
        self.in_progress: set[str] = set()
        self.result = DocumentMeasure()

    def run(self) -> DocumentMeasure:
        operations: list[OperationDefinitionNode] = []
        for definition in self.document.definitions:
            self.result.visited += 1
            if isinstance(definition, FragmentDefinitionNode):
                self.result.fragment_count += 1
                self.fragments.setdefault(definition.name.value, definition)
            elif isinstance(definition, OperationDefinitionNode):
                operations.append(definition)
        # Every fragment is measured, used or not (unused ones are a validation error of their own,
        # but their directives still count); each is measured once whatever spreads it.
        for name in self.fragments:
            self._fragment(name)
        for index, operation in enumerate(operations):
            self._directives(operation.directives)
            root = self.schema.get_root_type(operation.operation)
            label = operation.name.value if operation.name else "anonymous"
            if label in self.result.operations:  # two with one name: invalid, but each still counts
                label = f"{label}#{index}"
            self.result.operations[label] = self._selections(operation.selection_set, root)
        return self.result

    def _fragment(self, name: str) -> Summary:
        known = self.summaries.get(name)
        if known is not None:
            return known
        definition = self.fragments.get(name)
        if definition is None or name in self.in_progress:
            # Unknown fragments and cycles are graphql-core's errors to report; here they add
            # nothing, so the pass ends on them.
            return NOTHING
        self.in_progress.add(name)
        self._directives(definition.directives)
        on = self.schema.get_type(definition.type_condition.name.value)
        summary = self._selections(definition.selection_set, on)
        self.in_progress.discard(name)
        self.summaries[name] = summary
        return summary

    def _selections(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType | None,
        names: Counter[str] | None = None,
    ) -> Summary:
        # Inline fragments merge into the selection set around them, so they share its names.
        names = Counter() if names is None else names
        total = NOTHING
        for selection in selection_set.selections:
            self.result.visited += 1
            self._directives(selection.directives)
            if isinstance(selection, FieldNode):
                name = (selection.alias or selection.name).value
                names[name] += 1
                self.result.most_repeats = max(self.result.most_repeats, names[name])
                total = total.plus(self._field(selection, parent))
            elif isinstance(selection, FragmentSpreadNode):
                total = total.plus(self._fragment(selection.name.value))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.schema.get_type(condition.name.value) if condition else parent
                total = total.plus(self._selections(selection.selection_set, on, names))
        return total

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Summary:
        name = node.name.value
        returns = _field_type(parent, name)
        cost = 1
        if returns is not None and isinstance(_unwrap_non_null(returns), GraphQLList):
            cost = self.list_field_cost
        own = Summary(0, 1 if node.alias else 0, cost)
        if node.selection_set is None:
            return own
        inner = self._selections(node.selection_set, get_named_type(returns) if returns else None)
        # Introspection (`__schema`, `__type`) is exempt from the depth limit: GraphiQL's own
        # query is deeper than any the engine's types allow. Its cost and aliases still count.
        depth = 0 if name.startswith("__") else inner.depth + 1
        return Summary(depth, min(own.aliases + inner.aliases, SATURATED), min(cost + inner.cost, SATURATED))

    def _directives(self, directives: tuple[DirectiveNode, ...] | None) -> None:
        count = len(directives or ())
        if count > self.result.most_directives:
            self.result.most_directives = count


def _unwrap_non_null(type_: GraphQLOutputType) -> GraphQLOutputType:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


def _field_type(parent: GraphQLNamedType | None, name: str) -> GraphQLOutputType | None:
    """The type a field returns, or None when the schema has no such field (validation says so)."""
    if name == "__schema":
        return SchemaMetaFieldDef.type
    if name == "__type":
        return TypeMetaFieldDef.type
    if isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType)):
        definition = parent.fields.get(name)
        return definition.type if definition is not None else None
    return None
