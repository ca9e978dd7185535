"""Who may connect: bearer tokens, browser origins, the connection cap.

A middleware authenticates every request to a protected path (the websocket, the
API, the metrics) before any handler runs, and leaves the ``Principal`` on the
request. The dashboard's static files and ``/healthz`` are public: they hold no
events (``/healthz`` says only "ok" to strangers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from taskcast.auth import ANONYMOUS_ADMIN, AuthError, Principal, bearer_token
from taskcast.frames import error_frame
from taskcast.hub.config import HubConfig

PRINCIPAL_KEY = "taskcast.principal"
PUBLIC_PREFIXES = ("/dashboard/",)
PUBLIC_PATHS = frozenset({"/", "/healthz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(status: int, code: str, message: str) -> web.HTTPException:
    cls = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 503: web.HTTPServiceUnavailable}[
        status
    ]
    headers = {"WWW-Authenticate": 'Bearer realm="taskcast"'} if status == 401 else None
    return cls(body=error_frame(code, message), content_type="application/json", headers=headers)


def authenticate(request: web.Request, config: HubConfig) -> Principal:
    """The request's principal; raises 401 without a valid token (the token is never echoed)."""
    if config.verifier is None:
        return ANONYMOUS_ADMIN
    token = bearer_token(request.headers.get("Authorization"), request.query.get("token"))
    if token is None:
        raise _refusal(401, "unauthorized", "a bearer token is required")
    try:
        return config.verifier.verify(token)
    except AuthError as exc:
        raise _refusal(401, "unauthorized", str(exc)) from None


def check_origin(request: web.Request, config: HubConfig) -> None:
    origin = request.headers.get("Origin")
    if config.allowed_origins and origin is not None and origin not in config.allowed_origins:
        raise _refusal(403, "forbidden", "origin not allowed")


def make_access_middleware(config: HubConfig, refused: Callable[[str], None]) -> Middleware:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            try:
                request[PRINCIPAL_KEY] = authenticate(request, config)
            except web.HTTPUnauthorized:
                request[PRINCIPAL_KEY] = None
            return await handler(request)
        try:
            check_origin(request, config)
            request[PRINCIPAL_KEY] = authenticate(request, config)
        except web.HTTPException as exc:
            refused("origin" if exc.status == 403 else "unauthorized")
            raise
        return await handler(request)

    return access


def principal_of(request: web.Request) -> Principal:
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise _refusal(401, "unauthorized", "a bearer token is required")
    return principal
