"""The AG-UI door: ``POST /ag-ui/tasks/{taskId}`` answers an AG-UI 1.0 run as
``text/event-stream`` (docs/ag-ui.md). The translation is ``agui_events`` (pure); here is
only the door: the same access policy as every door (``read_refusal`` to stream,
``publish_refusal`` — the ``control`` claim — to answer an interrupt or send a message),
the input's commands published like any command, and the stream itself — the log read
up to the head for the snapshot, then a subscription from there (the hub's own replay and
fan-out: no gap, no duplicate, a slow reader closed like any other).

Every SSE event carries ``id: <seq>``; a reconnect with ``Last-Event-ID`` (taskcast's
extension: AG-UI 1.0 defines no stream resumption) goes on after that event, without a
new ``RUN_STARTED`` and without applying the input again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from taskcast.agui_events import (
    AguiRun,
    Identified,
    ResumeRefused,
    commands_for,
    identified,
    parse_position,
    resumed_ids,
    run_input_problem,
)
from taskcast.channels import task_channel
from taskcast.frames import FrameError, Subscribe, decode, parse_event, with_seq
from taskcast.hub.access import publish_refusal, read_refusal
from taskcast.hub.connection import ClientConnection, SSESink
from taskcast.hub.core import Hub, store_refusal
from taskcast.hub.http_api import HUB_KEY, SSE_KEEPALIVE_SECONDS, read_object, refused
from taskcast.hub.middleware import http_refusal, principal_of
from taskcast.store import EventQuery
from taskcast.vocabulary import ErrorCode

PAGE = 1000


def sse(events: list[Identified]) -> bytes:
    """AG-UI events as SSE: each with its id (``agui_events.event_ids``) and one compact
    ``data:`` line, LF only."""
    return b"".join(
        b"id: %s\ndata: %s\n\n"
        % (event_id.encode(), json.dumps(event, separators=(",", ":")).encode())
        for event_id, event in events
    )


class AguiSink(SSESink):
    """Writes what the subscription delivers as AG-UI events; marks the run done once its
    ``RUN_FINISHED``/``RUN_ERROR`` went out."""

    def __init__(
        self, response: web.StreamResponse, transport: asyncio.Transport, run: AguiRun
    ) -> None:
        super().__init__(response, transport)
        self.run = run
        self.done = asyncio.get_running_loop().create_future()

    async def write(self, frames: list[tuple[int, bytes]]) -> None:
        data = b""
        keepalive = False
        for seq, frame in frames:
            if not frame:
                keepalive = True
            elif seq and not self.run.finished:
                event = decode(frame)
                if isinstance(event, dict):
                    data += sse(identified(seq, self.run.feed(event)))
        if not data and keepalive:
            data = b": keep-alive\n\n"
        if data:
            await self.response.write(data)
        if self.run.finished and not self.done.done():
            self.done.set_result(None)


async def agui_run(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    task_id = request.match_info["task_id"]
    channel = task_channel(task_id)
    principal = principal_of(request)
    refusal = read_refusal(principal, channel)
    if refusal is not None:
        raise http_refusal(refusal)
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    problem = run_input_problem(body, task_id)
    if problem is None and hub.summaries.get(task_id) is None:
        return refused(hub, FrameError(ErrorCode.NOT_FOUND, f"no task {task_id!r} in the log"))
    position = None
    if problem is None and "Last-Event-ID" in request.headers:
        position = parse_position(request.headers["Last-Event-ID"])
        if position is None:
            problem = "Last-Event-ID is not an id this door gave (<seq>, <seq>.<k>, <seq>.s<k>)"
        elif position.seq > hub.published_head:
            problem = (
                f"Last-Event-ID {position.seq} is ahead of this log (head {hub.published_head})"
            )
    if problem is not None:
        return refused(hub, FrameError(ErrorCode.INVALID_INPUT, problem))
    run = AguiRun(task_id, str(body["runId"]))
    if position is None:  # a new run: the log up to the head, the input, the opening
        upto = hub.published_head
        await _fold(hub, run, channel, upto)
        answered = await _apply_input(request, hub, run, body, task_id)
        if isinstance(answered, web.Response):
            return answered
        run.settle(answered)
        first = sse(identified(upto, run.start(), opening=True))
    else:  # a reconnect: the same run, from where the reader stands (input applied once)
        upto = position.seq
        inside = position.part > 0 and not position.opening
        held = await _fold(hub, run, channel, upto, keep_last=inside)
        if inside and (held is None or held.get("seq") != upto):
            return refused(
                hub, FrameError(ErrorCode.INVALID_INPUT, f"Last-Event-ID: no event {upto} here")
            )
        run.settle(resumed_ids(body))
        first = sse(run.resume(position, held))
        if not first and run.over:
            return web.Response(status=204)  # the run ended there: nothing more to send
    admission = hub.admission_refusal(request.remote or "?")
    if admission is not None:
        hub.count_refused(admission.code)
        raise http_refusal(admission)
    transport = request.transport
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
    if first:
        await response.write(first)
    if run.finished:
        return response
    sink = AguiSink(response, transport, run)
    connection = ClientConnection(
        sink, hub.config.max_subscriber_buffer, request.remote or "?", principal
    )
    hub.attach(connection)
    hub.subscribe(connection, Subscribe(channel, upto))
    try:
        quiet = 0.0
        while not connection.closing and not transport.is_closing() and not sink.done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(sink.done), 1.0)
            quiet += 1.0
            if quiet >= SSE_KEEPALIVE_SECONDS:
                hub.reply(connection, b"")
                quiet = 0.0
        if sink.done.done():
            await connection.flush()
    finally:
        hub.detach(connection)
    return response


async def _fold(
    hub: Hub, run: AguiRun, channel: str, upto: int, keep_last: bool = False
) -> dict[str, Any] | None:
    """Fold the task's log up to ``upto`` into the run; with ``keep_last``, its last
    event (returned) is left for the caller to ``feed``. Read from the task's first
    event on (its summary knows it), not from the start of the log."""
    summary = hub.summaries.get(run.thread_id)
    cursor = max(0, summary.first_seq - 1) if summary is not None else 0
    held: dict[str, Any] | None = None
    while cursor < upto:
        page = await hub.store.query(
            EventQuery(after=cursor, until=upto, pattern=channel, limit=PAGE)
        )
        for stored in page.events:
            event = decode(with_seq(stored.body, stored.seq))
            if isinstance(event, dict):
                if held is not None:
                    run.fold(held)
                held = event
        if page.scanned_to <= cursor:
            break
        cursor = page.scanned_to
    if held is not None and not keep_last:
        run.fold(held)
        held = None
    return held


async def _apply_input(
    request: web.Request, hub: Hub, run: AguiRun, body: dict[str, Any], task_id: str
) -> set[str] | web.Response:
    """Publish the commands the input asks for (each checked and acknowledged as any
    command is); the interrupts they answer, or the refusal to send instead of a stream."""
    try:
        frames = commands_for(body, task_id, run.pending, run.settled)
    except ResumeRefused as exc:
        return refused(hub, FrameError(exc.code, str(exc)))
    principal = principal_of(request)
    publishes = []
    for frame in frames:  # every command is checked before any is published
        publish = parse_event(frame, principal.publisher)
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
        publishes.append(publish)
    for publish in publishes:
        failure = store_refusal(await hub.publish(publish), "command")
        if failure is not None:
            return refused(hub, failure)
    return resumed_ids(body)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/ag-ui/tasks/{task_id}", agui_run)
