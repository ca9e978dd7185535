"""The agent loop: a ``Task`` orchestrating LLM requests and tool operations.

Its names are imported on first use: the pure modules beside it (``events``, ``history``,
``remote``) serve code that must start fast — a Claude Code hook imports them without
paying for the Task, its providers and their SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskcast.task.approval import ApprovalPolicy as ApprovalPolicy
    from taskcast.task.conversation import AssistantTurn as AssistantTurn
    from taskcast.task.conversation import ToolCall as ToolCall
    from taskcast.task.conversation import Usage as Usage
    from taskcast.task.providers import AnthropicProvider as AnthropicProvider
    from taskcast.task.providers import OpenAIChatProvider as OpenAIChatProvider
    from taskcast.task.providers import Provider as Provider
    from taskcast.task.providers import ProviderError as ProviderError
    from taskcast.task.providers import ScriptedProvider as ScriptedProvider
    from taskcast.task.task import Task as Task
    from taskcast.task.task import TaskResult as TaskResult

# name → the module of taskcast.task that defines it
_HOMES = {
    "ApprovalPolicy": "approval",
    "AssistantTurn": "conversation",
    "ToolCall": "conversation",
    "Usage": "conversation",
    "Provider": "providers",
    "ProviderError": "providers",
    "ScriptedProvider": "providers",
    "AnthropicProvider": "providers",
    "OpenAIChatProvider": "providers",
    "Task": "task",
    "TaskResult": "task",
}

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
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"taskcast.task.{home}"), name)
