"""taskcast: every API action of your AI agents, delivered live and durably over websockets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CommunicationService", "Task", "TaskRecorder", "TaskResult", "__version__"]

if TYPE_CHECKING:
    from taskcast.client import CommunicationService
    from taskcast.recorder import TaskRecorder
    from taskcast.task import Task, TaskResult


def __getattr__(name: str) -> Any:
    # Imported on first use, so `taskcast hub` does not load the agent's dependencies.
    if name == "CommunicationService":
        from taskcast.client import CommunicationService

        return CommunicationService
    if name == "TaskRecorder":
        from taskcast.recorder import TaskRecorder

        return TaskRecorder
    if name in ("Task", "TaskResult"):
        from taskcast import task

        return getattr(task, name)
    raise AttributeError(name)
