"""Bearer JWTs (HS256): `sub` is the holder, `"admin": true` marks an admin."""

from __future__ import annotations

import time
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


def read_credentials(secret: str, token: str) -> Credentials:
    """The caller a token names and its expiry, or InvalidToken saying why not."""
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
