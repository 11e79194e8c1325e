"""GraphiQL at /graphql works in a real browser: a person puts a token in the Headers tab, runs
a query and sees their own data, served by a real `slotengine serve` process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.e2e.browser import WITHIN_MS, Browsers
from tests.e2e.conftest import ApiProcess, GraphQL, token


@pytest.fixture
def server(api_processes: list[ApiProcess]) -> ApiProcess:
    return api_processes[0]


@pytest.fixture
async def via_http(server: ApiProcess) -> AsyncIterator[GraphQL]:
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        yield GraphQL(http)


async def _type_into(page: Page, editor_selector: str, text: str) -> None:
    """Replace an editor's text the way a person pasting would (no auto-closed brackets)."""
    await page.locator(f"{editor_selector} .CodeMirror").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(text)


async def test_graphiql_runs_a_query_with_the_token_put_in_its_headers_tab(
    server: ApiProcess, via_http: GraphQL, browsers: Browsers
) -> None:
    holder = f"graphiql-{uuid.uuid4().hex[:8]}"
    slot_id = await via_http.create_slot()
    booking = await via_http.reserve(token(holder), slot_id, "graphiql")
    assert booking["state"] == "RESERVED"

    page = await browsers.open(f"{server.base}/graphql")
    await page.get_by_role("button", name="Headers", exact=True).click()
    headers_editor = ".graphiql-editor-tool .graphiql-editor:not(.hidden)"
    await _type_into(page, headers_editor, f'{{"Authorization": "Bearer {token(holder)}"}}')
    await _type_into(page, ".graphiql-query-editor", "{ myBookings { id holder state slotId } }")
    await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()

    result = page.locator(".graphiql-response .result-window")
    await expect(result).to_contain_text(booking["id"], timeout=WITHIN_MS)
    await expect(result).to_contain_text(f'"holder": "{holder}"')
    await expect(result).to_contain_text('"state": "RESERVED"')
    await expect(result).to_contain_text(slot_id)
    assert browsers.errors == []


async def test_without_a_token_graphiql_shows_no_bookings(server: ApiProcess, browsers: Browsers) -> None:
    page = await browsers.open(f"{server.base}/graphql")
    await _type_into(page, ".graphiql-query-editor", "{ myBookings { id } }")
    await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()

    result = page.locator(".graphiql-response .result-window")
    await expect(result).to_contain_text('"myBookings": []', timeout=WITHIN_MS)
