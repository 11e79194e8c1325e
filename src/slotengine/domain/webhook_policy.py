"""Webhook rules: event types, which URLs and addresses may receive, retries, the payload. No I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from slotengine.domain.errors import ValidationError
from slotengine.domain.states import Event

EVENT_TYPE_PREFIX = "booking."
MAX_URL_LENGTH = 2000
MAX_RESPONSE_NOTE = 300

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def event_type(event: str) -> str:
    """The payload's `type` for an audit row's event: `booking.confirm`, `booking.expire`, …"""
    return EVENT_TYPE_PREFIX + event


def event_names(types: Iterable[str] | None) -> list[str] | None:
    """The events an endpoint asks for (`booking.<event>`), as audit event names; None: all."""
    if types is None:
        return None
    known = {event_type(e.value): e.value for e in Event}
    names: list[str] = []
    for given in types:
        if given not in known:
            raise ValidationError("events", f"unknown event type {given[:100]!r}; known: {', '.join(known)}")
        if known[given] not in names:
            names.append(known[given])
    return names or None


@dataclass(frozen=True, slots=True)
class AddressRules:
    """Which addresses a webhook may reach besides public ones (tests allow loopback)."""

    allow_loopback: bool = False
    allow_private: bool = False  # RFC 1918, unique-local, link-local, CGNAT and other non-global nets


def address_refusal(address: IPAddress, rules: AddressRules) -> str | None:
    """Why a webhook may not be sent to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        return f"{address} is not a unicast address"
    if address.is_loopback:  # before reserved: ::1 lies in IPv6's reserved ::/8
        return None if rules.allow_loopback else f"{address} is a loopback address"
    if address.is_link_local:
        return None if rules.allow_private else f"{address} is a link-local address"
    if address.is_reserved:
        return f"{address} is a reserved address"
    if not address.is_global:
        return None if rules.allow_private else f"{address} is a private address"
    return None


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    """How this engine delivers webhooks (from the settings)."""

    addresses: AddressRules = AddressRules()
    retry_schedule: tuple[float, ...] = ()  # empty: default_retry_schedule()
    timeout_seconds: float = 10.0

    @property
    def schedule(self) -> Sequence[float]:
        return self.retry_schedule or default_retry_schedule()


@dataclass(frozen=True, slots=True)
class Target:
    """Where a webhook URL points: scheme, host (a name or an address literal), port."""

    scheme: str
    host: str
    port: int

    @property
    def literal(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_url(url: str) -> Target:
    """The target of a webhook URL, or ValidationError('url') saying what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError("url", f"longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValidationError("url", "contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError("url", f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError("url", "must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("url", "must not carry a user name or password")
    if parts.fragment:
        raise ValidationError("url", "must not carry a #fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValidationError("url", "has no host")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def target_refusal(target: Target, addresses: Sequence[IPAddress], rules: AddressRules) -> str | None:
    """Why `target`, resolving to `addresses`, may not receive webhooks; None when every address may."""
    if not addresses:
        return f"{target.host} resolves to no address"
    for address in addresses:
        refusal = address_refusal(address, rules)
        if refusal is not None:
            return refusal if target.literal is not None else f"{target.host} resolves to {refusal}"
    return None


def default_retry_schedule() -> list[float]:
    """Seconds to wait after each failed attempt: 5 s, times 4 each time, capped at 12 h; 9 retries
    over about 31.6 hours before a delivery is given up."""
    return [float(min(5 * 4**k, 12 * 3600)) for k in range(9)]


def retry_delay(schedule: Sequence[float], failed_attempts: int) -> float | None:
    """Seconds until the next attempt after `failed_attempts` failures, or None: give up."""
    if failed_attempts < 1:
        raise ValueError("a retry follows a failed attempt")
    if failed_attempts > len(schedule):
        return None
    return schedule[failed_attempts - 1]


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of one delivery, from its transition's audit row, booking and slot version."""
    at: datetime = row["at"]
    return {
        "type": event_type(row["event"]),
        "timestamp": at.isoformat(),
        "data": {
            "bookingId": str(row["booking_id"]),
            "slotId": str(row["slot_id"]),
            "holder": row["holder"],
            "fromState": row["from_state"],
            "toState": row["to_state"],
            "event": row["event"],
            "actor": row["actor"],
            "reason": row["reason"],
            "at": at.isoformat(),
            "slotVersion": row["slot_version"],
        },
    }


def response_note(status: int | None, error: str | None) -> str:
    """What the delivery log says about one failed attempt (bounded)."""
    note = error or (f"HTTP {status}" if status is not None else "failed")
    return note[:MAX_RESPONSE_NOTE]
