"""The ping flood of docs/security.md (attack 1), measured: hub RSS while one client
sends 1 MB pings and never reads. One command: ``python bench/ping_flood.py``.

``--src DIR`` runs the hub from another checkout's ``src`` (e.g. a worktree of an older
commit) so a fix can be compared with what came before, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def flood(url: str, pid: int, pings: int, seconds: float) -> tuple[float, float, str]:
    """Send ``pings`` 1 MB pings without reading; the hub's peak RSS and how it ended."""
    peak = before = rss_mib(pid)
    frame = json.dumps({"type": "ping", "id": "x" * (1024 * 1024 - 64)})
    ended = "still open"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url, max_msg_size=0)
        deadline = time.monotonic() + seconds
        try:
            for _ in range(pings):
                if time.monotonic() > deadline:
                    ended = "sender stalled (deadline)"
                    break
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await ws.send_str(frame)
                peak = max(peak, rss_mib(pid))
        except (ConnectionError, aiohttp.ClientError):
            ended = "dropped by the hub"
        except TimeoutError:
            ended = "sender stalled (deadline)"
        for _ in range(20):  # let the hub act on what it received
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.1)
        with contextlib.suppress(Exception):
            await ws.close()
    return before, peak, ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pings", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--src", action="append", default=[], help="hub source dir (repeat)")
    args = parser.parse_args()
    rows = []
    for src in args.src or [str(Path(__file__).resolve().parent.parent / "src")]:
        store = f"sqlite:{tempfile.mkdtemp(prefix='taskcast-flood-')}/events.db"
        hub = subprocess.Popen(
            [sys.executable, "-m", "taskcast", "hub", "--port", "0", "--store", store],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": src},
        )
        assert hub.stdout is not None
        url = hub.stdout.readline().split()[-1]
        try:
            before, peak, ended = asyncio.run(flood(url, hub.pid, args.pings, args.seconds))
        finally:
            hub.kill()
            hub.wait()
        rows.append((src, before, peak, ended))
    print("| hub source | RSS before | peak RSS | growth | connection |\n|---|---:|---:|---:|---|")
    for src, before, peak, ended in rows:
        print(f"| {src} | {before:.0f} MiB | {peak:.0f} MiB | {peak - before:.0f} MiB | {ended} |")


if __name__ == "__main__":
    main()
