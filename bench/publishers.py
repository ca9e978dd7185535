"""Many agents publishing at once: ``python bench/publishers.py`` (part of ``make bench``).

Each publisher is one connection (one agent) sending 10 events/s, open loop, on a beat
of its own (random phase); every event carries its own id and its acknowledgement names
it, so every send→ack latency is measured, not sampled. Side by side in the same run,
alternating which goes first each round:

- taskcast on its embedded SQLite log (websockets, acks after the commit);
- a NATS JetStream server (file store, its own on a free port): each event published
  with a ``Nats-Msg-Id`` header and a reply subject, the stream's ack back on it — the
  same 300-byte events, raw clients on both sides (no client library in the way);
- to say where taskcast's time goes, taskcast on its in-memory store (everything but
  the disk: validation, ordering, fan-out, acks) and a picows server that only decodes
  each event and acks it (``bench/peers/picows_acker.py``: the floor of one Python
  process on asyncio).

The publishers are spread over load-generator processes, each reporting its own CPU,
so the table shows the client is not the bound. Medians over ``--rounds``; written into
docs/benchmarks.md with a plot of ack p99 against the number of publishers.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadgen import api_action, cpu_seconds_of, own_cpu_seconds, spawn
from report import write_section
from servers import REPO, Server, jetstream, picows_acker, taskcast

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
STALL_RATIO = 10  # "no periodic stall": the slowest ack within this many times the p99
# nats-server's warning when a stream's ingest queue is full and it drops publishes
# (unanswered, so a client would time out and resend): overload refused, not queued.
DROP_WARNING = "Dropping messages due to excessive stream ingest rate"


class Latencies:
    """Send times of the events not acknowledged yet, and the latencies of those that were."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.ms: list[float] = []
        self.last_ns = 0  # when the latest ack came

    def send(self, event_id: str) -> None:
        self.sent[event_id] = time.monotonic_ns()

    def acked(self, event_id: str) -> None:
        started = self.sent.pop(event_id, None)
        if started is not None:
            self.last_ns = time.monotonic_ns()
            self.ms.append((self.last_ns - started) / 1e6)


# --- taskcast: a websocket per agent -------------------------------------------------


class _TaskcastAgent(WSListener):
    def __init__(self, latencies: Latencies) -> None:
        self.latencies = latencies

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            reply = _decode(frame.get_payload_as_bytes())
            if reply.get("type") == "ack":
                self.latencies.acked(reply["id"])


class TaskcastSender:
    def __init__(self, transport: WSTransport) -> None:
        self.transport = transport

    def send(self, event_id: str, task: str, body: dict[str, Any]) -> None:
        body["id"] = event_id
        body["payload"]["taskId"] = task
        self.transport.send(WSMsgType.TEXT, _encode(body))

    def close(self) -> None:
        self.transport.disconnect()


async def taskcast_sender(url: str, latencies: Latencies) -> TaskcastSender:
    transport, _ = await ws_connect(lambda: _TaskcastAgent(latencies), url)
    return TaskcastSender(transport)


# --- JetStream: the NATS client protocol over TCP, an agent per connection -----------


class _JetStreamAgent(asyncio.Protocol):
    """HPUB with a ``Nats-Msg-Id`` header and a reply subject per event; the stream's
    ack (``{"stream":…,"seq":…}``) comes back as a MSG on that subject."""

    def __init__(self, latencies: Latencies, inbox: str) -> None:
        self.latencies = latencies
        self.inbox = inbox
        self.buffer = b""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
            b'"no_responders":true,"protocol":1}\r\n'
            + b"SUB %s.* 1\r\nPING\r\n"
            % self.inbox.encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            line = buffer[:end]
            if line.startswith(b"MSG "):
                size = int(line.rsplit(b" ", 1)[1])
                if len(buffer) < end + 2 + size + 2:
                    break
                subject = line.split(b" ", 2)[1]
                self.latencies.acked(subject.rsplit(b".", 1)[1].decode())
                buffer = buffer[end + 2 + size + 2 :]
                continue
            if line == b"PING":
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG" and not self.ready.done():
                self.ready.set_result(None)
            elif line.startswith(b"-ERR"):
                print("jetstream:", line.decode(), file=sys.stderr)
            buffer = buffer[end + 2 :]
        self.buffer = buffer


class JetStreamSender:
    def __init__(self, agent: _JetStreamAgent) -> None:
        self.agent = agent

    def send(self, event_id: str, task: str, body: dict[str, Any]) -> None:
        body["payload"]["taskId"] = task
        payload = _encode(body)
        header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % event_id.encode()
        subject = b"tasks.%s" % task.encode()
        reply = b"%s.%s" % (self.agent.inbox.encode(), event_id.encode())
        assert self.agent.transport is not None
        self.agent.transport.write(
            b"HPUB %s %s %d %d\r\n%s%s\r\n"
            % (subject, reply, len(header), len(header) + len(payload), header, payload)
        )

    def close(self) -> None:
        if self.agent.transport is not None:
            self.agent.transport.close()


async def jetstream_sender(url: str, latencies: Latencies, name: str) -> JetStreamSender:
    host, port = url.removeprefix("nats://").split(":")
    loop = asyncio.get_running_loop()
    _, agent = await loop.create_connection(
        lambda: _JetStreamAgent(latencies, f"_INBOX.{name}"), host, int(port)
    )
    await asyncio.wait_for(agent.ready, 10)
    return JetStreamSender(agent)


# --- the load generator ----------------------------------------------------------------


def agents_process(
    kind: str, url: str, agents: int, rate: float, seconds: float, ready: Any, go: Any, out: Any
) -> None:
    async def main() -> None:
        latencies = Latencies()
        pid = os.getpid()
        senders: list[TaskcastSender | JetStreamSender] = []
        for index in range(agents):
            if kind != "jetstream":  # taskcast's websocket protocol, or the acker's copy
                senders.append(await taskcast_sender(url, latencies))
            else:
                senders.append(await jetstream_sender(url, latencies, f"{pid}x{index}"))
        ready.put(pid)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu_before = own_cpu_seconds()
        tick = 1.0 / rate
        # A random phase each, then every agent on its own beat: in phase order the
        # agents take turns, so one cursor walks them (no scan of all per send).
        phases = sorted((random.random() * tick, index) for index in range(agents))
        started = time.monotonic()
        started_ns = time.monotonic_ns()
        count = 0
        late = 0
        while True:
            for phase, index in phases:
                due = started + (count // agents) * tick + phase
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > 0.001:
                    late += 1
                event_id = f"{pid}-{count}"
                latencies.send(event_id)
                body = api_action(count, time.monotonic_ns())
                senders[index].send(event_id, f"agent-{pid}-{index}", body)
                count += 1
            if time.monotonic() - started >= seconds:
                break
        sent_for = time.monotonic() - started
        deadline = time.monotonic() + 30
        while latencies.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        out.put(
            {
                "sent": count,
                "sent_for": sent_for,
                "acked_for": (latencies.last_ns - started_ns) / 1e9,
                "latencies": latencies.ms,
                "cpu": own_cpu_seconds() - cpu_before,
                "late": late,
            }
        )
        for sender in senders:
            sender.close()

    asyncio.run(main())


# --- one point, one peer -------------------------------------------------------------------


@dataclass
class Point:
    peer: str
    publishers: int
    sent: int
    acked: int
    acked_per_s: float
    p50: float
    p99: float
    max: float
    server_cores: float
    client_cores: float
    late_sends: int
    # Warnings in the server's log that it dropped publishes (JetStream: its stream
    # ingest queue full): events left unacked by choice, not lost in the load generator.
    drop_warnings: int = 0


SERVERS: dict[str, Callable[[], Server]] = {
    "taskcast": taskcast,
    "jetstream": jetstream,
    "taskcast-memory": lambda: taskcast("memory"),
    "picows-ack": picows_acker,
}


def measure(peer: str, publishers: int, args: argparse.Namespace) -> Point:
    server = SERVERS[peer]()
    try:
        ctx = mp.get_context("spawn")
        ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
        per = max(1, publishers // args.processes)
        procs = [
            spawn(agents_process, peer, server.url, per, args.rate, args.seconds, ready, go, out)
            for _ in range(args.processes)
        ]
        for _ in procs:
            ready.get(timeout=300)
        cpu_before = cpu_seconds_of(server.process.pid)
        started = time.monotonic()
        go.set()
        outcomes = [out.get(timeout=args.seconds + 120) for _ in procs]
        elapsed = time.monotonic() - started
        cpu = cpu_seconds_of(server.process.pid) - cpu_before
        for process in procs:
            process.join(30)
    finally:
        server.stop()
    drops = sum(DROP_WARNING in line for line in server.log_lines())
    latencies = sorted(x for o in outcomes for x in o["latencies"])
    acked_for = max(o["acked_for"] for o in outcomes)  # from the first send to the last ack

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0

    return Point(
        peer,
        per * args.processes,
        sum(o["sent"] for o in outcomes),
        len(latencies),
        len(latencies) / acked_for if acked_for > 0 else 0,
        pct(0.5),
        pct(0.99),
        latencies[-1] if latencies else 0,
        cpu / elapsed,
        sum(o["cpu"] for o in outcomes) / elapsed,
        sum(o["late"] for o in outcomes),
        drops,
    )


def median_point(points: list[Point]) -> Point:
    first = points[0]
    med = statistics.median
    return Point(
        first.peer,
        first.publishers,
        int(med(p.sent for p in points)),
        int(med(p.acked for p in points)),
        med(p.acked_per_s for p in points),
        med(p.p50 for p in points),
        med(p.p99 for p in points),
        med(p.max for p in points),
        med(p.server_cores for p in points),
        med(p.client_cores for p in points),
        int(med(p.late_sends for p in points)),
        int(med(p.drop_warnings for p in points)),
    )


NAMES = {
    "taskcast": "taskcast (SQLite)",
    "jetstream": "NATS JetStream (file)",
    "taskcast-memory": "taskcast (memory store)",
    "picows-ack": "picows acker (floor)",
}


def table(points: list[Point], args: argparse.Namespace) -> str:
    rows = [
        "| publishers | server | sent | acked | acked/s | ack p50 ms | ack p99 ms | ack max ms "
        "| max ÷ p99 | server cores | client cores | late sends |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        rows.append(
            f"| {p.publishers:,} | {NAMES[p.peer]} | {p.sent:,} | {p.acked:,} "
            f"| {p.acked_per_s:,.0f} | {p.p50:.2f} | {p.p99:.2f} | {p.max:.1f} "
            f"| {p.max / p.p99 if p.p99 else 0:.1f} | {p.server_cores:.2f} "
            f"| {p.client_cores:.2f} | {p.late_sends:,} |"
        )
    ratios = []
    for size in sorted({p.publishers for p in points}):
        pair = {p.peer: p for p in points if p.publishers == size}
        if {"taskcast", "jetstream"} <= pair.keys():
            t, j = pair["taskcast"], pair["jetstream"]
            ratios.append(
                f"{size:,}: p99 {t.p99 / j.p99:.2f}×, CPU {t.server_cores / j.server_cores:.2f}×"
            )
    layers = []
    for size in sorted({p.publishers for p in points}):
        pair = {p.peer: p for p in points if p.publishers == size}
        steps = [
            pair[peer] for peer in ("picows-ack", "taskcast-memory", "taskcast") if peer in pair
        ]
        if len(steps) > 1:
            layers.append(
                f"{size:,}: "
                + " → ".join(f"{p.server_cores:.2f} cores, p99 {p.p99:.2f} ms" for p in steps)
            )
    lines = [
        f"## Many publishers at {args.rate:g} events/s each — `python bench/publishers.py`",
        "",
        f"Each publisher its own connection, open loop on a random phase, {args.seconds:g} s per "
        f"point, spread over {args.processes} load-generator processes; every event's send→ack "
        f"latency; medians of {args.rounds} rounds (peers alternate which goes first). "
        "JetStream: file store, `Nats-Msg-Id` on every event, raw NATS protocol clients. "
        "taskcast (memory store): the same hub without the disk; picows acker (floor): a "
        "picows server that decodes each event and acks it, nothing else "
        "(`bench/peers/picows_acker.py`). "
        "*Late sends*: sends the load generator made more than 1 ms after their beat.",
        "",
        *rows,
        "",
        "taskcast ÷ JetStream (same run): " + ("; ".join(ratios) if ratios else "—") + ".",
        *drop_notes(points),
        "",
        "Where taskcast's time goes (same run; the floor → taskcast on its memory store → "
        "on SQLite): " + ("; ".join(layers) if layers else "—") + ".",
        "",
        plot(points),
    ]
    return "\n".join(lines)


def drop_notes(points: list[Point]) -> list[str]:
    """Where a server said it dropped publishes: its missing acks are refusals."""
    dropped = [p for p in points if p.drop_warnings]
    if not dropped:
        return []
    where = ", ".join(
        f"{NAMES[p.peer]} at {p.publishers:,} publishers ({p.drop_warnings} warnings)"
        for p in dropped
    )
    return [
        "",
        f"Dropped by the server, by its own log (`{DROP_WARNING}`, median warnings per "
        f"round): {where}. Those publishes were never answered — the server refused the "
        "load rather than queue it — so the *acked* column there counts what it took.",
    ]


def plot(points: list[Point]) -> str:
    """Ack p99 against publishers, one line per server, on a log scale (a saturated
    point is seconds, a held one milliseconds); a Mermaid chart, which GitHub draws."""
    sizes = sorted({p.publishers for p in points})
    peers = [peer for peer in NAMES if any(p.peer == peer for p in points)]
    logs = [math.log10(max(p.p99, 0.01)) for p in points]
    lines = [
        "```mermaid",
        "xychart-beta",
        '    title "log10 of ack p99 in ms (0 = 1 ms, 3 = 1 s) by publishers; '
        + ", ".join(f"line {i + 1}: {NAMES[peer]}" for i, peer in enumerate(peers))
        + '"',
        "    x-axis [" + ", ".join(f'"{size:,}"' for size in sizes) + "]",
        f'    y-axis "log10 ack p99 (ms)" {min(0, math.floor(min(logs)))} '
        f"--> {math.ceil(max(logs))}",
    ]
    for peer in peers:
        by_size = {p.publishers: p.p99 for p in points if p.peer == peer}
        values = [math.log10(max(by_size.get(size, 0), 0.01)) for size in sizes]
        lines.append("    line [" + ", ".join(f"{value:.2f}" for value in values) + "]")
    lines.append("```")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", default="200,1000,5000", help="publisher counts")
    parser.add_argument("--peers", default=",".join(NAMES))
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per publisher")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    peers = args.peers.split(",")
    unknown = set(peers) - NAMES.keys()
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(sorted(unknown))} (known: {', '.join(NAMES)})")
    sizes = [int(size) for size in args.points.split(",")]
    runs: dict[tuple[str, int], list[Point]] = {}
    for round_index in range(args.rounds):
        order = peers if round_index % 2 == 0 else peers[::-1]
        for size in sizes:
            for peer in order:
                point = measure(peer, size, args)
                runs.setdefault((peer, size), []).append(point)
                print(
                    f"round {round_index + 1} {NAMES[peer]} × {point.publishers:,}: "
                    f"acked {point.acked:,}/{point.sent:,}, p50 {point.p50:.2f} p99 "
                    f"{point.p99:.2f} max {point.max:.1f} ms, server {point.server_cores:.2f} "
                    f"cores, client {point.client_cores:.2f}",
                    flush=True,
                )
    points = [median_point(runs[(peer, size)]) for size in sizes for peer in peers]
    section = table(points, args)
    print(section)
    write_section(args.output, "publishers", section)


if __name__ == "__main__":
    main()
