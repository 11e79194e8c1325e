"""GraphiQL served from the engine itself, not from a public CDN.

Strawberry's GraphiQL page loads React and GraphiQL from unpkg; offline or behind a firewall it
stays at "Loading..." forever. `make install` fetches the same versions from the npm registry into
static/vendor (api/vendor.py), and the page is rewritten to them.
"""

from __future__ import annotations

import re
import sys

from slotengine.api import vendor

VENDOR = vendor.VENDOR
ASSET_PREFIX = "/graphiql-assets"
ASSETS = vendor.GRAPHIQL
_UNPKG = re.compile(r"https://unpkg\.com/(@?[^@\"]+)@[^/\"]+/([^\"]+)")


def assets_present() -> bool:
    return vendor.present(ASSETS)


def fetch_assets() -> None:
    """Download the page's scripts and styles with `npm pack` into static/vendor."""
    vendor.fetch(ASSETS)


def local_page(cdn_page: str) -> str:
    """Strawberry's GraphiQL page, loading its assets from this server."""
    page = re.sub(r"\s+integrity=\"[^\"]+\"", "", cdn_page)
    page = page.replace("crossorigin\n", "\n")
    return _UNPKG.sub(lambda m: f"{ASSET_PREFIX}/{m.group(1)}/{m.group(2)}", page)


def main() -> int:
    """Fetch every page's scripts (GraphiQL's and the board's); see api/vendor.py."""
    return vendor.main()


if __name__ == "__main__":
    sys.exit(main())
