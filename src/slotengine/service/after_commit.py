"""What follows a committed slot change: log it, set its timers, announce it, and (for a change made
outside a slot transaction) apply it to the Redis mirror, all in one round trip to Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from slotengine.metrics import lateness_fields
from slotengine.redis import scripts
from slotengine.redis.connection import on_cluster
from slotengine.redis.keys import expiry_lateness_key
from slotengine.service.announcements import Change, SlotAnnouncement, SlotTerms
from slotengine.service.engine import Engine
from slotengine.service.mirror import drop_mirror
from slotengine.service.timers import expire_hold_schedule, offer_group_schedule, settle_slot_schedule

log = logging.getLogger(__name__)


@dataclass
class Committed:
    """One committed change of a slot's bookings, as the work after its commit needs it."""

    slot_id: UUID
    starts_at: datetime
    version: int  # the slot's version with this change
    changes: list[Change] = field(default_factory=list)
    # Holds granted, each to be expired when due: (booking, fence, expiry).
    holds_granted: list[tuple[UUID, int, datetime]] = field(default_factory=list)
    queue_joined: bool = False
    # Seconds from expiresAt to the change's clock, for each hold it found lapsed.
    expiry_lateness: list[float] = field(default_factory=list)
    # Waiting booking groups heading this slot's queue while a unit is free, each offered (or not)
    # by a transaction of its own (service/groups.py offer_group), due at `now`.
    groups_to_offer: set[UUID] = field(default_factory=set)
    now: datetime | None = None
    # The slot's own terms as an admin changed them (announced with the changes).
    terms: SlotTerms | None = None

    @property
    def slot_key(self) -> str:
        return str(self.slot_id)

    @property
    def announces(self) -> bool:
        """Whether this change is one listeners are told about."""
        return bool(self.changes) or self.terms is not None

    def announcement(self) -> SlotAnnouncement:
        return SlotAnnouncement(self.slot_key, self.version, tuple(self.changes), self.terms)


@dataclass(frozen=True, slots=True)
class MirrorCall:
    """An apply_changes.lua call (keys, args) to send with the rest."""

    keys: list[str]
    args: list[Any]


async def after_commit(
    engine: Engine, done: Committed, mirror: MirrorCall | None = None
) -> scripts.ChangesApplied | None:
    """Log and announce the changes, set the timers and run `mirror`, in one round trip to Redis.

    Returns the mirror's answer; None when there was no mirror call or Redis failed (the mirror is
    dropped then, to be rebuilt on next use). Committed is committed: a failure here is logged,
    never raised (lazy expiry and the sweep still end the holds; listeners re-read on reconnect).
    """
    for change in done.changes:
        log.info(
            "booking %s %s -> %s (%s)",
            change.booking_id,
            change.from_state or "new",
            change.to_state,
            change.event,
            extra={"slot_id": done.slot_key, "booking_id": change.booking_id, "event": change.event},
        )
    schedules = [expire_hold_schedule(*hold) for hold in done.holds_granted]
    if done.queue_joined:
        schedules.append(settle_slot_schedule(done.slot_id, done.starts_at))
    if done.groups_to_offer:
        assert done.now is not None, "groups are offered as of the change's clock"
        schedules += [offer_group_schedule(group_id, done.now) for group_id in sorted(done.groups_to_offer)]
    if not schedules and not done.announces and mirror is None:
        return None
    try:
        return await _send(engine, done, schedules, mirror)
    except Exception:
        log.exception("could not set timers or announce changes of slot %s", done.slot_key)
        if mirror is not None:
            await asyncio.shield(drop_mirror(engine, done.slot_key))
        return None


async def _send(
    engine: Engine, done: Committed, schedules: list[Any], mirror: MirrorCall | None
) -> scripts.ChangesApplied | None:
    announcement = done.announcement().to_json() if done.announces else None
    # One Redis: one round trip. A cluster pipeline splits the timers and metrics per node but
    # refuses PUBLISH and EVALSHA, so there those go alongside it.
    separate = on_cluster(engine.redis)
    async with engine.redis.pipeline(transaction=False) as pipe:
        if mirror is not None and not separate:
            pipe.evalsha(scripts.apply_changes_script.sha, len(mirror.keys), *mirror.keys, *mirror.args)
        engine.timers.add_to(pipe, schedules)
        if announcement is not None and not separate:
            pipe.publish(engine.channel(done.slot_key), announcement)
        lateness_key = expiry_lateness_key(engine.prefix)
        for name, increment in lateness_fields(done.expiry_lateness).items():
            pipe.hincrbyfloat(lateness_key, name, increment)
        batcher = engine.pipelines
        sent: list[Awaitable[Any]] = [
            batcher.execute(pipe)
            if batcher is not None and isinstance(pipe, Pipeline)
            else pipe.execute(raise_on_error=False)
        ]
        if mirror is not None and separate:
            sent.append(scripts.apply_changes(engine.redis, mirror.keys, mirror.args))
        if announcement is not None and separate:
            sent.append(engine.slot_channels.publish(engine.channel(done.slot_key), announcement))
        answers = await asyncio.gather(*sent)
    results = list(answers[0])
    for result in results[1:] if mirror is not None and not separate else results:
        if isinstance(result, Exception):
            raise result
    if mirror is None:
        return None
    if separate:
        answer: scripts.ChangesApplied = answers[1]
        return answer
    if isinstance(results[0], NoScriptError):  # Redis lost its scripts: EVAL sends the source
        return await scripts.apply_changes(engine.redis, mirror.keys, mirror.args)
    if isinstance(results[0], Exception):
        raise results[0]
    return scripts.parse_changes_applied(results[0])
