"""Cluster mode against the embedded store: ``python bench/cluster.py`` (part of ``make bench``).

Side by side, in one run with the setups interleaved round by round:
- 1 hub node on SQLite, 1 node on NATS JetStream, 2 nodes on the same stream
  (publishers and subscribers spread over the nodes);
- raw JetStream publishing (nats-py ``publish_async``, the same window of 1,000
  unacknowledged messages and a ``Nats-Msg-Id`` on each, as the hub sends them)
  from the same kind of client processes — the ceiling the NATS store works under.

Prints a table and writes it into docs/benchmarks.md between the cluster markers.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nats_servers import NatsServer, jetstream_ready

from loadgen import (
    cpu_seconds_of,
    publishing_seconds,
    spawn,
    start_publishers,
    start_subscribers,
)
from report import write_section
from servers import REPO, Server, taskcast

Result = dict[str, Any]


@dataclass
class Setup:
    name: str
    nodes: list[Server]
    nats: NatsServer | None = None
    results: dict[str, list[Result]] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes]


def cpu(pids: list[int]) -> float:
    return sum(cpu_seconds_of(pid) for pid in pids)


def run_publish(setup: Setup, events: int, publishers: int) -> Result:
    go = mp.get_context("spawn").Event()
    group = start_publishers(setup.urls, "taskcast", events // publishers, go, count=publishers)
    nats_pid = [setup.nats.proc.pid] if setup.nats and setup.nats.proc else []
    hub_before, nats_before = cpu(setup.pids()), cpu(nats_pid)
    go.set()
    outcomes = group.outcomes(timeout=300)
    hub_cpu, nats_cpu = cpu(setup.pids()) - hub_before, cpu(nats_pid) - nats_before
    group.release()
    elapsed = publishing_seconds(outcomes)
    return {
        "value": sum(o["acked"] for o in outcomes) / elapsed,
        "hub_cpu": hub_cpu / elapsed,
        "nats_cpu": nats_cpu / elapsed,
    }


def raw_publisher(url: str, stream: str, events: int, ready: Any, go: Any, results: Any) -> None:
    """One client publishing straight to JetStream with a window of 1,000 acks."""
    import nats

    sys.path.insert(0, str(REPO / "bench"))
    from loadgen import encode_event

    async def main() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        ready.put(os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        start = time.monotonic_ns()
        pending: set[asyncio.Future[Any]] = set()
        acked = 0
        tag = f"{os.getpid()}-{start}"
        for i in range(events):
            while len(pending) >= 1000:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                acked += sum(1 for f in done if f.exception() is None)
            future = await js.publish_async(
                f"{stream.lower()}.tasks.bench",
                encode_event("taskcast", i),
                headers={"Nats-Msg-Id": f"{tag}-{i}"},
            )
            pending.add(future)
        if pending:
            done, _ = await asyncio.wait(pending)
            acked += sum(1 for f in done if f.exception() is None)
        elapsed = (time.monotonic_ns() - start) / 1e9
        results.put({"start_ns": start, "elapsed": elapsed, "acked": acked})
        await nc.close()

    asyncio.run(main())


async def create_stream(url: str, stream: str) -> None:
    """The stream a hub would create (file storage, R1, a 24 h duplicate window)."""
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(
            name=stream, subjects=[f"{stream.lower()}.>"], duplicate_window=86400.0
        )
    finally:
        await nc.close()


def run_raw_publish(server: NatsServer, stream: str, events: int, publishers: int) -> Result:
    asyncio.run(create_stream(server.url, stream))
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        spawn(raw_publisher, server.url, stream, events // publishers, ready, go, results)
        for _ in range(publishers)
    ]
    for _ in procs:
        ready.get(timeout=60)
    assert server.proc is not None
    before = cpu([server.proc.pid])
    go.set()
    outcomes = [results.get(timeout=300) for _ in procs]
    for process in procs:
        process.join(10)
    start = min(o["start_ns"] for o in outcomes)
    elapsed = (max(o["start_ns"] + o["elapsed"] * 1e9 for o in outcomes) - start) / 1e9
    return {
        "value": sum(o["acked"] for o in outcomes) / elapsed,
        "hub_cpu": 0.0,
        "nats_cpu": (cpu([server.proc.pid]) - before) / elapsed,
    }


def run_fanout(setup: Setup, events: int, subscribers: int) -> Result:
    """1 publisher (on the first node) → subscribers spread over the nodes, one
    subscriber process per node (at least 2)."""
    go = mp.get_context("spawn").Event()
    urls = setup.urls
    processes = max(2, len(urls))
    per_process = subscribers // processes
    subs = start_subscribers(
        urls,
        "taskcast",
        go,
        processes=processes,
        per_process=per_process,
        events=events,
        timeout=180.0,
    )
    publisher = start_publishers(urls[0], "taskcast", events, go)
    nats_pid = [setup.nats.proc.pid] if setup.nats and setup.nats.proc else []
    hub_before, nats_before = cpu(setup.pids()), cpu(nats_pid)
    go.set()
    (published,) = publisher.outcomes(timeout=300)
    received = subs.outcomes(timeout=300)
    hub_cpu, nats_cpu = cpu(setup.pids()) - hub_before, cpu(nats_pid) - nats_before
    publisher.release()
    subs.release(10)
    delivered = sum(r.count for r in received)
    elapsed = (max(r.last_ns for r in received) - published["start_ns"]) / 1e9
    return {
        "value": delivered / elapsed if elapsed > 0 else 0.0,
        "delivered": delivered,
        "expected": events * per_process * processes,
        "hub_cpu": hub_cpu / elapsed,
        "nats_cpu": nats_cpu / elapsed,
        "cpu_per_delivery_us": hub_cpu / delivered * 1e6 if delivered else 0.0,
    }


def median_result(samples: list[Result]) -> Result:
    middle = statistics.median(r["value"] for r in samples)
    pick = min(samples, key=lambda r: abs(r["value"] - middle))
    return {**pick, "value": middle, "rounds": [r["value"] for r in samples]}


def table(title: str, unit: str, rows: list[tuple[str, Result]], base: float) -> str:
    per_delivery = any("cpu_per_delivery_us" in r for _, r in rows)
    lines = [
        f"### {title}",
        "",
        f"| setup | {unit} (median) | ÷ 1 node SQLite | hub CPU (cores, all nodes) | NATS CPU "
        f"(cores) |{' hub CPU µs per delivery (all nodes) |' if per_delivery else ''} rounds |",
        f"|---|---:|---:|---:|---:|{'---:|' if per_delivery else ''}---|",
    ]
    for name, r in rows:
        extra = f" ({r['delivered']:,}/{r['expected']:,})" if "expected" in r else ""
        cost = f" {r['cpu_per_delivery_us']:.2f} |" if per_delivery else ""
        lines.append(
            f"| {name} | {r['value']:,.0f}{extra} | {r['value'] / base:.2f}× | {r['hub_cpu']:.2f} "
            f"| {r['nats_cpu']:.2f} |{cost} {' / '.join(f'{x:,.0f}' for x in r['rounds'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=40_000, help="per publish round")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--fanout-events", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=120, help="spread evenly")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="taskcast-cluster-bench-"))
    (root / "js").mkdir()
    server = NatsServer("bench", root / "js").start()
    jetstream_ready(server.url)
    flags = ("--retain-events", "2000000")
    setups = [
        Setup("1 node, SQLite", [taskcast()]),
        Setup("1 node, NATS", [taskcast(server.url, "--nats-stream", "B1", *flags)], server),
        Setup(
            "2 nodes, NATS",
            [taskcast(server.url, "--nats-stream", "B2", *flags) for _ in range(2)],
            server,
        ),
        Setup(
            "3 nodes, NATS",
            [taskcast(server.url, "--nats-stream", "B3", *flags) for _ in range(3)],
            server,
        ),
    ]
    raw: list[Result] = []
    try:
        for round_number in range(args.rounds):
            for setup in setups:
                result = run_publish(setup, args.events, args.publishers)
                setup.results.setdefault("publish", []).append(result)
                print(f"round {round_number + 1} publish {setup.name}: {result['value']:,.0f}/s")
            result = run_raw_publish(server, f"RAW{round_number}", args.events, args.publishers)
            raw.append(result)
            print(f"round {round_number + 1} publish raw JetStream: {result['value']:,.0f}/s")
            for setup in setups:
                result = run_fanout(setup, args.fanout_events, args.subscribers)
                setup.results.setdefault("fanout", []).append(result)
                print(f"round {round_number + 1} fan-out {setup.name}: {result['value']:,.0f}/s")
    finally:
        for setup in setups:
            for node in setup.nodes:
                node.stop()
        server.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)

    publish = [(s.name, median_result(s.results["publish"])) for s in setups]
    raw_result = median_result(raw)
    fanout = [(s.name, median_result(s.results["fanout"])) for s in setups]
    section = "\n".join(
        [
            "## Cluster mode (NATS JetStream) — `python bench/cluster.py`",
            "",
            f"Run on {time.strftime('%Y-%m-%d')}. One NATS server (JetStream, file storage, R1) "
            f"on this machine; {args.rounds} rounds, "
            "setups interleaved. Acked publishes: "
            f"{args.publishers} publisher processes × {args.events // args.publishers:,} events "
            "(window 1,000), spread over the nodes. Fan-out: 1 publisher on the first node → "
            f"{args.subscribers} subscribers in one process per node (2 for one node); "
            f"{args.fanout_events:,} events.",
            "",
            table(
                "Acknowledged publishes",
                "events/s",
                [*publish, ("raw JetStream publish_async (no hub)", raw_result)],
                publish[0][1]["value"],
            ),
            "",
            table("Fan-out", "deliveries/s", fanout, fanout[0][1]["value"]),
            "",
            f"This machine has {os.cpu_count()} cores, shared by every node, the NATS server "
            "and the client processes: deliveries/s here cannot grow with nodes past what "
            "those cores give. What says whether capacity grows with nodes on machines of "
            "their own is the CPU each delivery costs the nodes together (flat: each node "
            "adds its share).",
        ]
    )
    print(section)
    write_section(args.output, "cluster", section)


if __name__ == "__main__":
    main()
