"""GraphiQL at /graphql loads every script and style from the engine, none from a CDN."""

from __future__ import annotations

import re

from tests.e2e.conftest import GraphQL


async def test_graphiql_page_and_all_its_assets_come_from_the_engine(gql: GraphQL) -> None:
    page = await gql.http.get("/graphql", headers={"accept": "text/html"})

    assert page.status_code == 200
    assert "unpkg.com" not in page.text
    assets = re.findall(r'(?:src|href)="(/graphiql-assets/[^"]+)"', page.text)
    assert len(assets) == 7
    for asset in assets:
        response = await gql.http.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset
