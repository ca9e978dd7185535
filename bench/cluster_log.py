"""A cluster node's memory and start-up against the length of the log:
``python bench/cluster_log.py`` (part of ``make bench``; ``--events`` to size it).

One NATS server (JetStream, file storage) on this machine, one stream. Measured:
- the RSS of a node (and of each process of a ``--workers 2`` node) empty, then after
  ``--events`` events of 2 KB went through the stream (written straight to JetStream
  in the hub's own envelope by 4 processes, so the fill is quick; every node follows
  them live all the same);
- a node started on that log: seconds from its start to serving, its RSS;
- one ``subscribe since=0`` over the whole log on that node: events/s;
- live publish→deliver latency (500 events/s, 5 subscribers) on that node, idle and
  while 20 subscribers replay the log from the start: p50/p99, and the ratio;
- the same for a node started with ``--nats-cache`` (it followed the fill into its
  file): its RSS, its file's size, the CPU it took to follow the fill against a node
  without one, replay since=0 from the file, live latency during 20 replays; and a
  node with a new cache started on the full log: when it serves, when its file holds
  the log.

Prints a table and writes it into docs/cluster.md between the log-size markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nats_servers import NatsServer, jetstream_ready

from loadgen import cpu_seconds_of, rss_bytes_of, spawn, start_publishers, start_subscribers
from report import write_section
from servers import REPO, Server, taskcast

STREAM = "LOGSIZE"
MESSAGE = 2000  # characters of each event's message: 2-KB events
TASKS = 100


def filler(url: str, first: int, count: int, ready: Any, go: Any, results: Any) -> None:
    """Write ``count`` events to the stream as a hub node would (envelope, dedup id)."""
    import nats

    from taskcast.frames import parse_event
    from taskcast.store.nats_layout import envelope, msg_id, subject_of, subject_prefix

    async def main() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        ready.put(os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        prefix = subject_prefix(STREAM)
        pending: set[asyncio.Future[Any]] = set()
        acked = 0
        for i in range(first, first + count):
            task = f"t{i % TASKS}"
            frame = {
                "type": "api_action",
                "id": f"fill-{i}",
                "payload": {
                    "taskId": task,
                    "message": f"{i} " + "x" * MESSAGE,
                    "timestamp": time.time_ns() // 1_000_000,
                },
            }
            event = parse_event(frame, "bench")
            while len(pending) >= 1000:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                acked += sum(1 for f in done if f.exception() is None)
            pending.add(
                await js.publish_async(
                    subject_of(prefix, event.channel),
                    envelope(event, time.time_ns() // 1_000_000),
                    headers={"Nats-Msg-Id": msg_id(event)},
                )
            )
        if pending:
            done, _ = await asyncio.wait(pending)
            acked += sum(1 for f in done if f.exception() is None)
        results.put(acked)
        await nc.close()

    asyncio.run(main())


def fill(url: str, events: int, processes: int = 4) -> float:
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    share = events // processes
    procs = [
        spawn(filler, url, index * share, share, ready, go, results) for index in range(processes)
    ]
    for _ in procs:
        ready.get(timeout=60)
    start = time.monotonic()
    go.set()
    acked = sum(results.get(timeout=3600) for _ in procs)
    for proc in procs:
        proc.join(10)
    assert acked == share * processes, f"only {acked} acked"
    return share * processes / (time.monotonic() - start)


def health(node: Server) -> dict[str, Any]:
    http = node.url.replace("ws", "http", 1).removesuffix("/ws")
    with urllib.request.urlopen(f"{http}/healthz", timeout=10) as reply:
        answer: dict[str, Any] = json.load(reply)
        return answer


def wait_head(node: Server, head: int, timeout: float = 600) -> None:
    wait_seq(node, head, lambda shown: int(shown.get("head", 0)), "head", timeout)


def wait_cached(node: Server, last: int, timeout: float = 900) -> None:
    """Until the node's ``--nats-cache`` holds the log up to ``last``."""
    wait_seq(
        node, last, lambda shown: int(shown.get("cache", {}).get("last", 0)), "its cache", timeout
    )


def wait_seq(
    node: Server, seq: int, of: Callable[[dict[str, Any]], int], what: str, timeout: float
) -> None:
    """Until the seq ``of`` reads from ``/healthz`` reaches ``seq``."""
    deadline = time.monotonic() + timeout
    while of(health(node)) < seq:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.name}: {what} did not reach {seq}")
        time.sleep(0.2)


def workers_of(node: Server) -> list[int]:
    """The worker processes of a ``--workers`` node (children of its supervisor)."""
    pid = node.process.pid
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def replay_rate(node: Server, events: int) -> float:
    go = mp.get_context("spawn").Event()
    subs = start_subscribers(
        node.url, "taskcast-replay", go, processes=1, per_process=1, events=events, timeout=900
    )
    go.set()
    (result,) = subs.outcomes(timeout=1000)
    subs.release()
    if result.count < events:
        raise RuntimeError(f"replay got {result.count} of {events}")
    return result.count / ((result.last_ns - result.first_ns) / 1e9)


def live_latency(
    node: Server, replays: int, seconds: float = 10.0, flood_node: Server | None = None
) -> dict[str, float]:
    """p50/p99 publish→deliver (ms) at 500 events/s to 5 live subscribers, while
    ``replays`` other subscribers replay the log from its start — on the same node, or on
    ``flood_node`` (then what the replays cost is the box's, not the node's)."""
    go = mp.get_context("spawn").Event()
    rate, events = 500.0, int(500 * seconds)
    live = start_subscribers(
        node.url,
        "taskcast",
        go,
        processes=1,
        per_process=5,
        events=events,
        latency=True,
        timeout=seconds + 60,
    )
    flood = None
    if replays:
        flood = start_subscribers(
            (flood_node or node).url,
            "taskcast-replay",
            go,
            processes=2,
            per_process=replays // 2,
            events=10**9,
            timeout=seconds + 5,
        )
    publisher = start_publishers(node.url, "taskcast", events, go, rate=rate)
    cpu_before, started = cpu_seconds_of(node.process.pid), time.monotonic()
    go.set()
    publisher.outcomes(timeout=seconds + 60)
    (result,) = live.outcomes(timeout=seconds + 90)
    hub_cores = (cpu_seconds_of(node.process.pid) - cpu_before) / (time.monotonic() - started)
    publisher.release()
    live.release()
    replayed = 0
    if flood is not None:
        replayed = sum(r.count for r in flood.outcomes(timeout=seconds + 60))
        flood.release()
    latencies = sorted(result.latencies_us)
    return {
        "p50": statistics.median(latencies) / 1000,
        "p99": latencies[int(len(latencies) * 0.99)] / 1000,
        "delivered": result.count / 5,
        "replayed": replayed,
        "hub_cores": hub_cores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "cluster.md")
    parser.add_argument(
        "--benchmarks",
        type=Path,
        default=REPO / "docs" / "benchmarks.md",
        help="where the pointer to the table goes (bench/run.py rewrites the rest of it)",
    )
    args = parser.parse_args()
    events = args.events

    root = Path(tempfile.mkdtemp(prefix="taskcast-logsize-bench-"))
    (root / "js").mkdir()
    server = NatsServer("logsize", root / "js").start()
    jetstream_ready(server.url)
    flags = ("--nats-stream", STREAM, "--retain-events", str(events * 2))
    nodes: list[Server] = []
    try:
        first = taskcast(server.url, *flags)
        nodes.append(first)
        workers = taskcast(server.url, *flags, "--workers", "2")
        nodes.append(workers)
        cached = taskcast(server.url, *flags, "--nats-cache", str(root / "cache"))
        nodes.append(cached)
        time.sleep(2)
        empty = rss_bytes_of(first.process.pid)
        empty_workers = [rss_bytes_of(pid) for pid in workers_of(workers)]
        empty_cached = rss_bytes_of(cached.process.pid)
        print(f"empty: node {mib(empty)}, workers {[mib(r) for r in empty_workers]}")
        cpu_plain, cpu_cached = (
            cpu_seconds_of(first.process.pid),
            cpu_seconds_of(cached.process.pid),
        )
        fill_rate = fill(server.url, events)
        print(f"filled {events:,} events of 2 KB at {fill_rate:,.0f}/s")
        wait_head(first, events)
        wait_cached(cached, events)
        cpu_plain = cpu_seconds_of(first.process.pid) - cpu_plain
        cpu_cached = cpu_seconds_of(cached.process.pid) - cpu_cached
        time.sleep(12)  # a snapshot interval: the nodes have saved their summaries
        full = rss_bytes_of(first.process.pid)
        full_workers = [rss_bytes_of(pid) for pid in workers_of(workers)]
        full_cached = rss_bytes_of(cached.process.pid)
        cache_file = health(cached)["cache"]["path"]
        cache_disk = sum(Path(f"{cache_file}{end}").stat().st_size for end in ("", "-wal"))
        print(f"full: node {mib(full)}, workers {[mib(r) for r in full_workers]}")
        print(f"cached node {mib(full_cached)}, its file {mib(cache_disk)}")

        started = time.monotonic()
        late = taskcast(server.url, *flags)
        nodes.append(late)
        health(late)
        start_seconds = time.monotonic() - started
        late_rss = rss_bytes_of(late.process.pid)
        print(f"a node started on the full log serves after {start_seconds:.2f} s")

        replay = replay_rate(late, events)
        print(f"replay since=0: {replay:,.0f} events/s")
        after_replay = rss_bytes_of(late.process.pid)
        idle = live_latency(late, 0)
        busy = live_latency(late, 20)
        elsewhere = live_latency(late, 20, flood_node=first)
        print(f"live latency idle {idle}, during 20 replays {busy}, replays elsewhere {elsewhere}")

        cached_replay = replay_rate(cached, events)
        print(f"replay since=0 from the cache: {cached_replay:,.0f} events/s")
        cached_idle = live_latency(cached, 0)
        cached_busy = live_latency(cached, 20)
        print(f"cached node: live latency idle {cached_idle}, during 20 replays {cached_busy}")
        started = time.monotonic()
        late_cached = taskcast(server.url, *flags, "--nats-cache", str(root / "cache-late"))
        nodes.append(late_cached)
        health(late_cached)
        late_cached_serves = time.monotonic() - started
        wait_cached(late_cached, events)
        late_cached_filled = time.monotonic() - started
        print(
            f"a node with a new cache: serves {late_cached_serves:.2f} s, filled {late_cached_filled:.1f} s"
        )
    finally:
        for node in nodes:
            node.stop()
        server.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)

    growth_workers = max(f - e for f, e in zip(full_workers, empty_workers, strict=True))
    rows = [
        (
            "node that followed the log: RSS empty → full",
            f"{mib(empty)} → {mib(full)} (+{mib(full - empty)})",
        ),
        (
            "each `--workers 2` process: RSS empty → full",
            " / ".join(
                f"{mib(e)} → {mib(f)}" for e, f in zip(empty_workers, full_workers, strict=True)
            )
            + f" (at most +{mib(growth_workers)})",
        ),
        ("node started on the full log: seconds to serve", f"{start_seconds:.2f} s"),
        (
            "its RSS at start / after replaying the whole log",
            f"{mib(late_rss)} / {mib(after_replay)}",
        ),
        ("`subscribe since=0` over the whole log, one subscriber", f"{replay:,.0f} events/s"),
        (
            "live p50 / p99, idle (500 ev/s, 5 subscribers)",
            f"{idle['p50']:.1f} / {idle['p99']:.1f} ms",
        ),
        (
            "live p50 / p99 while 20 subscribers replay the log",
            f"{busy['p50']:.1f} / {busy['p99']:.1f} ms ({busy['p99'] / idle['p99']:.2f}× idle p99; "
            f"{busy['replayed']:,.0f} events replayed meanwhile; hub {busy['hub_cores']:.2f} cores, "
            f"idle {idle['hub_cores']:.2f})",
        ),
        (
            "live p50 / p99 while the 20 replays run on another node of this box",
            f"{elsewhere['p50']:.1f} / {elsewhere['p99']:.1f} ms "
            f"({elsewhere['p99'] / idle['p99']:.2f}× idle p99: the 2 cores, not the node)",
        ),
        (
            "node with `--nats-cache` that followed the log: RSS empty → full; its file",
            f"{mib(empty_cached)} → {mib(full_cached)} (+{mib(full_cached - empty_cached)}); "
            f"{mib(cache_disk)} on disk",
        ),
        (
            "CPU seconds to follow the fill: node without / with the cache",
            f"{cpu_plain:.1f} / {cpu_cached:.1f} s ({cpu_cached / cpu_plain:.2f}×)",
        ),
        (
            "`subscribe since=0` over the whole log from the cache, one subscriber",
            f"{cached_replay:,.0f} events/s ({cached_replay / replay:.2f}× from JetStream)",
        ),
        (
            "cached node: live p50 / p99 idle, and while 20 subscribers replay the log",
            f"{cached_idle['p50']:.1f} / {cached_idle['p99']:.1f} ms; "
            f"{cached_busy['p50']:.1f} / {cached_busy['p99']:.1f} ms "
            f"({cached_busy['p99'] / cached_idle['p99']:.2f}× idle p99; "
            f"{cached_busy['replayed']:,.0f} events replayed meanwhile; "
            f"hub {cached_busy['hub_cores']:.2f} cores)",
        ),
        (
            "node with a new cache started on the full log: serves / its cache holds the log",
            f"{late_cached_serves:.2f} s / {late_cached_filled:.1f} s",
        ),
    ]
    section = "\n".join(
        [
            f"Measured by `python bench/cluster_log.py --events {events}` "
            f"({time.strftime('%Y-%m-%d')}, a shared 2-core machine; one NATS server, "
            f"JetStream file storage, R1; {events:,} events of 2 KB over {TASKS} tasks, "
            f"filled at {fill_rate:,.0f}/s):",
            "",
            "| what | measured |",
            "|---|---|",
            *(f"| {what} | {value} |" for what, value in rows),
        ]
    )
    print(section)
    write_section(args.output, "log-size", section)
    write_section(
        args.benchmarks,
        "cluster-log",
        "A cluster node against the length of its log — memory, start-up, replays from "
        "JetStream\nand from a node's `--nats-cache`, live latency during 20 replays, and what "
        "the cache\ncosts the node — is `python bench/cluster_log.py` (part of `make bench`; "
        f"last run {time.strftime('%Y-%m-%d')},\n{events:,} events); its table is in "
        "docs/cluster.md, *What it costs, and sizing*.",
    )


if __name__ == "__main__":
    main()
