"""Per-task summaries folded from the event log (pure: events in, summaries out).

The hub feeds every stored event through ``TaskSummaries.observe`` (at start-up
from the log, then as events commit), so ``GET /api/tasks`` never scans the log.
Only lifecycle, usage and tool events are decoded; ``api_action`` is counted from
its columns alone, since it is the most frequent event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode

FINAL_STATUSES = {"task_completed": "completed", "task_failed": "failed", "task_aborted": "aborted"}


@dataclass(slots=True)
class TaskSummary:
    task_id: str
    channel: str = ""
    status: str = "running"
    api_actions: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    started_at: int = 0  # ms
    last_activity: int = 0  # ms
    ended_at: int | None = None
    provider: str | None = None
    model: str | None = None
    source: str | None = None
    prompt: str | None = None
    result: str | None = None
    error: str | None = None

    def to_json(self, now_ms: int) -> dict[str, Any]:
        end = self.ended_at if self.ended_at is not None else now_ms
        return {
            "taskId": self.task_id,
            "channel": self.channel,
            "status": self.status,
            "apiActions": self.api_actions,
            "toolCalls": self.tool_calls,
            "toolFailures": self.tool_failures,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cachedTokens": self.cached_tokens,
            "events": self.events,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "startedAt": self.started_at,
            "lastActivity": self.last_activity,
            "endedAt": self.ended_at,
            "durationMs": max(0, end - self.started_at),
            "provider": self.provider,
            "model": self.model,
            "source": self.source,
            "prompt": self.prompt,
            "result": self.result,
            "error": self.error,
        }


class TaskSummaries:
    def __init__(self) -> None:
        self.tasks: dict[str, TaskSummary] = {}

    def observe(
        self,
        seq: int,
        ts: int,
        event_type: str,
        task_id: str | None,
        source: str | None,
        body: bytes,
        channel: str = "",
    ) -> None:
        if task_id is None:
            return
        summary = self.tasks.get(task_id)
        if summary is None:
            summary = self.tasks[task_id] = TaskSummary(
                task_id, channel=channel, first_seq=seq, started_at=ts, source=source
            )
        summary.events += 1
        summary.last_seq = seq
        summary.last_activity = ts
        if event_type == "api_action":
            summary.api_actions += 1
            return
        if event_type not in _DECODED:
            return
        try:
            payload = _decode(body).get("payload", {})
        except (msgspec.DecodeError, AttributeError):
            return
        if not isinstance(payload, dict):
            return
        if event_type == "task_started":
            summary.status = "running"
            summary.ended_at = None
            summary.started_at = min(summary.started_at, ts)
            summary.provider = _str(payload.get("provider")) or summary.provider
            summary.model = _str(payload.get("model")) or summary.model
            summary.prompt = _str(payload.get("prompt")) or summary.prompt
        elif event_type == "llm_usage":
            summary.input_tokens += _int(payload.get("inputTokens"))
            summary.output_tokens += _int(payload.get("outputTokens"))
            summary.cached_tokens += _int(payload.get("cachedTokens"))
            summary.model = _str(payload.get("model")) or summary.model
            summary.provider = _str(payload.get("provider")) or summary.provider
        elif event_type == "tool_executed":
            summary.tool_calls += 1
            if payload.get("success") is False:
                summary.tool_failures += 1
        else:
            summary.status = FINAL_STATUSES[event_type]
            summary.ended_at = ts
            summary.result = _str(payload.get("result"))
            summary.error = _str(payload.get("error"))

    def get(self, task_id: str) -> TaskSummary | None:
        return self.tasks.get(task_id)

    def listing(self, status: str | None = None, limit: int = 500) -> list[TaskSummary]:
        """Most recently active first."""
        chosen = [s for s in self.tasks.values() if status is None or s.status == status]
        chosen.sort(key=lambda s: s.last_seq, reverse=True)
        return chosen[:limit]


_DECODED = frozenset({"task_started", "llm_usage", "tool_executed", *FINAL_STATUSES})


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
