"""What publishing costs an agent: the time ``send_message`` takes inside a running Task.

A timing proxy wraps taskcast's CommunicationService (non-blocking, so the Task
calls it inline) and records every call while a scripted Task runs many turns.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from taskcast.client import CommunicationService
from taskcast.task import ScriptedProvider, Task


class TimedService:
    nonblocking = True

    def __init__(self, service: CommunicationService) -> None:
        self.service = service
        self.samples_ns: list[int] = []

    def send_message(self, message: dict[str, Any]) -> None:
        started = time.perf_counter_ns()
        self.service.send_message(message)
        self.samples_ns.append(time.perf_counter_ns() - started)


def measure(url: str, tasks: int = 40, turns: int = 50) -> dict[str, float]:
    """``tasks`` scripted Tasks of ``turns`` turns each (a typical agent run's length),
    publishing through one service; every send_message call is timed."""
    script: list[dict[str, Any]] = [
        {"text": f"turn {n}: " + "x" * 150, "tool_calls": [{"name": "list_files", "arguments": {}}]}
        for n in range(turns - 1)
    ]
    script.append(
        {
            "text": "done",
            "tool_calls": [{"name": "attempt_completion", "arguments": {"result": "ok"}}],
        }
    )
    service = CommunicationService(url)
    timed = TimedService(service)

    async def run_all(workdir: str) -> None:
        for _ in range(tasks):
            task = Task(
                ScriptedProvider(script),
                communication_service=timed,
                cwd=workdir,
                history_dir=Path(workdir) / ".history",
                approval="auto",
                max_turns=turns,
            )
            await task.run("benchmark")

    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(run_all(workdir))
    service.close(timeout=5)
    samples = sorted(timed.samples_ns)
    return {
        "calls": len(samples),
        "median_us": statistics.median(samples) / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
    }
