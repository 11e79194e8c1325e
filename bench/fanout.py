"""Fan-out scenario: 1,000 slotStatus listeners on one slot, all on one API process.

Twenty changes are made one after another (each once every listener has the previous one);
for each listener and change, latency is the listener's receipt minus the commit time of the
change (the audit row's clock_timestamp(), on the same machine's clock).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
import websockets

from bench.harness import bench_engine, spawn_api, summary
from slotengine.api.auth import issue_token
from slotengine.config import get_settings
from slotengine.domain.policy import SlotSpec
from slotengine.embedded import free_port
from slotengine.service import queries
from slotengine.service.views import Caller
from slotengine.store.database import connection

LISTENERS = 1000
CHANGES = 20
SUBSCRIPTION = "subscription($s: ID!) { slotStatus(slotId: $s) { held queueLength } }"
RESERVE = (
    "mutation($s: ID!, $k: String!) { reserveSlot(slotId: $s, idempotencyKey: $k) { ... on Booking { id } } }"
)
CANCEL = "mutation($b: ID!) { cancelBooking(bookingId: $b) { __typename } }"


async def run() -> None:
    async with bench_engine() as (engine, _settings):
        port = free_port()
        api = spawn_api(port)
        try:
            await _scenario(engine, port)
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(30)


async def _scenario(engine: object, port: int) -> None:
    secret = get_settings().jwt_secret
    starts = datetime.now(UTC) + timedelta(hours=1)
    spec = SlotSpec("bench", starts, starts + timedelta(minutes=30), 1, 120)
    slot_id = (await queries.create_slot(engine, Caller("admin", admin=True), spec)).id  # type: ignore[arg-type]
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(600):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        # One holder per listener: a holder's sockets are capped (SLOTENGINE_WS_MAX_SOCKETS_PER_HOLDER).
        watchers = [issue_token(secret, f"watcher-{i}") for i in range(LISTENERS)]
        received: list[list[float]] = [[] for _ in range(LISTENERS)]
        ready = 0
        all_ready = asyncio.Event()
        progress = asyncio.Condition()

        async def listen(i: int) -> None:
            nonlocal ready
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/graphql",
                subprotocols=["graphql-transport-ws"],
                max_queue=None,  # type: ignore[list-item]
            ) as ws:
                await ws.send(
                    json.dumps(
                        {"type": "connection_init", "payload": {"Authorization": f"Bearer {watchers[i]}"}}
                    )
                )
                await ws.recv()
                await ws.send(
                    json.dumps(
                        {
                            "id": "1",
                            "type": "subscribe",
                            "payload": {"query": SUBSCRIPTION, "variables": {"s": slot_id}},
                        }
                    )
                )
                await ws.recv()  # the current state
                ready += 1
                if ready == LISTENERS:
                    all_ready.set()
                while len(received[i]) < CHANGES:
                    await ws.recv()
                    received[i].append(time.time())
                    async with progress:
                        progress.notify_all()

        began = time.perf_counter()
        tasks = [asyncio.create_task(listen(i)) for i in range(LISTENERS)]
        await asyncio.wait_for(all_ready.wait(), 300)
        print(
            f"fan-out: {LISTENERS} listeners connected and subscribed in {time.perf_counter() - began:.1f} s"
        )

        holder = issue_token(secret, "fan-holder")
        booking_id = None
        for change in range(CHANGES):
            if change % 2 == 0:
                body = {"query": RESERVE, "variables": {"s": slot_id, "k": f"k{change}"}}
            else:
                body = {"query": CANCEL, "variables": {"b": booking_id}}
            answer = (
                await http.post(
                    f"http://127.0.0.1:{port}/graphql",
                    json=body,
                    headers={"Authorization": f"Bearer {holder}"},
                )
            ).json()
            if change % 2 == 0:
                booking_id = answer["data"]["reserveSlot"]["id"]
            async with progress:
                await asyncio.wait_for(
                    progress.wait_for(lambda c=change: all(len(r) > c for r in received)), 60
                )
        await asyncio.gather(*tasks)

    commits = await connection().execute_query_dict(
        "SELECT EXTRACT(EPOCH FROM t.at) AS at FROM transitions t JOIN bookings b ON b.id = t.booking_id"
        " WHERE b.slot_id = $1 ORDER BY t.id",
        [slot_id],
    )
    commit_times = [float(r["at"]) for r in commits]
    assert len(commit_times) == CHANGES, commit_times
    latencies = [(r[c] - commit_times[c]) * 1000 for r in received for c in range(CHANGES)]
    print(summary(f"commit -> delivery, {LISTENERS} listeners", latencies))
    slowest = [max((r[c] - commit_times[c]) * 1000 for r in received) for c in range(CHANGES)]
    print("last delivery of each change (ms):", " ".join(f"{v:.0f}" for v in slowest))
