"""Proof under fire: a paused holder whose hold lapsed and went to the next in line confirms late.

Invariant 2 (fencing, PostgreSQL's clock decides): the late confirm is answered HoldExpired, and
the unit is the waiter's; or the confirm won the race strictly while the hold was live, and then
the waiter was not promoted. Never both, never two CONFIRMED bookings.

Each slot has capacity 1: holder A holds it, holder B waits. A's confirm races the lapse of its
own hold and whoever settles the slot (settle_slot, as a read or the sweep does, and the fenced
expiry task a worker runs), right around expiresAt:

- aimed: expiresAt is moved by SQL to now() + offset, offsets spread from well before to well
  after the moment the racing calls can run, and all slots race at once;
- lapsing: holds of holdSeconds=1 lapse on their own; each slot's race is fired when
  PostgreSQL's clock reaches expiresAt + lead, leads spread around 0 (one poller, a deadline).

Every slot is then checked in PostgreSQL and its audit trail; the holder who lost confirms again
(HoldExpired again), the waiter confirms its offered hold, and still one CONFIRMED at most.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import pytest

from slotengine.domain.errors import HoldExpired
from slotengine.domain.states import BookingState
from slotengine.service import expiry
from slotengine.service.engine import Engine
from slotengine.service.expiry import ExpiryOutcome
from slotengine.service.reservations import confirm_booking, reserve_slot, settle_slot
from slotengine.service.views import BookingView, Caller
from tests.deadlines import eventually
from tests.integration.conftest import events_of, new_slot, sql

SLOTS = 50
S = BookingState


@dataclass
class Race:
    slot_id: str
    held: BookingView  # A: the holder who pauses
    waiting: BookingView  # B: next in line
    fence: int
    offset_ms: float  # when the race was fired, relative to expiresAt (planned)
    confirm: BookingView | HoldExpired | None = None
    expiry_task: ExpiryOutcome | None = None
    # For a confirm that won: the audit row's clock_timestamp() minus expiresAt, in ms.
    late_ms: float | None = None


async def two_holders(
    engine: Engine, tag: str, index: int, hold_seconds: int
) -> tuple[str, BookingView, BookingView]:
    slot_id = await new_slot(engine, capacity=1, hold_seconds=hold_seconds)
    held = await reserve_slot(engine, Caller(f"{tag}-a-{index}"), slot_id, "k")
    waiting = await reserve_slot(engine, Caller(f"{tag}-b-{index}"), slot_id, "k")
    assert (held.state, waiting.state) == (S.RESERVED, S.PENDING)
    return slot_id, held, waiting


async def fence_of(booking_id: str) -> int:
    return int((await sql("SELECT fence FROM bookings WHERE id = $1", booking_id))[0]["fence"])


async def fire(engine: Engine, race: Race, rng: random.Random) -> None:
    """The late confirm, the settle and the expiry task, at once, in a random order."""

    async def confirm() -> None:
        try:
            race.confirm = await confirm_booking(engine, Caller(race.held.holder), race.held.id)
        except HoldExpired as refusal:
            race.confirm = refusal

    async def expire() -> None:
        race.expiry_task = await expiry.expire_hold(engine, UUID(race.held.id), race.fence)

    calls = [confirm(), settle_slot(engine, UUID(race.slot_id)), expire()]
    rng.shuffle(calls)
    await asyncio.gather(*calls)


async def check(engine: Engine, race: Race, *, waiter_has_time: bool) -> str:
    """One slot after its race: exactly one of the two stories happened. Returns which."""
    states = await states_of(race.slot_id)
    a, b = states[race.held.id], states[race.waiting.id]
    assert list(states.values()).count("CONFIRMED") <= 1, states
    a_events, b_events = await events_of(race.held.id), await events_of(race.waiting.id)
    assert race.confirm is not None and race.expiry_task is not None
    if isinstance(race.confirm, HoldExpired):
        # The hold lapsed first: A expired once, B was promoted once, nobody confirmed A.
        # B holds the unit now (in a short hold, it may have lapsed since, and been expired).
        assert a == "EXPIRED" and b in ("RESERVED", "EXPIRED"), (race, states)
        assert a_events == ["hold", "expire"], a_events
        assert b_events in (["queue", "promote"], ["queue", "promote", "expire"]), b_events
        assert b == {2: "RESERVED", 3: "EXPIRED"}[len(b_events)]
        # The task expired it, found it expired, or ran while it was still live (and re-armed).
        assert race.expiry_task in (ExpiryOutcome.EXPIRED, ExpiryOutcome.STALE, ExpiryOutcome.NOT_DUE)
        lapsed = await sql(
            "SELECT t.at >= b.expires_at AS on_time FROM transitions t JOIN bookings b ON b.id = t.booking_id"
            " WHERE t.booking_id = $1 AND t.event = 'expire'",
            race.held.id,
        )
        assert [r["on_time"] for r in lapsed] == [True], "a hold was expired before its expiresAt"
        await aftermath(engine, race, waiter_has_time=waiter_has_time)
        return "expired"
    # The confirm won while the hold was live: the unit never went to B.
    assert race.confirm.state is S.CONFIRMED
    assert (a, b) == ("CONFIRMED", "PENDING"), (race, states)
    assert a_events == ["hold", "confirm"], a_events
    assert b_events == ["queue"], b_events
    # The task either found the hold live (and re-armed its timer) or found it confirmed.
    assert race.expiry_task in (ExpiryOutcome.STALE, ExpiryOutcome.NOT_DUE)
    margin = await sql(
        "SELECT EXTRACT(EPOCH FROM t.at - b.expires_at) * 1000 AS ms"
        " FROM transitions t JOIN bookings b ON b.id = t.booking_id"
        " WHERE t.booking_id = $1 AND t.event = 'confirm'",
        race.held.id,
    )
    race.late_ms = float(margin[0]["ms"])
    return "confirmed"


async def aftermath(engine: Engine, race: Race, *, waiter_has_time: bool) -> None:
    """The paused holder tries again; the waiter confirms the hold it was offered."""
    try:
        again = await confirm_booking(engine, Caller(race.held.holder), race.held.id)
    except HoldExpired:
        pass  # still HoldExpired, not InvalidTransition: the holder learns why
    else:
        raise AssertionError(f"a second late confirm succeeded: {again}")
    try:
        promoted = await confirm_booking(engine, Caller(race.waiting.holder), race.waiting.id)
    except HoldExpired:
        # Only when the waiter's own short hold lapsed too, by PostgreSQL's clock.
        assert not waiter_has_time
        row = await sql(
            "SELECT state, expires_at <= now() AS lapsed FROM bookings WHERE id = $1", race.waiting.id
        )
        assert row[0] == {"state": "EXPIRED", "lapsed": True}, row
    else:
        assert promoted.state is S.CONFIRMED
    states = await states_of(race.slot_id)
    assert states[race.held.id] == "EXPIRED"
    assert list(states.values()).count("CONFIRMED") <= 1, states


async def states_of(slot_id: str) -> dict[str, str]:
    rows = await sql("SELECT id, state FROM bookings WHERE slot_id = $1", slot_id)
    return {str(r["id"]): r["state"] for r in rows}


def report(name: str, races: list[Race], stories: list[str], seconds: float) -> None:
    by_offset: dict[str, list[float]] = {"confirmed": [], "expired": []}
    for race, story in zip(races, stories, strict=True):
        by_offset[story].append(race.offset_ms)
    counts = Counter(stories)
    lateness = [r.late_ms for r in races if r.late_ms is not None]
    latest = f"{max(lateness):+.1f} ms" if lateness else "-"
    print(
        f"{name}: {len(races)} slots in {seconds:.1f}s; late confirm answered HoldExpired {counts['expired']}"
        f" times, confirmed in time {counts['confirmed']} times, both 0, two CONFIRMED 0;"
        f" planned offsets (ms from expiresAt) of confirmed {fmt(by_offset['confirmed'])},"
        f" of expired {fmt(by_offset['expired'])}; latest winning confirm's audit row at expiresAt"
        f" {latest} (decided by its transaction's now(), taken before it waited for the slot lock)"
    )


def fmt(offsets: list[float]) -> str:
    return f"[{min(offsets):+.0f}..{max(offsets):+.0f}]" if offsets else "[]"


async def test_a_late_confirm_racing_the_lapse_never_confirms_a_hold_given_away(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Aimed by SQL: expiresAt = now() + offset for every slot at once, then every race fires at once."""
    caplog.set_level(logging.WARNING, logger="slotengine")
    started = time.monotonic()
    rng = random.Random()
    pairs = await asyncio.gather(*(two_holders(engine, "aimed", i, 120) for i in range(SLOTS)))
    # Some surely lapsed, some surely live, most right where the racing calls land.
    offsets = [-1000.0] * 3 + [60_000.0] * 3 + [-20 + 320 * i / (SLOTS - 7) for i in range(SLOTS - 6)]
    races = [
        Race(slot_id, held, waiting, await fence_of(held.id), offset)
        for (slot_id, held, waiting), offset in zip(pairs, offsets, strict=True)
    ]
    await sql(
        "UPDATE bookings b SET expires_at = now() + v.ms * interval '1 millisecond'"
        " FROM unnest($1::uuid[], $2::float8[]) AS v(id, ms) WHERE b.id = v.id",
        [r.held.id for r in races],
        [r.offset_ms for r in races],
    )
    await asyncio.gather(*(fire(engine, race, rng) for race in races))

    stories = [await check(engine, race, waiter_has_time=True) for race in races]
    for race, story in zip(races, stories, strict=True):
        if race.offset_ms < 0:
            assert story == "expired", race  # lapsed before anything ran: never confirmable
        if race.offset_ms >= 60_000:
            assert story == "confirmed", race
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    report("aimed (expiresAt moved by SQL)", races, stories, time.monotonic() - started)


async def test_a_late_confirm_as_a_short_hold_lapses_on_its_own_never_confirms_it_twice(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """holdSeconds=1: each slot's race fires when PostgreSQL's clock reaches expiresAt + lead."""
    caplog.set_level(logging.WARNING, logger="slotengine")
    started = time.monotonic()
    rng = random.Random()
    pairs = await asyncio.gather(*(two_holders(engine, "lapsing", i, 1) for i in range(SLOTS)))
    leads = [-100 + 140 * i / (SLOTS - 1) for i in range(SLOTS)]
    rng.shuffle(leads)
    races = [
        Race(slot_id, held, waiting, await fence_of(held.id), lead)
        for (slot_id, held, waiting), lead in zip(pairs, leads, strict=True)
    ]
    due: list[tuple[datetime, Race]] = []
    for race in races:
        assert race.held.expires_at is not None
        due.append((race.held.expires_at + timedelta(milliseconds=race.offset_ms), race))
    due.sort(key=lambda pair: pair[0])
    fired: list[asyncio.Task[None]] = []

    async def fire_due() -> int:
        now = (await sql("SELECT now() AS now"))[0]["now"]
        while due and due[0][0] <= now:
            fired.append(asyncio.create_task(fire(engine, due.pop(0)[1], rng)))
        return len(due)

    await eventually(fire_due, lambda left: left == 0, within=10, interval=0.002)
    await asyncio.gather(*fired)

    stories = [await check(engine, race, waiter_has_time=False) for race in races]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    report("lapsing (holdSeconds=1)", races, stories, time.monotonic() - started)
