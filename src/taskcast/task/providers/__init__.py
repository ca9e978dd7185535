"""LLM providers behind one small interface (``Provider``).

The SDK-backed providers are imported on first use: the ``openai`` and
``anthropic`` packages take over a second to import, which a hub or a scripted
task should not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskcast.task.providers.base import Provider, ProviderError
from taskcast.task.providers.scripted import ScriptedProvider

if TYPE_CHECKING:
    from taskcast.task.providers.anthropic_messages import AnthropicProvider
    from taskcast.task.providers.openai_chat import OpenAIChatProvider

__all__ = [
    "AnthropicProvider",
    "OpenAIChatProvider",
    "Provider",
    "ProviderError",
    "ScriptedProvider",
]


def __getattr__(name: str) -> Any:
    if name == "OpenAIChatProvider":
        from taskcast.task.providers.openai_chat import OpenAIChatProvider

        return OpenAIChatProvider
    if name == "AnthropicProvider":
        from taskcast.task.providers.anthropic_messages import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(name)
