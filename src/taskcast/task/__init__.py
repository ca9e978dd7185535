"""The agent loop: a ``Task`` orchestrating LLM requests and tool operations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskcast.task.approval import ApprovalPolicy
from taskcast.task.conversation import AssistantTurn, ToolCall, Usage
from taskcast.task.providers import Provider, ProviderError, ScriptedProvider
from taskcast.task.task import Task, TaskResult

if TYPE_CHECKING:
    from taskcast.task.providers import AnthropicProvider, OpenAIChatProvider

__all__ = [
    "AnthropicProvider",
    "ApprovalPolicy",
    "AssistantTurn",
    "OpenAIChatProvider",
    "Provider",
    "ProviderError",
    "ScriptedProvider",
    "Task",
    "TaskResult",
    "ToolCall",
    "Usage",
]


def __getattr__(name: str) -> Any:
    if name in ("AnthropicProvider", "OpenAIChatProvider"):
        from taskcast.task import providers

        return getattr(providers, name)
    raise AttributeError(name)
