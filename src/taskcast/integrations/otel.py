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
    """The last exported seq and the builder's state, in one private JSON file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> tuple[int | None, dict[str, Any]]:
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None, {}
        return int(saved["seq"]), dict(saved.get("state") or {})

    def save(self, seq: int, state: dict[str, Any]) -> None:
        ensure_private_dir(self.path.parent)
        data = json.dumps({"seq": seq, "state": state}, separators=(",", ":")).encode()
        write_private(self.path, data)  # whole file replaced at once: never half written


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
) -> None:
    """Run until cancelled: events → spans → ``exporter``, the cursor after each export."""
    seq, state = cursor.load()
    builder = TraceBuilder(state)
    resource = Resource.create({"service.name": service_name})
    start = since if seq is None else seq
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)

    async def pump() -> None:
        async for frame in subscribe(hub, channel, start, token=token, on_status=on_status):
            await frames.put(frame)

    pumping = asyncio.create_task(pump())
    spans: list[SpanSpec] = []
    fed = start
    saved = start
    deadline = time.monotonic() + FLUSH_SECONDS
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                frame = await asyncio.wait_for(frames.get(), max(0.0, deadline - time.monotonic()))
                spans += builder.feed(frame)
                fed = frame["seq"]
            if pumping.done():
                pumping.result()  # the subscription ended: raise what ended it
            if len(spans) >= BATCH_SPANS or time.monotonic() >= deadline:
                if spans:
                    await _export(exporter, [readable_span(s, resource) for s in spans])
                    spans = []
                if fed != saved:
                    cursor.save(fed, builder.state())
                    saved = fed
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
