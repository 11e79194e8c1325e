"""`make bench`: run every scenario and print its figures.

python -m bench [--quick] [scenario ...]    # scenarios: see SCENARIOS; default all
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from bench import (
    expiry,
    fanout,
    groups,
    hot_slot,
    many_slots,
    operator_view,
    queue_length,
    read_flood,
    reserve,
    resume,
)

# Each takes `quick`: fewer rounds and smaller sizes, for a look in a minute or two.
SCENARIOS: dict[str, Callable[[bool], Coroutine[Any, Any, None]]] = {
    "hot-slot": lambda quick: hot_slot.run(quick=quick),
    "many-slots": lambda quick: many_slots.run(quick=quick),
    "queue-length": lambda quick: queue_length.run(quick=quick),
    "operator-view": lambda quick: operator_view.run(quick=quick),
    "reserve": lambda quick: reserve.run(),
    "expiry": lambda quick: expiry.run(),
    "fanout": lambda quick: fanout.run(),
    "read_flood": lambda quick: read_flood.run(),
    "resume": lambda quick: resume.run(quick=quick),
    "groups": lambda quick: groups.run(quick=quick),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="slotengine benchmarks")
    parser.add_argument("--quick", action="store_true", help="one round, smaller sizes")
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS], metavar="scenario")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in args.scenarios or list(SCENARIOS):
        print(f"== {name} ==", flush=True)
        asyncio.run(SCENARIOS[name](args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
