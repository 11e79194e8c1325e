"""The cache of verified tokens answers as PyJWT would: same callers, same expiry, no forgeries."""

from __future__ import annotations

import time

import jwt
import pytest

from slotengine.api.auth import ALGORITHM, InvalidToken, VerifiedTokens, issue_token

SECRET = "unit-secret-that-is-long-enough-for-hs256"


def test_a_token_read_again_is_answered_from_the_cache() -> None:
    tokens = VerifiedTokens()
    token = issue_token(SECRET, "alice", admin=True)
    first = tokens.read(SECRET, token)
    assert first.caller.holder == "alice" and first.caller.admin
    assert tokens.read(SECRET, token) is first  # not verified again: the same answer object
    assert len(tokens) == 1


def test_a_cached_token_lapses_at_its_exp_as_pyjwt_decides() -> None:
    tokens = VerifiedTokens()
    exp = int(time.time()) + 100
    token = jwt.encode({"sub": "bob", "exp": exp}, SECRET, algorithm=ALGORITHM)
    tokens.read(SECRET, token)
    assert tokens.read(SECRET, token, now=exp - 0.001).caller.holder == "bob"
    with pytest.raises(InvalidToken, match="expired"):
        tokens.read(SECRET, token, now=exp)  # PyJWT: expired once exp <= now
    assert len(tokens) == 0


def test_forged_and_expired_tokens_are_refused_and_never_kept() -> None:
    tokens = VerifiedTokens()
    forged = issue_token("another-secret-that-is-long-enough-too", "mallory")
    expired = jwt.encode({"sub": "carol", "exp": int(time.time()) - 1}, SECRET, algorithm=ALGORITHM)
    for token in (forged, expired, "not.a.token"):
        for _ in range(2):
            with pytest.raises(InvalidToken):
                tokens.read(SECRET, token)
    assert len(tokens) == 0


def test_a_token_kept_under_one_secret_is_not_valid_under_another() -> None:
    tokens = VerifiedTokens()
    token = issue_token(SECRET, "dave")
    tokens.read(SECRET, token)
    with pytest.raises(InvalidToken):
        tokens.read("rotated-secret-that-is-long-enough-for-hs256", token)


def test_the_cache_keeps_at_most_its_bound_dropping_the_least_recently_used() -> None:
    tokens = VerifiedTokens(max_entries=3)
    issued = [issue_token(SECRET, f"holder-{n}") for n in range(5)]
    answers = [tokens.read(SECRET, token) for token in issued]
    assert len(tokens) == 3
    assert tokens.read(SECRET, issued[4]) is answers[4]
    assert tokens.read(SECRET, issued[0]) is not answers[0]  # dropped, verified again
    assert len(tokens) == 3
