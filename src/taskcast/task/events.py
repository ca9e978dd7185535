"""The events a Task emits, as plain payloads (no I/O).

``api_action`` is the seed contract: exactly ``taskId``, ``message``, ``timestamp``.
Everything richer travels as its own event type on the same channel. ``llm_usage``
follows the OpenTelemetry GenAI semantic conventions, in camelCase (see docs/task.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: a Claude Code hook builds payloads without dataclasses
    from taskcast.task.conversation import AssistantTurn


class CallLike(Protocol):
    """A tool call as rendered here (``ToolCall``, or an adapter's own)."""

    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> dict[str, Any]: ...


MAX_SUMMARY = 200
MAX_OUTPUT = 2000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_tool_calls(calls: Sequence[CallLike]) -> str:
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
    return response_message(turn.text, turn.tool_calls)


def response_message(text: str, tool_calls: Sequence[CallLike]) -> str:
    """A model response as the seed's ``message``: its text, else its tool calls rendered,
    never empty — for the Task and for every integration alike."""
    if text.strip():
        return text
    if tool_calls:
        return render_tool_calls(tool_calls)
    return "(empty response)"


def api_action_payload(task_id: str, turn: AssistantTurn) -> dict[str, Any]:
    return {"taskId": task_id, "message": api_action_message(turn), "timestamp": now_ms()}


def llm_usage_payload(
    task_id: str, provider: str, model: str, turn: AssistantTurn
) -> dict[str, Any]:
    return usage_payload(
        task_id,
        provider,
        model,
        response_model=turn.model or model,
        input_tokens=turn.usage.input_tokens,
        output_tokens=turn.usage.output_tokens,
        cached_tokens=turn.usage.cached_tokens,
        latency_ms=turn.latency_ms,
        finish_reason=turn.finish_reason,
    )


def usage_payload(
    task_id: str,
    provider: str,
    model: str,
    *,
    response_model: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_tokens: int = 0,
    latency_ms: int | None = None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """``llm_usage``: one model response's tokens (OpenTelemetry GenAI names in comments)."""
    return {
        "taskId": task_id,
        "provider": provider,  # gen_ai.provider.name
        "model": model,  # gen_ai.request.model
        "responseModel": response_model or model,  # gen_ai.response.model
        "inputTokens": input_tokens,  # gen_ai.usage.input_tokens
        "outputTokens": output_tokens,  # gen_ai.usage.output_tokens
        "cachedTokens": cached_tokens,  # gen_ai.usage.cache_read.input_tokens
        "latencyMs": latency_ms,
        "finishReason": finish_reason,  # gen_ai.response.finish_reasons
        "timestamp": now_ms(),
    }


def tool_executed_payload(
    tool: str,
    arguments: dict[str, Any],
    output: str,
    *,
    success: bool,
    approved: bool = True,
    duration_ms: int = 0,
    truncated: bool = False,
) -> dict[str, Any]:
    """``tool_executed``: one tool run, its arguments summarised and its output cut."""
    return {
        "tool": tool,
        "arguments": summarize_arguments(arguments),
        "success": success,
        "approved": approved,
        "durationMs": duration_ms,
        "output": truncate(output, MAX_OUTPUT),
        "truncated": truncated or len(output) > MAX_OUTPUT,
    }


def final_payload(
    status: str,
    *,
    turns: int,
    duration_ms: int,
    input_tokens: int,
    output_tokens: int,
    result: str = "",
    error: str = "",
) -> dict[str, Any]:
    """The payload of the event that ends a task (completed, failed, aborted)."""
    payload: dict[str, Any] = {
        "turns": turns,
        "durationMs": duration_ms,
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
    }
    if status == "completed":
        payload["result"] = truncate(result, MAX_OUTPUT)
    elif status == "failed":
        payload["error"] = truncate(error, MAX_OUTPUT)
    return payload


MAX_APPROVAL_ARGUMENTS = 512 * 1024  # characters: well inside the hub's 1 MiB frame limit


def approval_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The full arguments for an approver — unless they would not fit in one event; then
    each long string is cut and ``argumentsTruncated`` says so."""
    if len(json.dumps(arguments, ensure_ascii=False)) <= MAX_APPROVAL_ARGUMENTS:
        return {"arguments": arguments}
    share = MAX_APPROVAL_ARGUMENTS // max(1, len(arguments))
    cut = {
        key: truncate(value, share) if isinstance(value, str) else value
        for key, value in arguments.items()
    }
    return {"arguments": cut, "argumentsTruncated": True}
