"""Safe defaults at the edge: /metrics only for the metrics token or an admin, and pages that
cannot be framed, sniffed or made to run another site's script."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from slotengine.api import explorer
from slotengine.config import Settings
from slotengine.embedded import free_port
from tests.e2e.conftest import ADMIN, GraphQL, token
from tests.processes import served, spawn

METRICS_TOKEN = "scrape-9f2c1d7e4b6a8f0e2d4c6b8a"


@pytest.fixture(scope="module")
async def scraped_api(settings: Settings) -> AsyncIterator[str]:
    """A `slotengine serve` with SLOTENGINE_METRICS_TOKEN set."""
    port = free_port()
    process = spawn(settings, "serve", "--port", str(port), env={"SLOTENGINE_METRICS_TOKEN": METRICS_TOKEN})
    async with served(process, port) as base:
        yield base


def _wrong_tokens(right: str) -> list[str]:
    """Near misses of the right token: cut, extended, changed in one place, recased."""
    flipped = [right[:i] + chr(ord(right[i]) ^ 1) + right[i + 1 :] for i in range(0, len(right), 7)]
    return [right[:-1], right + "x", right.upper(), right[1:], *flipped]


@pytest.mark.parametrize("header", ["", "Bearer", *[f"Bearer {t}" for t in _wrong_tokens(METRICS_TOKEN)]])
async def test_metrics_refuse_anyone_without_the_token_or_an_admin(scraped_api: str, header: str) -> None:
    async with httpx.AsyncClient(base_url=scraped_api) as http:
        refused = await http.get("/metrics", headers={"Authorization": header} if header else {})
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "slotengine_" not in refused.text


async def test_metrics_answer_the_token_and_admins_only(scraped_api: str) -> None:
    async with httpx.AsyncClient(base_url=scraped_api) as http:
        by_token = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        by_admin = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        by_holder = await http.get("/metrics", headers={"Authorization": f"Bearer {token('curious')}"})
        basic = await http.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"})
    assert by_token.status_code == by_admin.status_code == 200
    assert "slotengine_http_request_duration_seconds" in by_token.text
    assert by_holder.status_code == 403
    assert by_holder.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert basic.status_code == 401


async def test_without_a_metrics_token_only_admins_read_metrics(gql: GraphQL) -> None:
    assert (await gql.http.get("/metrics")).status_code == 401
    assert (
        await gql.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    ).status_code == 401
    assert (await gql.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})).status_code == 200


PAGES_AND_ASSETS = [
    ("GET", "/", "text/html"),
    ("GET", "/board-assets/board.js", None),
    ("GET", "/board-assets/board.css", None),
    ("GET", "/graphql", "text/html"),
    ("GET", "/graphiql-assets/graphiql/graphiql.min.js", None),
    ("GET", "/healthz", None),
    ("POST", "/graphql", None),
    ("GET", "/no-such-page", None),
]


@pytest.mark.parametrize(("method", "path", "accept"), PAGES_AND_ASSETS)
async def test_every_response_forbids_framing_and_sniffing(
    gql: GraphQL, method: str, path: str, accept: str | None
) -> None:
    if path.startswith(explorer.ASSET_PREFIX) and not explorer.assets_present():
        pytest.skip("GraphiQL assets were not fetched")
    headers = {"accept": accept} if accept else {}
    if method == "POST":
        response = await gql.http.post(path, json={"query": "{ __typename }"})
    else:
        response = await gql.http.get(path, headers=headers)
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = _policy(response)
    assert policy["frame-ancestors"] == ["'none'"]
    # No page may run script from anywhere but this server (and GraphiQL's own inline script, by hash).
    for source in policy.get("script-src", []):
        assert source == "'self'" or re.fullmatch(r"'sha256-[A-Za-z0-9+/=]+'", source), source


async def test_graphiql_may_run_exactly_its_own_inline_script(gql: GraphQL) -> None:
    if not explorer.assets_present():
        pytest.skip("GraphiQL assets were not fetched")
    page = await gql.http.get("/graphql", headers={"accept": "text/html"})
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert inline, "GraphiQL's page has no inline script to allow"
    hashes = {f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline}
    assert set(_policy(page)["script-src"]) == {"'self'", *hashes}


def _policy(response: httpx.Response) -> dict[str, list[str]]:
    directives = [d.split() for d in response.headers["content-security-policy"].split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}
