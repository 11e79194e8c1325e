"""Bearer JWTs (HS256): `sub` is the holder, `"admin": true` marks an admin."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from slotengine.service.views import Caller

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or names nobody."""


def issue_token(secret: str, holder: str, *, admin: bool = False, ttl_seconds: int = 3600) -> str:
    """A signed token for `holder`, valid for `ttl_seconds`."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": holder, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who a token names, and until when (Unix seconds) it may be used."""

    caller: Caller
    expires_at: float


def read_token(secret: str, token: str) -> Caller:
    """The caller a token names, or InvalidToken saying why not."""
    return read_credentials(secret, token).caller


class VerifiedTokens:
    """Tokens whose signature and claims were checked, so a client's next request skips the HMAC
    and the claim parsing: a bounded least-recently-used map from (secret, token) to what it said.

    Only successes are kept, and a kept token still lapses at its `exp`, exactly as PyJWT
    decides it (valid while int(exp) > now). `nbf`, once passed, stays passed. Nothing else in
    a token depends on time, and the same text under the same secret always verifies the same.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._known: OrderedDict[tuple[str, str], tuple[Credentials, int]] = OrderedDict()

    def read(self, secret: str, token: str, now: float | None = None) -> Credentials:
        """The credentials of `token`, or InvalidToken saying why not."""
        key = (secret, token)
        known = self._known.get(key)
        moment = time.time() if now is None else now
        if known is not None:
            credentials, valid_until = known
            if valid_until <= moment:
                del self._known[key]
                raise InvalidToken("the token has expired")
            self._known.move_to_end(key)
            return credentials
        credentials = _verified(secret, token)
        self._known[key] = (credentials, int(credentials.expires_at))
        if len(self._known) > self.max_entries:
            self._known.popitem(last=False)
        return credentials

    def __len__(self) -> int:
        return len(self._known)


# The process's one cache: every request of a client carries the same token.
VERIFIED = VerifiedTokens()


def read_credentials(secret: str, token: str) -> Credentials:
    """The caller a token names and its expiry, or InvalidToken saying why not."""
    return VERIFIED.read(secret, token)


def _verified(secret: str, token: str) -> Credentials:
    """Check the token's signature and claims (PyJWT), every time."""
    try:
        # `iat` is the issuer's clock: checking it against ours would refuse every fresh token on
        # a server whose clock is behind. Validity is `exp` (a token lives hours, skew minutes).
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"the token is not valid: {exc}") from None
    holder = claims.get("sub")
    if not isinstance(holder, str) or not holder or len(holder) > 200:
        raise InvalidToken("the token's subject must be a non-empty string")
    expires_at = claims["exp"]
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise InvalidToken("the token's exp must be a number")
    return Credentials(Caller(holder=holder, admin=claims.get("admin") is True), float(expires_at))


def caller_from_header(secret: str, authorization: str | None) -> Caller | None:
    """The caller of an `Authorization: Bearer …` header; None when there is no header."""
    credentials = credentials_from_header(secret, authorization)
    return None if credentials is None else credentials.caller


def credentials_from_header(secret: str, authorization: str | None) -> Credentials | None:
    """The credentials of an `Authorization: Bearer …` header; None when there is no header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("use 'Authorization: Bearer <token>'")
    return read_credentials(secret, token.strip())
