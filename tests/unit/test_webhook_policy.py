"""Webhook rules: the backoff schedule, event types, URLs and addresses a webhook may reach."""

from __future__ import annotations

import ipaddress
import itertools
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError as PydanticValidationError

from slotengine.config import Settings
from slotengine.domain.errors import ValidationError
from slotengine.domain.states import Event
from slotengine.domain.webhook_policy import (
    AddressRules,
    address_refusal,
    default_retry_schedule,
    event_names,
    parse_url,
    payload,
    retry_delay,
    target_refusal,
)


def test_default_schedule_backs_off_exponentially_over_more_than_a_day() -> None:
    schedule = default_retry_schedule()
    assert schedule[0] == 5
    growing = [later / earlier for earlier, later in itertools.pairwise(schedule)]
    assert all(ratio == 4 for ratio in growing[:6])  # until the 12 h cap
    assert max(schedule) == 12 * 3600
    assert sum(schedule) > 24 * 3600


def test_retry_delay_follows_the_schedule_then_gives_up() -> None:
    schedule = [1.0, 2.0, 4.0]
    assert [retry_delay(schedule, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(schedule, 4) is None
    with pytest.raises(ValueError):
        retry_delay(schedule, 0)


def test_event_types_are_booking_dot_event_and_unknown_ones_refused() -> None:
    assert event_names(None) is None
    assert event_names([]) is None
    assert event_names(["booking.confirm", "booking.hold", "booking.confirm"]) == ["confirm", "hold"]
    assert event_names([f"booking.{e.value}" for e in Event]) == [e.value for e in Event]
    with pytest.raises(ValidationError, match="events"):
        event_names(["confirm"])


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("0.0.0.0", "not a unicast"),
        ("224.0.0.1", "not a unicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_internal_addresses_are_refused_by_default(address: str, why: str) -> None:
    refusal = address_refusal(ipaddress.ip_address(address), AddressRules())
    assert refusal is not None and why in refusal


def test_settings_open_loopback_or_private_networks_only() -> None:
    loopback = AddressRules(allow_loopback=True)
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), loopback) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), loopback) is not None
    private = AddressRules(allow_private=True)
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), private) is None
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), private) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), private) is not None
    assert address_refusal(ipaddress.ip_address("0.0.0.0"), AddressRules(True, True)) is not None


def test_public_addresses_may_receive() -> None:
    assert address_refusal(ipaddress.ip_address("93.184.216.34"), AddressRules()) is None
    assert address_refusal(ipaddress.ip_address("2606:2800:220:1::1"), AddressRules()) is None


def test_a_name_is_refused_when_any_of_its_addresses_is() -> None:
    target = parse_url("https://hooks.example.com/in")
    public, internal = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.5")
    assert target_refusal(target, [public], AddressRules()) is None
    refusal = target_refusal(target, [public, internal], AddressRules())
    assert refusal is not None and "hooks.example.com resolves to" in refusal
    assert target_refusal(target, [], AddressRules()) == "hooks.example.com resolves to no address"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "http"),
        ("file:///etc/passwd", "http"),
        ("http://user:pw@example.com/", "user name"),
        ("http://example.com/#x", "fragment"),
        ("http:///path", "no host"),
        ("http://example.com/a b", "whitespace"),
        ("http://example.com:99999/", "not a URL"),
        ("http://example.com/" + "a" * 2000, "longer"),
    ],
)
def test_malformed_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        parse_url(url)


def test_url_target_has_default_ports_and_literals() -> None:
    assert parse_url("https://Example.com/x").port == 443
    assert parse_url("http://example.com/x").port == 80
    target = parse_url("http://[::1]:8080/x")
    assert (target.host, target.port, str(target.literal)) == ("::1", 8080, "::1")


def test_payload_names_the_transition() -> None:
    at = datetime(2030, 1, 7, 10, 30, tzinfo=UTC)
    body = payload(
        {
            "event": "confirm",
            "at": at,
            "booking_id": "b",
            "slot_id": "s",
            "holder": "alice",
            "from_state": "RESERVED",
            "to_state": "CONFIRMED",
            "actor": "alice",
            "reason": None,
            "slot_version": 7,
        }
    )
    assert body["type"] == "booking.confirm"
    assert body["timestamp"] == at.isoformat()
    assert body["data"] == {
        "bookingId": "b",
        "slotId": "s",
        "holder": "alice",
        "fromState": "RESERVED",
        "toState": "CONFIRMED",
        "event": "confirm",
        "actor": "alice",
        "reason": None,
        "at": at.isoformat(),
        "slotVersion": 7,
    }


def test_endpoints_in_the_settings_are_checked_when_read() -> None:
    secret = "whsec_" + "A" * 43 + "="
    good = Settings(webhook_endpoints=[{"url": "https://hooks.example.com/in", "secret": secret}])
    assert good.webhook_endpoints[0].events is None
    for bad in (
        {"url": "ftp://hooks.example.com/", "secret": secret},
        {"url": "https://hooks.example.com/", "secret": secret, "events": ["booking.nope"]},
        {"url": "https://hooks.example.com/", "secret": "plain"},
    ):
        with pytest.raises(PydanticValidationError):
            Settings(webhook_endpoints=[bad])
    with pytest.raises(PydanticValidationError):
        Settings(webhook_retry_schedule=[1.0, 0.0])
