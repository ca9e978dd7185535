"""Hands a Task's events to its CommunicationService without ever slowing the Task.

taskcast's own service is non-blocking, so it is called inline. Any other service
is called from one worker thread (or, for an ``async def send_message``, as its own
asyncio task): a service that blocks or raises costs the Task nothing but a warning.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
from typing import Any, Protocol

log = logging.getLogger("taskcast.task")

MAX_QUEUED = 10_000


class MessageSink(Protocol):
    """What a Task needs of a communication service."""

    def send_message(self, message: dict[str, Any]) -> Any: ...


class Emitter:
    def __init__(self, service: MessageSink | None) -> None:
        self.service = service
        self.failures = 0
        self._mode = "none"
        self._queue: queue.Queue[dict[str, Any]] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        if service is None:
            return
        if inspect.iscoroutinefunction(service.send_message):
            self._mode = "async"
        elif getattr(service, "nonblocking", False):
            self._mode = "inline"
        else:
            self._mode = "thread"
            self._queue = queue.Queue(MAX_QUEUED)
            threading.Thread(target=self._worker, name="taskcast-emitter", daemon=True).start()

    def emit(self, message: dict[str, Any]) -> None:
        """Hand over one message; returns at once whatever the service does."""
        if self._mode == "none":
            return
        try:
            if self._mode == "inline":
                assert self.service is not None
                self.service.send_message(message)
            elif self._mode == "thread":
                assert self._queue is not None
                self._queue.put_nowait(message)
            else:
                assert self.service is not None
                task = asyncio.get_running_loop().create_task(self.service.send_message(message))
                self._pending.add(task)
                task.add_done_callback(self._async_done)
        except queue.Full:
            self._failed(message, "the service is not keeping up; message dropped")
        except Exception as exc:
            self._failed(message, exc)

    def _worker(self) -> None:
        assert self._queue is not None and self.service is not None
        while True:
            message = self._queue.get()
            try:
                self.service.send_message(message)
            except Exception as exc:
                self._failed(message, exc)

    def _async_done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._failed({}, exc)

    def _failed(self, message: dict[str, Any], error: object) -> None:
        self.failures += 1
        log.warning(
            "communication service failed to send %s: %s", message.get("type", "a message"), error
        )
