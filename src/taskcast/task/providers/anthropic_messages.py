"""Anthropic Messages through the official ``anthropic`` SDK (streaming or not)."""

from __future__ import annotations

import os
import time
from typing import Any

import anthropic

from taskcast.task.conversation import AssistantTurn, Message, ToolCall, ToolSpec, Usage
from taskcast.task.providers.base import NO_API_KEY, ProviderError


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        stream: bool = True,
        timeout: float = 600.0,
        max_tokens: int = 4096,
    ) -> None:
        self.model = model
        self.stream = stream
        self.max_tokens = max_tokens
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key or os.environ.get("ANTHROPIC_API_KEY") or NO_API_KEY,
            # The SDK adds /v1/messages itself: accept a base URL with or without /v1.
            base_url=base_url.rstrip("/").removesuffix("/v1") if base_url else None,
            max_retries=0,
            timeout=timeout,
        )

    async def complete(
        self, system: str, messages: list[Message], tools: list[ToolSpec]
    ) -> AssistantTurn:
        started = time.monotonic()
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": to_anthropic_messages(messages),
        }
        if system:
            request["system"] = system
        if tools:
            request["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
        try:
            if self.stream:
                async with self.client.messages.stream(**request) as stream:
                    response = await stream.get_final_message()
            else:
                response = await self.client.messages.create(**request)
        except anthropic.APIStatusError as exc:
            raise ProviderError(
                f"{exc.status_code}: {exc.message}",
                transient=is_transient(exc),
                status=exc.status_code,
            ) from exc
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
            raise ProviderError(str(exc), transient=True) from exc
        except anthropic.AnthropicError as exc:
            raise ProviderError(str(exc), transient=False) from exc
        text = "".join(block.text for block in response.content if block.type == "text")
        calls = [
            ToolCall(
                block.id, block.name, dict(block.input) if isinstance(block.input, dict) else {}
            )
            for block in response.content
            if block.type == "tool_use"
        ]
        usage = response.usage
        return AssistantTurn(
            text=text,
            tool_calls=calls,
            usage=Usage(
                usage.input_tokens or 0,
                usage.output_tokens or 0,
                getattr(usage, "cache_read_input_tokens", 0) or 0,
            ),
            finish_reason=response.stop_reason or "end_turn",
            model=response.model or self.model,
            latency_ms=int((time.monotonic() - started) * 1000),
        )


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral history → Anthropic turns (tool results travel in user turns)."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.get("content"):
                blocks.append({"type": "text", "text": message["content"]})
            for call in message.get("tool_calls", []):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["name"],
                        "input": call["arguments"],
                    }
                )
            converted.append(
                {"role": "assistant", "content": blocks or [{"type": "text", "text": "(no text)"}]}
            )
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": message["content"],
                "is_error": bool(message.get("is_error")),
            }
            if (
                converted
                and converted[-1]["role"] == "user"
                and isinstance(converted[-1]["content"], list)
            ):
                converted[-1]["content"].append(block)
            else:
                converted.append({"role": "user", "content": [block]})
        else:
            converted.append(
                {"role": "user", "content": [{"type": "text", "text": message["content"]}]}
            )
    return converted


# Error types the API sends, also as an SSE ``error`` event after HTTP 200 has been sent,
# that mean "try again" rather than "this request is wrong".
TRANSIENT_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


def is_transient(exc: anthropic.APIStatusError) -> bool:
    if exc.status_code in (429, 529) or exc.status_code >= 500:
        return True
    if exc.status_code >= 400:
        return False  # the HTTP status is the answer (a 400 is this request's fault)
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    return isinstance(error, dict) and error.get("type") in TRANSIENT_ERROR_TYPES
