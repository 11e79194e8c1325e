"""Hot slot (issue 14): 1,000 concurrent reserves on one slot, engine beside the floor.

1,000 keep-alive connections are opened first, then every request is written at once; the
figure is the time from the writes to the last answer. Every answer is checked (capacity
RESERVED, the rest PENDING at 1..n). Rounds alternate engine and floor on the same servers, at
capacity 1 and 5. Then, on the engine only (the floor has no confirm or cancel): 1,000
concurrent confirms of the holds of one capacity-1,000 slot, and 500 concurrent cancels of the
holds of a capacity-500 slot with 500 waiters, each cancel promoting the head of the queue.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench import floor
from bench.harness import SideBySide, engine_and_floor
from bench.http_load import Answer, burst, post_request
from slotengine.api.auth import issue_token
from slotengine.domain.policy import SlotSpec
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.views import Caller
from slotengine.store.database import connection

RACERS = 1000
ADMIN = Caller("bench-admin", admin=True)
RESERVE = (
    "mutation($s: ID!, $k: String!) { reserveSlot(slotId: $s, idempotencyKey: $k) {"
    " __typename ... on Booking { id state queuePosition } ... on Error { message } } }"
)
CONFIRM = "mutation($b: ID!) { confirmBooking(bookingId: $b) { __typename ... on Booking { state } } }"
CANCEL = "mutation($b: ID!) { cancelBooking(bookingId: $b) { __typename ... on Booking { state } } }"
ENGINE_PATH = "/graphql"


async def new_slot(engine: Engine, capacity: int) -> str:
    starts = datetime.now(UTC) + timedelta(hours=1)
    spec = SlotSpec("bench-hot", starts, starts + timedelta(minutes=30), capacity, 600)
    return (await queries.create_slot(engine, ADMIN, spec)).id


async def race(
    engine: Engine, secret: str, port: int, path: str, capacity: int, tag: str
) -> tuple[float, list[str], list[dict[str, Any]], bool]:
    """RACERS holders reserve one new slot at once: (seconds to the last answer, tokens, answers,
    whether every answer was right)."""
    slot_id = await new_slot(engine, capacity)
    tokens = [issue_token(secret, f"{tag}-{i}") for i in range(RACERS)]
    requests = [
        post_request(path, {"query": RESERVE, "variables": {"s": slot_id, "k": f"{tag}-{i}"}}, token)
        for i, token in enumerate(tokens)
    ]
    seconds, answers = await burst(port, requests)
    bookings = [_payload(a, "reserveSlot") for a in answers]
    return seconds, tokens, bookings, _check_race(bookings, capacity, tag)


def _payload(answer: Answer, field: str) -> dict[str, Any]:
    """The mutation's result, or {"__typename": "HTTP <status>" / the top-level error}."""
    if answer.status != 200:
        return {"__typename": f"HTTP {answer.status}", "message": answer.body[:200].decode(errors="replace")}
    body = answer.json()
    if body.get("data") is None:
        return {"__typename": "top-level error", "message": str(body.get("errors"))[:200]}
    result: dict[str, Any] = body["data"][field]
    return result


def _check_race(bookings: list[dict[str, Any]], capacity: int, tag: str) -> bool:
    wrong = [b for b in bookings if b["__typename"] != "Booking"]
    held = [b for b in bookings if b.get("state") == "RESERVED"]
    positions = sorted(b["queuePosition"] for b in bookings if b.get("state") == "PENDING")
    expected = list(range(1, len(bookings) - min(capacity, len(bookings)) + 1))
    if wrong or len(held) != min(capacity, len(bookings)) or positions != expected:
        # Printed, not raised: a server failing under the burst is itself a finding.
        print(
            f"  !! {tag}: WRONG ANSWERS: {len(wrong)} not a Booking (first: {wrong[:1]}),"
            f" {len(held)} RESERVED, positions {positions[:3]}...{positions[-3:]}",
            flush=True,
        )
        return False
    return True


async def run(*, quick: bool = False) -> None:
    rounds = 1 if quick else 3
    async with engine_and_floor() as (engine, settings, api_port, floor_port):
        secret = settings.jwt_secret
        sides = {"engine": (api_port, ENGINE_PATH), "floor": (floor_port, floor.PATH)}
        table = SideBySide()
        # One untimed race each first: connection pools, caches and imports warm up.
        for side, (port, path) in sides.items():
            await race(engine, secret, port, path, 1, f"warm-{side}")
        for round_ in range(rounds):
            for capacity in (1, 5):
                # Alternate who goes first, so neither side always runs on the other's leftovers.
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                seconds: dict[str, float] = {}
                right: dict[str, bool] = {}
                for side in order:
                    port, path = sides[side]
                    seconds[side], _, _, right[side] = await race(
                        engine, secret, port, path, capacity, f"hot{round_}-c{capacity}-{side}"
                    )
                table.add(
                    f"{RACERS} reserves, capacity {capacity}: last answer",
                    seconds["engine"],
                    seconds["floor"],
                    "s",
                    wrong=not all(right.values()),
                )
            await _confirm_and_cancel(engine, secret, api_port, round_)
        print("-- hot slot, engine/floor:")
        table.report()


async def _confirm_and_cancel(engine: Engine, secret: str, port: int, round_: int) -> None:
    """Engine only: confirms and cancel-with-promotion, RACERS / 2 .. RACERS at once on one slot."""
    seconds, tokens, bookings, _ = await race(engine, secret, port, ENGINE_PATH, RACERS, f"conf{round_}")
    print(f"  engine: {RACERS} reserves, capacity {RACERS} (all hold): last answer {seconds:6.2f} s")
    holds = [(b, t) for b, t in zip(bookings, tokens, strict=True) if b.get("state") == "RESERVED"]
    requests = [
        post_request(ENGINE_PATH, {"query": CONFIRM, "variables": {"b": b["id"]}}, token)
        for b, token in holds
    ]
    seconds, answers = await burst(port, requests)
    confirmed = sum(_payload(a, "confirmBooking").get("state") == "CONFIRMED" for a in answers)
    print(
        f"  engine: {len(holds)} confirms on one slot at once: last answer {seconds:6.2f} s"
        f" ({confirmed} CONFIRMED{'' if confirmed == len(holds) else ': WRONG'})"
    )

    half = RACERS // 2
    _, tokens, bookings, _ = await race(engine, secret, port, ENGINE_PATH, half, f"canc{round_}")
    holders = [(b, t) for b, t in zip(bookings, tokens, strict=True) if b.get("state") == "RESERVED"]
    waiters = sum(b.get("state") == "PENDING" for b in bookings)
    requests = [
        post_request(ENGINE_PATH, {"query": CANCEL, "variables": {"b": b["id"]}}, token)
        for b, token in holders
    ]
    seconds, answers = await burst(port, requests)
    cancelled = sum(_payload(a, "cancelBooking").get("state") == "CANCELLED" for a in answers)
    counts = await connection().execute_query_dict(
        "SELECT state, count(*) AS n FROM bookings"
        " WHERE slot_id = (SELECT slot_id FROM bookings WHERE id = $1) GROUP BY state",
        [holders[0][0]["id"]],
    )
    by_state = {r["state"]: int(r["n"]) for r in counts}
    promoted_all = by_state.get("RESERVED") == min(half, waiters) and cancelled == len(holders)
    print(
        f"  engine: {len(holders)} cancels of holds at once, each promoting a waiter: last answer"
        f" {seconds:6.2f} s (after: {by_state}{'' if promoted_all else ': WRONG'})"
    )
