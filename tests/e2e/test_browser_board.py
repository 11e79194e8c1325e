"""The live slot board at `/`, in headless Chromium against real `slotengine serve` processes:
two people race for one unit, the one left in line watches the queue and is told when it is
their turn; everything on the page arrives from the engine, live updates over graphql-transport-ws
through the graphql-ws package's own client."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from slotengine.api.auth import issue_token
from tests.e2e.browser import WITHIN_MS, Browsers
from tests.e2e.conftest import ApiProcess, GraphQL, token

# A fresh two-minute hold reads 2:00 or 1:ss on the board.
FRESH_HOLD = re.compile(r"^(2:00|1:[0-5]\d)$")


@pytest.fixture
async def via_http(api_processes: list[ApiProcess]) -> AsyncIterator[GraphQL]:
    async with httpx.AsyncClient(base_url=api_processes[0].base, timeout=30) as http:
        yield GraphQL(http)


def _board(server: ApiProcess, resource: str) -> str:
    return f"{server.base}/?{urlencode({'resource': resource})}"


def _card(page: Page, slot_id: str) -> Locator:
    return page.locator(f'[data-testid="slot"][data-slot-id="{slot_id}"]')


async def _sign_in(page: Page, name: str, slot_id: str) -> None:
    """Paste a token; the board lists the slot again, now with the person's view, and follows it live."""
    await page.get_by_label("Bearer token").fill(token(name))
    await page.get_by_role("button", name="Use token").click()
    await expect(page.get_by_test_id("identity")).to_contain_text(f"Signed in as {name}")
    await expect(_card(page, slot_id).get_by_test_id("reserve")).to_be_enabled()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-status", "live")


async def _screenshot(page: Page, path: Path) -> None:
    await page.screenshot(path=str(path), full_page=True)
    saved = await asyncio.to_thread(path.read_bytes)
    assert saved.startswith(b"\x89PNG\r\n\x1a\n") and len(saved) > 1000, path


async def test_two_people_race_for_one_unit_and_the_one_in_line_is_told_when_it_is_their_turn(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers, artifacts: Path
) -> None:
    resource = f"board-race-{uuid.uuid4().hex[:8]}"
    slot_id = await via_http.create_slot(capacity=1, resource=resource)
    names = [f"ada-{uuid.uuid4().hex[:6]}", f"bo-{uuid.uuid4().hex[:6]}"]
    # One person per API process: each page's live updates come through a different server.
    pages = [await browsers.open(_board(server, resource)) for server in api_processes]
    for page, name in zip(pages, names, strict=True):
        await _sign_in(page, name, slot_id)

    await asyncio.gather(*(_card(page, slot_id).get_by_test_id("reserve").click() for page in pages))

    mine = [_card(page, slot_id).get_by_test_id("my-booking") for page in pages]
    for booking in mine:
        await expect(booking).to_have_attribute("data-state", re.compile(r"^(RESERVED|PENDING)$"))
    states = [await booking.get_attribute("data-state") for booking in mine]
    assert sorted(states) == ["PENDING", "RESERVED"], states
    holder, waiter = (pages[0], pages[1]) if states[0] == "RESERVED" else (pages[1], pages[0])
    await expect(_card(waiter, slot_id).get_by_test_id("queue-position")).to_have_text("1")
    timer = _card(holder, slot_id).get_by_test_id("countdown")
    await expect(timer).to_have_text(FRESH_HOLD)
    await expect(timer).not_to_have_text(await timer.inner_text())  # it counts down
    for page in pages:  # both boards show the slot live: one unit held, one person in line
        card = _card(page, slot_id)
        await expect(card.locator('[data-field="held"]')).to_have_text("1")
        await expect(card.locator('[data-field="queueLength"]')).to_have_text("1")
        await expect(card.locator('[data-field="available"]')).to_have_text("0")
    assert await via_http.slot(slot_id) == {
        "id": slot_id,
        "capacity": 1,
        "holdSeconds": 120,
        "available": 0,
        "held": 1,
        "confirmed": 0,
        "queueLength": 1,
        "closed": False,
    }
    await expect(waiter.get_by_test_id("your-turn")).to_have_count(0)

    await _card(holder, slot_id).get_by_test_id("cancel").click()

    turn = waiter.get_by_test_id("your-turn")
    await expect(turn).to_be_visible(timeout=WITHIN_MS)
    await expect(turn).to_contain_text("Your turn")
    await expect(turn).to_contain_text(resource)
    await expect(turn.get_by_test_id("turn-countdown")).to_have_text(FRESH_HOLD)
    await expect(_card(waiter, slot_id).get_by_test_id("my-booking")).to_have_attribute(
        "data-state", "RESERVED"
    )
    await expect(_card(holder, slot_id).get_by_test_id("my-booking")).to_have_attribute(
        "data-state", "CANCELLED"
    )
    await expect(_card(holder, slot_id).locator('[data-field="queueLength"]')).to_have_text("0")
    await expect(holder.get_by_test_id("your-turn")).to_have_count(0)

    await _screenshot(holder, artifacts / "board-holder.png")
    await _screenshot(waiter, artifacts / "board-waiter.png")
    assert browsers.errors == []


async def test_a_reload_keeps_the_token_and_the_turn_and_the_person_confirms_from_it(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers
) -> None:
    resource = f"board-reload-{uuid.uuid4().hex[:8]}"
    slot_id = await via_http.create_slot(capacity=1, resource=resource)
    first, second = f"first-{uuid.uuid4().hex[:6]}", f"second-{uuid.uuid4().hex[:6]}"
    held = await via_http.reserve(token(first), slot_id, "k")
    queued = await via_http.reserve(token(second), slot_id, "k")
    assert queued["queuePosition"] == 1
    page = await browsers.open(_board(api_processes[1], resource))
    await _sign_in(page, second, slot_id)
    await expect(_card(page, slot_id).get_by_test_id("queue-position")).to_have_text("1")

    await via_http.cancel(token(first), held["id"])
    await expect(page.get_by_test_id("your-turn")).to_be_visible()
    await page.reload()

    await expect(page.get_by_test_id("identity")).to_contain_text(f"Signed in as {second}")
    turn = page.get_by_test_id("your-turn")
    await expect(turn).to_be_visible()
    await turn.get_by_role("button", name="Confirm now").click()
    await expect(_card(page, slot_id).get_by_test_id("my-booking")).to_have_attribute(
        "data-state", "CONFIRMED"
    )
    await expect(turn).to_have_count(0)
    await expect(_card(page, slot_id).locator('[data-field="confirmed"]')).to_have_text("1")
    booking = await via_http.booking(token(second), queued["id"])
    assert booking is not None and booking["state"] == "CONFIRMED"
    assert browsers.errors == []


async def test_server_text_is_shown_as_text_never_as_markup(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers
) -> None:
    resource = f'<img src=x onerror="window.pwned=1">{uuid.uuid4().hex[:8]}'
    slot_id = await via_http.create_slot(resource=resource)

    page = await browsers.open(_board(api_processes[0], resource))

    card = _card(page, slot_id)
    await expect(card.get_by_role("heading", level=3)).to_have_text(resource)
    await expect(card.locator("img")).to_have_count(0)
    assert await page.evaluate("() => window.pwned") is None
    await expect(card.get_by_test_id("reserve")).to_be_disabled()  # nobody signed in
    assert browsers.errors == []


async def test_a_refused_token_is_forgotten_and_the_reason_shown(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers
) -> None:
    resource = f"board-forged-{uuid.uuid4().hex[:8]}"
    slot_id = await via_http.create_slot(resource=resource)
    forged = issue_token("another-secret-that-is-long-enough-for-hs256", "mallory", ttl_seconds=600)
    page = await browsers.open(_board(api_processes[0], resource))

    await page.get_by_label("Bearer token").fill(forged)
    await page.get_by_role("button", name="Use token").click()

    await expect(page.locator("#token-error")).not_to_be_empty()
    await expect(page.get_by_test_id("identity")).to_contain_text("Not signed in")
    await expect(_card(page, slot_id).get_by_test_id("reserve")).to_be_disabled()
    assert await page.evaluate("() => localStorage.getItem('slotengine.token')") is None


async def test_the_board_loads_only_from_its_own_server_under_its_content_security_policy(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers
) -> None:
    server = api_processes[0]
    resource = f"board-origin-{uuid.uuid4().hex[:8]}"
    slot_id = await via_http.create_slot(resource=resource)
    policy = (await via_http.http.get("/")).headers["content-security-policy"]
    assert "script-src 'self'" in policy, policy
    page = await browsers.open(_board(server, resource))

    await _sign_in(page, f"cy-{uuid.uuid4().hex[:6]}", slot_id)  # live: the WebSocket is open

    here = urlsplit(server.base).netloc
    elsewhere = [
        url for url in browsers.requested if urlsplit(url).scheme != "data" and urlsplit(url).netloc != here
    ]
    assert elsewhere == [], elsewhere
    # The live updates run on the graphql-ws package's browser build, served by the engine.
    assert f"{server.base}/vendor/graphql-ws/umd/graphql-ws.min.js" in browsers.requested
    assert server.ws in browsers.requested
    assert await page.evaluate("() => typeof globalThis.graphqlWs.createClient") == "function"
    assert browsers.errors == []  # a script refused by the policy is a console error


async def test_without_its_graphql_ws_client_the_board_still_lists_and_reserves_and_says_it_is_not_live(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers
) -> None:
    resource = f"board-no-client-{uuid.uuid4().hex[:8]}"
    slot_id = await via_http.create_slot(resource=resource)
    # As on a server installed without npm: the client's file is not there.
    context = await browsers.browser.new_context()
    browsers.contexts.append(context)
    await context.route("**/vendor/graphql-ws/**", lambda route: route.fulfill(status=404))
    page = await context.new_page()
    await page.goto(_board(api_processes[0], resource))

    await page.get_by_label("Bearer token").fill(token(f"di-{uuid.uuid4().hex[:6]}"))
    await page.get_by_role("button", name="Use token").click()

    connection = page.get_by_test_id("connection")
    await expect(connection).to_have_attribute("data-status", "unavailable")
    await expect(connection).to_contain_text("No live updates")
    card = _card(page, slot_id)
    await expect(card.get_by_test_id("slot-error")).to_contain_text("Live updates stopped")
    await card.get_by_test_id("reserve").click()
    await expect(card.get_by_test_id("my-booking")).to_have_attribute("data-state", "RESERVED")
    await expect(card.locator('[data-field="held"]')).to_have_text("0")  # not live: as first listed


async def test_more_slots_than_one_connection_may_follow_share_several_and_all_stay_live(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers
) -> None:
    server = api_processes[0]
    resource = f"board-many-{uuid.uuid4().hex[:8]}"
    # The server allows 20 operations per connection; 25 cards need a second connection.
    slot_ids = [
        await via_http.create_slot(resource=resource, starts_in=timedelta(days=1, minutes=n))
        for n in range(25)
    ]
    page = await browsers.open(_board(server, resource))
    await _sign_in(page, f"eve-{uuid.uuid4().hex[:6]}", slot_ids[-1])

    await expect(page.get_by_test_id("slot")).to_have_count(25)
    assert browsers.requested.count(server.ws) == 2, browsers.requested
    for slot_id in (slot_ids[0], slot_ids[-1]):  # one on each connection
        await via_http.reserve(token(f"fay-{uuid.uuid4().hex[:6]}"), slot_id, "k")
        await expect(_card(page, slot_id).locator('[data-field="held"]')).to_have_text("1")
    # No card shows a refused subscription ("Subscription limit reached" past 20 on one socket).
    assert [text for text in await page.get_by_test_id("slot-error").all_inner_texts() if text] == []
    assert browsers.errors == []


async def test_an_admins_board_shows_the_queue_by_name_and_keeps_it_live(
    api_processes: list[ApiProcess], via_http: GraphQL, browsers: Browsers, artifacts: Path
) -> None:
    resource = f"board-ops-{uuid.uuid4().hex[:8]}"
    slot_id = await via_http.create_slot(capacity=2, resource=resource)
    run = uuid.uuid4().hex[:6]
    ann, bob, cat, dan, eve = (f"{name}-{run}" for name in ("ann", "bob", "cat", "dan", "eve"))
    first = await via_http.reserve(token(ann), slot_id, "k")
    await via_http.confirm(token(ann), first["id"])
    held = await via_http.reserve(token(bob), slot_id, "k")
    for name in (cat, dan):
        await via_http.reserve(token(name), slot_id, "k")
    # The operator watches through the other API process than the one the changes go through.
    page = await browsers.open(_board(api_processes[1], resource))
    await page.get_by_label("Bearer token").fill(token(f"ops-{run}", admin=True))
    await page.get_by_role("button", name="Use token").click()
    await expect(page.get_by_test_id("identity")).to_contain_text("(admin)")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-status", "live")
    view = _card(page, slot_id).get_by_test_id("operator-view")
    holds, waiters = view.get_by_test_id("operator-hold"), view.get_by_test_id("operator-waiter")

    async def shows(holding: list[tuple[str, str]], line: list[str]) -> None:
        await expect(holds).to_have_count(len(holding))
        for i, (name, state) in enumerate(holding):
            await expect(holds.nth(i)).to_have_attribute("data-holder", name)
            await expect(holds.nth(i)).to_have_attribute("data-state", state)
        await expect(waiters).to_have_count(len(line))
        for place, name in enumerate(line, start=1):
            await expect(waiters.nth(place - 1)).to_have_attribute("data-holder", name)
            await expect(waiters.nth(place - 1)).to_have_attribute("data-position", str(place))
            await expect(waiters.nth(place - 1)).to_contain_text(f"#{place}")

    await shows([(ann, "CONFIRMED"), (bob, "RESERVED")], [cat, dan])
    countdown = holds.nth(1).get_by_test_id("operator-countdown")
    await expect(countdown).to_have_text(FRESH_HOLD)
    await expect(countdown).not_to_have_text(await countdown.inner_text())  # it counts down

    await via_http.cancel(token(bob), held["id"])  # the head of the line is offered bob's unit
    await shows([(ann, "CONFIRMED"), (cat, "RESERVED")], [dan])
    await via_http.reserve(token(eve), slot_id, "k")
    await shows([(ann, "CONFIRMED"), (cat, "RESERVED")], [dan, eve])

    # A holder's board has no operator's view: the names in line are the operator's to see.
    holder_page = await browsers.open(_board(api_processes[0], resource))
    await _sign_in(holder_page, f"fay-{run}", slot_id)
    await expect(_card(holder_page, slot_id).get_by_test_id("operator-view")).to_have_count(0)
    await _screenshot(page, artifacts / "board-operator.png")
    assert browsers.errors == []
