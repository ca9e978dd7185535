"""Load generator processes for the benchmarks: fast websocket clients built on picows.

Each runs in its own process so the server under test, not the client, is measured.
Subscribers only count frames in throughput mode; in latency mode they decode each
frame and compare its ``sentNs`` (CLOCK_MONOTONIC, shared by all processes) with now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

PAYLOAD_PAD = 200  # bytes of message text: ~200-byte api_action events on the wire


def api_action(i: int, sent_ns: int, *, event_id: str | None = None) -> dict[str, Any]:
    text = f"step {i}: " + "x" * PAYLOAD_PAD
    frame: dict[str, Any] = {
        "type": "api_action",
        "payload": {
            "taskId": "bench",
            "message": text[:PAYLOAD_PAD],
            "timestamp": time.time_ns() // 1_000_000,
            "sentNs": sent_ns,
        },
    }
    if event_id is not None:
        frame["id"] = event_id
    return frame


def cpu_seconds_of(pid: int) -> float:
    """User+system CPU time of a process, from /proc (works for any pid we own)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class SubscriberResult:
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latencies_us: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0


class _Counter(WSListener):  # type: ignore[misc]
    def __init__(self, shared: _Shared) -> None:
        self.shared = shared

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        shared = self.shared
        now = time.monotonic_ns()
        if shared.latency:
            data = frame.get_payload_as_bytes()
            obj = shared.decode(data)
            payload = obj.get("payload")
            if not isinstance(payload, dict) or "sentNs" not in payload:
                return
            shared.latencies.append((now - payload["sentNs"]) / 1000)
        elif frame.get_payload_as_memoryview()[:9] != b'{"type":"' or (
            shared.skip_prefix and frame.get_payload_as_bytes().startswith(shared.skip_prefix)
        ):
            return
        if not shared.count:
            shared.first_ns = now
        shared.count += 1
        shared.last_ns = now
        if shared.count >= shared.expected:
            shared.done.set()


@dataclass
class _Shared:
    expected: int
    latency: bool
    skip_prefix: bytes
    done: asyncio.Event
    decode: Any = field(default_factory=lambda: msgspec.json.Decoder().decode)
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latencies: list[float] = field(default_factory=list)


def subscriber_process(
    url: str,
    connections: int,
    subscribe_frame: bytes | None,
    skip_prefix: bytes,
    events: int,
    latency: bool,
    ready: Any,
    results: Any,
    timeout: float,
) -> None:
    async def main() -> SubscriberResult:
        shared = _Shared(events * connections, latency, skip_prefix, asyncio.Event())
        transports = []
        for _ in range(connections):
            transport, _listener = await ws_connect(lambda: _Counter(shared), url)
            if subscribe_frame is not None:
                transport.send(WSMsgType.TEXT, subscribe_frame)
            transports.append(transport)
        await asyncio.sleep(0.5)  # let every subscription register
        ready.put(os.getpid())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shared.done.wait(), timeout)
        for transport in transports:
            transport.disconnect()
        sample = shared.latencies[:: max(1, len(shared.latencies) // 20_000)]
        return SubscriberResult(
            shared.count, shared.first_ns, shared.last_ns, sample, own_cpu_seconds()
        )

    results.put(asyncio.run(main()))


class _Acks(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.acked = 0
        self.window = asyncio.Event()
        self.limit = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        head = frame.get_payload_as_memoryview()[:12]
        if frame.msg_type == WSMsgType.TEXT and head == b'{"type":"ack':
            self.acked += 1
            self.window.set()


def publisher_process(
    url: str,
    events: int,
    rate: float | None,
    acks: bool,
    window: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Publish ``events``; as fast as the window allows, or paced at ``rate`` per second."""

    async def main() -> dict[str, float]:
        transport, listener = await ws_connect(_Acks, url)
        ready.put(os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        encode = json.dumps
        start = time.monotonic_ns()
        sent = 0
        if rate is None:
            while sent < events:
                if acks:
                    while sent - listener.acked >= window:
                        listener.window.clear()
                        await listener.window.wait()
                burst = min(events - sent, window if not acks else window - (sent - listener.acked))
                for _ in range(max(1, burst)):
                    transport.send(
                        WSMsgType.TEXT, encode(api_action(sent, time.monotonic_ns())).encode()
                    )
                    sent += 1
                if not acks:
                    await asyncio.sleep(0)
        else:
            tick = 0.005
            per_tick = rate * tick
            credit = 0.0
            next_at = time.monotonic()
            while sent < events:
                credit += per_tick
                while credit >= 1 and sent < events:
                    transport.send(
                        WSMsgType.TEXT, encode(api_action(sent, time.monotonic_ns())).encode()
                    )
                    sent += 1
                    credit -= 1
                next_at += tick
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if acks:
            while listener.acked < events:
                listener.window.clear()
                try:
                    await asyncio.wait_for(listener.window.wait(), 30)
                except TimeoutError:
                    break
        elapsed = (time.monotonic_ns() - start) / 1e9
        transport.disconnect()
        return {
            "start_ns": start,
            "elapsed": elapsed,
            "acked": listener.acked,
            "cpu": own_cpu_seconds(),
        }

    results.put(asyncio.run(main()))


def spawn(target: Any, *args: Any) -> mp.process.BaseProcess:
    process = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process
