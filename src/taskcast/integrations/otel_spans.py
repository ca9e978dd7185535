"""Tasks as traces (pure: no I/O, no OpenTelemetry import).

``TraceBuilder`` folds a task's events, in seq order, into spans that follow the
OpenTelemetry GenAI semantic conventions: a root ``invoke_agent`` span per task (sent
when the task ends), a ``chat`` child per model response (an ``api_action`` and its
``llm_usage``: the next one of the task, other events between them or not) and an
``execute_tool`` child per tool run. Trace and span ids
are derived from the task id and the event's seq, so a follower that restarts from its
cursor rebuilds exactly the spans it had not sent yet; the builder's state is plain
JSON, saved with the cursor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from taskcast.vocabulary import FINAL_STATUSES, EventType

MAX_ATTRIBUTE_TEXT = 1000
MS = 1_000_000  # nanoseconds


@dataclass(slots=True)
class SpanSpec:
    """One finished span, in the terms of the OTel SDK's ``ReadableSpan``."""

    name: str
    trace_id: int  # 128 bits
    span_id: int  # 64 bits
    parent_id: int | None
    start_ns: int
    end_ns: int
    attributes: dict[str, str | int | float | bool]
    error: str | None = None  # status ERROR with this description
    events: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)


def _id(text: str, bits: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1  # an all-zero id is invalid


def trace_id_of(task_id: str) -> int:
    return _id(f"taskcast-trace:{task_id}", 128)


def root_span_id_of(task_id: str) -> int:
    return _id(f"taskcast-root:{task_id}", 64)


def child_span_id_of(task_id: str, seq: int) -> int:
    return _id(f"taskcast-span:{task_id}:{seq}", 64)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return text if len(text) <= MAX_ATTRIBUTE_TEXT else text[: MAX_ATTRIBUTE_TEXT - 1] + "…"


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class TraceBuilder:
    """Feed it delivered events (with ``seq``); it returns the spans each one finishes."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        # Open tasks by id: what the root span and a pending response still need.
        self.tasks: dict[str, dict[str, Any]] = dict((state or {}).get("tasks", {}))

    def state(self) -> dict[str, Any]:
        return {"tasks": self.tasks}

    def feed(self, frame: dict[str, Any]) -> list[SpanSpec]:
        payload = frame.get("payload")
        seq = frame.get("seq")
        if not isinstance(payload, dict) or not isinstance(seq, int):
            return []
        task_id = payload.get("taskId")
        if not isinstance(task_id, str) or not task_id:
            return []
        kind = str(frame.get("type"))
        at_ms = _int(payload.get("timestamp"))
        task = self.tasks.get(task_id)
        if task is None:
            task = self.tasks[task_id] = {
                "start": at_ms,
                "last": at_ms,
                "provider": None,
                "model": None,
                "agent": None,
                "prompt": None,
                "inputTokens": 0,
                "outputTokens": 0,
                "responses": 0,
                "tools": 0,
                "pending": None,  # an api_action waiting for its llm_usage
                "handoffs": [],
            }
        spans: list[SpanSpec] = []
        # A response's span closes with its own usage — the llm_usage that follows its
        # api_action, whatever comes in between (history_appended, approvals) — or, when
        # it has none, at the next response or at the task's end.
        if kind == EventType.LLM_USAGE:
            spans += self._response(task_id, task, payload)
            task["inputTokens"] += _int(payload.get("inputTokens"))
            task["outputTokens"] += _int(payload.get("outputTokens"))
        elif kind == EventType.API_ACTION or kind in FINAL_STATUSES:
            spans += self._response(task_id, task, None)  # the one before had no usage
        if kind == EventType.TASK_STARTED:
            task.update(
                start=at_ms,
                provider=payload.get("provider"),
                model=payload.get("model"),
                agent=payload.get("agent"),
                prompt=_text(payload.get("prompt")),
            )
        elif kind == EventType.API_ACTION:
            task["pending"] = {
                "seq": seq,
                "at": at_ms,
                "after": task["last"],  # the request went out after the event before it
                "message": _text(payload.get("message")),
            }
        elif kind == EventType.TOOL_EXECUTED:
            spans.append(self._tool(task_id, task, seq, at_ms, payload))
        elif kind == EventType.AGENT_HANDOFF:
            task["handoffs"].append(
                [at_ms, _text(payload.get("fromAgent")), _text(payload.get("toAgent"))]
            )
            task["agent"] = payload.get("toAgent") or task["agent"]
        elif kind in FINAL_STATUSES:
            spans.append(self._root(task_id, task, kind, at_ms, payload))
            del self.tasks[task_id]
            return spans
        task["last"] = max(task["last"], at_ms)
        return spans

    def _response(
        self, task_id: str, task: dict[str, Any], usage: dict[str, Any] | None
    ) -> list[SpanSpec]:
        pending = task.get("pending")
        if pending is None:
            return []
        task["pending"] = None
        task["responses"] += 1
        end = pending["at"]
        latency = _int((usage or {}).get("latencyMs"))
        start = end - latency if latency else min(pending.get("after", end), end)
        model = (usage or {}).get("model") or task["model"] or "unknown"
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": str(model),
            "gen_ai.conversation.id": task_id,
            "taskcast.message": pending["message"],
            "taskcast.seq": pending["seq"],
        }
        provider = (usage or {}).get("provider") or task["provider"]
        if provider:
            attributes["gen_ai.provider.name"] = str(provider)
        if usage is not None:
            attributes["gen_ai.response.model"] = str(usage.get("responseModel") or model)
            attributes["gen_ai.usage.input_tokens"] = _int(usage.get("inputTokens"))
            attributes["gen_ai.usage.output_tokens"] = _int(usage.get("outputTokens"))
            if usage.get("finishReason"):
                attributes["gen_ai.response.finish_reasons"] = str(usage["finishReason"])
        return [
            SpanSpec(
                f"chat {model}",
                trace_id_of(task_id),
                child_span_id_of(task_id, pending["seq"]),
                root_span_id_of(task_id),
                start * MS,
                end * MS,
                attributes,
            )
        ]

    def _tool(
        self, task_id: str, task: dict[str, Any], seq: int, at_ms: int, payload: dict[str, Any]
    ) -> SpanSpec:
        task["tools"] += 1
        name = _text(payload.get("tool")) or "tool"
        success = payload.get("success") is not False
        return SpanSpec(
            f"execute_tool {name}",
            trace_id_of(task_id),
            child_span_id_of(task_id, seq),
            root_span_id_of(task_id),
            (at_ms - _int(payload.get("durationMs"))) * MS,
            at_ms * MS,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.conversation.id": task_id,
                "taskcast.tool.arguments": _text(payload.get("arguments")),
                "taskcast.tool.approved": payload.get("approved") is not False,
                "taskcast.seq": seq,
            },
            error=None if success else _text(payload.get("output")) or "tool failed",
        )

    def _root(
        self, task_id: str, task: dict[str, Any], kind: str, at_ms: int, payload: dict[str, Any]
    ) -> SpanSpec:
        agent = task["agent"] or task_id
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": str(agent),
            "gen_ai.conversation.id": task_id,
            "gen_ai.usage.input_tokens": task["inputTokens"],
            "gen_ai.usage.output_tokens": task["outputTokens"],
            "taskcast.task.id": task_id,
            "taskcast.task.status": str(FINAL_STATUSES[kind]),
            "taskcast.responses": task["responses"],
            "taskcast.tools": task["tools"],
        }
        if task["model"]:
            attributes["gen_ai.request.model"] = str(task["model"])
        if task["provider"]:
            attributes["gen_ai.provider.name"] = str(task["provider"])
        if task["prompt"]:
            attributes["taskcast.prompt"] = task["prompt"]
        error = None
        if kind != EventType.TASK_COMPLETED:
            error = _text(payload.get("error") or payload.get("reason") or kind)
        return SpanSpec(
            f"invoke_agent {agent}",
            trace_id_of(task_id),
            root_span_id_of(task_id),
            None,
            task["start"] * MS,
            at_ms * MS,
            attributes,
            error=error,
            events=[
                ("agent_handoff", at * MS, {"from": source, "to": target})
                for at, source, target in task["handoffs"]
            ],
        )
