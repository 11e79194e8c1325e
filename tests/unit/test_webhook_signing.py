"""Standard Webhooks signatures: the spec's example, verification, tampering, the secret's shape."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from slotengine.domain.webhook_signing import secret_from, secret_key, sign, signed_headers, verify

# The example of Standard Webhooks' reference libraries (and Svix's documentation).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MESSAGE = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'


def test_signature_matches_the_reference_example() -> None:
    assert sign(SECRET, MESSAGE, TIMESTAMP, BODY) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_carry_id_timestamp_and_signature() -> None:
    headers = signed_headers(SECRET, MESSAGE, TIMESTAMP, BODY)
    assert headers == {
        "webhook-id": MESSAGE,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": sign(SECRET, MESSAGE, TIMESTAMP, BODY),
    }


def test_verify_accepts_the_signature_among_several() -> None:
    header = "v1,bm90IGl0 " + sign(SECRET, MESSAGE, TIMESTAMP, BODY)
    assert verify(SECRET, MESSAGE, TIMESTAMP, BODY, header, now=TIMESTAMP + 10)


@pytest.mark.parametrize(
    ("message", "timestamp", "body"),
    [("msg_other", TIMESTAMP, BODY), (MESSAGE, TIMESTAMP + 1, BODY), (MESSAGE, TIMESTAMP, BODY + b" ")],
)
def test_verify_refuses_anything_changed(message: str, timestamp: int, body: bytes) -> None:
    header = sign(SECRET, MESSAGE, TIMESTAMP, BODY)
    assert not verify(SECRET, message, timestamp, body, header, now=timestamp)


def test_verify_refuses_another_secret_and_an_old_timestamp() -> None:
    header = sign(SECRET, MESSAGE, TIMESTAMP, BODY)
    other = secret_from(bytes(range(32)))
    assert not verify(other, MESSAGE, TIMESTAMP, BODY, header, now=TIMESTAMP)
    assert not verify(SECRET, MESSAGE, TIMESTAMP, BODY, header, now=TIMESTAMP + 301)


def test_secret_is_whsec_and_base64_of_its_key() -> None:
    key = bytes(range(32))
    secret = secret_from(key)
    assert secret.startswith("whsec_")
    assert secret_key(secret) == key
    with pytest.raises(ValueError, match="24 random bytes"):
        secret_from(b"short")
    with pytest.raises(ValueError, match="whsec_"):
        secret_key("abc")


def test_the_readme_s_verification_snippet_accepts_our_signature_and_refuses_a_forgery() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = next(block for block in readme.split("```python\n")[1:] if "def verified" in block)
    namespace: dict[str, Any] = {}
    exec(snippet.split("```", 1)[0], namespace)
    now = int(time.time())
    headers = signed_headers(SECRET, MESSAGE, now, BODY)
    assert namespace["verified"](SECRET, headers, BODY)
    assert not namespace["verified"](SECRET, headers, BODY + b"x")
    assert not namespace["verified"](secret_from(bytes(32)), headers, BODY)
