"""Where each delivery's CPU goes: Linux ``perf`` sampling of the server's processes.

``Recording`` samples every thread of the given processes, kernel and user stacks,
until stopped; ``breakdown`` turns the samples into CPU µs per delivery — in all, in the
kernel, and for the busiest symbols — so two points (say 1,000 and 50,000
subscribers) compare directly. ``perf`` samples on its software clock here (no
hardware counters in this VM): the event count is CPU time in nanoseconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

_TOTAL = re.compile(r"^# Event count \(approx\.\): (\d+)", re.MULTILINE)
_SYMBOL = re.compile(r"^\s+([\d.]+)%\s+\[(k|\.)\]\s+(\S+)", re.MULTILINE)


class Recording:
    """Sampling that has begun when the constructor returns: perf starts with its events
    off and turns them on through its control FIFO, answering once it has (attaching to
    a few busy processes takes it a good part of a second — a short point would lose
    its start)."""

    def __init__(self, pids: list[int], path: Path) -> None:
        if shutil.which("perf") is None:
            raise SystemExit("--profile needs Linux perf (Debian: apt-get install linux-perf)")
        self.path = path
        fifos = Path(tempfile.mkdtemp(prefix="taskcast-perf-"))
        control, ack = fifos / "control", fifos / "ack"
        os.mkfifo(control)
        os.mkfifo(ack)
        targets = ",".join(map(str, pids))
        command = ["perf", "record", "-q", "-g", "-D", "-1", "-p", targets, "-o", str(path)]
        self._process = subprocess.Popen(
            [*command, "--control", f"fifo:{control},{ack}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            to_perf = self._open_control(control)
            with os.fdopen(to_perf, "w") as writer, open(ack) as from_perf:
                writer.write("enable\n")
                writer.flush()
                if from_perf.readline().strip() != "ack":
                    raise RuntimeError("perf did not start sampling")
        finally:
            shutil.rmtree(fifos)  # perf keeps its ends open; the names are no longer needed

    def _open_control(self, control: Path) -> int:
        """The control FIFO's write end, once perf has opened it (or perf's failure)."""
        while True:
            try:
                return os.open(control, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: perf has not opened it yet
                if self._process.poll() is not None:
                    raise RuntimeError("perf record failed to start") from None
                time.sleep(0.01)

    def stop(self) -> Path:
        self._process.send_signal(signal.SIGINT)
        self._process.wait(60)
        return self.path


def breakdown(path: Path, deliveries: int, top: int = 6) -> list[str]:
    """Lines: sampled CPU µs per delivery, its kernel part, and the ``top`` symbols."""
    command = ["perf", "report", "-i", str(path), "--no-children", "--sort", "sym"]
    report = subprocess.run(
        [*command, "--stdio", "-g", "none"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = _TOTAL.search(report)
    if found is None or not deliveries:
        return ["(no samples)"]
    total_us = int(found.group(1)) / 1000
    symbols = [(float(pct), kind == "k", name) for pct, kind, name in _SYMBOL.findall(report)]
    kernel = sum(pct for pct, in_kernel, _ in symbols if in_kernel)

    def per_delivery(pct: float) -> float:
        return pct / 100 * total_us / deliveries

    lines = [
        f"sampled {per_delivery(100):.3f} µs/delivery: kernel {per_delivery(kernel):.3f}, "
        f"user {per_delivery(100 - kernel):.3f}"
    ]
    for pct, in_kernel, name in symbols[:top]:
        where = "kernel" if in_kernel else "user"
        lines.append(f"  {per_delivery(pct):.3f} µs  {where:6s} {name}")
    return lines
