"""Parse and validation caches with bounded memory: no document above a size, a cap on entries and text.

Strawberry's own caches keep any document whatever its size, and key validation on the parsed
document, which Python hashes node by node on every lookup. These key on the query text (whose hash
Python keeps) and on the validation rules, so a repeated document is parsed and validated once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.extensions import SchemaExtension

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_CACHED_DOCUMENT_CHARS = 8 * 1024  # longer documents are parsed and validated every time
MAX_ENTRIES = 500
# Of query text per cache. A parsed document takes up to ~115 bytes per character of its text
# (measured on a dense 8 KiB document), so the parse cache holds at most ~30 MiB; the validation
# cache's errors point into documents too, so both together stay within ~60 MiB.
MAX_CACHED_CHARS = 256 * 1024


@dataclass
class CacheStats:
    """How a cache has fared: lookups answered, lookups missed, what it holds now."""

    hits: int = 0
    misses: int = 0
    entries: int = 0
    chars: int = 0


class BoundedCache(Generic[K, V]):
    """A least-recently-used map bounded by entries and by the summed size of what it holds."""

    def __init__(self, *, max_entries: int, max_chars: int, max_item_chars: int) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.max_item_chars = max_item_chars
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.stats = CacheStats()

    def get(self, key: K) -> V | None:
        """The value kept for `key` (now the most recently used), or None."""
        found = self._items.get(key)
        if found is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self._items.move_to_end(key)
        return found[0]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def put(self, key: K, value: V, chars: int) -> None:
        """Keep `value` unless it is too large; drop the least recently used to stay in bounds."""
        if chars > self.max_item_chars or key in self._items:
            return
        self._items[key] = (value, chars)
        self.stats.chars += chars
        while len(self._items) > self.max_entries or self.stats.chars > self.max_chars:
            _, (_, dropped) = self._items.popitem(last=False)
            self.stats.chars -= dropped
        self.stats.entries = len(self._items)

    def clear(self) -> None:
        """Forget everything (tests start from empty caches)."""
        self._items.clear()
        self.stats = CacheStats()


ParseKey = tuple[str, tuple[tuple[str, object], ...]]
# The schema itself, not its id: a cached entry keeps its schema alive, so no id is ever reused.
ValidationKey = tuple[GraphQLSchema, str, tuple[type, ...]]

# Shared by every request of the process, like Strawberry's own caches.
PARSED: BoundedCache[ParseKey, DocumentNode] = BoundedCache(
    max_entries=MAX_ENTRIES, max_chars=MAX_CACHED_CHARS, max_item_chars=MAX_CACHED_DOCUMENT_CHARS
)
VALIDATED: BoundedCache[ValidationKey, tuple[GraphQLError, ...]] = BoundedCache(
    max_entries=MAX_ENTRIES, max_chars=MAX_CACHED_CHARS, max_item_chars=MAX_CACHED_DOCUMENT_CHARS
)


def _cacheable(query: str | None) -> str | None:
    return query if query is not None and len(query) <= MAX_CACHED_DOCUMENT_CHARS else None


class BoundedParserCache(SchemaExtension):
    """Reuses the parse of a document seen before; documents above the size limit are never kept."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = _cacheable(context.query)
        key: ParseKey | None = None
        if query is not None:
            key = (query, tuple(sorted(context.parse_options.items())))
            context.graphql_document = PARSED.get(key)
        if context.graphql_document is None and key is not None and query is not None:
            # Parsed here rather than by Strawberry so the result can be kept; a syntax error is
            # left for Strawberry to parse again and answer, as it would without this cache.
            try:
                context.graphql_document = parse(query, **context.parse_options)
            except GraphQLError:
                pass
            else:
                PARSED.put(key, context.graphql_document, len(query))
        yield


class BoundedValidationCache(SchemaExtension):
    """Reuses the validation of a document seen before, keyed by its text, schema and rules."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        query = _cacheable(context.query)
        key: ValidationKey | None = None
        if query is not None and context.pre_execution_errors is None:
            key = (context.schema._schema, query, tuple(context.validation_rules))
            known = VALIDATED.get(key)
            if known is not None:
                context.pre_execution_errors = list(known)
                key = None  # answered from the cache: nothing to keep afterwards
        yield  # on a miss, Strawberry validates here
        if key is not None and context.pre_execution_errors is not None:
            VALIDATED.put(key, tuple(context.pre_execution_errors), len(key[1]))
