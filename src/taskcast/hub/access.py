"""Door policy: who may connect, publish, read and scrape — one pure function per
decision, used by every door (websocket, HTTP publish, HTTP query, SSE, CSV export).

Each function returns None (allowed) or the ``FrameError`` to answer with; the I/O
layers (``middleware.py``, ``server.py``, ``http_api.py``, ``core.py``) only turn that
into an error frame, an HTTP status or a close. No sockets here, so the whole table of
cases is tested without a hub (and again over the wire, door by door).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from taskcast.auth import ANONYMOUS_ADMIN, AuthError, Principal, bearer_token
from taskcast.commands import COMMAND_TYPE
from taskcast.frames import FrameError
from taskcast.hub.config import HubConfig
from taskcast.ratelimit import TokenBucket
from taskcast.vocabulary import ErrorCode

# The HTTP status each refusal maps to at an HTTP door.
HTTP_STATUS: dict[str, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.BAD_HOST: 421,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.ALREADY_RESOLVED: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.STORE_UNAVAILABLE: 503,
}
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})


def authenticated(
    config: HubConfig, authorization: str | None, query_token: str | None
) -> Principal | FrameError:
    """Who a request is: its principal, or why not (the token is never echoed)."""
    if config.verifier is None:
        return ANONYMOUS_ADMIN
    token = bearer_token(authorization, query_token)
    if token is None:
        return FrameError(ErrorCode.UNAUTHORIZED, "a bearer token is required")
    try:
        return config.verifier.verify(token)
    except AuthError as exc:
        return FrameError(ErrorCode.UNAUTHORIZED, str(exc))


def connection_refusal(
    config: HubConfig, *, accepting: bool, open_total: int, open_from_peer: int
) -> FrameError | None:
    """A new long-lived connection (websocket or SSE stream)."""
    if not accepting:
        return FrameError(ErrorCode.SHUTTING_DOWN, "hub is shutting down")
    if open_total >= config.max_connections:
        return FrameError(ErrorCode.TOO_MANY_CONNECTIONS, "the hub is at its connection limit")
    per_ip = config.max_connections_per_ip
    if per_ip and open_from_peer >= per_ip:
        return FrameError(
            ErrorCode.TOO_MANY_CONNECTIONS, f"at most {per_ip} connections from one address"
        )
    return None


def publish_refusal(
    principal: Principal,
    channel: str,
    *,
    accepting: bool,
    bucket: TokenBucket | None,
    now: float,
    event_id: str | None = None,
    event_type: str = "",
) -> FrameError | None:
    """One event, over the websocket, ``POST /api/events`` or the commands route.
    A ``task_command`` needs the ``control`` claim; any other event ``publish``."""
    if not accepting:
        return FrameError(ErrorCode.SHUTTING_DOWN, "hub is shutting down", event_id)
    if event_type == COMMAND_TYPE:
        if not principal.can_control(channel):
            return FrameError(ErrorCode.FORBIDDEN, f"not allowed to control {channel}", event_id)
    elif not principal.can_publish(channel):
        return FrameError(ErrorCode.FORBIDDEN, f"not allowed to publish to {channel}", event_id)
    if bucket is not None and not bucket.allow(now):
        return FrameError(
            ErrorCode.RATE_LIMITED, "publish rate limit exceeded; resend later", event_id
        )
    return None


def read_refusal(principal: Principal, pattern: str) -> FrameError | None:
    """Reading a pattern: subscribe, the audit query, SSE and the CSV export."""
    if not principal.can_subscribe(pattern):
        return FrameError(ErrorCode.FORBIDDEN, f"not allowed to read {pattern}")
    return None


def subscription_refusal(config: HubConfig, *, current: int, replacing: bool) -> FrameError | None:
    if not replacing and current >= config.max_subscriptions:
        return FrameError(
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            f"at most {config.max_subscriptions} subscriptions per connection",
        )
    return None


def admin_refusal(principal: Principal) -> FrameError | None:
    """Managing the hub (webhooks): an admin token (anyone on a hub without auth)."""
    if not principal.admin:
        return FrameError(ErrorCode.FORBIDDEN, "this needs an admin token")
    return None


def metrics_refusal(principal: Principal) -> FrameError | None:
    """``/metrics`` and the detailed ``/healthz``: admin or the ``metrics`` claim."""
    if not principal.can_read_metrics():
        return FrameError(
            ErrorCode.FORBIDDEN, "reading metrics needs an admin token or the metrics claim"
        )
    return None


def browser_refusal(
    config: HubConfig,
    *,
    method: str,
    host: str | None,
    origin: str | None,
    content_type: str | None,
    scheme: str = "http",
) -> FrameError | None:
    """What a web page in someone's browser must not do to a hub.

    A page on any origin can open a websocket to loopback, send ``no-cors`` POSTs and,
    through DNS rebinding, make its own name point at 127.0.0.1. So: every POST must say
    ``Content-Type: application/json`` (which a no-cors request cannot); without auth,
    a request must name this hub in ``Host`` (an IP literal, localhost or an
    ``--allowed-host``), and a request that carries an ``Origin`` (a websocket upgrade,
    a POST, a cross-origin fetch) must come from the hub's own origin or an
    ``--allowed-origin``. With auth the token is the boundary, and ``--allowed-origin``
    (when given) still applies.
    """
    if method == "POST" and (content_type or "").split(";")[0].strip().lower() != (
        "application/json"
    ):
        return FrameError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "POST bodies must be application/json")
    no_auth = config.verifier is None
    if (no_auth or config.allowed_hosts) and not host_allowed(config, host):
        return FrameError(
            ErrorCode.BAD_HOST, "Host header does not name this hub; see --allowed-host"
        )
    if origin is None or origin in config.allowed_origins:
        return None  # not a browser, or a page the operator trusts
    if (config.allowed_origins or no_auth) and not same_origin(origin, host, scheme):
        return FrameError(ErrorCode.FORBIDDEN, "origin not allowed; see --allowed-origin")
    return None


CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
    "Access-Control-Max-Age": "600",
}


def cors_headers(config: HubConfig, origin: str | None) -> dict[str, str]:
    """What lets a page on an ``--allowed-origin`` read the hub's answers (CORS: a
    browser front-end calling the AG-UI door, the HTTP API). Only those origins: the
    hub's own pages need none, and ``browser_refusal`` turns every other one away."""
    if origin is None or origin not in config.allowed_origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "X-Taskcast-Log-Id",
        "Vary": "Origin",
    }


def host_allowed(config: HubConfig, host: str | None) -> bool:
    """An IP literal or localhost (no DNS rebinding can forge those) or a configured name."""
    if not host:
        return False
    name = _hostname(host)
    if name is None:
        return False
    if name in LOOPBACK_NAMES or name in config.allowed_hosts:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def same_origin(origin: str, host: str | None, scheme: str) -> bool:
    if not host or origin == "null":
        return False
    parts = urlsplit(origin)
    expected = {"http": "http", "https": "https"}.get(scheme, scheme)
    return parts.scheme == expected and parts.netloc.lower() == host.lower()


def _hostname(host: str) -> str | None:
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return None
    return name.lower() if name else None
