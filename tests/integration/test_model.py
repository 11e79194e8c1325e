"""Model-based test: Hypothesis drives the real service layer and compares it with a small model.

A `RuleBasedStateMachine` reserves (alone, or several newcomers racing for one slot, with a
duplicate request), confirms, cancels, completes, extends holds, closes and reopens slots, resizes
them, lapses holds, starts slots, settles, sweeps, replays expiry tasks (an extended hold's old
timer too), reads bookings and flushes Redis mirrors, and reserves booking groups (several slots
all or nothing, waiting or not), confirms, cancels, offers and lapses them, on the suite's real
PostgreSQL and Redis, against an in-memory model of a few fresh slots (capacity 1..4, each with a
fill policy, STRICT_FIFO or FIRST_FIT); a reservation is now and then a party of 2 or 3 units.
After every step it checks:

- each booking's state, units (first and others), pass-over count and fence in PostgreSQL are the
  model's (so promotion went by the fill policy, expiry was lazy or prompt as it should, final
  states never change: also checked on their own);
- per slot, the units of RESERVED + CONFIRMED (+ COMPLETED) bookings <= capacity, distinct, 1..capacity;
- the audit trail of each booking replays through `slotengine.domain.states.transition` from
  nothing to its current state, with the model's events, and shows FIFO on its own (a freed unit
  went to the longest waiting, never to a newcomer while anybody waited);
- fences grow in the order holds were granted or extended; each change (of a booking, or of the
  slot's terms) bumps the slot's version once;
- the Redis mirror, when present, equals PostgreSQL; queue positions the service reports are
  1..n in FIFO order;
- the slot's pub/sub announcements come with every version, and applying them the way
  subscribers do (`service.live`) gives the model's states, positions, counts, capacity and
  closed flag;
- resuming from the last checked version, as a subscription started `after` that cursor does,
  replays from the audit trail exactly what the announcements showed, version by version: the
  slot's counts and terms, and the state, place in the queue and hold of every booking that moved
  or waited.
- each group's state is the model's, and a group's hold is never partial (one member held: all
  are); nobody passes a waiting group's entry (the model's promotion stops there, and PostgreSQL's
  states and queues must agree).

Driving async code from Hypothesis's synchronous state machine: Tortoise's pool (asyncpg) and the
engine's Redis client belong to the session's event loop; their connections cannot be used from
another loop, and opening a second engine per example (Tortoise is process-global) would cost a
pool per example and fight the session's global Tortoise state. So the test, itself a coroutine on
the session loop, runs the whole state machine in a worker thread (`asyncio.to_thread`), leaving
the loop free; every rule hands its coroutine back to that loop with
`asyncio.run_coroutine_threadsafe` and waits for the answer. The service then runs exactly as in
production: one loop, the shared pool, Tortoise's global connections (a coroutine submitted from the
thread runs in a copy of the test's context, and the engine enables Tortoise's global fallback).

Time is injected: holds last an hour and slots start tomorrow, so nothing lapses on its own; a
rule moves a hold's `expires_at` (or a slot's `starts_at`) into the past by PostgreSQL's clock,
and its Redis mirror score with it, then lets the real code notice: the expiry task, a settle,
the sweep, or lazily the next call that touches the slot.

Races are the one thing the engine decides, not Hypothesis: the newcomers of a race join the
cast in the order the slot's lock let them in, so every example still replays the same way.
Likewise nothing the model keeps in order may follow the ids, which are new in every run (a
group's slots are kept in the model's order, not in the engine's lock order by slot id): when
Hypothesis replays an example, every rule must draw what it drew the first time.

A failure is reported as it first happened (tests/first_failure.py): its traceback, the steps and
draws of its example and the model, even when Hypothesis's replay of the example went another
way and it would report only Flaky; SLOTENGINE_MODEL_FAILURE_LOG names a file to write it to at
once. SLOTENGINE_MODEL_EXAMPLES (default 200) and SLOTENGINE_MODEL_STEPS (default 30) size the
run; the figures (examples, steps, seconds, what ran) are printed at the end, even without -s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio.client import PubSub

from slotengine.domain import fill_policy
from slotengine.domain.errors import (
    BookingNotFound,
    DomainError,
    ExtensionLimitReached,
    GroupNotFound,
    HoldExpired,
    IdempotencyKeyReused,
    NotAuthorized,
    NotHolder,
    SlotClosed,
    SlotUnavailable,
    ValidationError,
)
from slotengine.domain.fill_policy import FillPolicy, Waiter
from slotengine.domain.policy import SlotSpec
from slotengine.domain.states import (
    FINAL_STATES,
    LIVE_STATES,
    OCCUPYING_STATES,
    BookingState,
    Event,
    InvalidTransition,
    Role,
    transition,
)
from slotengine.redis.clock import epoch_ms
from slotengine.service import expiry, extension, groups, queries, reservations, slot_admin
from slotengine.service.engine import Engine
from slotengine.service.events import SlotAnnouncement
from slotengine.service.expiry import ExpiryOutcome
from slotengine.service.live import apply_to_booking, apply_to_slot, booking_since, slot_since
from slotengine.service.mirror import hold_members
from slotengine.service.unit_of_work import SYSTEM_ACTOR
from slotengine.service.views import BookingView, Caller, GroupView, SlotView
from tests.first_failure import FirstFailure, watched
from tests.integration.conftest import sql
from tests.loop_bridge import Bridge

T = TypeVar("T")
S = BookingState

EXAMPLES = int(os.environ.get("SLOTENGINE_MODEL_EXAMPLES") or 200)
STEPS = int(os.environ.get("SLOTENGINE_MODEL_STEPS") or 30)
HOLDERS = 4
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOLD_SECONDS = 3600  # nothing lapses by itself during an example: the rules move the clock
CALL_TIMEOUT = 60.0  # seconds a single service call may take before the test gives up on it
ANNOUNCEMENT_TIMEOUT = 5.0  # seconds to wait for an announcement that is due
REPLAYED_PER_STEP = 3  # bookings of a slot whose replay is checked after a step


async def attempt(awaitable: Awaitable[T]) -> T | DomainError:
    """The call's answer, or the domain error it refused with."""
    try:
        return await awaitable
    except DomainError as refusal:
        return refusal


async def gather_attempts(awaitables: Sequence[Awaitable[T]]) -> list[T | DomainError]:
    """Run the calls concurrently; each answers or refuses on its own."""
    return list(await asyncio.gather(*(attempt(a) for a in awaitables)))


class Listener:
    """One Redis subscription to the slots of the example under way, like an api process's hub."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.received: dict[str, list[SlotAnnouncement]] = {}  # slot -> not yet checked
        self.reordered = 0  # announcements that came after a later version of their slot

    async def follow(self, engine: Engine, slot_ids: list[str]) -> None:
        """Subscribe to these slots' channels only (once Redis confirms), dropping the last ones."""
        if self.received:
            await self.pubsub.unsubscribe()
        self.received = {slot_id: [] for slot_id in slot_ids}
        channels = {engine.channel(slot_id) for slot_id in slot_ids}
        await self.pubsub.subscribe(*channels)
        async with asyncio.timeout(CALL_TIMEOUT):
            while channels:
                message = await self.pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "subscribe":
                    channels.discard(message["channel"])

    async def take(self, wanted: dict[str, range]) -> dict[str, list[SlotAnnouncement]]:
        """Each slot's announcements of the `wanted` versions, in version order.

        Concurrent transactions of one slot may publish out of order (a later version first), as
        subscribers know; so this waits for every version wanted, for a while (a version that
        never comes shows as a gap).
        """

        def missing() -> bool:
            return any(
                set(versions) - {a.version for a in self.received[slot_id]}
                for slot_id, versions in wanted.items()
            )

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANNOUNCEMENT_TIMEOUT):
                while missing():
                    message = await self.pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] != "message":
                        continue
                    announcement = SlotAnnouncement.parse(message["data"])
                    earlier = self.received.get(announcement.slot_id)
                    if earlier is not None:
                        self.reordered += any(a.version > announcement.version for a in earlier)
                        earlier.append(announcement)
        taken = {slot_id: sorted(self.received[slot_id], key=lambda a: a.version) for slot_id in wanted}
        self.received.update({slot_id: [] for slot_id in wanted})
        return taken


@dataclass(frozen=True)
class Shown:
    """What the announcements showed a subscriber at one version of a slot."""

    version: int
    slot: SlotView
    bookings: dict[str, BookingView]
    moved: frozenset[str]  # bookings this version changed


# --- the model ---------------------------------------------------------------------------------


@dataclass
class ModelBooking:
    id: str
    slot: int
    holder: str
    state: BookingState
    events: list[str]
    unit: int | None = None
    had_hold: bool = False  # was granted a hold (has an expiry and a fence)
    lapsed: bool = False  # a hold whose expiry the clock passed, not yet noticed by the engine
    # Learned from PostgreSQL when granted; changes only when the hold is extended (then learned again).
    fence: int | None = None
    extensions: int = 0
    group: str | None = None  # the booking group (reserveSlots) it belongs to
    units: int = 1  # a party takes several units, as one booking
    extra: list[int] = field(default_factory=list)  # a held party's units besides `unit`
    passed: int = 0  # times later entries took units while it waited (FIRST_FIT)


@dataclass
class ModelGroup:
    """A booking group: one booking per slot, held, confirmed, cancelled and expired together."""

    id: str
    holder: str
    # In the model's slot order, never in the engine's lock order (ascending slot id): the ids
    # are new in every run, and what the rules draw (a member's booking number, the slot of a
    # member to settle) must not change when Hypothesis replays the example.
    slots: list[int]
    members: list[str]  # its bookings, in the same order
    state: BookingState
    had_hold: bool = False
    lapsed: bool = False  # held, and the clock passed its expiry (not yet noticed)


@dataclass
class ModelSlot:
    id: str
    capacity: int
    fill: FillPolicy = FillPolicy.STRICT_FIFO
    started: bool = False
    closed: bool = False
    queue: list[str] = field(default_factory=list)  # waiting bookings, first in line first
    # Fences issued, in order: [booking, fence] for each hold granted or extended (the fence is
    # learned from PostgreSQL after the step that issued it).
    grants: list[list[Any]] = field(default_factory=list)
    version: int = 0  # committed transactions that changed the slot's bookings
    flushes: int = 0  # times the test dropped the slot's Redis mirror
    changed: bool = False  # by the transaction under way


@dataclass(frozen=True)
class Expected:
    """What a reservation should answer: a booking (and its queue place) or a refusal."""

    error: type[DomainError] | None = None
    booking: str | None = None  # None with no error: a new booking (or group)
    state: BookingState | None = None
    position: int | None = None
    group: str | None = None  # a replayed group


class Model:
    """The reference: what the engine should do, in a few dozen lines of plain Python."""

    def __init__(self) -> None:
        self.slots: list[ModelSlot] = []
        self.bookings: dict[str, ModelBooking] = {}  # in creation order
        self.keys: dict[tuple[str, str], str] = {}  # (holder, idempotency key) -> booking
        self.groups: dict[str, ModelGroup] = {}
        self.group_keys: dict[tuple[str, str], str] = {}  # (holder, reserveSlots key) -> group
        self.tally: Counter[str] = Counter()  # transitions made, for the figures

    def of_slot(self, slot: int) -> list[ModelBooking]:
        return [b for b in self.bookings.values() if b.slot == slot]

    def move(self, booking: ModelBooking, to_state: BookingState, event: str) -> None:
        assert booking.state not in FINAL_STATES, f"model bug: {booking.id} left {booking.state}"
        booking.state = to_state
        booking.events.append(event)
        self.tally[event] += 1
        self.slots[booking.slot].changed = True
        if to_state not in OCCUPYING_STATES:
            booking.unit = None
            booking.extra = []

    def commit(self) -> None:
        """A service call's transaction committed: each change bumps its slot's version once."""
        for model_slot in self.slots:
            model_slot.version += model_slot.changed
            model_slot.changed = False

    def needs_settling(self, slot: int) -> bool:
        """Whether settling the slot would change anything (else reads of it are pure)."""
        lapsed = any(b.state is S.RESERVED and b.lapsed for b in self.of_slot(slot))
        return lapsed or (self.slots[slot].started and bool(self.slots[slot].queue))

    def settle(self, slot: int) -> None:
        """Expire lapsed holds, lapse the queue of a started slot, else promote it."""
        for booking in self.of_slot(slot):
            if booking.state is S.RESERVED and booking.lapsed:
                self.move(booking, S.EXPIRED, "expire")
        model_slot = self.slots[slot]
        if model_slot.started:
            for booking_id in model_slot.queue:
                self.move(self.bookings[booking_id], S.EXPIRED, "lapse")
            model_slot.queue.clear()
        else:
            self.promote(slot)

    def free_units(self, slot: int) -> list[int]:
        taken = {u for b in self.of_slot(slot) if b.unit is not None for u in [b.unit, *b.extra]}
        return [u for u in range(1, self.slots[slot].capacity + 1) if u not in taken]

    def grant(self, booking: ModelBooking, units: list[int]) -> None:
        booking.unit, *booking.extra = units
        booking.had_hold = True
        self.slots[booking.slot].grants.append([booking.id, None])

    def promote(self, slot: int) -> None:
        """Offer the free units to the queue by the slot's fill policy (whole parties only); nobody
        passes a waiting group: it is offered all its slots at once, or none."""
        model_slot = self.slots[slot]
        free = len(self.free_units(slot))
        window = model_slot.queue[: fill_policy.queue_window(model_slot.fill, free)]
        singles = list(itertools.takewhile(lambda b: self.bookings[b].group is None, window))
        waiters = [Waiter(b, self.bookings[b].units, self.bookings[b].passed) for b in singles]
        offers = fill_policy.offers(model_slot.fill, free, waiters, fill_policy.DEFAULT_MAX_PASS_OVERS)
        for booking_id, passes in offers.passed.items():
            self.bookings[booking_id].passed += passes
        for waiter in offers.offered:
            booking = self.bookings[waiter.key]
            model_slot.queue.remove(booking.id)
            self.move(booking, S.RESERVED, "promote")
            self.grant(booking, self.free_units(slot)[: booking.units])

    def position(self, booking: ModelBooking) -> int | None:
        if booking.state is not S.PENDING:
            return None
        return self.slots[booking.slot].queue.index(booking.id) + 1

    def read(self, booking: ModelBooking) -> None:
        """Reading a waiting or held booking settles its slot first (lazy expiry)."""
        if booking.state in (S.PENDING, S.RESERVED):
            self.settle(booking.slot)

    def reserve(self, holder: str, slot: int, key: str, units: int = 1) -> Expected:
        known = self.keys.get((holder, key))
        if known is not None:
            # The engine answers a replay inside a transaction on the requested slot, which
            # settles that slot first, like any reservation.
            self.settle(slot)
            booking = self.bookings[known]
            if booking.slot != slot or booking.units != units:
                return Expected(error=IdempotencyKeyReused)  # another slot, or another party size
            self.read(booking)
            return Expected(booking=booking.id, state=booking.state, position=self.position(booking))
        self.settle(slot)
        live = [b for b in self.of_slot(slot) if b.holder == holder and b.state in LIVE_STATES]
        if live:
            self.keys[(holder, key)] = live[0].id
            return Expected(booking=live[0].id, state=live[0].state, position=self.position(live[0]))
        model_slot = self.slots[slot]
        if model_slot.started or model_slot.closed:
            return Expected(error=SlotClosed)
        if units > model_slot.capacity:
            return Expected(error=ValidationError)
        if len(self.free_units(slot)) >= units and not model_slot.queue:
            return Expected(state=S.RESERVED)
        # Queued; under FIRST_FIT it may take units the head cannot use at once (admit() tells).
        return Expected(state=S.PENDING, position=len(model_slot.queue) + 1)

    def admit(
        self, booking_id: str, holder: str, slot: int, key: str, state: BookingState, units: int = 1
    ) -> None:
        """Record the new booking the engine created for an expected admission."""
        assert booking_id not in self.bookings, f"a new booking reused the id {booking_id}"
        event = "hold" if state is S.RESERVED else "queue"
        booking = ModelBooking(booking_id, slot, holder, state, [event], units=units)
        self.tally[event] += 1
        self.slots[slot].changed = True
        self.bookings[booking_id] = booking
        self.keys[(holder, key)] = booking_id
        if state is S.RESERVED:
            self.grant(booking, self.free_units(slot)[:units])
        else:
            self.slots[slot].queue.append(booking_id)
            self.promote(slot)  # the same transaction offers what the head cannot use (FIRST_FIT)

    def confirm(self, booking: ModelBooking, caller: Caller) -> type[DomainError] | None:
        if booking.holder != caller.holder:
            return NotHolder if caller.admin else BookingNotFound
        self.settle(booking.slot)
        if booking.state is S.EXPIRED and booking.had_hold:
            return HoldExpired
        if booking.state is not S.RESERVED or booking.group is not None:
            return InvalidTransition  # a group's hold is confirmed with its group
        self.move(booking, S.CONFIRMED, "confirm")
        return None

    def cancel(self, booking: ModelBooking, caller: Caller) -> type[DomainError] | None:
        if booking.holder != caller.holder and not caller.admin:
            return BookingNotFound
        self.settle(booking.slot)
        if booking.state not in LIVE_STATES:
            return InvalidTransition
        if booking.group is not None and booking.state in (S.PENDING, S.RESERVED):
            return InvalidTransition  # moves only with its group until the group is confirmed
        if booking.state is S.PENDING:
            self.slots[booking.slot].queue.remove(booking.id)
        self.move(booking, S.CANCELLED, "cancel")
        if not self.slots[booking.slot].started:
            self.promote(booking.slot)
        return None

    def complete(self, booking: ModelBooking, caller: Caller) -> type[DomainError] | None:
        if not caller.admin:
            return NotAuthorized
        self.settle(booking.slot)
        if booking.state is not S.CONFIRMED:
            return InvalidTransition
        self.move(booking, S.COMPLETED, "complete")
        return None

    def extend(self, booking: ModelBooking, caller: Caller, seconds: int | None) -> type[DomainError] | None:
        """Holds last an hour here, so asking for the slot's hold time again adds a little, once
        (maxExtensions 1), to a hold granted by an earlier call; one second from now adds nothing
        and is refused. So is the slot's hold time to a waiting booking that this call's own
        settle promoted: its hold began at this transaction's clock and has it all left already."""
        if booking.holder != caller.holder:
            return NotHolder if caller.admin else BookingNotFound
        waited = booking.state is S.PENDING
        self.settle(booking.slot)
        if booking.state is S.EXPIRED and booking.had_hold:
            return HoldExpired
        if booking.state is not S.RESERVED or booking.group is not None:
            return InvalidTransition  # a group's hold is extended with the group's, never alone
        if self.slots[booking.slot].closed or booking.extensions >= 1:
            return ExtensionLimitReached
        if seconds is not None or waited:
            return ValidationError  # it would not move the expiry: nothing is used up
        self.move(booking, S.RESERVED, "extend")
        booking.extensions += 1
        booking.fence = None  # a new one, learned from PostgreSQL
        self.slots[booking.slot].grants.append([booking.id, None])
        return None

    def close(self, slot: int) -> None:
        """No more reservations; everyone waiting expires (closing a closed slot changes nothing)."""
        self.settle(slot)
        model_slot = self.slots[slot]
        if model_slot.closed:
            return
        model_slot.closed = True
        model_slot.changed = True
        for booking_id in model_slot.queue:
            self.move(self.bookings[booking_id], S.EXPIRED, "close")
        model_slot.queue.clear()

    def reopen(self, slot: int) -> None:
        self.settle(slot)
        model_slot = self.slots[slot]
        if model_slot.closed:
            model_slot.closed = False
            model_slot.changed = True

    def resize(self, slot: int, capacity: int) -> type[DomainError] | None:
        """Never below the units in use; units above the new capacity move onto the lowest free
        ones; new units go to the head of the queue."""
        self.settle(slot)
        model_slot = self.slots[slot]
        occupying = [b for b in self.of_slot(slot) if b.unit is not None]
        taken = [u for b in occupying for u in [b.unit, *b.extra] if u is not None]
        if capacity < len(taken):
            return ValidationError
        # Units above the new capacity, lowest first, onto the lowest free ones, whoever owns them.
        above = sorted(u for u in taken if u > capacity)
        moves = dict(zip(above, (u for u in range(1, capacity + 1) if u not in taken), strict=False))
        for booking in occupying:
            assert booking.unit is not None
            booking.unit = moves.get(booking.unit, booking.unit)
            booking.extra = [moves.get(u, u) for u in booking.extra]
        model_slot.capacity = capacity
        model_slot.changed = True
        if not model_slot.started:
            self.promote(slot)
        return None

    # booking groups

    def lock_order(self, slots: Sequence[int]) -> list[int]:
        """The order the engine locks (and answers) a group's slots: which refusal comes first."""
        return sorted(slots, key=lambda slot: UUID(self.slots[slot].id))

    def reserve_group(self, holder: str, slots: Sequence[int], key: str, wait: bool) -> Expected:
        ordered = self.lock_order(slots)
        known = self.group_keys.get((holder, key))
        if known is not None:  # replayed under the locks, before any settling
            group = self.groups[known]
            if group.slots != sorted(slots):
                return Expected(error=IdempotencyKeyReused)
            lapsed = group.state is S.RESERVED and group.lapsed
            return Expected(group=known, state=S.EXPIRED if lapsed else group.state)
        for slot in ordered:
            self.settle(slot)
        full = False
        for slot in ordered:
            if self.slots[slot].started or self.slots[slot].closed:
                return Expected(error=SlotClosed)
            if any(b.holder == holder and b.state in LIVE_STATES for b in self.of_slot(slot)):
                return Expected(error=SlotUnavailable)
            full = full or not (self.free_units(slot) and not self.slots[slot].queue)
        if not full:
            return Expected(state=S.RESERVED)
        return Expected(state=S.PENDING) if wait else Expected(error=SlotUnavailable)

    def admit_group(self, view: GroupView, holder: str, slots: Sequence[int], key: str) -> ModelGroup:
        # The engine answers in lock order; the model keeps its own (see ModelGroup.slots).
        assert [b.slot_id for b in view.bookings] == [self.slots[s].id for s in self.lock_order(slots)]
        ordered = sorted(slots)
        by_slot = {b.slot_id: b for b in view.bookings}
        members = [by_slot[self.slots[slot].id].id for slot in ordered]
        group = ModelGroup(view.id, holder, ordered, members, view.state)
        self.groups[view.id] = group
        self.group_keys[(holder, key)] = view.id
        event = "hold" if view.state is S.RESERVED else "queue"
        for slot, booking_id in zip(ordered, members, strict=True):
            booking = ModelBooking(booking_id, slot, holder, view.state, [event], group=view.id)
            self.tally[f"group {event}"] += 1
            self.slots[slot].changed = True
            self.bookings[booking.id] = booking
            if view.state is S.RESERVED:
                self.grant(booking, self.free_units(slot)[:1])
            else:
                self.slots[slot].queue.append(booking.id)
        group.had_hold = view.state is S.RESERVED
        return group

    def members(self, group: ModelGroup) -> list[ModelBooking]:
        return [self.bookings[b] for b in group.members]

    def confirm_group(self, group: ModelGroup, caller: Caller) -> type[DomainError] | None:
        if group.holder != caller.holder:
            return NotAuthorized if caller.admin else GroupNotFound
        for slot in group.slots:
            self.settle(slot)
        members = self.members(group)
        lapsed = group.state is S.RESERVED and (group.lapsed or any(m.state is S.EXPIRED for m in members))
        if lapsed:
            group.state = S.EXPIRED
        if lapsed or (group.state is S.EXPIRED and group.had_hold):
            return HoldExpired
        if group.state is not S.RESERVED:
            return InvalidTransition
        for member in members:
            self.move(member, S.CONFIRMED, "confirm")
        group.state = S.CONFIRMED
        return None

    def cancel_group(self, group: ModelGroup, caller: Caller) -> type[DomainError] | None:
        if group.holder != caller.holder and not caller.admin:
            return GroupNotFound
        for slot in group.slots:
            self.settle(slot)
        state = S.EXPIRED if group.state is S.RESERVED and group.lapsed else group.state
        if state not in LIVE_STATES:
            return InvalidTransition
        for member in self.members(group):
            if member.state not in LIVE_STATES:
                continue
            if member.state is S.PENDING:
                self.slots[member.slot].queue.remove(member.id)
            self.move(member, S.CANCELLED, "cancel")
        group.state = S.CANCELLED
        for slot in group.slots:
            self.promote(slot)
        return None

    def offer_group(self, group: ModelGroup) -> bool:
        """A worker looks whether the waiting group heads every queue with a unit free."""
        if group.state is not S.PENDING:
            return False
        for slot in group.slots:
            self.settle(slot)
        members = self.members(group)
        if any(m.state is not S.PENDING for m in members):  # an entry lapsed: the rest follow
            for member in members:
                if member.state is S.PENDING:
                    self.slots[member.slot].queue.remove(member.id)
                    self.move(member, S.EXPIRED, "lapse")
            group.state = S.EXPIRED
            for slot in group.slots:
                self.promote(slot)
            return False
        if not all(self.slots[m.slot].queue[0] == m.id and self.free_units(m.slot) for m in members):
            return False
        for member in members:
            self.slots[member.slot].queue.pop(0)
            self.move(member, S.RESERVED, "promote")
            self.grant(member, self.free_units(member.slot)[:1])
        group.state = S.RESERVED
        group.had_hold = True
        for slot in group.slots:
            self.promote(slot)
        return True

    def expire_group(self, group: ModelGroup) -> bool:
        """The group's expiry task: every hold of a lapsed group expires in one transaction."""
        if group.state is not S.RESERVED or not group.lapsed:
            return False
        for slot in group.slots:
            self.settle(slot)
        group.state = S.EXPIRED
        return True


# --- the state machine -------------------------------------------------------------------------


@dataclass
class Stats:
    examples: int = 0
    full_length: int = 0  # examples that ran all their steps (Hypothesis also tries short ones)
    steps: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    transitions: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    first_failure: FirstFailure = field(default_factory=FirstFailure)

    def summary(self) -> str:
        return "\n".join(
            f"{what}: " + ", ".join(f"{name} {n}" for name, n in counts.most_common())
            for what, counts in [
                ("rules run", self.rules),
                ("transitions made", self.transitions),
                ("refusals answered", self.refusals),
            ]
        )


WHO = st.sampled_from(["holder", "other", "admin"])


class ReservationMachine(RuleBasedStateMachine):
    def __init__(self, engine: Engine, bridge: Bridge, listener: Listener, stats: Stats) -> None:
        super().__init__()
        self.engine = engine
        self.bridge = bridge
        self.listener = listener
        self.stats = stats
        self.first_failure = stats.first_failure
        self.trace: list[str] = []  # this example's steps and draws, shown if it fails
        # What a subscriber knows from the announcements alone (per slot, as live.py rebuilds it).
        self.announced: list[tuple[int, SlotView, dict[str, BookingView]]] = []
        stats.examples += 1
        self.first_step = stats.steps
        self.model = Model()
        # Fresh names per example: idempotency keys are per holder across all slots.
        self.nonce = f"m{uuid.uuid4().hex[:10]}"
        self.holders = [f"{self.nonce}-h{i}" for i in range(HOLDERS)]
        self.newcomers = 0  # holders made up for races
        self.admin = Caller(f"{self.nonce}-admin", admin=True)
        self.used_keys: dict[str, list[str]] = {h: [] for h in self.holders}
        self.finals: dict[str, BookingState] = {}  # final states as first seen in PostgreSQL
        self.positions_checked: dict[int, tuple[int, int]] = {}  # slot -> (version, flushes)

    # helpers

    def describe(self) -> str:
        """The model's slots and bookings, for a failure's report."""
        lines = [
            f"  slot {n} {s.id}: capacity {s.capacity}, version {s.version}, started {s.started},"
            f" closed {s.closed}, queue {s.queue}"
            for n, s in enumerate(self.model.slots)
        ]
        lines += [
            f"  booking #{n} {b.id}: slot {b.slot}, {b.holder}, {b.state} on unit {b.unit}, fence {b.fence},"
            f" lapsed {b.lapsed}, group {b.group}, events {b.events}"
            for n, b in enumerate(self.model.bookings.values())
        ]
        lines += [
            f"  group {g.id}: {g.holder}, {g.state}, slots {g.slots}, lapsed {g.lapsed}"
            for g in self.model.groups.values()
        ]
        return "\n".join(lines)

    def call(self, awaitable: Awaitable[T]) -> T | DomainError:
        return self.bridge.run(attempt(awaitable))

    def step(self, rule: str) -> None:
        self.stats.steps += 1
        self.stats.rules[rule] += 1

    def caller_for(self, booking: ModelBooking, who: str) -> Caller:
        if who == "admin":
            return self.admin
        if who.startswith("holder"):
            return Caller(booking.holder)
        other = self.holders[(self.holders.index(booking.holder) + 1) % len(self.holders)]
        return Caller(other)

    def pick_booking(
        self, data: st.DataObject, wanted: Callable[[ModelBooking], bool] = lambda b: True
    ) -> ModelBooking:
        """One of the bookings `wanted` picks, drawn by its number (#0 is the first one made)."""
        bookings = list(self.model.bookings.values())
        number = data.draw(
            st.sampled_from([n for n, b in enumerate(bookings) if wanted(b)]), label="booking #"
        )
        return bookings[number]

    def pick_slot(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.model.slots) - 1), label="slot")

    def has_bookings(self) -> bool:
        return bool(self.model.bookings)

    def has_state(self, state: BookingState) -> bool:
        return any(b.state is state for b in self.model.bookings.values())

    def has_fresh_hold(self) -> bool:
        """A single's hold the clock has not passed (a group's holds lapse together: lapse_group)."""
        return any(
            b.state is S.RESERVED and not b.lapsed and b.group is None for b in self.model.bookings.values()
        )

    def has_group(self, state: BookingState | None = None) -> bool:
        return any(state is None or g.state is state for g in self.model.groups.values())

    def pick_group(
        self, data: st.DataObject, wanted: Callable[[ModelGroup], bool] = lambda g: True
    ) -> ModelGroup:
        made = list(self.model.groups.values())
        number = data.draw(st.sampled_from([n for n, g in enumerate(made) if wanted(g)]), label="group #")
        return made[number]

    def has_fence(self) -> bool:
        return any(b.fence is not None for b in self.model.bookings.values())

    def check_refusal(self, outcome: object, expected: type[DomainError] | None, what: str) -> None:
        if expected is None:
            assert not isinstance(outcome, DomainError), f"{what}: refused with {outcome!r}"
        else:
            # isinstance: a group's member refuses to move alone with InvalidTransition's subclass.
            assert isinstance(outcome, expected), f"{what}: expected {expected.__name__}, got {outcome!r}"
            self.stats.refusals[expected.__name__] += 1

    # rules

    @initialize(
        capacities=st.lists(
            st.tuples(st.integers(1, 4), st.sampled_from(list(FillPolicy))), min_size=1, max_size=3
        )
    )
    @watched
    def create_slots(self, capacities: list[tuple[int, FillPolicy]]) -> None:
        for capacity, fill in capacities:
            starts = datetime.now(UTC) + timedelta(days=1)
            spec = SlotSpec(
                "model", starts, starts + timedelta(minutes=30), capacity, HOLD_SECONDS, fill_policy=fill
            )
            slot_id = self.bridge.run(queries.create_slot(self.engine, self.admin, spec)).id
            self.model.slots.append(ModelSlot(slot_id, capacity, fill))
            empty = SlotView(slot_id, "", EPOCH, EPOCH, capacity, HOLD_SECONDS, False, 0, 0, 0)
            self.announced.append((0, empty, {}))
        self.bridge.run(self.listener.follow(self.engine, [s.id for s in self.model.slots]))

    def fresh_key(self, name: str) -> str:
        key = f"k{len(self.used_keys[name])}"
        self.used_keys[name].append(key)
        return key

    @rule(data=st.data())
    @watched
    def reserve(self, data: st.DataObject) -> None:
        """A holder reserves: with a fresh idempotency key, or now and then one used before."""
        self.step("reserve")
        name = self.holders[data.draw(st.integers(0, len(self.holders) - 1), label="holder")]
        slot = self.pick_slot(data)
        used = self.used_keys[name]
        if used and data.draw(st.integers(0, 3), label="reuse a key") == 0:
            key = data.draw(st.sampled_from(used), label="key")
        else:
            key = self.fresh_key(name)
        units = data.draw(st.sampled_from([1, 1, 1, 2, 3]), label="units")  # a party now and then
        outcome = self.call(
            reservations.reserve_slot(self.engine, Caller(name), self.model.slots[slot].id, key, units)
        )
        self.check_reservation(name, slot, key, outcome, units)

    @rule(data=st.data(), newcomers=st.integers(2, 4), duplicate=st.booleans())
    @watched
    def race_reserve(self, data: st.DataObject, newcomers: int, duplicate: bool) -> None:
        """Newcomers reserve one slot at once (and maybe one request is sent twice, same key).

        The slot lock serializes them; the order it chose shows in the new bookings' arrival
        sequence, and each answer must be the model's for that order. The newcomers join the
        cast in that order, so what follows does not depend on how the race went (Hypothesis
        needs each example to replay the same way).
        """
        self.step("race_reserve")
        slot = self.pick_slot(data)
        slot_id = self.model.slots[slot].id
        self.newcomers += newcomers
        requests = [(f"{self.nonce}-r{self.newcomers - i}", "k0") for i in range(newcomers)]
        calls = [reservations.reserve_slot(self.engine, Caller(name), slot_id, key) for name, key in requests]
        if duplicate:
            calls.append(reservations.reserve_slot(self.engine, Caller(requests[0][0]), slot_id, "k0"))
        outcomes = self.bridge.run(gather_attempts(calls))
        if duplicate:
            first, again = outcomes[0], outcomes.pop()
            assert type(first) is type(again), f"duplicate requests answered {first!r} and {again!r}"
            if isinstance(first, BookingView):
                assert isinstance(again, BookingView)
                assert (again.id, again.state) == (first.id, first.state), "a duplicate got another booking"
        ids = [UUID(o.id) for o in outcomes if isinstance(o, BookingView)]
        rows = self.bridge.run(
            sql("SELECT id, queue_seq, xmin::text AS tx FROM bookings WHERE id = ANY($1::uuid[])", ids)
        )
        arrival = {str(r["id"]): int(r["queue_seq"]) for r in rows}
        made_in = {str(r["id"]): r["tx"] for r in rows}

        def turn(index: int) -> int:  # refusals (the slot started) come in any order
            outcome = outcomes[index]
            return arrival[outcome.id] if isinstance(outcome, BookingView) else 0

        def transaction_of(index: int) -> str:
            outcome = outcomes[index]
            return made_in[outcome.id] if isinstance(outcome, BookingView) else f"refused {index}"

        order = sorted(range(newcomers), key=turn)
        for place, index in enumerate(order):
            name, key = requests[index]
            self.holders.append(name)
            self.used_keys[name] = [key]
            self.check_reservation(name, slot, key, outcomes[index])
            # Concurrent reservations of one slot may share a transaction (service/combining.py):
            # the model commits once per transaction PostgreSQL saw (the rows' xmin).
            last = place + 1 == len(order)
            if last or transaction_of(index) != transaction_of(order[place + 1]):
                self.model.commit()

    def check_reservation(
        self, name: str, slot: int, key: str, outcome: BookingView | DomainError, units: int = 1
    ) -> None:
        """Check the engine's answer to a reservation against the model's, and admit it there."""
        expected = self.model.reserve(name, slot, key, units)
        what = f"reserve({name}, slot {slot}, {key}, {units} units)"
        self.check_refusal(outcome, expected.error, what)
        if expected.error is not None:
            return
        assert isinstance(outcome, BookingView)
        if expected.booking is None:
            assert expected.state is not None
            self.model.admit(outcome.id, name, slot, key, expected.state, units)
            # A newcomer queued under FIRST_FIT may have taken units the head cannot use at once.
            admitted = self.model.bookings[outcome.id]
            expected = Expected(state=admitted.state, position=self.model.position(admitted))
        assert (outcome.state, outcome.queue_position) == (expected.state, expected.position), (
            f"{what}: got {outcome.state} at {outcome.queue_position},"
            f" expected {expected.state} at {expected.position}"
        )
        assert outcome.slot_id == self.model.slots[slot].id and outcome.holder == name
        if expected.booking is not None:
            assert outcome.id == expected.booking, f"{what}: answered {outcome.id}, not {expected.booking}"
        booking = self.model.bookings[outcome.id]
        assert outcome.units == booking.units, f"{what}: a booking of {outcome.units} units"
        shows_expiry = booking.had_hold and booking.state in (S.RESERVED, S.EXPIRED)
        assert (outcome.expires_at is not None) == shows_expiry, f"{what}: expires at {outcome.expires_at}"

    @precondition(has_bookings)
    @rule(data=st.data(), who=st.sampled_from(["holder of a hold"] * 3 + ["holder", "other", "admin"]))
    @watched
    def confirm(self, data: st.DataObject, who: str) -> None:
        """Mostly a holder confirms a hold (one that lapsed unnoticed, too); else anyone, anything."""
        self.step("confirm")
        holds = who == "holder of a hold" and self.has_state(S.RESERVED)
        booking = self.pick_booking(data, lambda b: b.state is S.RESERVED or not holds)
        caller = self.caller_for(booking, who)
        outcome = self.call(reservations.confirm_booking(self.engine, caller, booking.id))
        expected = self.model.confirm(booking, caller)
        self.check_refusal(outcome, expected, f"confirm({booking.id} in {booking.state} as {who})")
        if expected is None:
            assert isinstance(outcome, BookingView) and outcome.state is S.CONFIRMED

    @precondition(has_bookings)
    @rule(data=st.data(), who=WHO, reason=st.sampled_from([None, "plans changed"]))
    @watched
    def cancel(self, data: st.DataObject, who: str, reason: str | None) -> None:
        """Cancel a booking: mostly one that holds a unit (if any), freeing it for the queue."""
        self.step("cancel")
        occupying = self.has_state(S.RESERVED) or self.has_state(S.CONFIRMED)
        any_booking = data.draw(st.integers(0, 2), label="any booking") == 0
        booking = self.pick_booking(
            data, lambda b: any_booking or not occupying or b.state in (S.RESERVED, S.CONFIRMED)
        )
        caller = self.caller_for(booking, who)
        outcome = self.call(reservations.cancel_booking(self.engine, caller, booking.id, reason))
        expected = self.model.cancel(booking, caller)
        self.check_refusal(outcome, expected, f"cancel({booking.id} in {booking.state} as {who})")
        if expected is None:
            assert isinstance(outcome, BookingView) and outcome.state is S.CANCELLED

    @precondition(has_bookings)
    @rule(data=st.data(), as_admin=st.integers(0, 3))
    @watched
    def complete(self, data: st.DataObject, as_admin: int) -> None:
        """Complete a booking: mostly a confirmed one (if any), mostly as an admin."""
        self.step("complete")
        confirmed = self.has_state(S.CONFIRMED) and data.draw(st.integers(0, 3), label="any booking") != 0
        booking = self.pick_booking(data, lambda b: b.state is S.CONFIRMED or not confirmed)
        caller = self.admin if as_admin else Caller(booking.holder)
        outcome = self.call(reservations.complete_booking(self.engine, caller, booking.id))
        expected = self.model.complete(booking, caller)
        self.check_refusal(outcome, expected, f"complete({booking.id} in {booking.state})")
        if expected is None:
            assert isinstance(outcome, BookingView) and outcome.state is S.COMPLETED

    @precondition(has_bookings)
    @rule(
        data=st.data(),
        who=st.sampled_from(["holder of a hold"] * 4 + ["holder", "other", "admin"]),
        seconds=st.sampled_from([None, None, None, 1]),
    )
    @watched
    def extend_hold(self, data: st.DataObject, who: str, seconds: int | None) -> None:
        """Mostly a holder extends a hold (one that lapsed unnoticed, too); else anyone, anything."""
        self.step("extend_hold")
        holds = who == "holder of a hold" and self.has_state(S.RESERVED)
        booking = self.pick_booking(data, lambda b: b.state is S.RESERVED or not holds)
        caller = self.caller_for(booking, who)
        outcome = self.call(extension.extend_hold(self.engine, caller, booking.id, seconds))
        expected = self.model.extend(booking, caller, seconds)
        self.check_refusal(outcome, expected, f"extend({booking.id} in {booking.state} as {who})")
        if expected is None:
            assert isinstance(outcome, BookingView) and outcome.state is S.RESERVED
            assert outcome.expires_at is not None

    @rule(
        data=st.data(),
        # Reopening (a closed slot, if any) outweighs closing: a closed slot only refuses newcomers.
        action=st.sampled_from(["close", "reopen", "reopen", "resize", "resize", "resize", "as a holder"]),
        capacity=st.integers(1, 4),
    )
    @watched
    def administer(self, data: st.DataObject, action: str, capacity: int) -> None:
        """An admin closes a slot (its queue expires), reopens one (a closed one, if any) or
        resizes one (growing promotes the queue, shrinking below the units in use is refused);
        a holder may do none of it."""
        self.step(f"administer: {action}")
        closed = [n for n, s in enumerate(self.model.slots) if s.closed]
        if action == "reopen" and closed:
            slot = data.draw(st.sampled_from(closed), label="closed slot")
        else:
            slot = self.pick_slot(data)
        model_slot = self.model.slots[slot]
        if action == "as a holder":
            holder = Caller(self.holders[0])
            for denied in (
                slot_admin.close_slot(self.engine, holder, model_slot.id, None),
                slot_admin.update_slot(self.engine, holder, model_slot.id, slot_admin.SlotUpdate(capacity)),
            ):
                self.check_refusal(self.call(denied), NotAuthorized, f"{action} on slot {slot}")
            return
        if action == "resize":
            update = slot_admin.SlotUpdate(capacity=capacity)
            outcome = self.call(slot_admin.update_slot(self.engine, self.admin, model_slot.id, update))
            expected = self.model.resize(slot, capacity)
            self.check_refusal(outcome, expected, f"resize(slot {slot} to {capacity})")
            if expected is not None:
                return
        elif action == "close":
            outcome = self.call(slot_admin.close_slot(self.engine, self.admin, model_slot.id, "storm"))
            self.model.close(slot)
        else:
            outcome = self.call(slot_admin.reopen_slot(self.engine, self.admin, model_slot.id))
            self.model.reopen(slot)
        assert isinstance(outcome, SlotView), outcome
        assert (outcome.capacity, outcome.closed) == (model_slot.capacity, model_slot.closed), outcome
        assert outcome.queue_length == len(model_slot.queue), outcome

    @rule(data=st.data(), wait=st.booleans())
    @watched
    def reserve_group(self, data: st.DataObject, wait: bool) -> None:
        """A holder reserves several slots at once (listed in any order), all or nothing."""
        self.step(f"reserve_group (wait {wait})")
        name = self.holders[data.draw(st.integers(0, len(self.holders) - 1), label="holder")]
        order = data.draw(st.permutations(range(len(self.model.slots))), label="slots in the order given")
        chosen = order[: data.draw(st.integers(1, len(order)), label="how many slots")]
        used = [key for holder, key in self.model.group_keys if holder == name]
        if used and data.draw(st.integers(0, 3), label="reuse a group key") == 0:
            key = data.draw(st.sampled_from(used), label="group key")
        else:
            key = f"g{len(used)}"
        outcome = self.call(
            groups.reserve_slots(
                self.engine, Caller(name), [self.model.slots[i].id for i in chosen], key, wait
            )
        )
        expected = self.model.reserve_group(name, chosen, key, wait)
        what = f"reserve_slots({name}, slots {chosen}, {key}, wait {wait})"
        self.check_refusal(outcome, expected.error, what)
        if expected.error is not None:
            return
        assert isinstance(outcome, GroupView), what
        assert outcome.state is expected.state, f"{what}: {outcome.state}, expected {expected.state}"
        if expected.group is not None:
            assert outcome.id == expected.group, f"{what}: replayed {outcome.id}, not {expected.group}"
            return
        group = self.model.admit_group(outcome, name, chosen, key)
        members = self.model.members(group)
        positions = {b.id: b.queue_position for b in outcome.bookings}
        assert positions == {m.id: self.model.position(m) for m in members}, f"{what}: {positions}"
        assert len({b.expires_at for b in outcome.bookings}) == 1  # one expiry, or none waiting

    @precondition(lambda self: self.has_group())
    @rule(data=st.data(), who=st.sampled_from(["holder", "holder", "other", "admin"]))
    @watched
    def confirm_group(self, data: st.DataObject, who: str) -> None:
        self.step("confirm_group")
        group = self.pick_group(data)
        caller = self.group_caller(group, who)
        outcome = self.call(groups.confirm_group(self.engine, caller, group.id))
        expected = self.model.confirm_group(group, caller)
        self.check_refusal(outcome, expected, f"confirm_group({group.id} in {group.state} as {who})")
        if expected is None:
            assert isinstance(outcome, GroupView) and outcome.state is S.CONFIRMED

    @precondition(lambda self: self.has_group())
    @rule(data=st.data(), who=st.sampled_from(["holder", "holder", "other", "admin"]))
    @watched
    def cancel_group(self, data: st.DataObject, who: str) -> None:
        self.step("cancel_group")
        group = self.pick_group(data)
        caller = self.group_caller(group, who)
        outcome = self.call(groups.cancel_group(self.engine, caller, group.id, None))
        expected = self.model.cancel_group(group, caller)
        self.check_refusal(outcome, expected, f"cancel_group({group.id} in {group.state} as {who})")
        if expected is None:
            assert isinstance(outcome, GroupView) and outcome.state is S.CANCELLED

    def group_caller(self, group: ModelGroup, who: str) -> Caller:
        if who == "admin":
            return self.admin
        if who == "holder":
            return Caller(group.holder)
        return Caller(self.holders[(self.holders.index(group.holder) + 1) % len(self.holders)])

    @precondition(lambda self: self.has_group(S.PENDING))
    @rule(data=st.data())
    @watched
    def offer_group(self, data: st.DataObject) -> None:
        """The worker's look at a waiting group (kicked when it heads a queue with a unit free)."""
        self.step("offer_group")
        group = self.pick_group(data, lambda g: g.state is S.PENDING)
        offered = self.call(groups.offer_group(self.engine, UUID(group.id)))
        expected = self.model.offer_group(group)
        assert offered is expected, f"offer_group({group.id}): {offered!r}, expected {expected}"

    @precondition(
        lambda self: any(g.state is S.RESERVED and not g.lapsed for g in self.model.groups.values())
    )
    @rule(data=st.data(), noticed_by=st.sampled_from(["group task", "settle one slot", "nobody yet"]))
    @watched
    def lapse_group(self, data: st.DataObject, noticed_by: str) -> None:
        """The clock passes a held group's expiry; its task, a slot's settle or the next call sees it."""
        self.step("lapse_group")
        group = self.pick_group(data, lambda g: g.state is S.RESERVED and not g.lapsed)
        self.bridge.run(
            sql(
                "UPDATE booking_groups SET expires_at = now() - interval '1 second' WHERE id = $1",
                UUID(group.id),
            )
        )
        for member in self.model.members(group):
            self.bridge.run(self.expire_in_the_past(member))
            member.lapsed = True
        group.lapsed = True
        if noticed_by == "group task":
            expired = self.call(groups.expire_group(self.engine, UUID(group.id)))
            assert expired is True and self.model.expire_group(group)
        elif noticed_by == "settle one slot":
            slot = group.slots[data.draw(st.integers(0, len(group.slots) - 1), label="member")]
            self.bridge.run(reservations.settle_slot(self.engine, UUID(self.model.slots[slot].id)))
            self.model.settle(slot)

    @precondition(has_fresh_hold)
    @rule(data=st.data(), noticed_by=st.sampled_from(["expiry task", "settle", "nobody yet"]))
    @watched
    def lapse_hold(self, data: st.DataObject, noticed_by: str) -> None:
        """The clock passes a hold's expiry; the expiry task, a settle or (lazily) the next call sees it."""
        self.step("lapse_hold")
        booking = self.pick_booking(
            data, lambda b: b.state is S.RESERVED and not b.lapsed and b.group is None
        )
        fence = self.bridge.run(self.expire_in_the_past(booking))
        booking.lapsed = True
        if noticed_by == "expiry task":
            outcome = self.call(expiry.expire_hold(self.engine, UUID(booking.id), fence))
            assert outcome is ExpiryOutcome.EXPIRED, f"expiring lapsed hold {booking.id}: {outcome!r}"
            self.model.settle(booking.slot)
        elif noticed_by == "settle":
            self.bridge.run(reservations.settle_slot(self.engine, UUID(self.model.slots[booking.slot].id)))
            self.model.settle(booking.slot)

    async def expire_in_the_past(self, booking: ModelBooking) -> int:
        """Move the hold's expiry a second into the past, in PostgreSQL and in its Redis mirror."""
        rows = await sql(
            "UPDATE bookings SET expires_at = now() - interval '1 second'"
            " WHERE id = $1 AND state = 'RESERVED' RETURNING expires_at, fence",
            UUID(booking.id),
        )
        assert len(rows) == 1, f"hold {booking.id} is not RESERVED in PostgreSQL"
        holds = self.engine.keys(self.model.slots[booking.slot].id).holds
        expiry = epoch_ms(rows[0]["expires_at"])  # for every unit the hold has in the mirror
        await self.engine.redis.zadd(
            holds, dict.fromkeys(hold_members(booking.id, booking.units), expiry), xx=True
        )
        return int(rows[0]["fence"])

    @precondition(lambda self: not any(s.started for s in self.model.slots) and self.has_state(S.PENDING))
    @rule(data=st.data(), settle_now=st.booleans())
    @watched
    def start_slot(self, data: st.DataObject, settle_now: bool) -> None:
        """A slot with a queue starts: no more reservations, its queue lapses when next settled.

        (Once per example, and only where people wait: a started slot takes no more bookings.)
        """
        self.step("start_slot")
        waited_for = [n for n, s in enumerate(self.model.slots) if s.queue]
        slot = data.draw(st.sampled_from(waited_for), label="slot")
        slot_id = UUID(self.model.slots[slot].id)
        self.bridge.run(
            sql("UPDATE slots SET starts_at = now() - interval '1 second' WHERE id = $1", slot_id)
        )
        self.model.slots[slot].started = True
        if settle_now:
            self.bridge.run(reservations.settle_slot(self.engine, slot_id))
            self.model.settle(slot)

    @precondition(has_fence)
    @rule(data=st.data(), fence_offset=st.sampled_from([0, 0, -1, "before the extension"]))
    @watched
    def replay_expiry_task(self, data: st.DataObject, fence_offset: int | str) -> None:
        """An at-least-once expiry task runs again, late, or with an older fence (an extended
        hold's old timer among them: it must leave the hold alone)."""
        self.step("replay_expiry_task")
        booking = self.pick_booking(data, lambda b: b.fence is not None)
        assert booking.fence is not None
        earlier = [f for b, f in self.model.slots[booking.slot].grants if b == booking.id][:-1]
        if isinstance(fence_offset, int):
            fence = booking.fence + fence_offset
        elif earlier:
            fence = earlier[-1]
        else:
            fence = booking.fence - 1
        outcome = self.call(expiry.expire_hold(self.engine, UUID(booking.id), fence))
        if booking.state is S.RESERVED and fence == booking.fence:
            lapsed = booking.lapsed
            self.model.settle(booking.slot)
            expected = ExpiryOutcome.EXPIRED if lapsed else ExpiryOutcome.NOT_DUE
        else:
            expected = ExpiryOutcome.STALE
        assert outcome is expected, f"expire_hold({booking.id}, {fence}) in {booking.state}: {outcome!r}"

    @rule(data=st.data(), chore=st.sampled_from(["settle", "sweep", "flush mirror", "read bookings"]))
    @watched
    def housekeeping(self, data: st.DataObject, chore: str) -> None:
        """Settle a slot or sweep them all; flush a slot's Redis mirror; read a slot's bookings."""
        self.step(f"housekeeping: {chore}")
        slot = self.pick_slot(data)
        slot_id = self.model.slots[slot].id
        if chore == "settle":
            self.bridge.run(reservations.settle_slot(self.engine, UUID(slot_id)))
            self.model.settle(slot)
        elif chore == "sweep":
            due = [s for s in range(len(self.model.slots)) if self.model.needs_settling(s)]
            settled = self.bridge.run(expiry.sweep(self.engine))
            assert settled >= len(due), f"the sweep settled {settled} slots, {len(due)} of ours needed it"
            for due_slot in due:
                self.model.settle(due_slot)
                self.model.commit()
        elif chore == "flush mirror":
            # Redis forgets the slot; the engine must rebuild it from PostgreSQL when next used.
            self.bridge.run(self.engine.redis.delete(*self.engine.keys(slot_id).all()))
            self.model.slots[slot].flushes += 1
        else:
            self.read_bookings(slot)

    def read_bookings(self, slot: int) -> None:
        """Read every booking of a slot through the service, as its holder and as a stranger."""
        for booking in self.model.of_slot(slot):
            view = self.bridge.run(
                queries.get_queue_position(self.engine, Caller(booking.holder), booking.id)
            )
            self.model.read(booking)  # reading a waiting or held booking expires lazily
            self.model.commit()
            assert view is not None and view.state is booking.state, f"read {booking.id}: {view!r}"
            assert view.position == self.model.position(booking), f"read {booking.id}: {view!r}"
            assert (view.expires_at is not None) == (booking.state is S.RESERVED)
            stranger = Caller(self.caller_for(booking, "other").holder)
            assert self.bridge.run(queries.get_booking(self.engine, stranger, booking.id)) is None

    # invariants

    @invariant()
    @watched
    def matches_database(self) -> None:
        if not self.model.slots:
            return
        self.model.commit()  # the last step's transaction
        self.bridge.run(self.check_database())

    async def check_database(self) -> None:
        model = self.model
        slot_ids = [UUID(s.id) for s in model.slots]
        rows = await sql(
            "SELECT b.id::text AS id, b.slot_id::text AS slot_id, b.holder, b.state, b.unit, b.fence,"
            " b.units, b.extra_units, b.passed_over,"
            " b.queue_seq, b.expires_at,"
            " (SELECT json_agg(json_build_array(t.id, t.from_state, t.to_state, t.event, t.actor, t.fence)"
            "  ORDER BY t.id) FROM transitions t WHERE t.booking_id = b.id) AS trail"
            " FROM bookings b WHERE b.slot_id = ANY($1::uuid[])",
            slot_ids,
        )
        slot_rows = await sql(
            "SELECT id::text AS id, fence, version FROM slots WHERE id = ANY($1::uuid[])", slot_ids
        )
        async with self.engine.redis.pipeline(transaction=False) as pipe:
            for model_slot in model.slots:
                keys = self.engine.keys(model_slot.id)
                pipe.hgetall(keys.meta)
                pipe.zrange(keys.holds, 0, -1, withscores=True)
                pipe.zrange(keys.queue, 0, -1)
            mirror = await pipe.execute()

        by_id = {r["id"]: r for r in rows}
        for row in rows:
            row["trail"] = json.loads(
                row["trail"] or "[]"
            )  # (id, from, to, event, actor, fence), oldest first
        assert set(by_id) == set(model.bookings), "PostgreSQL and the model know different bookings"
        for booking in model.bookings.values():
            self.check_booking(booking, by_id[booking.id])

        slot_by_id = {r["id"]: r for r in slot_rows}
        announcements = await self.listener.take(
            {
                model_slot.id: range(self.announced[index][0] + 1, slot_by_id[model_slot.id]["version"] + 1)
                for index, model_slot in enumerate(model.slots)
            }
        )
        for index, model_slot in enumerate(model.slots):
            mine = [by_id[b.id] for b in model.of_slot(index)]
            self.check_slot(model_slot, mine, slot_by_id[model_slot.id])
            self.check_fifo_in_audit(model_slot, mine)
            seen = self.announced[index][0]
            shown = self.check_announcements(index, announcements[model_slot.id], slot_by_id[model_slot.id])
            await self.check_resumption(model_slot.id, seen, shown)
            meta, holds, queue = mirror[3 * index : 3 * index + 3]
            self.check_mirror(model_slot, mine, meta, holds, queue)

        await self.check_positions()
        await self.check_groups()

    async def check_groups(self) -> None:
        """Each group's stored state is the model's, and a hold is never partial: when one member
        holds, all do (until the group's expiry, which the clock passes for all at once)."""
        if not self.model.groups:
            return
        rows = await sql(
            "SELECT id::text AS id, state FROM booking_groups WHERE id = ANY($1::uuid[])",
            [UUID(g) for g in self.model.groups],
        )
        assert {r["id"]: r["state"] for r in rows} == {g.id: g.state for g in self.model.groups.values()}
        for group in self.model.groups.values():
            states = {m.state for m in self.model.members(group)}
            if S.RESERVED in states and not group.lapsed:
                assert states == {S.RESERVED} and group.state is S.RESERVED, (group, states)

    def check_booking(self, booking: ModelBooking, row: dict[str, Any]) -> None:
        state = BookingState(row["state"])
        # The model's state (hence FIFO promotion, lazy expiry, ...) is the database's.
        assert (state, row["unit"], list(row["extra_units"])) == (
            booking.state,
            booking.unit,
            booking.extra,
        ), (
            f"booking {booking.id}: PostgreSQL has {state} on units {row['unit']} {row['extra_units']},"
            f" the model {booking.state} on units {booking.unit} {booking.extra}"
        )
        assert (row["units"], row["passed_over"]) == (booking.units, booking.passed), f"booking {booking.id}"
        assert row["holder"] == booking.holder
        # Final states never change.
        if booking.id in self.finals:
            assert state is self.finals[booking.id], f"final {booking.id} became {state}"
        elif state in FINAL_STATES:
            self.finals[booking.id] = state
        # A hold has a fence and an expiry; the fence, once issued, changes only when extended.
        assert (row["fence"] is not None) == booking.had_hold == (row["expires_at"] is not None)
        if booking.fence is None and row["fence"] is not None:
            booking.fence = row["fence"]
            grants = self.model.slots[booking.slot].grants
            unlearned = [g for g in grants if g[0] == booking.id and g[1] is None]
            assert len(unlearned) == 1, f"booking {booking.id}: fences to learn {unlearned}"
            unlearned[0][1] = booking.fence
        assert row["fence"] == booking.fence, f"booking {booking.id} changed fence"
        # The audit trail replays through the domain's transition table to the current state.
        trail = row["trail"]
        current: BookingState | None = None
        for _, from_state, to_state, event, actor, fence in trail:
            assert from_state == current, f"audit of {booking.id} skips from {current} to {from_state}"
            role = (
                Role.SYSTEM
                if actor == SYSTEM_ACTOR
                else Role.HOLDER
                if actor == booking.holder
                else Role.ADMIN
                if actor == self.admin.holder
                else None
            )
            assert role is not None, f"audit of {booking.id}: unknown actor {actor!r}"
            current = transition(current, Event(event), role)
            assert current == to_state, f"audit of {booking.id}: {event} led to {to_state}, not {current}"
            if event == "expire":
                assert fence == booking.fence, f"audit of {booking.id}: {event} with fence {fence}"
        # Each grant (hold, promotion, extension) names the fence it issued, in order.
        issued = [fence for _, _, _, event, _, fence in trail if event in ("hold", "promote", "extend")]
        granted = [f for b, f in self.model.slots[booking.slot].grants if b == booking.id]
        assert issued == granted, f"audit of {booking.id}: fences {issued}, issued {granted}"
        assert current is state, f"audit of {booking.id} ends in {current}, the booking is {state}"
        assert [t[3] for t in trail] == booking.events, f"audit of {booking.id}: {trail}"

    def check_slot(self, model_slot: ModelSlot, rows: list[dict[str, Any]], slot_row: dict[str, Any]) -> None:
        capacity = model_slot.capacity
        occupying = [r for r in rows if r["state"] in OCCUPYING_STATES]
        active = [r for r in occupying if r["state"] in (S.RESERVED, S.CONFIRMED)]
        units = sorted(u for r in occupying for u in [r["unit"], *r["extra_units"]])
        # No over-booking: at most `capacity` units owned by occupying bookings, each by one booking.
        assert len(active) <= len(occupying) <= len(units) <= capacity, (
            f"slot {model_slot.id} over-booked: {units}"
        )
        assert len(set(units)) == len(units) and all(1 <= u <= capacity for u in units), units
        # FIFO: the database's queue, by arrival, is the model's.
        waiting = sorted((r for r in rows if r["state"] == S.PENDING), key=lambda r: r["queue_seq"])
        assert [r["id"] for r in waiting] == model_slot.queue, f"slot {model_slot.id} queue order"
        # Fences grow in the order holds were granted or extended; the slot's is the last one issued.
        fences = [fence or 0 for _, fence in model_slot.grants]
        assert fences == sorted(set(fences)) and 0 not in fences, f"fences {fences} not increasing"
        assert slot_row["fence"] == (fences[-1] if fences else 0)
        # Each committed change bumps the slot's version once (listeners spot missed announcements).
        assert slot_row["version"] == model_slot.version, f"slot {model_slot.id}: {slot_row}"

    @staticmethod
    def check_fifo_in_audit(model_slot: ModelSlot, rows: list[dict[str, Any]]) -> None:
        """From the audit trail alone: a unit went to the longest waiting, never to a newcomer.

        Each waiting booking waited from its `queue` row to its next row (audit row ids order a
        slot's changes: they are written under the slot's lock).
        """
        waits: list[tuple[int, int, float]] = []  # (arrival sequence, joined, left) in audit ids
        promotions: list[tuple[int, int]] = []  # (audit id, arrival sequence)
        holds: list[int] = []  # audit ids of newcomers given a hold at once
        for row in rows:
            trail = row["trail"]
            if trail[0][3] == "queue":
                left = trail[1][0] if len(trail) > 1 else float("inf")
                waits.append((row["queue_seq"], trail[0][0], left))
                if len(trail) > 1 and trail[1][3] == "promote":
                    promotions.append((trail[1][0], row["queue_seq"]))
            else:
                holds.append(trail[0][0])
        # FIRST_FIT lets an entry pass one that cannot use the units (the model's promote checks how).
        for at, seq in promotions if model_slot.fill is FillPolicy.STRICT_FIFO else []:
            ahead = [w for w in waits if w[0] < seq and w[1] < at < w[2]]
            assert not ahead, f"slot {model_slot.id}: promoted #{seq} while {ahead} waited ahead"
        for at in holds:
            waiting = [w for w in waits if w[1] < at < w[2]]
            assert not waiting, f"slot {model_slot.id}: a newcomer got a hold while {waiting} waited"

    def check_announcements(
        self, slot: int, announcements: list[SlotAnnouncement], slot_row: dict[str, Any]
    ) -> list[Shown]:
        """Applying the slot's announcements (live.py's way) gives the model's state.

        Versions come one by one, none missing; each booking's state, queue position and hold,
        and the slot's counts, follow from the announcements alone. Returns what a subscriber was
        shown: as of the last check, then at each version announced since.
        """
        model_slot = self.model.slots[slot]
        seen, slot_view, bookings = self.announced[slot]
        shown = [Shown(seen, slot_view, dict(bookings), frozenset())]
        versions = [a.version for a in announcements]
        assert versions == list(range(seen + 1, slot_row["version"] + 1)), (
            f"slot {model_slot.id}: after version {seen}, announced {versions}; now {slot_row['version']}"
        )
        for announcement in announcements:
            for change in announcement.changes:
                if change.from_state is None:  # a new booking: its own change sets it up
                    assert change.booking_id not in bookings, f"{change.booking_id} announced twice as new"
                    bookings[change.booking_id] = BookingView(
                        change.booking_id, model_slot.id, "", S.EXPIRED, None, None, EPOCH
                    )
            for booking_id, view in bookings.items():
                bookings[booking_id] = apply_to_booking(view, announcement)
            slot_view = apply_to_slot(slot_view, announcement)
            moved = frozenset(change.booking_id for change in announcement.changes)
            shown.append(Shown(announcement.version, slot_view, dict(bookings), moved))
        self.announced[slot] = (slot_row["version"], slot_view, bookings)

        mine = self.model.of_slot(slot)
        assert set(bookings) == {b.id for b in mine}, f"slot {model_slot.id}: announced bookings differ"
        for booking in mine:
            view = bookings[booking.id]
            assert (view.state, view.queue_position) == (booking.state, self.model.position(booking)), (
                f"announcements make {booking.id} {view.state} at {view.queue_position}, the model"
                f" {booking.state} at {self.model.position(booking)}"
            )
            shows_expiry = booking.had_hold and booking.state in (S.RESERVED, S.EXPIRED)
            assert (view.expires_at is not None) == shows_expiry, f"announced {booking.id}: {view}"
        counts = (
            sum(b.units for b in mine if b.state is S.RESERVED),
            sum(b.units for b in mine if b.state in (S.CONFIRMED, S.COMPLETED)),
            len(model_slot.queue),
        )
        assert (slot_view.held, slot_view.confirmed, slot_view.queue_length) == counts, (
            f"announcements count slot {model_slot.id} as {slot_view}, the model {counts}"
        )
        terms = (model_slot.capacity, model_slot.closed)
        assert (slot_view.capacity, slot_view.closed) == terms, f"announced {slot_view}, the model {terms}"
        return shown

    async def check_resumption(self, slot_id: str, seen: int, shown: list[Shown]) -> None:
        """Resuming after the last checked version replays, from the audit trail, what the
        announcements showed at each version since (service/live.py's replay, as a subscription
        started `after` that version's cursor gets it)."""
        if len(shown) == 1:
            return  # nothing changed since the last check
        replayed = await slot_since(self.engine, UUID(slot_id), seen)
        assert [version for _, version in replayed] == [s.version for s in shown[1:]]
        for (view, version), expected in zip(replayed, shown[1:], strict=True):
            counts = (expected.slot.held, expected.slot.confirmed, expected.slot.queue_length)
            terms = (expected.slot.capacity, expected.slot.closed)
            assert (view.held, view.confirmed, view.queue_length) == counts, (
                f"slot {slot_id} replayed at {version} as {view}, announced as {expected.slot}"
            )
            assert (view.capacity, view.closed) == terms, (
                f"slot {slot_id} replayed at {version} as {view}, announced as {expected.slot}"
            )
        # The bookings that waited while others moved (their place in the queue), then those that
        # moved; a few per step keeps the check cheap, and over the steps every kind comes up.
        waited = sorted(b for b, view in shown[0].bookings.items() if view.state is S.PENDING)
        moved = sorted({b for s in shown for b in s.moved} - set(waited))
        for booking_id in (waited + moved)[:REPLAYED_PER_STEP]:
            steps = await booking_since(self.engine, self.admin, booking_id, seen)
            expected_steps = [(s.version, s.bookings[booking_id]) for s in shown if booking_id in s.bookings]
            got = [(v, b.state, b.queue_position, b.expires_at is not None) for b, v in steps]
            want = [(v, b.state, b.queue_position, b.expires_at is not None) for v, b in expected_steps]
            assert got == want, f"booking {booking_id} replayed from {seen}: {got}, announced {want}"

    def check_mirror(
        self,
        model_slot: ModelSlot,
        rows: list[dict[str, Any]],
        meta: dict[str, str],
        holds: list[tuple[str, float]],
        queue: list[str],
    ) -> None:
        """When Redis mirrors the slot, it mirrors it exactly (else it is rebuilt when next used)."""
        if not meta:
            assert not holds and not queue, f"slot {model_slot.id}: a mirror without its meta"
            return
        settled = sum(r["units"] for r in rows if r["state"] in (S.CONFIRMED, S.COMPLETED))
        assert int(meta["capacity"]) == model_slot.capacity and int(meta["confirmed"]) == settled, meta
        assert int(meta["closed"]) == model_slot.closed, meta
        expected_holds = {  # one member per held unit
            member: epoch_ms(r["expires_at"])
            for r in rows
            if r["state"] == S.RESERVED
            for member in hold_members(r["id"], r["units"])
        }
        assert {b: int(score) for b, score in holds} == expected_holds, f"slot {model_slot.id} holds"
        assert queue == model_slot.queue, f"slot {model_slot.id}: Redis queue {queue}"

    async def check_positions(self) -> None:
        """Positions the service reports are 1..n in FIFO order.

        Only for slots a read leaves alone (reads settle lazily), and only when the slot's state
        may have moved since the last check: a new version in PostgreSQL or a flushed mirror (the
        answers are a function of those two; this keeps each step cheap).
        """
        due = {
            slot: (model_slot.version, model_slot.flushes)
            for slot, model_slot in enumerate(self.model.slots)
            if not self.model.needs_settling(slot)
            and self.positions_checked.get(slot) != (model_slot.version, model_slot.flushes)
        }
        waiting = [
            (i, self.model.bookings[booking_id])
            for slot in due
            for i, booking_id in enumerate(self.model.slots[slot].queue, start=1)
        ]
        views = await asyncio.gather(
            *(queries.get_queue_position(self.engine, Caller(b.holder), b.id) for _, b in waiting)
        )
        for (position, booking), view in zip(waiting, views, strict=True):
            assert view is not None and view.state is S.PENDING, f"queue position of {booking.id}: {view}"
            assert (view.position, view.ahead) == (position, position - 1), (
                f"{booking.id} is {position} in line, the service says {view.position}"
            )
        self.positions_checked.update(due)

    @watched
    def teardown(self) -> None:
        # stateful_step_count counts the initialize step too.
        self.stats.full_length += self.stats.steps - self.first_step == STEPS - 1
        self.stats.transitions.update(self.model.tally)
        # Leave nothing lapsed behind for later sweeps (this test's or another's) to trip over.
        for slot, model_slot in enumerate(self.model.slots):
            if self.model.needs_settling(slot):
                self.bridge.run(reservations.settle_slot(self.engine, UUID(model_slot.id)))


@pytest.mark.no_cover  # CPU-bound in process: twice as long under coverage's tracer
async def test_the_engine_behaves_like_its_model(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    bridge = Bridge(asyncio.get_running_loop(), CALL_TIMEOUT)
    listener = Listener(engine.redis.pubsub())
    stats = Stats()
    machine_settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
    )

    class Machine(ReservationMachine):  # Hypothesis makes one per example
        def __init__(self) -> None:
            super().__init__(engine, bridge, listener, stats)

    started = time.perf_counter()
    outcome: BaseException | None = None
    try:
        await asyncio.to_thread(run_state_machine_as_test, Machine, settings=machine_settings)
    except Exception as error:
        outcome = error
    finally:
        await listener.pubsub.aclose()  # type: ignore[no-untyped-call]
    # The first failure itself, even if replaying its example went another way (Flaky).
    stats.first_failure.reraise(outcome)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\nmodel test: {stats.examples} examples ({stats.full_length} ran all {STEPS} steps:"
            f" 1 initialize + {STEPS - 1} rules), {stats.steps} rule steps in {elapsed:.1f} s"
            f" ({1000 * elapsed / max(stats.steps, 1):.1f} ms per step, invariants included)\n"
            + stats.summary()
            + f"\nannouncements received out of version order: {listener.reordered}"
        )
