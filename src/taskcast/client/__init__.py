"""The client SDK: publish with an outbox and acks, subscribe with resume.

Names are imported on first use: ``client.outbox`` and ``client.resume`` are pure and
serve code that must start fast (a Claude Code hook) without importing aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskcast.client.outbox import Outbox as Outbox
    from taskcast.client.service import CommunicationService as CommunicationService
    from taskcast.client.subscriber import subscribe as subscribe

_HOMES = {"CommunicationService": "service", "Outbox": "outbox", "subscribe": "subscriber"}

__all__ = ["CommunicationService", "Outbox", "subscribe"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"taskcast.client.{home}"), name)
