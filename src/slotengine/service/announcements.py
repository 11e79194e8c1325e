"""A slot's announcement: what one committed transaction changed, written and read here only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slotengine.domain.fill_policy import DEFAULT_FILL_POLICY, DEFAULT_MAX_PASS_OVERS, FillPolicy
from slotengine.domain.states import BookingState, Event


@dataclass(frozen=True, slots=True)
class Change:
    """One booking's transition, announced on the slot's channel after commit."""

    booking_id: str
    from_state: BookingState | None
    to_state: BookingState
    event: Event
    # Place in the queue at the moment the booking joined or left it (changes apply in order).
    position: int | None = None
    expires_at: datetime | None = None  # of a hold this change granted
    units: int = 1  # units of the slot the booking takes (or waits for)


@dataclass(frozen=True, slots=True)
class SlotTerms:
    """A slot's terms as an admin left them (closeSlot, reopenSlot, updateSlot)."""

    capacity: int
    hold_seconds: int
    closed: bool
    max_extensions: int
    max_hold_seconds: int | None  # the slot's own cap; None: the policy's default
    fill_policy: FillPolicy = DEFAULT_FILL_POLICY
    max_pass_overs: int = DEFAULT_MAX_PASS_OVERS

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "holdSeconds": self.hold_seconds,
            "closed": self.closed,
            "maxExtensions": self.max_extensions,
            "maxHoldSeconds": self.max_hold_seconds,
            "fillPolicy": self.fill_policy.value,
            "maxPassOvers": self.max_pass_overs,
        }

    @classmethod
    def of_dict(cls, data: dict[str, Any]) -> SlotTerms:
        """Read what to_dict wrote; KeyError when a term is missing."""
        return cls(
            capacity=int(data["capacity"]),
            hold_seconds=int(data["holdSeconds"]),
            closed=bool(data["closed"]),
            max_extensions=int(data["maxExtensions"]),
            max_hold_seconds=data["maxHoldSeconds"],
            # Terms kept before fill policies existed (0013) had the defaults.
            fill_policy=FillPolicy(data.get("fillPolicy", DEFAULT_FILL_POLICY)),
            max_pass_overs=int(data.get("maxPassOvers", DEFAULT_MAX_PASS_OVERS)),
        )


@dataclass(frozen=True, slots=True)
class SlotAnnouncement:
    """Everything one committed slot transaction changed, with the slot's new version."""

    slot_id: str
    version: int
    changes: tuple[Change, ...]
    terms: SlotTerms | None = None  # present when the transaction changed the slot itself

    def to_json(self) -> str:
        """The announcement as published on the slot's channel."""
        data: dict[str, Any] = {
            "slotId": self.slot_id,
            "version": self.version,
            "changes": [
                {
                    "bookingId": c.booking_id,
                    "from": c.from_state,
                    "to": c.to_state,
                    "event": c.event.value,
                    "position": c.position,
                    "expiresAt": c.expires_at.isoformat() if c.expires_at else None,
                    # Only for a party: a one-unit change reads as it always did.
                    **({"units": c.units} if c.units != 1 else {}),
                }
                for c in self.changes
            ],
        }
        if self.terms is not None:
            data["terms"] = self.terms.to_dict()
        return json.dumps(data)

    @classmethod
    def parse(cls, raw: str) -> SlotAnnouncement:
        """Read what to_json wrote; ValueError or KeyError when it is not an announcement."""
        data: dict[str, Any] = json.loads(raw)
        terms = data.get("terms")
        return cls(
            slot_id=data["slotId"],
            version=int(data["version"]),
            changes=tuple(
                Change(
                    booking_id=c["bookingId"],
                    from_state=BookingState(c["from"]) if c["from"] else None,
                    to_state=BookingState(c["to"]),
                    event=Event(c["event"]),
                    position=c.get("position"),
                    expires_at=datetime.fromisoformat(c["expiresAt"]) if c.get("expiresAt") else None,
                    units=int(c.get("units", 1)),
                )
                for c in data["changes"]
            ),
            terms=SlotTerms.of_dict(terms) if terms else None,
        )
