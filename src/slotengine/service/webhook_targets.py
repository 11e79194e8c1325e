"""Where a webhook may go: resolve its host now and hold every address to the rules.

Checked when an endpoint is registered and again before every attempt (a name may have been
pointed at an internal address since); the attempt then connects to the address checked, so a
second lookup cannot swap it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from slotengine.domain.webhook_policy import AddressRules, IPAddress, Target, target_refusal

RESOLVE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Checked:
    """A target whose addresses the rules allow, or why it is refused."""

    target: Target
    addresses: tuple[IPAddress, ...]
    refusal: str | None


async def resolve(target: Target) -> list[IPAddress]:
    """The target's addresses (its literal, or what the resolver answers now); [] when none."""
    if target.literal is not None:
        return [target.literal]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


async def check(target: Target, rules: AddressRules) -> Checked:
    addresses = await resolve(target)
    return Checked(target, tuple(addresses), target_refusal(target, addresses, rules))
