"""Readable one-line renderings of events for the terminal (listen, run, demo).

Everything an event carries is someone else's text: control characters (escape
sequences that clear the screen, set the title or write the clipboard with OSC 52)
are shown as visible ``\\xNN`` escapes, never sent to the terminal, and rich markup
in it is never interpreted.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from rich.markup import escape
from rich.text import Text

from taskcast.vocabulary import FINAL_STATUSES, EventType

# Bookkeeping events a person does not read line by line (history_appended carries the
# conversation for followers; `taskcast follow` renders it as a transcript instead).
QUIET_TYPES = frozenset({EventType.HISTORY_APPENDED})


def worth_showing(frame: dict[str, Any]) -> bool:
    return frame.get("type") not in QUIET_TYPES


# C0 controls but newline, DEL, and C1 controls (U+0080..U+009F; U+009B is a CSI).
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` as text that is safe to print: controls become visible escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def markup_safe(value: object) -> str:
    """``printable`` and with rich markup escaped, for use inside markup strings."""
    return escape(printable(value))


COLOURS = {
    "api_action": "bold cyan",
    "tool_executed": "yellow",
    "llm_usage": "magenta",
    "task_started": "bold blue",
    "task_completed": "bold green",
    "task_failed": "bold red",
    "task_aborted": "bold red",
    "api_retry": "red",
    "approval_requested": "bold yellow",
    "question_asked": "bold yellow",
    "approval_resolved": "green",
    "question_answered": "green",
    "user_message": "green",
    "command_rejected": "red",
    "runner_lost": "bold red",
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
    line.append(f"{printable(kind):<15}", style=COLOURS.get(kind, "white"))
    task_id = payload.get("taskId")
    if isinstance(task_id, str):
        line.append(f" {printable(task_id[:12]):<12}", style="dim")
    line.append(" " + printable(summary(kind, payload))[:width])
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
    if kind == "task_failed":
        return str(payload.get("error", ""))
    if kind == "task_aborted":
        return f"by {payload.get('by')}: {payload.get('reason') or payload.get('error') or ''}"
    if kind == "approval_requested":
        return f"{payload.get('tool')}({payload.get('summary', '')}) waits for approval"
    if kind == "approval_resolved":
        return f"{payload.get('decision')} by {payload.get('by')} {payload.get('reason') or ''}"
    if kind == "question_asked":
        return str(payload.get("question", ""))
    if kind == "question_answered":
        return f"{payload.get('by')}: {payload.get('answer')}"
    if kind == "user_message":
        return f"{payload.get('by')}: {payload.get('text')}"
    if kind == "runner_lost":
        return (
            f"runner {payload.get('holder')} stopped renewing its lease after seq "
            f"{payload.get('lastSeq')}: the task is not running anywhere"
        )
    return " ".join(f"{k}={v}" for k, v in payload.items() if k not in ("taskId", "timestamp"))


# What ``taskcast follow`` shows besides the conversation itself.
TRANSCRIPT_EVENTS = frozenset(
    {
        EventType.TASK_STARTED,
        EventType.TASK_RESUMED,
        EventType.APPROVAL_REQUESTED,
        EventType.APPROVAL_RESOLVED,
        EventType.RUNNER_LOST,
        *FINAL_STATUSES,
    }
)


def resume_command(task_id: str, hub: str) -> str:
    """The command that continues a task on this machine, rebuilt from the hub's log."""
    hubs = " ".join(f"--hub {url}" for url in hub.split(",") if url)
    return f"taskcast run - --resume {task_id} {hubs}"


def transcript_line(message: dict[str, Any], width: int = 2000) -> str:
    """One history message as a readable line: who said what, which tools it called."""
    role = str(message.get("role", "?"))
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        names = ", ".join(str((c or {}).get("name", "?")) for c in calls if isinstance(c, dict))
        text = f"{text} [calls {names}]".strip()
    if role == "tool":
        role = f"tool {message.get('name', '')}".strip()
    return printable(f"{role}: {text}")[:width]
