"""Safe defaults: serve, worker and scheduler refuse the public development secret and short
secrets, naming the variable to set; only `dev` (which says so) may run on the development one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine.config import DEV_JWT_SECRET, MIN_SECRET_BYTES, Settings, unsafe_secret_reason

# Never contacted: the refusal comes before any connection.
URLS = {
    "SLOTENGINE_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
    "SLOTENGINE_REDIS_URL": "redis://127.0.0.1:1/0",
}


def _run(command: str, secret: str | None, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTENGINE_")}
    env.update(URLS, **extra)
    if secret is not None:
        env["SLOTENGINE_JWT_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "slotengine.cli", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", ["serve", "worker", "scheduler"])
@pytest.mark.parametrize("secret", [None, DEV_JWT_SECRET, "short-secret", "é" * 15 + "x"])
def test_engine_processes_refuse_the_development_or_a_short_secret(command: str, secret: str | None) -> None:
    finished = _run(command, secret)
    assert finished.returncode != 0
    assert "refusing to start" in finished.stderr
    assert "SLOTENGINE_JWT_SECRET" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_only_an_explicit_dev_flag_lets_the_development_secret_through() -> None:
    allowed = Settings(jwt_secret=DEV_JWT_SECRET, allow_dev_secret=True)
    assert unsafe_secret_reason(allowed) is None
    # The flag never excuses a short secret.
    assert unsafe_secret_reason(Settings(jwt_secret="x" * 31, allow_dev_secret=True)) is not None


@given(st.text(max_size=80))
def test_a_secret_is_accepted_exactly_when_it_has_32_bytes_and_is_not_the_development_one(
    secret: str,
) -> None:
    reason = unsafe_secret_reason(Settings(jwt_secret=secret))
    acceptable = len(secret.encode()) >= MIN_SECRET_BYTES and secret != DEV_JWT_SECRET
    assert (reason is None) == acceptable
    if reason is not None:
        assert "SLOTENGINE_JWT_SECRET" in reason


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLOTENGINE_ALLOWED_ORIGINS", '["https://board.example.com/path"]'),
        ("SLOTENGINE_ALLOWED_ORIGINS", '["board.example.com"]'),
        ("SLOTENGINE_ALLOWED_ORIGINS", "not json"),
        ("SLOTENGINE_WS_MAX_SOCKETS_PER_HOLDER", "0"),
        ("SLOTENGINE_MAX_HEADER_BYTES", "lots"),
    ],
)
def test_a_malformed_setting_is_named_without_a_traceback(variable: str, value: str) -> None:
    finished = _run("serve", "x" * 32, **{variable: value})
    assert finished.returncode != 0
    assert variable in finished.stderr
    assert "Traceback" not in finished.stderr
