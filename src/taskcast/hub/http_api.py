"""The hub's HTTP API: health, publish, and the audit query over the log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskcast.channels import InvalidChannel, validate_pattern
from taskcast.frames import (
    FrameError,
    Publish,
    ack_frame,
    decode,
    error_frame,
    parse_event,
    with_seq,
)
from taskcast.hub.core import Hub
from taskcast.store import EventQuery

HUB_KEY: web.AppKey[Hub] = web.AppKey("hub", Hub)
MAX_QUERY_LIMIT = 10_000
DEFAULT_QUERY_LIMIT = 1000
NDJSON = "application/x-ndjson"


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=error_frame(code, message), content_type="application/json"
    )


def bad_request(code: str, message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(body=error_frame(code, message), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    return web.json_response(
        {
            "status": "ok" if hub.accepting else "stopping",
            "head": hub.published_head,
            "oldest": hub.store.oldest,
            "store": hub.store.description,
            "connections": len(hub.connections),
            "subscriptions": len(hub.index),
        }
    )


async def post_event(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    if not hub.accepting:
        return json_error(503, "shutting_down", "hub is shutting down")
    raw = await request.read()
    if len(raw) > hub.config.max_frame_bytes:
        return json_error(413, "too_large", f"event over {hub.config.max_frame_bytes} bytes")
    try:
        obj = decode(raw)
    except ValueError as exc:
        return json_error(400, "bad_json", f"body is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return json_error(400, "invalid_frame", "body must be a JSON object")
    try:
        publish: Publish = parse_event(obj)
    except FrameError as exc:
        return web.Response(status=400, body=exc.to_frame(), content_type="application/json")
    try:
        result = await hub.publish(publish)
    except Exception:
        return json_error(503, "store_unavailable", "event not stored")
    return web.Response(
        body=ack_frame(publish.id, result.seq, result.duplicate), content_type="application/json"
    )


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request("invalid_query", f"{name} must be an integer") from None
    if number < 0:
        raise bad_request("invalid_query", f"{name} must be >= 0")
    return number


def parse_event_query(request: web.Request) -> EventQuery:
    pattern = request.query.get("channel") or None
    if pattern is not None:
        try:
            validate_pattern(pattern)
        except InvalidChannel as exc:
            raise bad_request("invalid_channel", str(exc)) from None
    limit = _int_param(request, "limit", DEFAULT_QUERY_LIMIT) or DEFAULT_QUERY_LIMIT
    return EventQuery(
        after=_int_param(request, "since", 0) or 0,
        until=_int_param(request, "until", None),
        pattern=pattern,
        type=request.query.get("type") or None,
        task_id=request.query.get("taskId") or None,
        limit=min(limit, MAX_QUERY_LIMIT),
    )


async def get_events(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    query = parse_event_query(request)
    page = await hub.store.query(query)
    frames = [with_seq(event.body, event.seq) for event in page.events]
    headers: dict[str, Any] = {"X-Taskcast-Next-Since": str(page.scanned_to)}
    if len(page.events) >= query.limit:
        next_url = request.rel_url.update_query(since=page.scanned_to)
        headers["Link"] = f'<{next_url}>; rel="next"'
    wants_ndjson = (
        NDJSON in request.headers.get("Accept", "") or request.query.get("format") == "ndjson"
    )
    if wants_ndjson:
        body = b"".join(frame + b"\n" for frame in frames)
        return web.Response(body=body, content_type=NDJSON, headers=headers)
    return web.Response(
        body=b"[" + b",".join(frames) + b"]", content_type="application/json", headers=headers
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/events", post_event)
    app.router.add_get("/api/events", get_events)
