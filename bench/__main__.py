"""`make bench`: run every scenario and print its figures."""

from __future__ import annotations

import asyncio
import logging
import sys

from bench import expiry, fanout, read_flood, reserve

SCENARIOS = {"reserve": reserve.run, "expiry": expiry.run, "fanout": fanout.run, "read_flood": read_flood.run}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    chosen = argv or list(SCENARIOS)
    for name in chosen:
        print(f"== {name} ==", flush=True)
        asyncio.run(SCENARIOS[name]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
