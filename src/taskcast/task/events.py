"""The events a Task emits, as plain payloads (no I/O).

``api_action`` is the seed contract: exactly ``taskId``, ``message``, ``timestamp``.
Everything richer travels as its own event type on the same channel. ``llm_usage``
follows the OpenTelemetry GenAI semantic conventions, in camelCase (see docs/task.md).
"""

from __future__ import annotations

import json
import time
from typing import Any

from taskcast.task.conversation import AssistantTurn, ToolCall

MAX_SUMMARY = 200
MAX_OUTPUT = 2000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_tool_calls(calls: list[ToolCall]) -> str:
    """A compact, readable rendering of tool calls, for tool-only responses."""
    return "; ".join(f"{call.name}({summarize_arguments(call.arguments, 60)})" for call in calls)


def summarize_arguments(arguments: dict[str, Any], value_limit: int = 80) -> str:
    parts = []
    for key, value in arguments.items():
        if isinstance(value, str):  # strings quoted; numbers, booleans, lists as JSON
            shown = json.dumps(truncate(value, value_limit), ensure_ascii=False)
        else:
            shown = truncate(json.dumps(value, ensure_ascii=False), value_limit)
        parts.append(f"{key}={shown}")
    return truncate(", ".join(parts), MAX_SUMMARY)


def api_action_message(turn: AssistantTurn) -> str:
    """The assistant's response as text; never empty."""
    if turn.text.strip():
        return turn.text
    if turn.tool_calls:
        return render_tool_calls(turn.tool_calls)
    return "(empty response)"


def api_action_payload(task_id: str, turn: AssistantTurn) -> dict[str, Any]:
    return {"taskId": task_id, "message": api_action_message(turn), "timestamp": now_ms()}


def llm_usage_payload(
    task_id: str, provider: str, model: str, turn: AssistantTurn
) -> dict[str, Any]:
    return {
        "taskId": task_id,
        "provider": provider,  # gen_ai.provider.name
        "model": model,  # gen_ai.request.model
        "responseModel": turn.model or model,  # gen_ai.response.model
        "inputTokens": turn.usage.input_tokens,  # gen_ai.usage.input_tokens
        "outputTokens": turn.usage.output_tokens,  # gen_ai.usage.output_tokens
        "cachedTokens": turn.usage.cached_tokens,  # gen_ai.usage.cache_read.input_tokens
        "latencyMs": turn.latency_ms,
        "finishReason": turn.finish_reason,  # gen_ai.response.finish_reasons
        "timestamp": now_ms(),
    }
