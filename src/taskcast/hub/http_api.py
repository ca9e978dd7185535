"""The hub's HTTP API: health, publish, and the audit query over the log."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from taskcast.channels import InvalidChannel, validate_pattern
from taskcast.frames import (
    FrameError,
    Publish,
    Subscribe,
    ack_frame,
    decode,
    encode,
    error_frame,
    parse_event,
    with_seq,
)
from taskcast.hub.access import PRINCIPAL_KEY, principal_of
from taskcast.hub.connection import ClientConnection, SSESink
from taskcast.hub.core import Hub, now_ms
from taskcast.hub.metrics import render_metrics
from taskcast.store import EventQuery, StoredEvent

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


def forbidden(message: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(
        body=error_frame("forbidden", message), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    status = "ok" if hub.accepting else "stopping"
    if request.get(PRINCIPAL_KEY) is None:  # auth is on and no valid token: say little
        return web.json_response({"status": status})
    return web.json_response(
        {
            "status": status,
            "head": hub.published_head,
            "oldest": hub.store.oldest,
            "store": hub.store.description,
            "connections": len(hub.connections),
            "publishers": hub.publishers,
            "subscribers": hub.subscribers,
            "subscriptions": len(hub.index),
            "tasks": len(hub.summaries.tasks),
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
        hub.count_rejected(exc.code)
        return web.Response(status=400, body=exc.to_frame(), content_type="application/json")
    if not principal_of(request).can_publish(publish.channel):
        hub.count_rejected("forbidden")
        return json_error(403, "forbidden", f"not allowed to publish to {publish.channel}")
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
    principal = principal_of(request)
    pattern = request.query.get("channel") or None
    if pattern is not None:
        try:
            validate_pattern(pattern)
        except InvalidChannel as exc:
            raise bad_request("invalid_channel", str(exc)) from None
        if not principal.can_subscribe(pattern):
            raise forbidden(f"not allowed to read {pattern}")
    limit = _int_param(request, "limit", DEFAULT_QUERY_LIMIT) or DEFAULT_QUERY_LIMIT
    return EventQuery(
        after=_int_param(request, "since", 0) or 0,
        until=_int_param(request, "until", None),
        pattern=pattern,
        type=request.query.get("type") or None,
        task_id=request.query.get("taskId") or None,
        limit=min(limit, MAX_QUERY_LIMIT),
        readable=None if principal.admin else principal.subscribe,
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
    accept = request.headers.get("Accept", "")
    wanted = request.query.get("format")
    if wanted == "csv" or (wanted is None and "text/csv" in accept):
        headers["Content-Disposition"] = 'attachment; filename="taskcast-events.csv"'
        return web.Response(text=events_csv(page.events), content_type="text/csv", headers=headers)
    if wanted == "ndjson" or (wanted is None and NDJSON in accept):
        body = b"".join(frame + b"\n" for frame in frames)
        return web.Response(body=body, content_type=NDJSON, headers=headers)
    return web.Response(
        body=b"[" + b",".join(frames) + b"]", content_type="application/json", headers=headers
    )


CSV_COLUMNS = ["seq", "id", "channel", "type", "taskId", "source", "receivedAt", "payload"]


def events_csv(events: list[StoredEvent]) -> str:
    """One row per event; the payload as a JSON cell (spreadsheets and pandas read it)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for event in events:
        payload = decode(event.body).get("payload")
        writer.writerow(
            [
                event.seq,
                event.id,
                event.channel,
                event.type,
                event.task_id or "",
                event.source or "",
                event.ts,
                encode(payload).decode(),
            ]
        )
    return out.getvalue()


async def get_tasks(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    status = request.query.get("status") or None
    limit = min(_int_param(request, "limit", 500) or 500, 10_000)
    now = now_ms()
    principal = principal_of(request)
    tasks = [
        summary.to_json(now)
        for summary in hub.summaries.listing(status, limit)
        if principal.can_read(summary.channel)
    ]
    return web.Response(body=encode(tasks), content_type="application/json")


async def get_task(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    task_id = request.match_info["task_id"]
    summary = hub.summaries.get(task_id)
    principal = principal_of(request)
    if summary is None or not principal.can_read(summary.channel):
        return json_error(404, "not_found", f"no task {task_id!r} in the log")
    limit = min(_int_param(request, "limit", DEFAULT_QUERY_LIMIT) or DEFAULT_QUERY_LIMIT, 10_000)
    page = await hub.store.query(
        EventQuery(
            after=_int_param(request, "since", 0) or 0,
            task_id=task_id,
            limit=limit,
            readable=None if principal.admin else principal.subscribe,
        )
    )
    body = b'{"task":%s,"events":[%s],"nextSince":%d}' % (
        encode(summary.to_json(now_ms())),
        b",".join(with_seq(event.body, event.seq) for event in page.events),
        page.scanned_to,
    )
    return web.Response(body=body, content_type="application/json")


async def get_metrics(request: web.Request) -> web.Response:
    body = render_metrics(request.app[HUB_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


SSE_KEEPALIVE_SECONDS = 15.0


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events over the same subscription machinery as /ws.

    ``Last-Event-ID`` (the last seq received; browsers send it when they reconnect)
    or ``?since=`` replays from the log first, with no gap between replay and live.
    """
    hub = request.app[HUB_KEY]
    pattern = request.query.get("channel") or ">"
    try:
        validate_pattern(pattern)
    except InvalidChannel as exc:
        raise bad_request("invalid_channel", str(exc)) from None
    principal = principal_of(request)
    if not principal.can_subscribe(pattern):
        raise forbidden(f"not allowed to subscribe to {pattern}")
    last_event_id = request.headers.get("Last-Event-ID", "")
    since = int(last_event_id) if last_event_id.isdigit() else _int_param(request, "since", None)
    transport = request.transport
    if transport is None or not hub.accepting:
        raise web.HTTPServiceUnavailable()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 1000\n\n")
    connection = ClientConnection(
        SSESink(response, transport),
        hub.config.max_subscriber_buffer,
        request.remote or "?",
        principal,
    )
    hub.attach(connection)
    hub.subscribe(connection, Subscribe(pattern, since))
    try:
        quiet = 0.0
        while not connection.closing and not transport.is_closing():
            await asyncio.sleep(1.0)
            quiet += 1.0
            if quiet >= SSE_KEEPALIVE_SECONDS:
                connection.send(b"")
                quiet = 0.0
    finally:
        hub.detach(connection)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/api/events", post_event)
    app.router.add_get("/api/events", get_events)
    app.router.add_get("/api/events/stream", stream_events)
    app.router.add_get("/api/tasks", get_tasks)
    app.router.add_get("/api/tasks/{task_id}", get_task)
