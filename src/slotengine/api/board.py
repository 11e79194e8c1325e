"""The live slot board at `/`: one static page with its ES modules and style, served by the engine.

The page talks to /graphql only (queries and mutations over HTTP, subscriptions over
graphql-transport-ws through the graphql-ws package's browser build, which `make install` fetches
into static/vendor: see api/vendor.py); there is no build step and nothing is loaded from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

ASSETS = Path(__file__).parent / "static" / "board"
ASSET_PREFIX = "/board-assets"

# Only this origin's script, style and GraphQL endpoint; no inline script, no framing.
_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def page(request: Request) -> Response:
    return FileResponse(ASSETS / "index.html", media_type="text/html", headers=_HEADERS)
