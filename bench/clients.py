"""The client libraries side by side: ``python bench/clients.py`` (part of ``make bench``).

On one hub (SQLite), in the same run, rounds interleaved: the Python
``CommunicationService`` and the TypeScript one (clients/typescript, Node) each publish
N events and wait for every ack (acked events/s, and the cost of one ``sendMessage`` /
``send_message`` call — the agent's hot path: ValorIDE calls it after every API
response); then each replays the task from seq 0 through its ``subscribe`` (events/s).
Medians of the rounds; the client's own CPU. Writes its section into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_section
from servers import NODE, REPO, taskcast

TS = REPO / "clients" / "typescript"


def ensure_typescript_build() -> None:
    if not (TS / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TS, check=True)
    subprocess.run(["npm", "run", "--silent", "build"], cwd=TS, check=True)


def typescript(scenario: str, url: str, events: int, task: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(NODE / "ts_client.mjs"), scenario, url, str(events), task],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def python(scenario: str, url: str, events: int, task: str) -> dict[str, Any]:
    """The Python client in its own process, like the Node one."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", scenario, url, str(events), task],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def one_python(scenario: str, url: str, events: int, task: str) -> dict[str, Any]:
    import os

    from taskcast.client import CommunicationService, subscribe

    def cpu() -> float:
        times = os.times()
        return times.user + times.system

    if scenario == "publish":
        service = CommunicationService(url)
        deadline = time.monotonic() + 10
        while not service.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        cpu_before = cpu()
        costs = []
        started = time.perf_counter()
        for i in range(events):
            t0 = time.perf_counter_ns()
            service.send_message(
                {
                    "type": "api_action",
                    "payload": {
                        "taskId": task,
                        "message": f"event {i} of the bench",
                        "timestamp": int(time.time() * 1000),
                    },
                }
            )
            costs.append((time.perf_counter_ns() - t0) / 1000)
        flushed = service.flush(120)
        seconds = time.perf_counter() - started
        costs.sort()
        service.close(1)
        return {
            "flushed": flushed,
            "acked_per_s": events / seconds,
            "client_cpu": cpu() - cpu_before,
            "send_p50_us": costs[len(costs) // 2],
            "send_p99_us": costs[int(len(costs) * 0.99)],
        }

    async def replay() -> dict[str, Any]:
        cpu_before = cpu()
        started = time.perf_counter()
        got = 0
        async for _ in subscribe(url, f"tasks.{task}", 0):
            got += 1
            if got == events:
                break
        seconds = time.perf_counter() - started
        return {"received": got, "events_per_s": got / seconds, "client_cpu": cpu() - cpu_before}

    return asyncio.run(replay())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        scenario, url, events, task = args.one
        print(json.dumps(one_python(scenario, url, int(events), task)))
        return
    ensure_typescript_build()
    clients = {"Python": python, "TypeScript (Node)": typescript}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {"publish": [], "subscribe": []} for name in clients
    }
    server = taskcast()
    try:
        for round_number in range(args.rounds):
            for name, run in clients.items():
                task = f"{name.split()[0].lower()}-{round_number}"
                for scenario in ("publish", "subscribe"):
                    result = run(scenario, server.url, args.events, task)
                    results[name][scenario].append(result)
                    print(f"round {round_number + 1} {name} {scenario}: {result}", flush=True)
    finally:
        server.stop()

    def median(name: str, scenario: str, key: str) -> float:
        value: float = statistics.median(r[key] for r in results[name][scenario])
        return value

    rows = []
    for name in clients:
        rows.append(
            f"| {name} | {median(name, 'publish', 'acked_per_s'):,.0f} "
            f"| {median(name, 'publish', 'send_p50_us'):.1f} / {median(name, 'publish', 'send_p99_us'):.1f} "
            f"| {median(name, 'publish', 'client_cpu') / args.events * 1e6:.1f} "
            f"| {median(name, 'subscribe', 'events_per_s'):,.0f} "
            f"| {median(name, 'subscribe', 'client_cpu') / args.events * 1e6:.1f} |"
        )
    ratio_publish = median("TypeScript (Node)", "publish", "acked_per_s") / median(
        "Python", "publish", "acked_per_s"
    )
    ratio_subscribe = median("TypeScript (Node)", "subscribe", "events_per_s") / median(
        "Python", "subscribe", "events_per_s"
    )
    section = "\n".join(
        [
            "## Clients: Python and TypeScript — `python bench/clients.py`",
            "",
            f"One hub (SQLite), {args.events:,} events per round, {args.rounds} rounds interleaved, "
            "medians; each client in its own process. *publish*: from the first send to the last "
            "ack (every event durable); *one call*: the cost of one `sendMessage` / `send_message` "
            "while publishing (the agent's hot path); *replay*: `subscribe` from seq 0.",
            "",
            "| client | publish, acked events/s | one call p50 / p99 (µs) | client CPU per publish (µs) "
            "| replay, events/s | client CPU per event (µs) |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"TypeScript ÷ Python: publish {ratio_publish:.2f}×, replay {ratio_subscribe:.2f}×.",
        ]
    )
    print(section)
    write_section(args.output, "clients", section)


if __name__ == "__main__":
    main()
