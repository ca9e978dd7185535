"""The aiohttp side of the door policy: authenticate every request, apply the browser
rules, and leave the ``Principal`` on the request for the handlers.

The dashboard's static files and ``/healthz`` are public (they hold no events; strangers
get only "ok" from ``/healthz``), but they too must be asked for by this hub's name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from taskcast.auth import Principal
from taskcast.frames import FrameError
from taskcast.hub.access import (
    CORS_PREFLIGHT,
    HTTP_STATUS,
    authenticated,
    browser_refusal,
    cors_headers,
)
from taskcast.hub.config import HubConfig
from taskcast.vocabulary import ErrorCode

PRINCIPAL_KEY = "taskcast.principal"
PUBLIC_PREFIXES = ("/dashboard/",)
PUBLIC_PATHS = frozenset({"/", "/healthz", "/favicon.ico"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_refusal(error: FrameError) -> web.HTTPException:
    """The HTTP answer for a refusal: its status, and the error frame as the body."""
    status = HTTP_STATUS.get(error.code, 400)
    headers = {"WWW-Authenticate": 'Bearer realm="taskcast"'} if status == 401 else None
    exception = web.HTTPException(headers=headers, body=error.to_frame())
    exception.set_status(status)
    exception.content_type = "application/json"
    return exception


def authenticate(request: web.Request, config: HubConfig) -> Principal:
    """The request's principal; raises 401 without a valid token (the token is never echoed)."""
    outcome = authenticated(
        config, request.headers.get("Authorization"), request.query.get("token")
    )
    if isinstance(outcome, FrameError):
        raise http_refusal(outcome)
    return outcome


def make_access_middleware(config: HubConfig, refused: Callable[[str], None]) -> Middleware:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = browser_refusal(
            config,
            method=request.method,
            host=request.headers.get("Host"),
            origin=request.headers.get("Origin"),
            content_type=request.headers.get("Content-Type"),
            scheme=request.scheme,
        )
        if refusal is not None:
            refused(refusal.code)
            raise http_refusal(refusal)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            allowed = cors_headers(config, request.headers.get("Origin"))
            if not allowed:  # a preflight from the hub's own origin: it needs none
                raise http_refusal(FrameError(ErrorCode.FORBIDDEN, "no CORS for this origin"))
            return web.Response(status=204, headers={**allowed, **CORS_PREFLIGHT})
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            try:
                request[PRINCIPAL_KEY] = authenticate(request, config)
            except web.HTTPException:
                request[PRINCIPAL_KEY] = None
            return await routed(request, handler)
        try:
            request[PRINCIPAL_KEY] = authenticate(request, config)
        except web.HTTPException:
            refused("unauthorized")
            raise
        return await routed(request, handler)

    return access


async def routed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer; the router's own 404 and 405 as JSON, as every refusal."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        error = FrameError(ErrorCode.METHOD_NOT_ALLOWED, f"{request.path} takes {allowed}")
        answer = http_refusal(error)
        answer.headers["Allow"] = allowed
        raise answer from None
    except web.HTTPNotFound:
        raise http_refusal(FrameError(ErrorCode.NOT_FOUND, f"no {request.path} here")) from None


def make_cors_hook(config: HubConfig) -> Callable[[web.Request, web.StreamResponse], Any]:
    """Every answer (streams and refusals too) to a page on an ``--allowed-origin``
    carries the CORS headers that let it read the answer."""

    async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(cors_headers(config, request.headers.get("Origin")))

    return add_cors


def principal_of(request: web.Request) -> Principal:
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise http_refusal(FrameError(ErrorCode.UNAUTHORIZED, "a bearer token is required"))
    return principal
