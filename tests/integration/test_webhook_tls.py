"""An https webhook goes to the address the engine checked, yet speaks TLS to the name: the
certificate is verified for the URL's host (SNI) and the Host header names it too."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from slotengine.domain.webhook_policy import AddressRules, DeliveryRules
from slotengine.domain.webhook_signing import secret_from, verify
from slotengine.service.webhook_delivery import message_id, send

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[int, Path, list[dict[str, Any]]]]:
    """A TLS server on 127.0.0.1 with a certificate for `localhost`; what it received."""
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    received: list[dict[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers["content-length"]))
        received.append({"request": lines[0], "headers": headers, "body": body, "sni": names[-1]})
        writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, cert, received


async def test_an_https_delivery_is_pinned_to_the_checked_address_and_verified_for_the_name(
    tls_receiver: tuple[int, Path, list[dict[str, Any]]],
) -> None:
    port, cert, received = tls_receiver
    secret = secret_from(bytes(range(32)))
    message = uuid.uuid4()
    at = datetime.now(UTC)
    claimed = {
        "url": f"https://localhost:{port}/hooks?x=1",
        "secret": secret,
        "message_id": message,
        "sent_at": int(at.timestamp()),
        "event": "confirm",
        "at": at,
        "booking_id": uuid.uuid4(),
        "slot_id": uuid.uuid4(),
        "holder": "alice",
        "from_state": "RESERVED",
        "to_state": "CONFIRMED",
        "actor": "alice",
        "reason": None,
        "slot_version": 4,
    }
    rules = DeliveryRules(AddressRules(allow_loopback=True), (1.0,), 5.0)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=trusted, follow_redirects=False, trust_env=False) as http:
        attempt = await send(rules, http, claimed)
        assert attempt.delivered, attempt
        assert attempt.status_code == 204
        [got] = received
        assert got["sni"] == "localhost"
        assert got["headers"]["host"] == f"localhost:{port}"
        assert got["request"] == "POST /hooks?x=1 HTTP/1.1"
        headers = got["headers"]
        assert headers["webhook-id"] == message_id(message)
        assert verify(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), got["body"],
                      headers["webhook-signature"], now=int(at.timestamp()))  # fmt: skip

        refused = await send(DeliveryRules(AddressRules(), (1.0,), 5.0), http, claimed)
        assert not refused.delivered and refused.error is not None and "loopback" in refused.error
        assert len(received) == 1  # refused before connecting
