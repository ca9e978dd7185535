"""Tokens and what they allow: JWTs (PyJWT) naming the channels a client may use.

Claims: ``sub`` (who), ``exp``, ``publish`` and ``subscribe`` (lists of channel
patterns), ``admin`` (everything). Verification accepts exactly one algorithm —
the one the hub was configured with — so ``alg: none`` and algorithm-confusion
tokens are refused before any claim is read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from taskcast.channels import InvalidChannel, matches, validate_pattern

SYMMETRIC = ("HS256",)
ASYMMETRIC = ("RS256", "ES256")
LEEWAY_SECONDS = 5


class AuthError(Exception):
    """A token that does not let its bearer in (never echoes the token)."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    admin: bool = False
    expires_at: int | None = None

    def can_publish(self, channel: str) -> bool:
        return self.admin or any(matches(pattern, channel) for pattern in self.publish)

    def can_subscribe(self, pattern: str) -> bool:
        """Whether every channel ``pattern`` can match is one this token may read."""
        return self.admin or any(covers(allowed, pattern) for allowed in self.subscribe)

    def can_read(self, channel: str) -> bool:
        return self.admin or any(matches(pattern, channel) for pattern in self.subscribe)


ANONYMOUS_ADMIN = Principal("anonymous", admin=True)  # a hub without auth


def covers(allowed: str, requested: str) -> bool:
    """True when pattern ``allowed`` matches every channel pattern ``requested`` matches."""
    want = requested.split(".")
    for index, token in enumerate(allowed.split(".")):
        if token == ">":
            return len(want) > index
        if index >= len(want):
            return False
        asked = want[index]
        if asked == ">":
            return False  # '>' reaches deeper than anything but '>'
        if token != "*" and (asked == "*" or asked != token):
            return False
    return len(allowed.split(".")) == len(want)


@dataclass
class TokenVerifier:
    """Checks bearer tokens against one key and one algorithm."""

    key: str | bytes
    algorithm: str = "HS256"
    audience: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in SYMMETRIC + ASYMMETRIC:
            raise ValueError(f"unsupported algorithm {self.algorithm}")
        if self.algorithm in SYMMETRIC and len(self.key) < 32:
            raise ValueError("an HS256 secret must be at least 32 bytes")

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {type(exc).__name__}") from None
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    def patterns(name: str) -> tuple[str, ...]:
        value = claims.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise AuthError(f"claim {name!r} must be a list of channel patterns")
        try:
            return tuple(validate_pattern(p) for p in value if isinstance(p, str))
        except InvalidChannel as exc:
            raise AuthError(f"claim {name!r}: {exc}") from None

    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise AuthError("claim 'sub' must be a string")
    exp = claims.get("exp")
    return Principal(
        subject,
        patterns("publish"),
        patterns("subscribe"),
        claims.get("admin") is True,
        exp if isinstance(exp, int) else None,
    )


def create_token(
    key: str | bytes,
    *,
    subject: str,
    publish: list[str],
    subscribe: list[str],
    ttl_seconds: int,
    admin: bool = False,
    algorithm: str = "HS256",
) -> str:
    """Sign a token (``key`` is the HS256 secret, or the RS256/ES256 private key)."""
    for pattern in [*publish, *subscribe]:
        validate_pattern(pattern)
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": now,
        "exp": now + ttl_seconds,
        "publish": publish,
        "subscribe": subscribe,
    }
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from ``Authorization: Bearer …`` or, for browsers, ``?token=``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None
