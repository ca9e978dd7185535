"""One command for the benchmarks: ``make bench`` (or ``python bench/run.py``).

Runs each scenario for several rounds in one invocation, prints a table of
medians and writes it to docs/benchmarks.md. Figures from one run on one machine
are comparable with each other; across machines, only the ratios are.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_overhead import measure as measure_agent_overhead
from loadgen import cpu_seconds_of, publisher_process, spawn, subscriber_process
from servers import REPO, Server, start_taskcast


@dataclass
class Figure:
    scenario: str
    server: str
    value: float
    unit: str
    server_cpu: float  # share of one core used by the server process
    client_cpu: float  # CPU seconds used by all load-generator processes


def run_fanout(
    server: Server, *, events: int, subscribers: int, rate: float | None, processes: int = 2
) -> dict[str, Any]:
    """1 publisher -> ``subscribers`` connections; returns deliveries/s or latencies."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    per_process = subscribers // processes
    latency = rate is not None
    subs = [
        spawn(
            subscriber_process,
            server.url,
            per_process,
            server.subscribe_frame,
            server.skip_prefix,
            events,
            latency,
            ready,
            results,
            120.0,
        )
        for _ in range(processes)
    ]
    for _ in subs:
        ready.get(timeout=60)
    pub_results = ctx.Queue()
    publisher = spawn(
        publisher_process, server.url, events, rate, server.acks, 1000, ready, go, pub_results
    )
    ready.get(timeout=60)
    cpu_before = cpu_seconds_of(server.process.pid)
    go.set()
    pub = pub_results.get(timeout=180)
    sub_results = [results.get(timeout=180) for _ in subs]
    cpu_after = cpu_seconds_of(server.process.pid)
    for process in [*subs, publisher]:
        process.join(10)
    delivered = sum(r.count for r in sub_results)
    last_ns = max(r.last_ns for r in sub_results)
    elapsed = (last_ns - pub["start_ns"]) / 1e9
    latencies = sorted(x for r in sub_results for x in r.latencies_us)
    return {
        "delivered": delivered,
        "expected": events * per_process * processes,
        "elapsed": elapsed,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _percentile(latencies, 50) / 1000 if latencies else None,
        "p99_ms": _percentile(latencies, 99) / 1000 if latencies else None,
        "server_cpu": (cpu_after - cpu_before) / elapsed if elapsed > 0 else 0.0,
        "client_cpu": sum(r.cpu_seconds for r in sub_results) + pub["cpu"],
    }


def run_publish(server: Server, *, events: int, publishers: int) -> dict[str, Any]:
    """Acknowledged publishes per second with ``publishers`` concurrent connections."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    each = events // publishers
    procs = [
        spawn(publisher_process, server.url, each, None, True, 1000, ready, go, results)
        for _ in range(publishers)
    ]
    for _ in procs:
        ready.get(timeout=60)
    cpu_before = cpu_seconds_of(server.process.pid)
    go.set()
    outcomes = [results.get(timeout=180) for _ in procs]
    cpu_after = cpu_seconds_of(server.process.pid)
    for process in procs:
        process.join(10)
    start = min(o["start_ns"] for o in outcomes)
    end = max(o["start_ns"] + o["elapsed"] * 1e9 for o in outcomes)
    elapsed = (end - start) / 1e9
    acked = sum(o["acked"] for o in outcomes)
    return {
        "acked": acked,
        "acked_per_s": acked / elapsed,
        "server_cpu": (cpu_after - cpu_before) / elapsed,
        "client_cpu": sum(o["cpu"] for o in outcomes),
    }


def _percentile(sorted_values: list[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))
    return sorted_values[index]


def median_of(rounds: int, measure: Callable[[], dict[str, Any]], key: str) -> dict[str, Any]:
    samples = [measure() for _ in range(rounds)]
    for sample in samples:
        print(f"    round: {key}={sample[key]:,.1f}", flush=True)
    values = sorted(s[key] for s in samples)
    chosen = min(samples, key=lambda s: abs(s[key] - statistics.median(values)))
    return {**chosen, key: statistics.median(values), "rounds": [s[key] for s in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    rows: list[list[str]] = []
    server = start_taskcast()
    try:
        print(f"fan-out, {server.name}", flush=True)
        fan = median_of(
            args.rounds,
            lambda: run_fanout(server, events=args.events, subscribers=args.subscribers, rate=None),
            "deliveries_per_s",
        )
        rows.append(
            [
                f"fan-out 1→{args.subscribers}, {args.events:,} events",
                server.name,
                f"{fan['deliveries_per_s']:,.0f} deliveries/s",
                f"{fan['server_cpu']:.2f}",
                f"{fan['client_cpu']:.1f}",
                " / ".join(f"{x:,.0f}" for x in fan["rounds"]),
            ]
        )
        print(f"latency at {args.rate:,.0f} events/s, {server.name}", flush=True)
        lat = median_of(
            args.rounds,
            lambda: run_fanout(
                server, events=int(args.rate * 5), subscribers=args.subscribers, rate=args.rate
            ),
            "p99_ms",
        )
        rows.append(
            [
                f"latency at {args.rate:,.0f} ev/s × {args.subscribers} subscribers",
                server.name,
                f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms",
                f"{lat['server_cpu']:.2f}",
                f"{lat['client_cpu']:.1f}",
                " / ".join(f"{x:.2f}" for x in lat["rounds"]) + " (p99 ms)",
            ]
        )
        for publishers in (1, 8):
            print(f"acknowledged publishes, {publishers} publisher(s)", flush=True)
            pub = median_of(
                args.rounds,
                lambda n=publishers: run_publish(server, events=50_000, publishers=n),
                "acked_per_s",
            )
            rows.append(
                [
                    f"durable publish, {publishers} publisher(s)",
                    server.name,
                    f"{pub['acked_per_s']:,.0f} acked/s",
                    f"{pub['server_cpu']:.2f}",
                    f"{pub['client_cpu']:.1f}",
                    " / ".join(f"{x:,.0f}" for x in pub["rounds"]),
                ]
            )
        print("send_message inside a running Task, hub up", flush=True)
        up = median_of(args.rounds, lambda: measure_agent_overhead(server.url), "median_us")
        rows.append(
            [
                "agent overhead: send_message in a Task, hub up",
                "taskcast client",
                f"median {up['median_us']:.1f} µs, p99 {up['p99_us']:.1f} µs",
                "-",
                "-",
                " / ".join(f"{x:.1f}" for x in up["rounds"]) + " (median µs)",
            ]
        )
    finally:
        server.stop()
    print("send_message inside a running Task, hub down", flush=True)
    down = median_of(
        args.rounds, lambda: measure_agent_overhead("ws://127.0.0.1:9/ws"), "median_us"
    )
    rows.append(
        [
            "agent overhead: send_message in a Task, hub down",
            "taskcast client",
            f"median {down['median_us']:.1f} µs, p99 {down['p99_us']:.1f} µs",
            "-",
            "-",
            " / ".join(f"{x:.1f}" for x in down["rounds"]) + " (median µs)",
        ]
    )

    write_report(args, rows)


def write_report(args: argparse.Namespace, rows: list[list[str]]) -> None:
    header = [
        "scenario",
        "server",
        f"median of {args.rounds}",
        "server CPU (cores)",
        "client CPU (s)",
        "rounds",
    ]
    table = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    versions = ", ".join(f"{name} {version(name)}" for name in ("aiohttp", "msgspec", "picows"))
    report = "\n".join(
        [
            "# Benchmarks",
            "",
            "Produced by `make bench` (`bench/run.py`); do not edit by hand.",
            "",
            f"- date: {datetime.date.today().isoformat()}",
            f"- machine: {platform.machine()}, {mp.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.platform()}",
            f"- versions: {versions}",
            "- load generator: picows clients in separate processes (2 subscriber processes, "
            "1 publisher process); events are 200-byte `api_action` messages.",
            "- server CPU is the hub process's CPU time over the measured interval "
            "(1.0 = one core busy).",
            "",
            *table,
            "",
        ]
    )
    print(report)
    args.output.write_text(report)


if __name__ == "__main__":
    main()
