"""One command for the benchmarks: ``make bench`` (or ``python bench/run.py``).

Runs every scenario against taskcast and its peers in one invocation, interleaving
the servers round by round so machine noise hits them alike, and writes medians,
ratios, CPU use, the machine and the versions to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_overhead import measure as measure_agent_overhead
from loadgen import (
    cpu_seconds_of,
    idle_process,
    publishing_seconds,
    rss_bytes_of,
    spawn,
    start_publishers,
    start_subscribers,
)
from report import marked_sections
from servers import NODE, PEERS, REPO, Server, ensure_node_modules, taskcast

Result = dict[str, Any]


def run_fanout(
    server: Server, *, events: int, subscribers: int, rate: float | None, processes: int = 2
) -> Result:
    """1 publisher -> ``subscribers`` connections: deliveries/s, or latencies at ``rate``."""
    go = mp.get_context("spawn").Event()
    per_process = subscribers // processes
    subs = start_subscribers(
        server.url,
        server.mode,
        go,
        processes=processes,
        per_process=per_process,
        events=events,
        latency=rate is not None,
    )
    publisher = start_publishers(server.url, server.mode, events, go, rate=rate)
    cpu_before = cpu_seconds_of(server.process.pid)
    go.set()
    (published,) = publisher.outcomes(timeout=240)
    received = subs.outcomes(timeout=240)
    cpu_after = cpu_seconds_of(server.process.pid)
    publisher.release()
    subs.release(10)
    delivered = sum(r.count for r in received)
    elapsed = (max(r.last_ns for r in received) - published["start_ns"]) / 1e9
    latencies = sorted(x for r in received for x in r.latencies_us)
    return {
        "delivered": delivered,
        "dropped_connections": sum(r.dropped for r in received),
        "expected": events * per_process * processes,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) / 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 99) / 1000 if latencies else float("nan"),
        "server_cpu": (cpu_after - cpu_before) / elapsed if elapsed > 0 else 0.0,
        "cpu_us_per_delivery": (cpu_after - cpu_before) / delivered * 1e6 if delivered else 0.0,
        "client_cpu": sum(r.cpu_seconds for r in received) + published["cpu"],
    }


def run_publish(server: Server, *, events: int, publishers: int) -> Result:
    """Acknowledged publishes per second with ``publishers`` concurrent connections."""
    go = mp.get_context("spawn").Event()
    group = start_publishers(server.url, "taskcast", events // publishers, go, count=publishers)
    cpu_before = cpu_seconds_of(server.process.pid)
    go.set()
    outcomes = group.outcomes(timeout=240)
    cpu_after = cpu_seconds_of(server.process.pid)
    group.release()
    elapsed = publishing_seconds(outcomes)
    return {
        "acked_per_s": sum(o["acked"] for o in outcomes) / elapsed,
        "server_cpu": (cpu_after - cpu_before) / elapsed,
        "client_cpu": sum(o["cpu"] for o in outcomes),
    }


def run_replay(server: Server, *, events: int) -> Result:
    """A new subscriber catching up on ``events`` stored events (since=0)."""
    run_publish(server, events=events, publishers=1)
    go = mp.get_context("spawn").Event()
    sub = start_subscribers(
        server.url, "taskcast-replay", go, processes=1, per_process=1, events=events
    )
    cpu_before = cpu_seconds_of(server.process.pid)
    started = time.monotonic_ns()
    go.set()
    (received,) = sub.outcomes(timeout=180)
    cpu_after = cpu_seconds_of(server.process.pid)
    sub.release(10)
    elapsed = (received.last_ns - started) / 1e9
    return {
        "replayed": received.count,
        "events_per_s": received.count / elapsed,
        "server_cpu": (cpu_after - cpu_before) / elapsed,
        "client_cpu": received.cpu_seconds,
    }


def run_idle_memory(server: Server, *, connections: int, processes: int = 2) -> Result:
    ctx = mp.get_context("spawn")
    ready, release = ctx.Queue(), ctx.Event()
    time.sleep(0.5)
    before = rss_bytes_of(server.process.pid)
    procs = [
        spawn(idle_process, server.url, server.mode, connections // processes, ready, release)
        for _ in range(processes)
    ]
    connected = sum(ready.get(timeout=180) for _ in procs)
    time.sleep(1.0)
    after = rss_bytes_of(server.process.pid)
    release.set()
    for process in procs:
        process.join(30)
    return {"connected": connected, "bytes_per_connection": (after - before) / max(1, connected)}


def percentile(values: list[float], pct: float) -> float:
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def interleaved(
    servers: dict[str, Server],
    rounds: int,
    measure: Callable[[Server], Result],
    key: str,
    also: tuple[str, ...] = (),
) -> dict[str, Result]:
    """Run ``measure`` on every server, round by round; the median round per server
    (and the median of each key in ``also``, over the rounds)."""
    samples: dict[str, list[Result]] = {name: [] for name in servers}
    for round_number in range(rounds):
        for name, server in servers.items():
            result = measure(server)
            samples[name].append(result)
            print(
                f"    round {round_number + 1} {server.name}: {key}={result[key]:,.2f}", flush=True
            )
    chosen: dict[str, Result] = {}
    for name, results in samples.items():
        values = [r[key] for r in results]
        middle = statistics.median(values)
        pick = min(results, key=lambda r: abs(r[key] - middle))
        chosen[name] = {**pick, key: middle, "rounds": values}
        for other in also:
            chosen[name][other] = statistics.median(r[other] for r in results)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=5,
        help="rounds of the publish-to-delivery latency, whose p99 swings most (issue 30)",
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--replay-events", type=int, default=100_000)
    parser.add_argument("--idle-connections", type=int, default=5000)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    wanted = [p for p in args.peers.split(",") if p]
    if any(p in ("node-ws", "socketio") for p in wanted):
        ensure_node_modules()

    sections: list[str] = []
    servers = {name: PEERS[name]() for name in wanted}
    try:
        print("fan-out throughput", flush=True)
        fan = interleaved(
            servers,
            args.rounds,
            lambda s: run_fanout(s, events=args.events, subscribers=args.subscribers, rate=None),
            "deliveries_per_s",
            also=("cpu_us_per_delivery",),
        )
        sections.append(fanout_table(args, servers, fan))
        print(f"latency at {args.rate:,.0f} events/s", flush=True)
        lat = interleaved(
            servers,
            args.latency_rounds,
            lambda s: run_fanout(
                s, events=int(args.rate * 5), subscribers=args.subscribers, rate=args.rate
            ),
            "p99_ms",
        )
        sections.append(latency_table(args, servers, lat))
    finally:
        for server in servers.values():
            server.stop()

    print("idle memory", flush=True)
    memory: dict[str, Result] = {}
    for name in wanted:
        server = PEERS[name]()
        try:
            memory[name] = run_idle_memory(server, connections=args.idle_connections)
            memory[name]["server"] = server.name
            print(
                f"    {server.name}: {memory[name]['bytes_per_connection'] / 1024:.1f} KiB",
                flush=True,
            )
        finally:
            server.stop()
    sections.append(memory_table(args, memory))

    hub = taskcast()
    try:
        print("durable publish", flush=True)
        publish = {
            n: interleaved(
                {"taskcast": hub},
                args.rounds,
                cast(
                    Callable[[Server], Result],
                    lambda s, n=n: run_publish(s, events=50_000, publishers=n),
                ),
                "acked_per_s",
            )["taskcast"]
            for n in (1, 8)
        }
        print("send_message inside a running Task, hub up", flush=True)
        up = interleaved(
            {"taskcast": hub}, args.rounds, lambda s: measure_agent_overhead(s.url), "median_us"
        )["taskcast"]
    finally:
        hub.stop()
    hub = taskcast()
    try:
        print("replay", flush=True)
        replay = interleaved(
            {"taskcast": hub},
            1,
            lambda s: run_replay(s, events=args.replay_events),
            "events_per_s",
        )["taskcast"]
    finally:
        hub.stop()
    print("send_message inside a running Task, hub down", flush=True)
    down = interleaved(
        {"down": hub},
        args.rounds,
        lambda s: measure_agent_overhead("ws://127.0.0.1:9/ws"),
        "median_us",
    )["down"]
    sections.append(taskcast_table(args, publish, replay, up, down))
    write_report(args, sections)


def ratio(value: float, other: float) -> str:
    return f"{value / other:.2f}×" if other else "–"


def fanout_table(
    args: argparse.Namespace, servers: dict[str, Server], fan: dict[str, Result]
) -> str:
    ours = fan.get("taskcast", {}).get("deliveries_per_s", 0.0)
    our_cpu = fan.get("taskcast", {}).get("cpu_us_per_delivery", 0.0)
    rows = [
        f"| {servers[n].name} | {r['deliveries_per_s']:,.0f} | {r['delivered']:,}/{r['expected']:,} "
        f"| {r['server_cpu']:.2f} | {r['cpu_us_per_delivery']:.3f} "
        f"| {ratio(our_cpu, r['cpu_us_per_delivery'])} | {r['client_cpu']:.1f} "
        f"| {ratio(ours, r['deliveries_per_s'])} "
        f"| {' / '.join(f'{x:,.0f}' for x in r['rounds'])} |"
        for n, r in fan.items()
    ]
    return "\n".join(
        [
            f"## Fan-out: 1 publisher → {args.subscribers} subscribers, {args.events:,} events",
            "",
            "| server | deliveries/s (median) | delivered | server CPU (cores) "
            "| server CPU µs per delivery (median) | taskcast's CPU ÷ this | client CPU (s) "
            "| taskcast ÷ this | rounds |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
            *rows,
        ]
    )


def latency_table(
    args: argparse.Namespace, servers: dict[str, Server], lat: dict[str, Result]
) -> str:
    rows = [
        f"| {servers[n].name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu']:.2f} "
        f"| {' / '.join(f'{x:.2f}' for x in r['rounds'])} |"
        for n, r in lat.items()
    ]
    return "\n".join(
        [
            f"## Publish-to-delivery latency at {args.rate:,.0f} events/s × {args.subscribers} "
            "subscribers",
            "",
            f"| server | p50 ms | p99 ms (median of {args.latency_rounds} rounds) "
            "| server CPU (cores) | p99 per round |",
            "|---|---:|---:|---:|---|",
            *rows,
        ]
    )


def memory_table(args: argparse.Namespace, memory: dict[str, Result]) -> str:
    rows = [
        f"| {r['server']} | {r['connected']:,} | {r['bytes_per_connection'] / 1024:.1f} |"
        for r in memory.values()
    ]
    return "\n".join(
        [
            f"## Memory per idle subscriber ({args.idle_connections:,} connections)",
            "",
            "Server RSS increase divided by connections (each subscribed, where the server has "
            "subscriptions).",
            "",
            "| server | connected | KiB per connection |",
            "|---|---:|---:|",
            *rows,
        ]
    )


def taskcast_table(
    args: argparse.Namespace, publish: dict[int, Result], replay: Result, up: Result, down: Result
) -> str:
    return "\n".join(
        [
            "## taskcast alone",
            "",
            "| scenario | median | server CPU (cores) | rounds |",
            "|---|---:|---:|---|",
            *(
                f"| durable publish, {n} publisher(s), 50,000 events | {r['acked_per_s']:,.0f} acked/s "
                f"| {r['server_cpu']:.2f} | {' / '.join(f'{x:,.0f}' for x in r['rounds'])} |"
                for n, r in publish.items()
            ),
            f"| replay: new subscriber catching up on {args.replay_events:,} stored events "
            f"| {replay['events_per_s']:,.0f} events/s | {replay['server_cpu']:.2f} | one run |",
            f"| `send_message` in a running Task, hub up | median {up['median_us']:.1f} µs, "
            f"p99 {up['p99_us']:.1f} µs | – | {' / '.join(f'{x:.1f}' for x in up['rounds'])} |",
            f"| `send_message` in a running Task, hub down | median {down['median_us']:.1f} µs, "
            f"p99 {down['p99_us']:.1f} µs | – | {' / '.join(f'{x:.1f}' for x in down['rounds'])} |",
        ]
    )


def node_package_versions() -> str:
    lock = json.loads((NODE / "package-lock.json").read_text())
    packages = lock.get("packages", {})
    names = ("ws", "socket.io")
    found = [f"{n} {packages.get(f'node_modules/{n}', {}).get('version', '?')}" for n in names]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return f"Node {node}, " + ", ".join(found)


def write_report(args: argparse.Namespace, sections: list[str]) -> None:
    python_versions = ", ".join(
        f"{name} {version(name)}"
        for name in (
            "aiohttp",
            "msgspec",
            "picows",
            "python-socketio",
            "starlette",
            "uvicorn",
            "websockets",
        )
    )
    report = "\n".join(
        [
            "# Benchmarks",
            "",
            "Produced by `make bench` (`bench/run.py`) in one run; do not edit by hand. Each "
            f"figure is the median of {args.rounds} rounds (servers interleaved round by round) "
            "unless marked otherwise.",
            "",
            f"- date: {datetime.date.today().isoformat()}",
            f"- machine: {platform.machine()}, {mp.cpu_count()} cores (shared and noisy), "
            f"{platform.platform()}, Python {platform.python_version()}",
            f"- versions: taskcast {version('taskcast')}; {python_versions}; {node_package_versions()}",
            "- load: picows clients in separate processes (2 subscriber processes, 1 publisher); "
            "events are ~200-byte `api_action` messages. taskcast publishes with acknowledgements "
            "(a window of 1,000 unacknowledged events), validates every event and commits it to "
            "SQLite before delivering; the relays forward frames unchecked and store nothing.",
            "- server CPU: the server process's CPU time over the measured interval (1.0 = one "
            "core); client CPU: CPU seconds of all load-generator processes. Node servers also use "
            "helper threads, counted in their process.",
            "",
            *(section + "\n" for section in sections),
        ]
    )
    # The other bench scripts write their own marked sections: keep them.
    previous = args.output.read_text() if args.output.exists() else ""
    kept = marked_sections(previous)
    if kept:
        report = report.rstrip() + "\n\n" + "\n\n".join(kept) + "\n"
    print(report)
    args.output.write_text(report)


if __name__ == "__main__":
    main()
