"""Many slots (issue 14): 2,003 slots of capacity 100, 1,009 holders, 50 connections.

Request i is holder i mod 1,009 reserving slot i mod 2,003 (both prime: no pair repeats for two
million requests, so every request is a new booking and nobody queues). The engine answers
`reserveSlot` selecting `__typename ... on Booking { id state }`; the floor gets the same bytes.
Load comes from wrk (`apt-get install wrk`) with a generated Lua script, else from the asyncio
client in bench/http_load.py. Rounds alternate engine and floor; throughput and p99 as ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta

from bench import floor
from bench.harness import SideBySide, cpu_seconds, engine_and_floor
from bench.http_load import closed_loop, post_request
from slotengine.api.auth import issue_token
from slotengine.domain.policy import SlotSpec
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.views import Caller

SLOTS = 2003
HOLDERS = 1009
CONNECTIONS = 50
ADMIN = Caller("bench-admin", admin=True)
RESERVE = (
    "mutation($s: ID!, $k: String!) { reserveSlot(slotId: $s, idempotencyKey: $k) {"
    " __typename ... on Booking { id state } } }"
)
ENGINE_PATH = "/graphql"
WRK_THREADS = 2


async def new_slots(engine: Engine, count: int) -> list[str]:
    starts = datetime.now(UTC) + timedelta(hours=1)
    spec = SlotSpec("bench-many", starts, starts + timedelta(minutes=30), 100, 600)
    ids: list[str] = []
    while len(ids) < count:
        batch = min(100, count - len(ids))
        ids += [
            s.id
            for s in await asyncio.gather(*(queries.create_slot(engine, ADMIN, spec) for _ in range(batch)))
        ]
    return ids


def _wrk_script(path: str, tokens: list[str], slots: list[str], tag: str) -> str:
    template = json.dumps({"query": RESERVE, "variables": {"s": "@SLOT@", "k": "@KEY@"}})
    head, rest = template.split("@SLOT@")
    middle, tail = rest.split("@KEY@")
    quoted = ", ".join
    return f"""
local tokens = {{{quoted(f'"{t}"' for t in tokens)}}}
local slots = {{{quoted(f'"{s}"' for s in slots)}}}
local threads = {{}}
local next_offset = 0
function setup(thread)
  thread:set("offset", next_offset)
  next_offset = next_offset + 1
  table.insert(threads, thread)
end
function init(args)
  counter = offset
  bad = 0
end
function request()
  local i = counter
  counter = counter + {WRK_THREADS}
  local body = [==[{head}]==] .. slots[(i % #slots) + 1]
    .. [==[{middle}]==] .. "{tag}-" .. i .. [==[{tail}]==]
  return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1]}}, body)
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"Booking"', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + thread:get("bad") end
  io.write(string.format("BENCH requests=%d seconds=%f p99_ms=%f wrong=%d socket_errors=%d\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(99) / 1000, wrong,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


async def _load(
    port: int, path: str, tokens: list[str], slots: list[str], tag: str, seconds: float
) -> tuple[float, float, int]:
    """Run the load for `seconds`: (answers per second, p99 ms, answers that were not a Booking)."""
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(_wrk_script(path, tokens, slots, tag))
        try:
            output = (
                await asyncio.create_subprocess_exec(
                    "wrk",
                    f"-t{WRK_THREADS}",
                    f"-c{CONNECTIONS}",
                    f"-d{round(seconds)}s",
                    "--timeout",
                    "30s",
                    "-s",
                    script.name,
                    f"http://127.0.0.1:{port}",
                    stdout=subprocess.PIPE,
                )
            ).stdout
            assert output is not None
            text = (await output.read()).decode()
        finally:
            os.unlink(script.name)
        found = re.search(
            r"BENCH requests=(\d+) seconds=([\d.]+) p99_ms=([\d.]+) wrong=(\d+) socket_errors=(\d+)", text
        )
        if found is None:
            raise RuntimeError(f"wrk said:\n{text}")
        requests, elapsed, p99, wrong, errors = found.groups()
        return int(requests) / float(elapsed), float(p99), int(wrong) + int(errors)
    body = [
        post_request(
            path,
            {"query": RESERVE, "variables": {"s": slots[i % len(slots)], "k": f"{tag}-{i}"}},
            tokens[i % len(tokens)],
        )
        for i in range(int(seconds * 5000))
    ]
    answered, latencies, sample = await closed_loop(port, body, CONNECTIONS, seconds)
    wrong = sum(a.status != 200 or b'"Booking"' not in a.body for a in sample)
    return answered / seconds, statistics.quantiles(latencies, n=100)[98], wrong


async def run(*, quick: bool = False) -> None:
    rounds, seconds = (1, 5.0) if quick else (3, 10.0)
    async with engine_and_floor() as (engine, settings, api_port, floor_port):
        sides = {
            "engine": (api_port, ENGINE_PATH, await new_slots(engine, SLOTS)),
            "floor": (floor_port, floor.PATH, await new_slots(engine, SLOTS)),
        }
        client = "wrk" if shutil.which("wrk") else "asyncio client (no wrk)"
        print(f"  load: {client}, -c{CONNECTIONS}, {seconds:.0f} s a run")
        table = SideBySide()
        for round_ in range(-1, rounds):  # round -1 warms both up and is not counted
            # New holder names each round: the engine's per-holder rate limit never bites.
            tokens = [issue_token(settings.jwt_secret, f"many{round_}-{i}") for i in range(HOLDERS)]
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            figures: dict[str, tuple[float, float, int]] = {}
            cpu_ms: dict[str, float] = {}
            for side in order:
                port, path, slots = sides[side]
                began = cpu_seconds(port)
                figures[side] = await _load(
                    port, path, tokens, slots, f"m{round_}-{side}", 2.0 if round_ < 0 else seconds
                )
                answered = figures[side][0] * (2.0 if round_ < 0 else seconds)
                cpu_ms[side] = (cpu_seconds(port) - began) * 1000 / max(answered, 1)
                if figures[side][2]:
                    print(f"  !! {side}: {figures[side][2]} answers were not a Booking (or socket errors)")
            if round_ < 0:
                continue
            wrong = any(f[2] for f in figures.values())
            table.add(
                "reserve throughput",
                figures["engine"][0],
                figures["floor"][0],
                "req/s",
                higher_is_better=True,
                wrong=wrong,
            )
            table.add("reserve p99", figures["engine"][1], figures["floor"][1], "ms", wrong=wrong)
            table.add("server CPU per reserve", cpu_ms["engine"], cpu_ms["floor"], "ms", wrong=wrong)
        print("-- many slots, engine/floor:")
        table.report()
