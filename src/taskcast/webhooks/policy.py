"""Webhook decisions, free of I/O: the target rule, the retry schedule, failure."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from taskcast.channels import matches

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 600.0  # 1 s doubling to 10 min
DEFAULT_GIVE_UP_SECONDS = 24 * 3600.0
SECRET_PREFIX = "whsec_"


class WebhookState(StrEnum):
    ACTIVE = "active"  # delivering (or retrying after a failure)
    FAILED = "failed"  # failing for longer than the give-up time: stopped, cursor kept


@dataclass
class Webhook:
    """A registered webhook and where its delivery stands."""

    id: str
    url: str
    channel: str  # a channel pattern
    types: tuple[str, ...] = ()  # empty: every type
    secret: str = ""
    cursor: int = 0  # the last seq delivered (a 2xx); delivery resumes after it
    log_id: str | None = None  # the log the cursor is a seq of
    state: WebhookState = WebhookState.ACTIVE
    created_at: int = 0  # ms
    failing_since: int | None = None  # ms of the first failure in the current run
    attempts: int = 0  # failed attempts in a row
    last_error: str | None = None
    delivered: int = 0
    failures: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def wants(self, event_type: str, channel: str) -> bool:
        return matches(self.channel, channel) and (not self.types or event_type in self.types)


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    import base64

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def target_refusal(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` may not be a webhook target (None when it may): only http(s), and no
    loopback, private or link-local address unless ``allow_private``. A host name is
    checked again, resolved, before each delivery (``address_refusal``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook URLs must be http:// or https:// with a host"
    if parts.username or parts.password:
        return "webhook URLs must not carry credentials"
    if not allow_private and parts.hostname.lower() in ("localhost", "localhost."):
        return "private and loopback targets need --allow-private-webhooks"
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None
    return address_refusal(str(address), allow_private=allow_private)


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why a resolved address may not be delivered to (None when it may)."""
    if allow_private:
        return None
    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast:
        return "private and loopback targets need --allow-private-webhooks"
    return None


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failures in a row."""
    delay: float = FIRST_RETRY_SECONDS * 2.0 ** max(0, attempts - 1)
    return min(MAX_RETRY_SECONDS, delay)


def record_failure(hook: Webhook, error: str, now_ms: int, give_up_seconds: float) -> float:
    """Note a failed attempt; returns the delay before the next one, or marks the
    webhook failed (returns 0) once it has failed for ``give_up_seconds``."""
    hook.attempts += 1
    hook.failures += 1
    hook.last_error = error[:500]
    if hook.failing_since is None:
        hook.failing_since = now_ms
    if now_ms - hook.failing_since >= give_up_seconds * 1000:
        hook.state = WebhookState.FAILED
        return 0.0
    return retry_delay(hook.attempts)


def record_success(hook: Webhook, seq: int) -> None:
    hook.cursor = max(hook.cursor, seq)
    hook.attempts = 0
    hook.failing_since = None
    hook.delivered += 1
