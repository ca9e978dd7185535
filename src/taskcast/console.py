"""Readable one-line renderings of events for the terminal (listen, run, demo)."""

from __future__ import annotations

import datetime
from typing import Any

from rich.text import Text

COLOURS = {
    "api_action": "bold cyan",
    "tool_executed": "yellow",
    "llm_usage": "magenta",
    "task_started": "bold blue",
    "task_completed": "bold green",
    "task_failed": "bold red",
    "task_aborted": "bold red",
    "api_retry": "red",
}


def event_line(frame: dict[str, Any], width: int = 160) -> Text:
    kind = str(frame.get("type", "?"))
    payload = frame.get("payload") if isinstance(frame.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    line = Text()
    if isinstance(frame.get("seq"), int):
        line.append(f"#{frame['seq']:<5} ", style="dim")
    stamp = payload.get("timestamp")
    if isinstance(stamp, int):
        clock = datetime.datetime.fromtimestamp(stamp / 1000).strftime("%H:%M:%S.%f")[:-3]
        line.append(f"{clock} ", style="dim")
    line.append(f"{kind:<15}", style=COLOURS.get(kind, "white"))
    task_id = payload.get("taskId")
    if isinstance(task_id, str):
        line.append(f" {task_id[:12]:<12}", style="dim")
    line.append(" " + summary(kind, payload)[:width])
    return line


def summary(kind: str, payload: dict[str, Any]) -> str:
    if kind == "api_action":
        return str(payload.get("message", "")).replace("\n", " ")
    if kind == "tool_executed":
        mark = "ok" if payload.get("success") else "FAILED"
        output = str(payload.get("output", "")).replace("\n", " ")
        return (
            f"{payload.get('tool')}({payload.get('arguments', '')}) {mark} "
            f"in {payload.get('durationMs', 0)} ms → {output}"
        )
    if kind == "llm_usage":
        return (
            f"{payload.get('provider')}/{payload.get('model')}: {payload.get('inputTokens')} in, "
            f"{payload.get('outputTokens')} out, {payload.get('latencyMs')} ms"
        )
    if kind == "task_started":
        return f"{payload.get('provider')}/{payload.get('model')}: {payload.get('prompt', '')}"
    if kind == "task_completed":
        return f"{payload.get('result', '')} ({payload.get('turns')} turns)"
    if kind in ("task_failed", "task_aborted"):
        return str(payload.get("error", ""))
    return " ".join(f"{k}={v}" for k, v in payload.items() if k not in ("taskId", "timestamp"))
