"""A long run: ``python bench/soak.py`` (10 minutes by default; not in ``make bench``).

200 subscribers on ``tasks.>``, one publisher at 2,000 acknowledged events/s, a new
task every 1,000 events, on the SQLite hub with retention of the last 200,000 events.
Every 10 s it samples the hub's RSS, open file descriptors, task summaries and the
log's size on disk (WAL included); at the end it checks every subscriber got every
event. What must hold: RSS, descriptors and the log's size flat once retention is
reached, summaries bounded by what retention keeps, nothing lost.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import rss_bytes_of, start_publishers, start_subscribers
from report import write_section
from servers import REPO, taskcast


def sample(pid: int, http: str, log: Path) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http}/healthz", timeout=10) as reply:
        health = json.loads(reply.read())
    return {
        "rss_mib": rss_bytes_of(pid) / 2**20,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "tasks": health["tasks"],
        "head": health["head"],
        "disk_mib": sum(
            path.stat().st_size for path in log.parent.glob(f"{log.name}*") if path.exists()
        )
        / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--retain", type=int, default=200_000)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp(prefix="taskcast-soak-")) / "events.db"
    server = taskcast(f"sqlite:{log}", "--retain-events", str(args.retain), "--trim-interval", "5")
    http = server.url.replace("ws://", "http://").removesuffix("/ws")
    events = int(args.rate * args.seconds)
    samples: list[tuple[float, dict[str, Any]]] = []
    try:
        go = mp.get_context("spawn").Event()
        subs = start_subscribers(
            server.url,
            "taskcast",
            go,
            processes=2,
            per_process=args.subscribers // 2,
            events=events,
            timeout=args.seconds + 120,
            ready_timeout=120.0,
        )
        publisher = start_publishers(server.url, "taskcast-soak", events, go, rate=args.rate)
        started = time.monotonic()
        go.set()
        while publisher.running():
            samples.append((time.monotonic() - started, sample(server.process.pid, http, log)))
            print(f"{samples[-1][0]:6.0f} s  {samples[-1][1]}", flush=True)
            time.sleep(10)
        (published,) = publisher.outcomes(timeout=120)
        received = subs.outcomes(timeout=args.seconds + 180)
        publisher.release()
        subs.release()
    finally:
        server.stop()
    delivered = sum(r.count for r in received)
    expected = events * (args.subscribers // 2) * 2
    # Samples taken while events flowed (the subscribers leave as soon as they have all).
    warm = [s for t, s in samples if t >= args.seconds / 3] or [samples[-1][1]]
    section = "\n".join(
        [
            f"## Soak: {args.seconds / 60:g} minutes — `python bench/soak.py`",
            "",
            f"{args.subscribers} subscribers, {args.rate:,.0f} acknowledged events/s, a new "
            f"task every 1,000 events, SQLite keeping the last {args.retain:,} events; "
            "sampled every 10 s (one run).",
            "",
            "| | first sample | after the first third: min | max | last |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {label} | {samples[0][1][key]:,.0f} | {min(s[key] for s in warm):,.0f} "
                f"| {max(s[key] for s in warm):,.0f} | {samples[-1][1][key]:,.0f} |"
                for label, key in (
                    ("hub RSS (MiB)", "rss_mib"),
                    ("log on disk, WAL included (MiB)", "disk_mib"),
                    ("open file descriptors", "fds"),
                    ("task summaries", "tasks"),
                )
            ),
            "",
            f"Published and acknowledged {published['acked']:,} of {events:,}; delivered "
            f"{delivered:,} of {expected:,}.",
        ]
    )
    print(section)
    write_section(args.output, "soak", section)


if __name__ == "__main__":
    main()
