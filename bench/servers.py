"""Servers under test, each started as its own process on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    subscribe_frame: bytes | None  # what a subscriber sends first (None: nothing)
    acks: bool  # whether the server acknowledges each publish
    skip_prefix: bytes = b'{"type":"ack'

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_taskcast(store: str | None = None, *extra: str) -> Server:
    if store is None:
        store = f"sqlite:{tempfile.mkdtemp(prefix='taskcast-bench-')}/events.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskcast",
            "hub",
            "--port",
            "0",
            "--store",
            store,
            # Benchmarks measure capacity: lift the per-connection abuse limit.
            "--publish-rate",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if line.startswith("taskcast hub listening on "):
            url = line.split()[-1]
            return Server(
                "taskcast (SQLite)" if store.startswith("sqlite") else f"taskcast ({store})",
                url,
                process,
                b'{"type":"subscribe","channel":"tasks.>"}',
                acks=True,
            )
    process.kill()
    raise RuntimeError("taskcast hub did not start")
