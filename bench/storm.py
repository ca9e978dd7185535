"""The restart after which everyone reconnects: ``python bench/storm.py`` (in ``make bench``).

20,000 subscribers (load generators connecting from several 127.0.0.x addresses), a
publisher going on at 10 events/s (200,000 deliveries/s); the hub is stopped with SIGTERM and started again.
Every subscriber reconnects by itself with exponential backoff and full jitter — as the
``CommunicationService`` and ``subscribe`` do — and resumes with ``since`` = the last
seq it got. Reported: how long until every subscriber is live again, the hub's peak
RSS, and whether every subscriber got every event exactly once, in order.

The hub is ``--workers 2`` over NATS JetStream: 20,000 connections is more than one
process's 20,000 open files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from tests.nats_servers import NatsServer, jetstream_ready

from loadgen import rss_bytes_of, spawn
from report import write_section
from servers import REPO, _start

PER_PROCESS = 5_000
_decode = msgspec.json.Decoder().decode


class _Resuming(WSListener):
    """One subscriber: counts events, checks their order, notices when it is cut off."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def on_ws_connected(self, transport: WSTransport) -> None:
        since = self.state["last"]
        transport.send(
            WSMsgType.TEXT, b'{"type":"subscribe","channel":"tasks.>","since":%d}' % since
        )

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        data = frame.get_payload_as_bytes()
        if data.startswith(b'{"type":"subscribed'):
            self.state["live"] = True
            return
        if not data.startswith(b'{"type":"api_action'):
            return
        seq = _decode(data)["seq"]
        if seq != self.state["last"] + 1:
            self.state["bad"] += 1  # a gap, a repeat or a step back
        self.state["last"] = max(self.state["last"], seq)
        self.state["count"] += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.state["live"] = False


def agent_process(url: str, events: int, rate: float, go: Any, results: Any) -> None:
    """The publisher: a CommunicationService, so it rides out the restart (its outbox
    resends what was not acknowledged; the hub drops repeats by id)."""
    from taskcast import CommunicationService

    service = CommunicationService(url)
    go.wait()
    started = time.monotonic()
    for index in range(events):
        service.send_message(
            {"type": "api_action", "payload": {"taskId": "storm", "message": f"step {index}",
                                                "timestamp": int(time.time() * 1000)}}
        )  # fmt: skip
        time.sleep(max(0.0, started + (index + 1) / rate - time.monotonic()))
    flushed = service.flush(300)
    service.close()
    results.put({"acked": events if flushed else events - service.pending})


def storm_process(
    url: str, connections: int, source: str, ready: Any, control: Any, out: Any
) -> None:
    async def one(state: dict[str, Any]) -> None:
        attempt = 0
        while not state["stop"]:
            try:
                transport, _ = await ws_connect(
                    lambda: _Resuming(state),
                    url,
                    websocket_handshake_timeout=30,
                    read_buffer_init_size=2048,
                    local_addr=(source, 0),
                )
            except Exception:
                # Full jitter, capped: a restart must not meet a synchronised herd.
                await asyncio.sleep(random.uniform(0, min(5.0, 0.1 * 2**attempt)))
                attempt += 1
                continue
            attempt = 0
            await transport.wait_disconnected()
            if not state["stop"]:
                await asyncio.sleep(random.uniform(0, 0.1))

    async def main() -> None:
        states = [
            {"last": 0, "count": 0, "bad": 0, "live": False, "stop": False}
            for _ in range(connections)
        ]
        tasks = [asyncio.create_task(one(state)) for state in states]
        while sum(s["live"] for s in states) < connections:
            await asyncio.sleep(0.1)
        ready.put(connections)
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, control.get)
            if command == "live?":
                out.put(sum(1 for s in states if s["live"]))
            elif command == "done?":
                out.put(
                    {
                        "min_last": min(s["last"] for s in states),
                        "count": sum(s["count"] for s in states),
                        "bad": sum(s["bad"] for s in states),
                    }
                )
            elif command == "stop":
                for state in states:
                    state["stop"] = True
                for task in tasks:
                    task.cancel()
                out.put("stopped")
                return

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="taskcast-storm-"))
    (root / "js").mkdir()
    nats = NatsServer("storm", root / "js").start()
    jetstream_ready(nats.url)
    hub_args = [
        sys.executable, "-m", "taskcast", "hub", "--port", "0", "--store", nats.url,
        "--workers", "2", "--max-connections", "19000", "--publish-rate", "0",
        "--max-connections-per-ip", "0", "--nats-stream", "STORM",
    ]  # fmt: skip
    hub = _start("taskcast --workers 2 (NATS)", "taskcast", hub_args)
    port = hub.url.rsplit(":", 1)[1].split("/")[0]
    ctx = mp.get_context("spawn")
    processes = -(-args.subscribers // PER_PROCESS)
    per = args.subscribers // processes
    ready = ctx.Queue()
    controls = [ctx.Queue() for _ in range(processes)]
    outs = [ctx.Queue() for _ in range(processes)]
    procs = [
        spawn(storm_process, hub.url, per, f"127.0.0.{2 + i}", ready, controls[i], outs[i])
        for i in range(processes)
    ]

    def ask(command: str) -> list[Any]:
        for control in controls:
            control.put(command)
        return [out.get(timeout=120) for out in outs]

    peak = {"rss": 0}

    def hub_rss() -> int:
        pids = [hub.process.pid]
        children = Path(f"/proc/{hub.process.pid}/task/{hub.process.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
        total = 0
        for pid in pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += rss_bytes_of(pid)  # (a worker may just have ended: the restart)
        return total

    try:
        for _ in procs:
            ready.get(timeout=900)
        total = per * processes
        go, results = ctx.Event(), ctx.Queue()
        events = int(args.rate * 40)
        spawn(agent_process, hub.url, events, args.rate, go, results)
        go.set()
        time.sleep(8)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                with_peak = hub_rss()
                peak["rss"] = max(peak["rss"], with_peak)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        hub.process.send_signal(signal.SIGTERM)  # the restart: every client is cut off
        hub.process.wait(60)
        restarted_at = time.monotonic()
        hub = _start(
            "taskcast --workers 2 (NATS)", "taskcast", [*hub_args[:5], port, *hub_args[6:]]
        )
        while sum(ask("live?")) < total:
            time.sleep(0.2)
        all_live = time.monotonic() - restarted_at
        published = results.get(timeout=300)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = ask("done?")
            if min(d["min_last"] for d in done) >= events:
                break
            time.sleep(0.5)
        sampling.set()
        ask("stop")
    finally:
        hub.stop()
        nats.stop()
        for process in procs:
            process.join(10)
    count, bad = sum(d["count"] for d in done), sum(d["bad"] for d in done)
    section = "\n".join(
        [
            f"## Reconnect storm: {total:,} subscribers — `python bench/storm.py`",
            "",
            f"`--workers 2` over NATS; a publisher at {args.rate:,.0f} events/s throughout; "
            "SIGTERM, then start again; each subscriber reconnects with full-jitter backoff "
            "and resumes with its own `since` (one run).",
            "",
            "| subscribers | all live again after | hub peak RSS (all workers) | events "
            "| deliveries | gaps, repeats or steps back |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {total:,} | {all_live:.1f} s | {peak['rss'] / 2**20:,.0f} MiB "
            f"| {published['acked']:,} | {count:,} of {published['acked'] * total:,} | {bad} |",
        ]
    )
    print(section)
    write_section(args.output, "storm", section)
    os._exit(0)  # the load generators' queues need no orderly teardown


if __name__ == "__main__":
    main()
