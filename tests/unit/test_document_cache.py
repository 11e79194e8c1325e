"""The parse and validation caches hit for repeated documents, stay bounded, and error logs stay short."""

from __future__ import annotations

import logging
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slotengine.api import document_cache
from slotengine.api.document_cache import MAX_CACHED_DOCUMENT_CHARS, BoundedCache
from slotengine.api.schema import build_schema
from slotengine.logs import EXCERPT_CHARS, BoundedRequestLine


def _fresh_query() -> str:
    return f"query Q_{uuid.uuid4().hex} {{ __typename }}"


async def test_the_second_validation_of_a_document_is_a_cache_hit() -> None:
    schema = build_schema()
    query = _fresh_query()
    before = (document_cache.VALIDATED.stats.hits, document_cache.VALIDATED.stats.misses)
    first = await schema.execute(query)
    after_first = (document_cache.VALIDATED.stats.hits, document_cache.VALIDATED.stats.misses)
    second = await schema.execute(query)
    after_second = (document_cache.VALIDATED.stats.hits, document_cache.VALIDATED.stats.misses)
    assert first.errors is None and second.errors is None and first.data == second.data
    assert after_first == (before[0], before[1] + 1)  # validated once...
    assert after_second == (after_first[0] + 1, after_first[1])  # ...then answered from the cache


async def test_each_schema_keeps_validations_of_its_own() -> None:
    # Each schema has its own entries (its rules may differ: introspection closed or not).
    query = _fresh_query()
    open_schema, closed_schema = build_schema(), build_schema(introspection=False)
    await open_schema.execute(query)
    misses = document_cache.VALIDATED.stats.misses
    await closed_schema.execute(query)
    assert document_cache.VALIDATED.stats.misses == misses + 1


async def test_refusals_are_cached_too_so_a_repeated_bomb_costs_one_measure() -> None:
    schema = build_schema()
    bomb = " ".join(
        [f"query B_{uuid.uuid4().hex} {{ ...F12 }}", "fragment F0 on Query { slots { id } }"]
        + [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 13)]
    )
    first = await schema.execute(bomb)
    hits = document_cache.VALIDATED.stats.hits
    second = await schema.execute(bomb)
    assert document_cache.VALIDATED.stats.hits == hits + 1
    for answer in (first, second):
        assert answer.errors and answer.errors[0].extensions == {"code": "QUERY_TOO_COMPLEX"}


async def test_a_document_above_the_size_limit_is_never_cached() -> None:
    schema = build_schema()
    query = "#" + "x" * MAX_CACHED_DOCUMENT_CHARS + "\n" + _fresh_query()
    parsed, validated = document_cache.PARSED.stats, document_cache.VALIDATED.stats
    counts = (parsed.hits, parsed.misses, parsed.entries, validated.hits, validated.misses, validated.entries)
    for _ in range(2):
        assert (await schema.execute(query)).errors is None
    after = (parsed.hits, parsed.misses, parsed.entries, validated.hits, validated.misses, validated.entries)
    assert after == counts  # never looked up, never kept


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 120)), max_size=200))
@settings(max_examples=100, deadline=None)
def test_a_bounded_cache_never_holds_more_than_its_entries_and_chars(puts: list[tuple[int, int]]) -> None:
    cache: BoundedCache[int, str] = BoundedCache(max_entries=10, max_chars=300, max_item_chars=100)
    for key, chars in puts:
        cache.put(key, "v", chars)
        assert cache.stats.entries <= 10 and cache.stats.chars <= 300
        if chars <= 100:
            assert cache.get(key) == "v"  # what was just put (small enough) is there


async def test_error_logs_quote_a_bounded_excerpt_never_the_whole_document(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = build_schema()
    hostile = [
        ("{ " + "a" * 50_000 + " }", None),  # an unknown field named by 50,000 characters
        ("{ __typename " + "x " * 1_900 + "% }", None),  # a syntax error at the end of a long line
        ("query($v: String!) { __type(name: $v) { name } }", {"v": ["z" * 50_000] * 20}),
    ]
    with caplog.at_level(logging.ERROR, logger="strawberry.execution"):
        for query, variables in hostile:
            answer = await schema.execute(query, variable_values=variables)
            assert answer.errors
    assert caplog.records
    for record in caplog.records:
        assert len(record.getMessage()) <= EXCERPT_CHARS + 300, record.getMessage()[:1000]
    assert any(record.getMessage().startswith("Cannot query field 'aaa") for record in caplog.records)
    assert any("…" in record.getMessage() for record in caplog.records)


def test_access_lines_quote_a_bounded_path_however_long_the_query_string() -> None:
    path = "/graphql?query=" + "%7B%20slots%20%7B%20id%20%7D%20%7D" * 2_000
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200),
        None,
    )
    assert BoundedRequestLine().filter(record)
    line = record.getMessage()
    assert line.startswith('127.0.0.1:5000 - "GET /graphql?query=%7B') and line.endswith('… HTTP/1.1" 200')
    assert len(line) <= EXCERPT_CHARS + 50
