"""``taskcast otel``: follow a hub and send each task to OpenTelemetry as a trace.

A subscriber (``since`` its cursor) feeds events to ``TraceBuilder`` and hands the
spans to an OTel span exporter — OTLP/HTTP for Jaeger, Grafana Tempo, Langfuse, Arize
Phoenix or a collector. The cursor file holds the last seq whose spans were exported
and the open tasks' state, written after each successful export: after a restart
(even ``kill -9``) it resumes there, so no span is lost, and the deterministic span ids
make a span rebuilt after a crash the same span.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from taskcast.client import subscribe
from taskcast.client.failover import HubUrls
from taskcast.client.hub_http import hub_request
from taskcast.client.resume import LogMismatch, ResumePoint
from taskcast.client.subscriber import TokenSource
from taskcast.files import ensure_private_dir, write_private
from taskcast.integrations import missing_extra
from taskcast.integrations.otel_spans import SpanSpec, TraceBuilder

try:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("otel", "opentelemetry-sdk") from exc

log = logging.getLogger("taskcast.otel")

SCOPE = InstrumentationScope("taskcast", "0.1.0")
BATCH_SPANS = 200
FLUSH_SECONDS = 1.0
RETRY_CAP_SECONDS = 30.0


def readable_span(spec: SpanSpec, resource: Resource) -> ReadableSpan:
    """A finished span as the SDK's exporters take it, with our own ids and times."""
    context = SpanContext(
        spec.trace_id, spec.span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    parent = (
        SpanContext(spec.trace_id, spec.parent_id, is_remote=False)
        if spec.parent_id is not None
        else None
    )
    status = Status(StatusCode.ERROR, spec.error) if spec.error else Status(StatusCode.OK)
    return ReadableSpan(
        name=spec.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=spec.attributes,
        events=[Event(name, attrs, timestamp=at) for name, at, attrs in spec.events],
        kind=SpanKind.INTERNAL if spec.parent_id is None else SpanKind.CLIENT,
        status=status,
        start_time=spec.start_ns,
        end_time=max(spec.end_ns, spec.start_ns),
        instrumentation_scope=SCOPE,
    )


class Cursor:
    """Where export stands, per log: for each log id the last exported seq and the
    builder's state, in one private JSON file (``{"current": id, "logs": {id: {"seq",
    "state"}}}``) — a seq of one log says nothing of another, so going to another hub
    and back resumes each where it was. A file of an older taskcast (one cursor, no log
    id) is taken as the first log's."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> tuple[str | None, dict[str, dict[str, Any]]]:
        """The log exported last and every log's entry (an older file's under "")."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None, {}
        if "logs" not in saved:  # one cursor, no log id
            return None, {LEGACY: {"seq": int(saved["seq"]), "state": saved.get("state") or {}}}
        current = saved.get("current")
        return (current if isinstance(current, str) else None), dict(saved["logs"])

    def load(self, log_id: str | None = None) -> tuple[int | None, dict[str, Any]]:
        """The seq and state saved for ``log_id`` (default: the log exported last)."""
        current, logs = self.read()
        entry = logs.get(log_id or current or LEGACY) or logs.get(LEGACY)
        if entry is None:
            return None, {}
        return int(entry["seq"]), dict(entry.get("state") or {})

    def save(self, log_id: str | None, seq: int, state: dict[str, Any]) -> None:
        _, logs = self.read()
        if log_id is not None:
            logs.pop(LEGACY, None)  # it was this log's: now it is said
        logs[log_id or LEGACY] = {"seq": seq, "state": state}
        ensure_private_dir(self.path.parent)
        data = json.dumps({"current": log_id, "logs": logs}, separators=(",", ":")).encode()
        write_private(self.path, data)  # whole file replaced at once: never half written


LEGACY = ""  # the key of a cursor saved without a log id


async def hub_log_id(hub: HubUrls, token: TokenSource) -> str | None:
    """The id of the log the hub serves (its ``/healthz``), None when it cannot say."""
    try:
        health = await hub_request(hub, token, "GET", "/healthz", timeout=5.0)
    except Exception:  # down, or an older hub: the subscription will tell
        return None
    log_id = health.get("logId") if isinstance(health, dict) else None
    return log_id if isinstance(log_id, str) else None


def otlp_http_exporter(endpoint: str, headers: Mapping[str, str] | None = None) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    return OTLPSpanExporter(endpoint=url, headers=dict(headers or {}))


async def follow_into(
    exporter: SpanExporter,
    hub: HubUrls,
    channel: str,
    cursor: Cursor,
    *,
    since: int = 0,
    token: TokenSource = None,
    service_name: str = "taskcast",
    on_status: Callable[[str, str | None], None] | None = None,
    strict: bool = False,
) -> None:
    """Run until cancelled: events → spans → ``exporter``, the cursor after each export.

    It resumes from the cursor of the log the hub serves (``since`` on a log it has
    none for). Should the hub turn out to serve another log — at start, or after a
    reconnect — it says so and goes on with that log's own cursor; ``strict`` refuses
    (``LogMismatch``) rather than start a log it has no cursor for."""
    log_id = await hub_log_id(hub, token)
    current, logs = cursor.read()
    key = log_id or current
    if strict and logs and key not in logs and LEGACY not in logs:
        raise LogMismatch(
            f"the hub serves log {key}; {cursor.path} holds cursors of {', '.join(logs)}",
            current,
            key,
        )
    seq, state = cursor.load(key)
    if log_id is not None and key not in logs and logs:
        log.warning("log %s is new to %s: exporting it from seq %d", log_id, cursor.path, since)
    point = ResumePoint(since if seq is None else seq, key if seq is not None else log_id)
    point.strict = strict
    builder = TraceBuilder(state)
    resource = Resource.create({"service.name": service_name})
    # Each frame with the log it came from: the subscription may move to another log.
    frames: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue(maxsize=10_000)

    async def pump() -> None:
        async for frame in subscribe(hub, channel, point, token=token, on_status=on_status):
            await frames.put((point.log_id, frame))

    pumping = asyncio.create_task(pump())
    spans: list[SpanSpec] = []
    active = point.log_id  # the log the builder and ``fed`` belong to
    fed = saved = skip = point.last or 0
    deadline = time.monotonic() + FLUSH_SECONDS

    async def flush() -> None:
        nonlocal spans, saved
        if spans:
            await _export(exporter, [readable_span(s, resource) for s in spans])
            spans = []
        if fed != saved:
            cursor.save(active, fed, builder.state())
            saved = fed

    try:
        while True:
            with contextlib.suppress(TimeoutError):
                source, frame = await asyncio.wait_for(
                    frames.get(), max(0.0, deadline - time.monotonic())
                )
                if source != active and active is not None:
                    # The hub serves another log now: finish this one, go on with that one's.
                    await flush()
                    seq, state = cursor.load(source)
                    builder, skip = TraceBuilder(state), seq or 0
                    fed = saved = skip
                active = source
                if frame["seq"] > skip:  # exported already, before the log changed
                    spans += builder.feed(frame)
                    fed = frame["seq"]
            if pumping.done():
                pumping.result()  # the subscription ended: raise what ended it
            if len(spans) >= BATCH_SPANS or time.monotonic() >= deadline:
                await flush()
                deadline = time.monotonic() + FLUSH_SECONDS
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumping


async def _export(exporter: SpanExporter, spans: list[ReadableSpan]) -> None:
    """Export, retrying with backoff until the backend takes them: the cursor only
    moves on after, so a backend that is down delays spans but never drops them."""
    loop = asyncio.get_running_loop()
    delay = 0.5
    while True:
        try:
            result = await loop.run_in_executor(None, exporter.export, spans)
        except Exception as exc:
            result, problem = SpanExportResult.FAILURE, str(exc)
        else:
            problem = "the exporter reported a failure"
        if result is SpanExportResult.SUCCESS:
            return
        log.warning(
            "exporting %d spans failed (%s); retrying in %.1f s", len(spans), problem, delay
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_CAP_SECONDS)
