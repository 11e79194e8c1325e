"""Parties racing singles: 1,000 concurrent reserveSlot calls on one slot, a third of them parties of
2 to 4 units, under each fill policy, while holders confirm and cancel what they got.

PostgreSQL is the judge, and the audit trail is counted as it happened:

1. booking_units never holds more units than the capacity, every occupying booking owns exactly
   its `units` distinct units within 1..capacity, and nothing else owns any;
2. the trail, replayed in id order with each booking's units, is a legal history: a hold only when
   its units are free and nobody waits; a promotion only of a waiting entry whose units are free,
   the head under STRICT_FIFO, and under FIRST_FIT only past entries that cannot use the free
   units, none of them passed over more than the slot's bound; and every slot transaction ends
   with nothing left that the fill policy would offer (domain/fill_policy.py, on the replayed
   queue). The replay ends in PostgreSQL's states and pass-over counts, and every answer the
   callers got matches it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from slotengine.domain import fill_policy
from slotengine.domain.errors import DomainError
from slotengine.domain.fill_policy import FillPolicy, Waiter
from slotengine.domain.policy import SlotSpec
from slotengine.domain.states import BookingState
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.reservations import cancel_booking, confirm_booking, reserve_slot
from slotengine.service.views import BookingView, Caller
from tests.integration.conftest import ADMIN, sql

HOLDERS = 1_000
CAPACITY = 10
MAX_PASS_OVERS = 2
FREED = 150  # held or confirmed bookings cancelled per run, at least
S = BookingState


@dataclass
class Burst:
    engine: Engine
    slot_id: str
    rng: random.Random
    answers: dict[str, BookingView] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    busy: set[str] = field(default_factory=set)  # bookings someone is acting on right now
    # Acts finished so far, and when each booking's last act finished (in that count): a read of
    # the slot that began before a booking's act finished may show the state the act replaced.
    finished: int = 0
    finished_at: dict[str, int] = field(default_factory=dict)
    acting: list[asyncio.Task[None]] = field(default_factory=list)

    async def reserve(self, index: int) -> None:
        holder = f"{self.slot_id[:8]}-h{index}"
        units = self.rng.choice([2, 3, 4]) if self.rng.random() < 1 / 3 else 1
        answer = await reserve_slot(self.engine, Caller(holder), self.slot_id, "k", units=units)
        self.answers[holder] = answer
        if answer.units != units:
            self.failures.append(f"{holder} asked {units} units, got a booking of {answer.units}")
        if answer.state is S.PENDING and self.rng.random() < 0.05:
            self.start(answer.id, holder, ["leave"])  # leave the queue (racing a promotion)

    def start(self, booking_id: str, holder: str, steps: list[str]) -> None:
        if booking_id not in self.busy:
            self.busy.add(booking_id)
            self.acting.append(asyncio.create_task(self.act(booking_id, holder, steps)))

    async def act(self, booking_id: str, holder: str, steps: list[str]) -> None:
        """Confirm and/or cancel as the holder; nobody else acts on it meanwhile, so none may fail."""
        try:
            for step in steps:
                if step == "leave":
                    await cancel_booking(self.engine, Caller(holder), booking_id, "not waiting")
                elif step == "confirm":
                    await confirm_booking(self.engine, Caller(holder), booking_id)
                else:
                    await cancel_booking(self.engine, Caller(holder), booking_id, None)
                self.actions[step] += 1
        except DomainError as refusal:
            self.failures.append(f"{steps} of {booking_id}: {refusal!r}")
        finally:
            self.finished += 1
            self.finished_at[booking_id] = self.finished
            self.busy.discard(booking_id)

    async def churn(self, reserving: asyncio.Future[Any]) -> None:
        """Confirm and cancel occupying bookings while the burst goes on, and after it until
        FREED held or confirmed bookings were cancelled: units keep freeing for the queue."""
        while not reserving.done() or self.actions["cancel"] < FREED:
            read_at = self.finished
            rows = await sql(
                "SELECT id, holder, state FROM bookings WHERE slot_id = $1 AND unit IS NOT NULL",
                UUID(self.slot_id),
            )
            launched = len(self.acting)
            for row in rows:
                if self.finished_at.get(str(row["id"]), 0) > read_at:
                    continue  # acted on while the read ran: its state here may be stale
                if row["state"] == "RESERVED":
                    steps = self.rng.choice([["cancel"], ["confirm", "cancel"], ["confirm"]])
                    self.start(str(row["id"]), row["holder"], steps)
                elif row["state"] == "CONFIRMED":
                    self.start(str(row["id"]), row["holder"], ["cancel"])
            in_flight = [t for t in self.acting if not t.done()]
            if reserving.done() and not rows and not in_flight:
                break  # the queue ran dry
            if len(self.acting) == launched:
                await asyncio.wait([*in_flight, reserving], return_when=asyncio.FIRST_COMPLETED)


async def _slot(engine: Engine, fill: FillPolicy) -> str:
    starts = datetime.now(UTC) + timedelta(days=1)
    spec = SlotSpec(
        "unit-race", starts, starts + timedelta(hours=1), CAPACITY, 600,
        fill_policy=fill, max_pass_overs=MAX_PASS_OVERS,
    )  # fmt: skip
    return (await queries.create_slot(engine, ADMIN, spec)).id


@pytest.mark.parametrize("fill", list(FillPolicy))
async def test_parties_racing_singles_never_over_book_and_follow_the_fill_policy(
    engine: Engine, fill: FillPolicy
) -> None:
    slot_id = await _slot(engine, fill)
    burst = Burst(engine, slot_id, random.Random(f"{fill}-{slot_id}"))
    started = time.monotonic()
    reserving = asyncio.gather(*(burst.reserve(i) for i in range(HOLDERS)), return_exceptions=True)
    churner = asyncio.create_task(burst.churn(reserving))
    outcomes = await reserving
    await churner
    await asyncio.gather(*burst.acting)
    elapsed = time.monotonic() - started

    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    assert not errors, f"{len(errors)} of {HOLDERS} reservations failed, e.g. {errors[:3]}"
    assert not burst.failures, burst.failures[:5]
    await _check_units(slot_id)
    counts = await _check_trail(slot_id, fill, burst.answers)
    print(f"{fill}: {elapsed:.2f} s, {dict(burst.actions)}, {counts}")
    assert counts["promote"] > 0 and counts["hold"] > 0  # the race did race
    if fill is FillPolicy.FIRST_FIT:
        assert counts["pass-over"] > 0  # and singles did pass parties


async def _check_units(slot_id: str) -> None:
    """Invariant 1, unit by unit, in PostgreSQL."""
    rows = await sql(
        "SELECT b.id, b.state, b.units, count(o.unit) AS owned, min(o.unit) AS lowest, max(o.unit) AS highest"
        " FROM bookings b LEFT JOIN booking_units o ON o.booking_id = b.id"
        " WHERE b.slot_id = $1 GROUP BY b.id",
        UUID(slot_id),
    )
    occupying = [r for r in rows if r["state"] in ("RESERVED", "CONFIRMED", "COMPLETED")]
    assert sum(r["units"] for r in occupying) <= CAPACITY
    for r in rows:
        expected = r["units"] if r in occupying else 0
        assert r["owned"] == expected, r
        if expected:
            assert r["lowest"] >= 1 and r["highest"] <= CAPACITY, r
    total = await sql("SELECT count(*) AS n FROM booking_units WHERE slot_id = $1", UUID(slot_id))
    assert total[0]["n"] == sum(r["units"] for r in occupying)


@dataclass
class _Entry:
    booking_id: str
    units: int
    passed: int = 0


async def _check_trail(slot_id: str, fill: FillPolicy, answers: dict[str, BookingView]) -> Counter[str]:
    """Replay the slot's audit trail and hold every step to the rules (see the module's docstring)."""
    rows = await sql(
        "SELECT t.booking_id, t.from_state, t.to_state, t.event, t.slot_version, b.units"
        " FROM transitions t JOIN bookings b ON b.id = t.booking_id WHERE t.slot_id = $1 ORDER BY t.id",
        UUID(slot_id),
    )
    queue: list[_Entry] = []
    held: dict[str, int] = {}  # occupying booking -> its units
    states: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for n, row in enumerate(rows):
        booking_id, units, event = str(row["booking_id"]), int(row["units"]), row["event"]
        free = CAPACITY - sum(held.values())
        where = f"row {n} ({event} of {booking_id}, {units} units, {free} free, {len(queue)} waiting)"
        assert states.get(booking_id) == row["from_state"], where
        states[booking_id] = row["to_state"]
        counts[event] += 1
        if event == "hold":
            assert units <= free and not queue, where
            held[booking_id] = units
        elif event == "queue":
            queue.append(_Entry(booking_id, units))
        elif event == "promote":
            place = next(i for i, e in enumerate(queue) if e.booking_id == booking_id)
            assert units <= free, where
            ahead = queue[:place]
            if fill is FillPolicy.STRICT_FIFO:
                assert not ahead, where
            counts["pass-over"] += len(ahead)
            for entry in ahead:  # passed over: it could not use the free units
                assert entry.units > free, where
                entry.passed += 1
                assert entry.passed <= MAX_PASS_OVERS, where
            del queue[place]
            held[booking_id] = units
        elif row["from_state"] == "PENDING":  # cancelled while waiting
            queue[:] = [e for e in queue if e.booking_id != booking_id]
        elif row["to_state"] not in ("RESERVED", "CONFIRMED", "COMPLETED"):
            del held[booking_id]  # cancelled or expired: its units are free
        last_of_transaction = n + 1 == len(rows) or rows[n + 1]["slot_version"] != row["slot_version"]
        if last_of_transaction:
            _assert_settled(fill, CAPACITY - sum(held.values()), queue, where)
    # The replay ends where PostgreSQL is, pass-over counts included.
    stored = await sql("SELECT id, state, passed_over FROM bookings WHERE slot_id = $1", UUID(slot_id))
    assert {str(r["id"]): r["state"] for r in stored} == states
    passed = {e.booking_id: e.passed for e in queue}
    assert {str(r["id"]): r["passed_over"] for r in stored if r["state"] == "PENDING"} == passed
    for answer in answers.values():  # each answer is a state its booking was in at some point
        assert answer.state.value in {r["to_state"] for r in rows if str(r["booking_id"]) == answer.id}
    return counts


def _assert_settled(fill: FillPolicy, free: int, queue: list[_Entry], where: str) -> None:
    """After a slot transaction, the fill policy has nobody left to offer units to."""
    window = queue[: fill_policy.queue_window(fill, free)]
    waiters: list[Waiter[Any]] = [Waiter(e.booking_id, e.units, e.passed) for e in window]
    offered = fill_policy.offers(fill, free, waiters, MAX_PASS_OVERS).offered
    assert not offered, f"after {where}: {[w.key for w in offered]} left waiting beside free units"
