"""A provider that replays a JSON script of assistant turns (demo, tests, CI).

Script format — a list of turns, or ``{"model": ..., "turns": [...]}``; a turn is::

    {"text": "...", "tool_calls": [{"name": "write_to_file", "arguments": {...}}],
     "usage": {"input_tokens": 10, "output_tokens": 5}, "delay": 0.1}

or a failure to simulate: ``{"error": "overloaded", "transient": true, "times": 2}``
(fails that many requests, then moves on). The turn to play is chosen by how many
assistant messages the history already holds, so a resumed task continues the script.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from taskcast.task.conversation import AssistantTurn, Message, ToolCall, ToolSpec, Usage
from taskcast.task.providers.base import ProviderError


class ScriptedProvider:
    name = "scripted"

    def __init__(self, turns: list[dict[str, Any]], model: str = "scripted") -> None:
        self.turns = turns
        self.model = model
        self._failures: dict[int, int] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedProvider:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict):
            return cls(data["turns"], data.get("model", "scripted"))
        return cls(data)

    async def complete(
        self, system: str, messages: list[Message], tools: list[ToolSpec]
    ) -> AssistantTurn:
        started = time.monotonic()
        index = sum(1 for m in messages if m["role"] == "assistant")
        # Skip over error entries already "used up" earlier in this script.
        position = 0
        turn: dict[str, Any] | None = None
        played = 0
        while position < len(self.turns):
            candidate = self.turns[position]
            if "error" in candidate:
                failed = self._failures.get(position, 0)
                if failed < candidate.get("times", 1) and played == index:
                    self._failures[position] = failed + 1
                    raise ProviderError(
                        candidate["error"],
                        transient=candidate.get("transient", True),
                        status=candidate.get("status"),
                    )
                position += 1
                continue
            if played == index:
                turn = candidate
                break
            played += 1
            position += 1
        if turn is None:
            raise ProviderError("the script has no more turns", transient=False)
        if delay := turn.get("delay"):
            await asyncio.sleep(delay)
        calls = [
            ToolCall(call.get("id", f"call_{index}_{n}"), call["name"], call.get("arguments", {}))
            for n, call in enumerate(turn.get("tool_calls", []))
        ]
        usage = turn.get("usage", {})
        return AssistantTurn(
            text=turn.get("text", ""),
            tool_calls=calls,
            usage=Usage(
                usage.get("input_tokens", 0),
                usage.get("output_tokens", 0),
                usage.get("cached_tokens", 0),
            ),
            finish_reason="tool_calls" if calls else "stop",
            model=self.model,
            latency_ms=int((time.monotonic() - started) * 1000),
        )
