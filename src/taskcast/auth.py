"""Tokens and what they allow: JWTs (PyJWT) naming the channels a client may use.

Claims: ``sub`` (who), ``exp``, ``publish`` and ``subscribe`` (lists of channel
patterns), ``metrics`` (may read /metrics and the detailed /healthz), ``admin``
(everything), ``control`` (channel patterns it may send task commands to).
Verification accepts exactly one algorithm — the one the hub was
configured with — so ``alg: none`` and algorithm-confusion tokens are refused before
any claim is read — and no token that lives longer than the hub's maximum lifetime.
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
DEFAULT_MAX_TOKEN_TTL = 30 * 86400  # a leaked token stops working within 30 days


class AuthError(Exception):
    """A token that does not let its bearer in (never echoes the token)."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    admin: bool = False
    expires_at: int | None = None
    metrics: bool = False
    control: tuple[str, ...] = ()  # channel patterns it may send task commands to
    # False only for the hub without auth, where everyone is "anonymous".
    authenticated: bool = True

    @property
    def publisher(self) -> str | None:
        """The name the hub records on what this principal publishes (None: anonymous)."""
        return self.subject if self.authenticated else None

    def can_read_metrics(self) -> bool:
        return self.admin or self.metrics

    def can_control(self, channel: str) -> bool:
        """Whether it may publish ``task_command`` to ``channel`` (the ``control`` claim)."""
        return self.admin or any(matches(pattern, channel) for pattern in self.control)

    def can_publish(self, channel: str) -> bool:
        return self.admin or any(matches(pattern, channel) for pattern in self.publish)

    def can_subscribe(self, pattern: str) -> bool:
        """Whether every channel ``pattern`` can match is one this token may read."""
        return self.admin or any(covers(allowed, pattern) for allowed in self.subscribe)

    def can_read(self, channel: str) -> bool:
        return self.admin or any(matches(pattern, channel) for pattern in self.subscribe)


ANONYMOUS_ADMIN = Principal("anonymous", admin=True, authenticated=False)  # a hub without auth


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
    max_ttl_seconds: int | None = DEFAULT_MAX_TOKEN_TTL  # None: no maximum

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
        check_lifetime(claims, self.max_ttl_seconds, int(time.time()))
        return principal_from_claims(claims)


def check_lifetime(claims: dict[str, Any], max_ttl: int | None, now: int) -> None:
    """Refuse a token that lives longer than ``max_ttl`` (from ``iat``, or from now)."""
    if max_ttl is None:
        return
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float):
        raise AuthError("claim 'exp' must be a number")
    issued = iat if isinstance(iat, int | float) and iat <= now + LEEWAY_SECONDS else now
    if exp - issued > max_ttl + LEEWAY_SECONDS:
        raise AuthError(f"token lifetime exceeds the hub's maximum of {max_ttl} s")


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
        int(exp) if isinstance(exp, int | float) else None,
        metrics=claims.get("metrics") is True,
        control=patterns("control"),
    )


def create_token(
    key: str | bytes,
    *,
    subject: str,
    publish: list[str],
    subscribe: list[str],
    ttl_seconds: int,
    admin: bool = False,
    metrics: bool = False,
    control: list[str] | None = None,
    algorithm: str = "HS256",
) -> str:
    """Sign a token (``key`` is the HS256 secret, or the RS256/ES256 private key)."""
    for pattern in [*publish, *subscribe, *(control or [])]:
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
    if metrics:
        claims["metrics"] = True
    if control:
        claims["control"] = control
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from ``Authorization: Bearer …`` or, for browsers, ``?token=``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None
