"""Browser scripts from the npm registry, fetched at install into static/vendor and served by the engine.

Pages then load nothing from elsewhere. Standard library only: the Dockerfile runs this module in a
Node stage where slotengine itself is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).parent / "static" / "vendor"
# Where the app serves VENDOR for the board: /vendor/<package>/<file>.
PREFIX = "/vendor"

# npm package -> (pinned version, files inside the package that a page loads).
Packages = dict[str, tuple[str, list[str]]]

# The versions Strawberry's GraphiQL page names (api/explorer.py rewrites the page to these copies).
GRAPHIQL: Packages = {
    "react": ("18.2.0", ["umd/react.production.min.js"]),
    "react-dom": ("18.2.0", ["umd/react-dom.production.min.js"]),
    "js-cookie": ("3.0.5", ["dist/js.cookie.min.js"]),
    "graphiql": ("3.8.3", ["graphiql.min.js", "graphiql.min.css"]),
    "@graphiql/plugin-explorer": ("1.0.2", ["dist/index.umd.js", "dist/style.css"]),
}
# The graphql-transport-ws client the board runs: the package's own browser build, which sets
# `globalThis.graphqlWs` (its `createClient`).
BOARD: Packages = {"graphql-ws": ("6.4.2", ["umd/graphql-ws.min.js"])}


def present(packages: Packages) -> bool:
    """Whether every file of these packages is in static/vendor."""
    return all(
        (VENDOR / package / file).is_file() for package, (_, files) in packages.items() for file in files
    )


def fetch(packages: Packages) -> None:
    """Download the packages' files with `npm pack` into static/vendor."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    with tempfile.TemporaryDirectory() as scratch:
        specs = [f"{package}@{version}" for package, (version, _) in packages.items()]
        packed = subprocess.run(
            [npm, "pack", "--silent", *specs], cwd=scratch, check=True, capture_output=True, text=True
        ).stdout.split()
        for (package, (_, files)), tarball in zip(packages.items(), packed, strict=True):
            with tarfile.open(Path(scratch) / tarball) as archive:
                for file in files:
                    member = archive.extractfile(f"package/{file}")
                    if member is None:
                        raise RuntimeError(f"{package} has no {file}")
                    target = VENDOR / package / file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(member.read())


# What a page does without its files: both still open, neither reaches out to another server.
_WITHOUT = {
    "GraphiQL": (GRAPHIQL, "/graphql will load them from unpkg"),
    "slot board": (BOARD, "the board lists slots but has no live updates"),
}


def main() -> int:
    """Fetch what is missing; a failure is a warning, because the engine runs without these files."""
    for page, (packages, fallback) in _WITHOUT.items():
        if present(packages):
            continue
        try:
            fetch(packages)
        except (RuntimeError, subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
            print(f"warning: {page} scripts not fetched ({exc}); {fallback}")
            continue
        print(f"{page} scripts saved in {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
