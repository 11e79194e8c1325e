"""GraphiQL served from the engine itself, not from a public CDN.

Strawberry's GraphiQL page loads React and GraphiQL from unpkg; offline or behind a firewall it
stays at "Loading..." forever. `python -m slotengine.api.explorer` (run by `make install`) fetches
the same versions from the npm registry into static/vendor, and the page is rewritten to them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).parent / "static" / "vendor"
ASSET_PREFIX = "/graphiql-assets"

# npm package -> (version, files inside the package that the page loads); the versions are
# the ones Strawberry's page names.
ASSETS: dict[str, tuple[str, list[str]]] = {
    "react": ("18.2.0", ["umd/react.production.min.js"]),
    "react-dom": ("18.2.0", ["umd/react-dom.production.min.js"]),
    "js-cookie": ("3.0.5", ["dist/js.cookie.min.js"]),
    "graphiql": ("3.8.3", ["graphiql.min.js", "graphiql.min.css"]),
    "@graphiql/plugin-explorer": ("1.0.2", ["dist/index.umd.js", "dist/style.css"]),
}
_UNPKG = re.compile(r"https://unpkg\.com/(@?[^@\"]+)@[^/\"]+/([^\"]+)")


def assets_present() -> bool:
    return all(
        (VENDOR / package / file).is_file() for package, (_, files) in ASSETS.items() for file in files
    )


def fetch_assets() -> None:
    """Download the page's scripts and styles with `npm pack` into static/vendor."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    with tempfile.TemporaryDirectory() as scratch:
        specs = [f"{package}@{version}" for package, (version, _) in ASSETS.items()]
        packed = subprocess.run(
            [npm, "pack", "--silent", *specs], cwd=scratch, check=True, capture_output=True, text=True
        ).stdout.split()
        for (package, (_, files)), tarball in zip(ASSETS.items(), packed, strict=True):
            with tarfile.open(Path(scratch) / tarball) as archive:
                for file in files:
                    member = archive.extractfile(f"package/{file}")
                    assert member is not None
                    target = VENDOR / package / file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(member.read())


def local_page(cdn_page: str) -> str:
    """Strawberry's GraphiQL page, loading its assets from this server."""
    page = re.sub(r"\s+integrity=\"[^\"]+\"", "", cdn_page)
    page = page.replace("crossorigin\n", "\n")
    return _UNPKG.sub(lambda m: f"{ASSET_PREFIX}/{m.group(1)}/{m.group(2)}", page)


def main() -> int:
    if assets_present():
        return 0
    try:
        fetch_assets()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"warning: GraphiQL assets not fetched ({exc}); /graphql will load them from unpkg")
        return 0
    print(f"GraphiQL assets saved in {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
