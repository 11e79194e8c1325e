"""Compiled plans for the hot mutations: what a validated document asks, worked out once.

A plan holds one mutation field's resolver, where each of its arguments comes from (a variable or
a literal), and, for every type its result union can take, the response keys to write and the
serializer of each. Running it calls the very resolver graphql-core would call and writes the
same JSON, without graphql-core's generic execution (collecting fields, completing values,
resolving the union) on every request.

Only documents that are plainly understood get a plan: one mutation field among FAST_MUTATIONS,
leaf fields only (no `history`), no directives, no variable defaults. Arguments are strings (ID,
String) or an Int with a default (reserveSlot's units). Anything else (and any request whose
variables are not plain strings, or 32-bit integers for an Int) goes the normal way. Plans are made only from
documents that already passed parsing, validation and the document budget (see fast_path.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLArgument,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    IntValueNode,
    NamedTypeNode,
    NonNullTypeNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    TypeNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    is_leaf_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues
from graphql.language import Visitor, visit
from graphql.language.visitor import BREAK
from graphql.pyutils import Undefined

# The mutations worth a plan: the ones a crowd sends (reserve, then confirm or cancel).
FAST_MUTATIONS = frozenset({"reserveSlot", "confirmBooking", "cancelBooking"})
# Argument types a plan reads from variables: plain strings in, plain strings out.
_STRING_TYPES = frozenset({"ID", "String"})
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # GraphQL's Int: anything else is the normal path's error
_NO_VARIABLES = VariableValues({}, {})


class NotPlain(Exception):
    """The request's variables are not what the plan reads: it goes the normal way."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One response key of a result: the attribute it reads (None: `__typename`) and how it is written."""

    key: str
    attribute: str | None
    serialize: Callable[[Any], Any]
    nullable: bool


@dataclass(frozen=True, slots=True)
class Shape:
    """What a plan writes for one type of its result union."""

    typename: str
    leaves: tuple[Leaf, ...]


@dataclass(frozen=True, slots=True)
class Argument:
    """Where one resolver argument comes from: a variable of the request, or a literal."""

    python_name: str
    variable: str | None
    literal: str | int | None  # also an Int argument's default, when its variable is left out
    required: bool  # a non-null variable: absent or null is the normal path's error to report
    integer: bool = False  # an Int argument (reserveSlot's units); else a string (ID, String)


@dataclass(frozen=True, slots=True)
class Plan:
    """One hot mutation of one document, ready to run."""

    key: str  # the response key (the alias, or the field's name)
    field_name: str
    node: FieldNode  # for the location of an error
    resolver: Callable[..., Awaitable[Any]]
    arguments: tuple[Argument, ...]
    shapes: Mapping[type, Shape]  # by the Python class of the resolver's answer

    def keyword_arguments(self, variables: Mapping[str, Any] | None) -> dict[str, Any]:
        """The resolver's arguments from the request's variables; NotPlain when they are not strings."""
        given = variables or {}
        found: dict[str, Any] = {}
        for argument in self.arguments:
            if argument.variable is None:
                found[argument.python_name] = argument.literal
                continue
            if argument.integer:
                found[argument.python_name] = _integer(argument, given)
                continue
            value = given.get(argument.variable)
            if value is None:
                if argument.required:
                    raise NotPlain(argument.variable)
                found[argument.python_name] = None
            elif type(value) is str:
                found[argument.python_name] = value
            else:  # numbers as IDs, lists, objects: graphql-core coerces or refuses them
                raise NotPlain(argument.variable)
        return found

    def data(self, answer: Any) -> dict[str, Any]:
        """The response's `data` for the resolver's answer, as graphql-core would complete it."""
        shape = self.shapes.get(type(answer))
        if shape is None:
            raise TypeError(f"{self.field_name} answered a {type(answer).__name__}, which it cannot return")
        written: dict[str, Any] = {}
        for leaf in shape.leaves:
            if leaf.attribute is None:
                written[leaf.key] = shape.typename
                continue
            value = getattr(answer, leaf.attribute)
            if value is None:
                if not leaf.nullable:
                    raise TypeError(f"{shape.typename}.{leaf.key} is null")
                written[leaf.key] = None
            else:
                written[leaf.key] = leaf.serialize(value)
        return {self.key: written}


def _integer(argument: Argument, given: Mapping[str, Any]) -> int | str | None:
    """An Int argument from its variable: the argument's default when the variable is left out;
    NotPlain for null (an error the normal path reports) or anything but a 32-bit integer."""
    assert argument.variable is not None
    if argument.variable not in given:
        if argument.required:
            raise NotPlain(argument.variable)
        return argument.literal
    value = given[argument.variable]
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:  # bool, float, str: coerced or refused
        raise NotPlain(argument.variable)
    return value


def compile_plan(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> Plan | None:
    """The plan for `document`'s operation (a validated document), or None when it has none."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.MUTATION or _has_directives(document):
        return None
    if any(v.default_value is not None for v in operation.variable_definitions or ()):
        return None
    root = schema.mutation_type
    assert root is not None
    fragments = {
        d.name.value: FragmentDetails(d)
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    if any(getattr(f.definition, "variable_definitions", None) for f in fragments.values()):
        return None  # fragment variables (an experimental syntax)
    grouped = collect_fields(schema, fragments, _NO_VARIABLES, root, operation).grouped_field_set
    if len(grouped) != 1:
        return None
    ((key, details),) = grouped.items()
    node = details[0].node
    field_name = node.name.value
    if field_name not in FAST_MUTATIONS or any(d.node.name.value != field_name for d in details):
        return None
    field = root.fields[field_name]
    definition = field.extensions["strawberry-definition"]
    union = get_nullable_type(field.type)
    if definition.base_resolver is None or not isinstance(union, GraphQLUnionType):
        return None
    arguments = _arguments(schema, operation, field_name, node, definition)
    if arguments is None:
        return None
    shapes: dict[type, Shape] = {}
    for member in union.types:
        shape = _shape(schema, fragments, operation, member, details)
        if shape is None:
            return None
        shapes[member.extensions["strawberry-definition"].origin] = shape
    return Plan(key, field_name, node, definition.base_resolver.wrapped_func, arguments, shapes)


def _arguments(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    field_name: str,
    node: FieldNode,
    definition: Any,
) -> tuple[Argument, ...] | None:
    """Where the field's arguments come from; None when one is not a string variable or literal."""
    declared = {v.variable.name.value: v.type for v in operation.variable_definitions or ()}
    field = schema.mutation_type.fields[field_name]  # type: ignore[union-attr]
    # Strawberry builds the field's arguments in the order of the resolver's parameters.
    by_graphql_name = {
        graphql_name: argument.python_name
        for graphql_name, argument in zip(field.args, definition.arguments, strict=False)
        if graphql_name == (argument.graphql_name or _camel(argument.python_name))
    }
    if len(by_graphql_name) != len(field.args) or len(definition.arguments) != len(field.args):
        return None
    given = {a.name.value: a.value for a in node.arguments or ()}
    found: list[Argument] = []
    for graphql_name, schema_argument in field.args.items():
        python_name = by_graphql_name[graphql_name]
        value = given.get(graphql_name)
        if get_named_type(schema_argument.type).name == "Int":
            integer = _integer_argument(python_name, schema_argument, value, declared)
            if integer is None:
                return None
            found.append(integer)
            continue
        if get_named_type(schema_argument.type).name not in _STRING_TYPES:
            return None
        if value is None:
            default = schema_argument.default_value
            if is_non_null_type(schema_argument.type) or not (default is None or default is Undefined):
                return None
            found.append(Argument(python_name, None, None, False))
        elif isinstance(value, VariableNode):
            type_node = declared.get(value.name.value)
            if type_node is None or _named(type_node) not in _STRING_TYPES:
                return None
            found.append(
                Argument(python_name, value.name.value, None, isinstance(type_node, NonNullTypeNode))
            )
        elif isinstance(value, StringValueNode):
            found.append(Argument(python_name, None, value.value, False))
        elif isinstance(value, NullValueNode) and not is_non_null_type(schema_argument.type):
            found.append(Argument(python_name, None, None, False))
        else:
            return None
    return tuple(found)


def _integer_argument(
    python_name: str, schema_argument: GraphQLArgument, value: ValueNode | None, declared: dict[str, TypeNode]
) -> Argument | None:
    """Where an Int argument with a default comes from (left out, a literal or an Int variable);
    None for any other spelling."""
    default = schema_argument.default_value
    if default is None or default is Undefined or type(default) is not int:
        return None
    if value is None:
        return Argument(python_name, None, default, False, integer=True)
    if isinstance(value, IntValueNode):
        return Argument(python_name, None, int(value.value), False, integer=True)
    if isinstance(value, VariableNode):
        type_node = declared.get(value.name.value)
        if type_node is None or _named(type_node) != "Int":
            return None
        required = isinstance(type_node, NonNullTypeNode)
        return Argument(python_name, value.name.value, default, required, integer=True)
    return None


def _shape(
    schema: GraphQLSchema,
    fragments: dict[str, FragmentDetails],
    operation: OperationDefinitionNode,
    member: GraphQLObjectType,
    details: list[FieldDetails],
) -> Shape | None:
    """The leaves written for `member`, in graphql-core's order; None if one is not a plain leaf."""
    grouped = collect_subfields(schema, fragments, _NO_VARIABLES, operation, member, details)
    leaves: list[Leaf] = []
    for key, nodes in grouped.grouped_field_set.items():
        name = nodes[0].node.name.value
        if name == "__typename":
            leaves.append(Leaf(key, None, str, False))
            continue
        field = member.fields.get(name)
        if field is None or not is_leaf_type(get_named_type(field.type)):
            return None
        strawberry_field = field.extensions["strawberry-definition"]
        if strawberry_field.base_resolver is not None or strawberry_field.extensions:
            return None  # computed fields (history) run through graphql-core
        leaf_type = get_named_type(field.type)
        nullable = not is_non_null_type(field.type)
        leaves.append(Leaf(key, strawberry_field.python_name, leaf_type.serialize, nullable))
    return Shape(member.name, tuple(leaves))


def _named(type_node: TypeNode) -> str | None:
    inner = type_node.type if isinstance(type_node, NonNullTypeNode) else type_node
    return inner.name.value if isinstance(inner, NamedTypeNode) else None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _DirectiveFinder(Visitor):
    found = False

    def enter_directive(self, *_args: Any) -> Any:
        self.found = True
        return BREAK


def _has_directives(document: DocumentNode) -> bool:
    finder = _DirectiveFinder()
    visit(document, finder)
    return finder.found
