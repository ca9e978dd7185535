"""The hub's HTTP API: health, publish, and the audit query over the log."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST

from taskcast.channels import InvalidChannel, task_channel, validate_pattern, validate_task_id
from taskcast.commands import COMMAND_TYPE
from taskcast.frames import (
    MAX_SEQ,
    FrameError,
    Publish,
    Subscribe,
    ack_frame,
    decode,
    decode_object,
    encode,
    error_frame,
    parse_event,
    with_seq,
)
from taskcast.hub.access import admin_refusal, metrics_refusal, publish_refusal, read_refusal
from taskcast.hub.connection import ClientConnection, SSESink
from taskcast.hub.core import Hub, Outcome, now_ms, store_refusal
from taskcast.hub.metrics import render_metrics
from taskcast.hub.middleware import PRINCIPAL_KEY, http_refusal, principal_of
from taskcast.leases import DEFAULT_TTL_SECONDS
from taskcast.store import AppendResult, EventQuery, StoredEvent
from taskcast.vocabulary import ErrorCode
from taskcast.webhooks.policy import target_refusal

HUB_KEY: web.AppKey[Hub] = web.AppKey("hub", Hub)
MAX_QUERY_LIMIT = 10_000
DEFAULT_QUERY_LIMIT = 1000
NDJSON = "application/x-ndjson"
LOG_ID_HEADER = "X-Taskcast-Log-Id"


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=error_frame(code, message), content_type="application/json"
    )


def bad_request(code: str, message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(body=error_frame(code, message), content_type="application/json")


def refused(hub: Hub, error: FrameError) -> web.Response:
    """Answer a refused frame or request over HTTP: its status (400 unless the door
    policy maps the code to another), the error frame, counted like the websocket does."""
    hub.count_rejected(error.code)
    return error_response(error)


def error_response(error: FrameError) -> web.Response:
    """The refusal's status and error frame, returned (aiohttp deprecates raising it)."""
    status = http_refusal(error).status
    return web.Response(status=status, body=error.to_frame(), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    status = "ok" if hub.accepting else "stopping"
    principal = request.get(PRINCIPAL_KEY)
    log_id = hub.store.log_id  # which log a client's seqs belong to: no secret
    if principal is None or metrics_refusal(principal) is not None:
        # Strangers learn only that it is up, and which log it serves.
        return web.json_response({"status": status, "logId": log_id})
    cache = getattr(hub.store, "cache", None)  # a cluster node's --nats-cache
    return web.json_response(
        {
            **({"cache": cache.describe()} if cache is not None else {}),
            "status": status,
            "logId": log_id,
            "head": hub.published_head,
            "oldest": hub.store.oldest,
            "store": hub.store.description,
            "connections": len(hub.connections),
            "publishers": hub.publishers,
            "subscribers": hub.subscribers,
            "subscriptions": len(hub.index),
            "tasks": len(hub.summaries.tasks),
            "pid": os.getpid(),  # which process answered (one of --workers N)
        }
    )


async def post_event(request: web.Request) -> web.Response:
    """``POST /api/events``: publish one event (the body is the event frame)."""
    obj = await read_object(request)
    if isinstance(obj, web.Response):
        return obj
    return await publish_object(request, obj)


async def read_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request body as one JSON object, or the error response to send."""
    hub = request.app[HUB_KEY]
    if not hub.accepting:
        return json_error(503, ErrorCode.SHUTTING_DOWN, "hub is shutting down")
    limit = hub.config.max_frame_bytes
    try:
        raw: bytes | None = await request.read()
    except web.HTTPRequestEntityTooLarge:  # aiohttp's own limit (client_max_size), in text
        raw = None
    except RequestPayloadError as exc:  # a Content-Encoding the body does not follow
        # The body is broken for good: marked read, or aiohttp drains it after this
        # answer, fails again and resets the connection before the answer arrives; and
        # the connection closed after it, as nothing on it can be trusted any more.
        request.content.feed_eof()
        cause = exc.__cause__  # the parser's error, which says what was wrong
        problem = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
        answer = refused(hub, FrameError(ErrorCode.BAD_JSON, f"body could not be read: {problem}"))
        answer.force_close()
        return answer
    if raw is None or len(raw) > limit:
        return json_error(413, ErrorCode.TOO_LARGE, f"body over {limit} bytes")
    try:
        return decode_object(raw)
    except FrameError as exc:
        return refused(hub, exc)


async def publish_object(request: web.Request, obj: dict[str, Any]) -> web.Response:
    """Validate, authorise and publish one event; answer the ack once it is durable."""
    hub = request.app[HUB_KEY]
    principal = principal_of(request)
    try:
        publish: Publish = parse_event(obj, principal.publisher)
    except FrameError as exc:
        return refused(hub, exc)
    refusal = publish_refusal(
        principal,
        publish.channel,
        accepting=hub.accepting,
        bucket=hub.http_buckets.get(principal.publisher or f"ip:{request.remote}"),
        now=time.monotonic(),
        event_id=publish.id,
        event_type=publish.type,
    )
    if refusal is not None:
        return refused(hub, refusal)
    try:
        outcome: Outcome = await hub.publish(publish)
    except Exception as exc:
        outcome = exc
    refusal = store_refusal(outcome)
    if refusal is not None:
        return error_response(refusal)
    assert isinstance(outcome, AppendResult)  # stored
    return web.Response(
        body=ack_frame(publish.id, outcome.seq, outcome.duplicate), content_type="application/json"
    )


def is_decimal(value: str) -> bool:
    """ASCII digits only: ``int()`` also takes "1_0", " 5", "+5" and other scripts' digits."""
    return value.isascii() and value.isdigit()


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not is_decimal(value):
        raise bad_request(ErrorCode.INVALID_QUERY, f"{name} must be an integer")
    number = int(value) if len(value) <= 20 else -1
    if not 0 <= number <= MAX_SEQ:
        raise bad_request(ErrorCode.INVALID_QUERY, f"{name} must be an integer from 0 to {MAX_SEQ}")
    return number


def parse_event_query(request: web.Request) -> EventQuery:
    principal = principal_of(request)
    pattern = request.query.get("channel") or None
    if pattern is not None:
        try:
            validate_pattern(pattern)
        except InvalidChannel as exc:
            raise bad_request(ErrorCode.INVALID_CHANNEL, str(exc)) from None
        refusal = read_refusal(principal, pattern)
        if refusal is not None:
            raise http_refusal(refusal)
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
    headers: dict[str, Any] = {
        "X-Taskcast-Next-Since": str(page.scanned_to),
        LOG_ID_HEADER: hub.store.log_id,  # the log these seqs belong to
    }
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


CSV_COLUMNS = [
    "seq",
    "id",
    "channel",
    "type",
    "taskId",
    "source",
    "publisher",
    "receivedAt",
    "payload",
]


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: one that starts like a formula gets a leading
    quote (OWASP's advice against CSV injection); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def events_csv(events: list[StoredEvent]) -> str:
    """One row per event; the payload as a JSON cell (spreadsheets and pandas read it)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for event in events:
        payload = decode(event.body).get("payload")
        row = [
            event.seq,
            event.id,
            event.channel,
            event.type,
            event.task_id or "",
            event.source or "",
            event.publisher,
            event.ts,
            encode(payload).decode(),
        ]
        writer.writerow([csv_cell(cell) for cell in row])
    return out.getvalue()


MAX_TASKS_PAGE = 1000


async def get_tasks(request: web.Request) -> web.Response:
    """Task summaries, most recently active first, a page at a time: ``limit`` (at most
    1000) and ``before`` (the ``lastSeq`` of the last one seen, as in the ``Link``)."""
    hub = request.app[HUB_KEY]
    status = request.query.get("status") or None
    limit = min(_int_param(request, "limit", 500) or 500, MAX_TASKS_PAGE)
    before = _int_param(request, "before", None)
    now = now_ms()
    principal = principal_of(request)
    page = hub.summaries.listing(
        status,
        limit,
        before,
        visible=lambda summary: principal.can_read(summary.channel),
        now_ms=now,
    )
    headers: dict[str, str] = {}
    if len(page) >= limit:
        cursor = page[-1].last_seq
        headers["X-Taskcast-Next-Before"] = str(cursor)
        headers["Link"] = f'<{request.rel_url.update_query(before=cursor)}>; rel="next"'
    body = encode([summary.to_json(now) for summary in page])
    return web.Response(body=body, content_type="application/json", headers=headers)


async def get_task(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    task_id = request.match_info["task_id"]
    summary = hub.summaries.get(task_id)
    principal = principal_of(request)
    if summary is None or not principal.can_read(summary.channel):
        return json_error(404, ErrorCode.NOT_FOUND, f"no task {task_id!r} in the log")
    limit = min(_int_param(request, "limit", DEFAULT_QUERY_LIMIT) or DEFAULT_QUERY_LIMIT, 10_000)
    page = await hub.store.query(
        EventQuery(
            after=_int_param(request, "since", 0) or 0,
            task_id=task_id,
            limit=limit,
            readable=None if principal.admin else principal.subscribe,
        )
    )
    body = b'{"task":%s,"events":[%s],"nextSince":%d,"logId":%s}' % (
        encode(summary.to_json(now_ms())),
        b",".join(with_seq(event.body, event.seq) for event in page.events),
        page.scanned_to,
        encode(hub.store.log_id),
    )
    return web.Response(
        body=body, content_type="application/json", headers={LOG_ID_HEADER: hub.store.log_id}
    )


BUCKETS = {"minute": 60_000, "hour": 3_600_000}


async def get_stats(request: web.Request) -> web.Response:
    """Event counts from the whole log, per time bucket and type (what the dashboard
    charts): ``bucket=minute|hour`` (default minute), ``buckets=N`` (default 60, at most
    1000) ending now. Only channels the token may read are counted."""
    hub = request.app[HUB_KEY]
    principal = principal_of(request)
    bucket_name = request.query.get("bucket", "minute")
    if bucket_name not in BUCKETS:
        raise bad_request(ErrorCode.INVALID_QUERY, "bucket must be minute or hour")
    bucket_ms = BUCKETS[bucket_name]
    count = min(_int_param(request, "buckets", 60) or 60, 1000)
    until = (now_ms() // bucket_ms + 1) * bucket_ms
    since = until - count * bucket_ms
    rows = await hub.store.count_by_time(since, until, bucket_ms)
    buckets: dict[int, dict[str, Any]] = {
        start: {"start": start, "total": 0, "byType": {}}
        for start in range(since, until, bucket_ms)
    }
    for start, event_type, channel, events in rows:
        if not principal.admin and not principal.can_read(channel):
            continue
        bucket = buckets.get(start)
        if bucket is None:
            continue
        bucket["total"] += events
        bucket["byType"][event_type] = bucket["byType"].get(event_type, 0) + events
    answer = {
        "bucket": bucket_name,
        "bucketMs": bucket_ms,
        "from": since,
        "until": until,
        "buckets": list(buckets.values()),
    }
    return web.Response(body=encode(answer), content_type="application/json")


async def get_pending(request: web.Request) -> web.Response:
    """Open approval requests and questions across the tasks this token may read."""
    hub = request.app[HUB_KEY]
    principal = principal_of(request)
    found = hub.summaries.pending_requests(
        visible=lambda summary: principal.can_read(summary.channel),
        task_id=request.query.get("taskId") or None,
    )
    return web.Response(body=encode(found), content_type="application/json")


async def post_command(request: web.Request) -> web.Response:
    """``POST /api/tasks/{taskId}/commands``: the command payload without ``taskId`` (an
    optional ``id`` is the idempotency key); publishes a ``task_command`` on
    ``control.<taskId>`` with the same checks as any publish, and answers the ack."""
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    frame: dict[str, Any] = {"type": COMMAND_TYPE}
    event_id = body.pop("id", None)
    if event_id is not None:
        frame["id"] = event_id
    frame["payload"] = {**body, "taskId": request.match_info["task_id"]}
    return await publish_object(request, frame)


def _may_run(request: web.Request, task_id: str) -> None:
    """Holding a task's lease needs a task id that can name a task and the right to
    publish its events."""
    try:
        channel = task_channel(validate_task_id(task_id))
    except InvalidChannel as exc:
        raise bad_request(ErrorCode.INVALID_CHANNEL, str(exc)) from None
    refusal = (
        None if principal_of(request).can_publish(channel) else f"not allowed to run {task_id}"
    )
    if refusal is not None:
        raise http_refusal(FrameError(ErrorCode.FORBIDDEN, refusal))


async def take_lease(request: web.Request) -> web.Response:
    """``{"holder", "ttl"?}``: 200 with the lease (granted or renewed), or 409 naming the
    instance that holds it."""
    hub = request.app[HUB_KEY]
    task_id = request.match_info["task_id"]
    _may_run(request, task_id)
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    holder, ttl = body.get("holder"), body.get("ttl", DEFAULT_TTL_SECONDS)
    if not isinstance(holder, str) or not holder or len(holder) > 200:
        raise bad_request(
            ErrorCode.INVALID_LEASE,
            "'holder' must be a string of 1 to 200 characters naming the runner",
        )
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 3600:
        raise bad_request(ErrorCode.INVALID_LEASE, "'ttl' must be seconds from 1 to 3600")
    granted, lease = await hub.take_lease(task_id, holder, float(ttl))
    if not granted:
        body = {
            "type": "error",
            "code": ErrorCode.LEASE_HELD,
            "message": f"task {task_id} is running on {lease.holder}",
            **lease.to_json(),
        }
        return web.Response(status=409, body=encode(body), content_type="application/json")
    return web.Response(body=encode(lease.to_json()), content_type="application/json")


async def release_lease(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    task_id = request.match_info["task_id"]
    _may_run(request, task_id)
    holder = request.query.get("holder", "")
    if not await hub.release_lease(task_id, holder):
        return json_error(404, ErrorCode.NOT_FOUND, f"{holder!r} holds no lease on {task_id}")
    return web.json_response({"released": task_id})


def _admin(request: web.Request) -> None:
    refusal = admin_refusal(principal_of(request))
    if refusal is not None:
        raise http_refusal(refusal)


async def list_webhooks(request: web.Request) -> web.Response:
    _admin(request)
    hub = request.app[HUB_KEY]
    found = [hub.webhooks.describe(hook) for hook in hub.webhooks.hooks.values()]
    return web.Response(body=encode(found), content_type="application/json")


async def add_webhook(request: web.Request) -> web.Response:
    """``{"url", "channel", "types"?, "since"?}`` → the webhook with its signing secret
    (shown this once)."""
    _admin(request)
    hub = request.app[HUB_KEY]
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    url, channel, types = body.get("url"), body.get("channel", "tasks.>"), body.get("types")
    if not isinstance(url, str):
        raise bad_request(ErrorCode.INVALID_WEBHOOK, "'url' (a string) is required")
    problem = target_refusal(url, allow_private=hub.webhooks.allow_private)
    if problem is not None:
        raise bad_request(ErrorCode.INVALID_WEBHOOK, problem)
    try:
        validate_pattern(channel)
    except (InvalidChannel, TypeError) as exc:
        raise bad_request(ErrorCode.INVALID_CHANNEL, str(exc)) from None
    if types is not None and (
        not isinstance(types, list) or not all(isinstance(t, str) and t for t in types)
    ):
        raise bad_request(ErrorCode.INVALID_WEBHOOK, "'types' must be a list of event types")
    since = body.get("since")
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_SEQ):
        raise bad_request(ErrorCode.INVALID_WEBHOOK, "'since' must be a seq")
    hook = await hub.webhooks.add(url, channel, tuple(types or ()), since)
    answer = {**hub.webhooks.describe(hook), "secret": hook.secret}
    return web.Response(status=201, body=encode(answer), content_type="application/json")


async def remove_webhook(request: web.Request) -> web.Response:
    _admin(request)
    hub = request.app[HUB_KEY]
    hook_id = request.match_info["webhook_id"]
    if not await hub.webhooks.remove(hook_id):
        return json_error(404, ErrorCode.NOT_FOUND, f"no webhook {hook_id!r}")
    return web.json_response({"removed": hook_id})


async def enable_webhook(request: web.Request) -> web.Response:
    _admin(request)
    hub = request.app[HUB_KEY]
    hook_id = request.match_info["webhook_id"]
    hook = await hub.webhooks.enable(hook_id)
    if hook is None:
        return json_error(404, ErrorCode.NOT_FOUND, f"no webhook {hook_id!r}")
    return web.Response(body=encode(hub.webhooks.describe(hook)), content_type="application/json")


async def get_metrics(request: web.Request) -> web.Response:
    refusal = metrics_refusal(principal_of(request))
    if refusal is not None:
        raise http_refusal(refusal)
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
        raise bad_request(ErrorCode.INVALID_CHANNEL, str(exc)) from None
    principal = principal_of(request)
    refusal = read_refusal(principal, pattern)
    if refusal is not None:
        raise http_refusal(refusal)
    last_event_id = request.headers.get("Last-Event-ID", "")
    if is_decimal(last_event_id) and len(last_event_id) <= 19 and int(last_event_id) <= MAX_SEQ:
        since: int | None = int(last_event_id)
    else:
        since = _int_param(request, "since", None)
    transport = request.transport
    peer = request.remote or "?"
    admission = hub.admission_refusal(peer)
    if admission is not None:
        hub.count_refused(admission.code)
        raise http_refusal(admission)
    if transport is None:
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
        peer,
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
                hub.reply(connection, b"")
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
    app.router.add_post("/api/tasks/{task_id}/commands", post_command)
    app.router.add_get("/api/pending", get_pending)
    app.router.add_get("/api/stats", get_stats)
    app.router.add_post("/api/tasks/{task_id}/lease", take_lease)
    app.router.add_delete("/api/tasks/{task_id}/lease", release_lease)
    app.router.add_get("/api/webhooks", list_webhooks)
    app.router.add_post("/api/webhooks", add_webhook)
    app.router.add_delete("/api/webhooks/{webhook_id}", remove_webhook)
    app.router.add_post("/api/webhooks/{webhook_id}/enable", enable_webhook)
