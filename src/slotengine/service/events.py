"""Slot announcements, and the per-process hub that fans them out to subscribers.

Each process holds one Redis subscription per slot somebody here watches, whatever the number
of listeners, and drops it when the last listener leaves. A listener whose queue overflows is
told to re-read (`Resync`) rather than left with a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from slotengine.domain.states import BookingState
from slotengine.service.ordering import VersionOrder

log = logging.getLogger(__name__)

LISTENER_BACKLOG = 256
# How long an early announcement waits for the one before it; after that listeners re-read.
GAP_WAIT_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    booking_id: str
    from_state: BookingState | None
    to_state: BookingState
    event: str
    position: int | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SlotAnnouncement:
    """Everything one committed slot transaction changed, with the slot's new version."""

    slot_id: str
    version: int
    changes: tuple[ChangeEvent, ...]

    @classmethod
    def parse(cls, raw: str) -> SlotAnnouncement:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            slot_id=data["slotId"],
            version=int(data["version"]),
            changes=tuple(
                ChangeEvent(
                    booking_id=c["bookingId"],
                    from_state=BookingState(c["from"]) if c["from"] else None,
                    to_state=BookingState(c["to"]),
                    event=c["event"],
                    position=c.get("position"),
                    expires_at=datetime.fromisoformat(c["expiresAt"]) if c.get("expiresAt") else None,
                )
                for c in data["changes"]
            ),
        )


class Resync:
    """Sent to a listener that may have missed announcements: re-read the state."""


Message = SlotAnnouncement | Resync


class EventHub:
    """One process's Redis subscriptions to slot channels, shared by all its listeners."""

    def __init__(self, redis: Redis, channel_of: Any) -> None:
        self._redis = redis
        self._channel_of = channel_of
        self._pubsub: PubSub | None = None
        self._listeners: dict[str, set[asyncio.Queue[Message]]] = {}
        self._channels: dict[str, str] = {}  # channel -> slot id
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._confirmed: dict[str, asyncio.Event] = {}  # channel -> Redis confirmed SUBSCRIBE
        self._memo: dict[tuple[str, str], tuple[int, asyncio.Task[Any]]] = {}
        self._order: dict[str, VersionOrder[SlotAnnouncement]] = {}  # slot id -> release order
        self._gap_timers: dict[str, asyncio.TimerHandle] = {}

    @contextlib.asynccontextmanager
    async def listen(self, slot_id: str) -> AsyncIterator[asyncio.Queue[Message]]:
        """Announcements of one slot, from the moment the subscription is confirmed."""
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=LISTENER_BACKLOG)
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub()
            channel = self._channel_of(slot_id)
            if slot_id not in self._listeners:
                self._confirmed[channel] = asyncio.Event()
                await self._pubsub.subscribe(channel)
                self._channels[channel] = slot_id
                self._listeners[slot_id] = set()
            self._listeners[slot_id].add(queue)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(self._pubsub))
            confirmed = self._confirmed[channel]
        # Whatever is published from now on reaches this listener: a state read after this
        # point misses nothing.
        await confirmed.wait()
        try:
            yield queue
        finally:
            await asyncio.shield(self._leave(slot_id, queue))

    async def _leave(self, slot_id: str, queue: asyncio.Queue[Message]) -> None:
        async with self._lock:
            listeners = self._listeners.get(slot_id)
            if listeners is None:
                return
            listeners.discard(queue)
            if not listeners:
                del self._listeners[slot_id]
                channel = self._channel_of(slot_id)
                self._channels.pop(channel, None)
                self._confirmed.pop(channel, None)
                for key in [k for k in self._memo if k[0] == slot_id]:
                    del self._memo[key]
                self._order.pop(slot_id, None)
                timer = self._gap_timers.pop(slot_id, None)
                if timer is not None:
                    timer.cancel()
                if self._pubsub is not None:
                    await self._pubsub.unsubscribe(channel)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=1.0)
            except Exception:
                log.exception("slot event subscription failed; listeners will re-read")
                self._broadcast_resync()
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            if message.get("type") == "subscribe":
                confirmed = self._confirmed.get(message["channel"])
                if confirmed is not None:
                    confirmed.set()
                continue
            if message.get("type") != "message":
                continue
            slot_id = self._channels.get(message["channel"])
            if slot_id is None:
                continue
            try:
                announcement = SlotAnnouncement.parse(message["data"])
            except (ValueError, KeyError):
                log.warning("ignoring a malformed announcement on %s", message["channel"])
                continue
            self._release(slot_id, self._order_of(slot_id).accept(announcement))

    def _order_of(self, slot_id: str) -> VersionOrder[SlotAnnouncement]:
        order = self._order.get(slot_id)
        if order is None:
            order = self._order[slot_id] = VersionOrder()
        return order

    def _release(self, slot_id: str, announcements: list[SlotAnnouncement]) -> None:
        for announcement in announcements:
            for queue in list(self._listeners.get(slot_id, ())):
                _deliver(queue, announcement)
        order = self._order.get(slot_id)
        timer = self._gap_timers.get(slot_id)
        if order is not None and order.waiting and timer is None:
            self._gap_timers[slot_id] = asyncio.get_running_loop().call_later(
                GAP_WAIT_SECONDS, self._give_up, slot_id
            )
        elif (order is None or not order.waiting) and timer is not None:
            timer.cancel()
            del self._gap_timers[slot_id]

    def _give_up(self, slot_id: str) -> None:
        self._gap_timers.pop(slot_id, None)
        order = self._order.get(slot_id)
        if order is not None:
            self._release(slot_id, order.give_up())

    async def shared(self, slot_id: str, name: str, version: int, load: Any) -> Any:
        """`load()` once per slot, name and version in this process, however many listeners ask."""
        key = (slot_id, name)
        cached = self._memo.get(key)
        failed = cached is not None and cached[1].done() and cached[1].exception() is not None
        if cached is None or cached[0] != version or failed:
            cached = (version, asyncio.ensure_future(load()))
            self._memo[key] = cached
        return await asyncio.shield(cached[1])

    def _broadcast_resync(self) -> None:
        self._order.clear()  # whatever was held back may never be completed now
        for listeners in self._listeners.values():
            for queue in listeners:
                _deliver(queue, Resync())

    async def close(self) -> None:
        """Stop reading and drop every subscription."""
        for timer in self._gap_timers.values():
            timer.cancel()
        self._gap_timers.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        self._listeners.clear()
        self._channels.clear()


def _deliver(queue: asyncio.Queue[Message], message: Message) -> None:
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        # The listener fell behind: drop its backlog, it re-reads the state instead.
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(Resync())
