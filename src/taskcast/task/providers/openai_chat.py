"""OpenAI-compatible Chat Completions through the official ``openai`` SDK.

``base_url`` reaches OpenAI, Ollama, vLLM, LM Studio and other compatible servers.
Retries are the Task's job (one policy for every provider), so the SDK's are off.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import openai

from taskcast.task.conversation import AssistantTurn, Message, ToolCall, ToolSpec, Usage
from taskcast.task.providers.base import NO_API_KEY, ProviderError


class OpenAIChatProvider:
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        stream: bool = True,
        timeout: float = 600.0,
        max_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.stream = stream
        self.max_tokens = max_tokens
        self.client = openai.AsyncOpenAI(
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or NO_API_KEY,
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
        )

    async def complete(
        self, system: str, messages: list[Message], tools: list[ToolSpec]
    ) -> AssistantTurn:
        started = time.monotonic()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(system, messages),
        }
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if self.max_tokens is not None:
            request["max_tokens"] = self.max_tokens
        try:
            if self.stream:
                turn = await self._streamed(request)
            else:
                turn = await self._whole(request)
        except openai.APIStatusError as exc:
            raise ProviderError(
                f"{exc.status_code}: {exc.message}",
                transient=exc.status_code == 429 or exc.status_code >= 500,
                status=exc.status_code,
            ) from exc
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ProviderError(str(exc), transient=True) from exc
        except openai.OpenAIError as exc:
            raise ProviderError(str(exc), transient=False) from exc
        turn.latency_ms = int((time.monotonic() - started) * 1000)
        return turn

    async def _whole(self, request: dict[str, Any]) -> AssistantTurn:
        response = await self.client.chat.completions.create(**request)
        if not response.choices:
            raise ProviderError("response has no choices", transient=True)
        choice = response.choices[0]
        calls = [
            ToolCall(call.id, call.function.name, _arguments(call.function.arguments))
            for call in (choice.message.tool_calls or [])
            if call.type == "function"
        ]
        return AssistantTurn(
            text=choice.message.content or "",
            tool_calls=calls,
            usage=_usage(response.usage),
            finish_reason=choice.finish_reason or "stop",
            model=response.model or self.model,
        )

    async def _streamed(self, request: dict[str, Any]) -> AssistantTurn:
        stream = await self.client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: Any = None
        finish_reason = "stop"
        model = self.model
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                for part in delta.tool_calls or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    if part.id:
                        call["id"] = part.id
                    if part.function is not None:
                        call["name"] += part.function.name or ""
                        call["arguments"] += part.function.arguments or ""
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        return AssistantTurn(
            text="".join(text),
            tool_calls=[
                ToolCall(c["id"], c["name"], _arguments(c["arguments"]))
                for _, c in sorted(calls.items())
            ],
            usage=_usage(usage),
            finish_reason=finish_reason,
            model=model,
        )


def to_openai_messages(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        role = message["role"]
        if role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.get("content") or None}
            if message.get("tool_calls"):
                entry["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {
                            "name": call["name"],
                            "arguments": json.dumps(call["arguments"]),
                        },
                    }
                    for call in message["tool_calls"]
                ]
            converted.append(entry)
        elif role == "tool":
            converted.append(
                {
                    "role": "tool",
                    "tool_call_id": message["tool_call_id"],
                    "content": message["content"],
                }
            )
        else:
            converted.append({"role": role, "content": message["content"]})
    return converted


def _arguments(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", 0) if details is not None else 0
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0, cached or 0)
