"""The one small interface every LLM provider implements."""

from __future__ import annotations

from typing import Protocol

from taskcast.task.conversation import AssistantTurn, Message, ToolSpec

# Local servers (Ollama, vLLM, test servers) need no key, but the SDKs insist on one.
NO_API_KEY = "not-needed"


class ProviderError(Exception):
    """A failed API request. ``transient`` ones (network, 429, 5xx) are retried."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class Provider(Protocol):
    name: str  # as OpenTelemetry's gen_ai.provider.name: "openai", "anthropic", ...
    model: str

    async def complete(
        self, system: str, messages: list[Message], tools: list[ToolSpec]
    ) -> AssistantTurn:
        """One API request; raises ProviderError on failure."""
        ...
