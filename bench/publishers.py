"""Many agents publishing at once: ``python bench/publishers.py`` (part of ``make bench``).

1,000 concurrent publishers (one websocket each, as one agent each), 10 events/s each,
for 20 s, against the embedded SQLite hub: acknowledged events/s and the send→ack
latency (p50, p99, max) — what an agent waits before its event is durable. The
publishers are spread over 4 load-generator processes; each event carries its own id
and the ack names it, so every latency is measured, not sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadgen import api_action, cpu_seconds_of, spawn
from report import write_section
from servers import REPO, taskcast

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class _Agent(WSListener):  # type: ignore[misc]
    def __init__(self, sent: dict[str, int], latencies: list[float]) -> None:
        self.sent = sent
        self.latencies = latencies

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        reply = _decode(frame.get_payload_as_bytes())
        if reply.get("type") == "ack":
            started = self.sent.pop(reply["id"], None)
            if started is not None:
                self.latencies.append((time.monotonic_ns() - started) / 1e6)


def agents_process(
    url: str, agents: int, rate: float, seconds: float, ready: Any, go: Any, results: Any
) -> None:
    async def main() -> None:
        sent: dict[str, int] = {}
        latencies: list[float] = []
        transports = []
        for _ in range(agents):
            transport, _ = await ws_connect(lambda: _Agent(sent, latencies), url)
            transports.append(transport)
        ready.put(os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        started = time.monotonic()
        tick = 1.0 / rate
        count = 0
        pid = os.getpid()
        # Each agent sends on its own beat, spread over the tick (not all at once).
        next_at = [started + tick * index / agents for index in range(agents)]
        while time.monotonic() - started < seconds:
            now = time.monotonic()
            for index, transport in enumerate(transports):
                if next_at[index] <= now:
                    event = api_action(count, time.monotonic_ns())
                    event["id"] = f"{pid}-{count}"
                    event["payload"]["taskId"] = f"agent-{pid}-{index}"
                    sent[event["id"]] = time.monotonic_ns()
                    transport.send(WSMsgType.TEXT, _encode(event))
                    count += 1
                    next_at[index] += tick
            await asyncio.sleep(max(0.0, min(next_at) - time.monotonic()))
        deadline = time.monotonic() + 30
        while sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        results.put({"sent": count, "acked": len(latencies), "latencies": latencies})
        for transport in transports:
            transport.disconnect()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per agent")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    server = taskcast()
    try:
        ctx = mp.get_context("spawn")
        ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        per = args.agents // args.processes
        procs = [
            spawn(agents_process, server.url, per, args.rate, args.seconds, ready, go, results)
            for _ in range(args.processes)
        ]
        for _ in procs:
            ready.get(timeout=120)
        cpu_before = cpu_seconds_of(server.process.pid)
        started = time.monotonic()
        go.set()
        outcomes = [results.get(timeout=args.seconds + 120) for _ in procs]
        elapsed = time.monotonic() - started
        cpu = cpu_seconds_of(server.process.pid) - cpu_before
        for process in procs:
            process.join(30)
    finally:
        server.stop()
    latencies = sorted(x for o in outcomes for x in o["latencies"])
    sent, acked = sum(o["sent"] for o in outcomes), len(latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))]

    section = "\n".join(
        [
            f"## {per * args.processes:,} publishers at {args.rate:g} events/s each "
            "— `python bench/publishers.py`",
            "",
            f"SQLite hub, {args.seconds:g} s, publishers spread over {args.processes} "
            "processes, every event's send→ack latency measured (one run).",
            "",
            "| sent | acked | acked/s | ack p50 ms | ack p99 ms | ack max ms | hub CPU (cores) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {sent:,} | {acked:,} | {acked / elapsed:,.0f} | {pct(0.5):.2f} | {pct(0.99):.2f} "
            f"| {latencies[-1]:.2f} | {cpu / elapsed:.2f} |",
        ]
    )
    print(section)
    write_section(args.output, "publishers", section)


if __name__ == "__main__":
    main()
