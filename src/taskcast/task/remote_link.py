"""Remote orchestration, the thin I/O layer: a Task's link to its control channel.

It follows ``control.<taskId>`` through the Task's ``CommunicationService`` (same
connection, resumed with ``since`` after any reconnect), hands each delivered command
from the client thread to the Task's event loop, lets ``RemoteControl`` decide, and
wakes whoever waits for that decision. Asking (an approval, a question) publishes the
request and waits without blocking the loop, racing a local terminal answer when there
is one; a timeout denies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from taskcast.channels import control_channel
from taskcast.client.resume import ResumePoint
from taskcast.client.service import LOG_CHANGED
from taskcast.commands import COMMAND_TYPE, RemoteEvent, RequestKind
from taskcast.ids import random_id
from taskcast.task.remote import Command, Decision, RemoteControl

log = logging.getLogger("taskcast.task")

Emit = Callable[[str, dict[str, Any]], None]
LOCAL_USER = "terminal"  # ``by`` for an answer typed at the agent's own terminal
NOBODY = "taskcast"  # ``by`` for a decision nobody made (a timeout)


class ControlSource(Protocol):
    """What the link needs of a communication service (``CommunicationService`` has it)."""

    def on(self, frame_type: str, handler: Callable[[dict[str, Any]], None]) -> None: ...

    def off(self, frame_type: str, handler: Callable[[dict[str, Any]], None]) -> None: ...

    def follow(self, pattern: str, since: int | ResumePoint | None = None) -> None: ...

    def unfollow(self, pattern: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request was settled: the answer and who gave it."""

    approved: bool
    answer: str | None
    by: str
    reason: str | None = None


class RemoteLink:
    def __init__(
        self,
        task_id: str,
        service: ControlSource,
        emit: Emit,
        *,
        timeout: float = 600.0,
        since: int = 0,
        log_id: str | None = None,
        on_abort: Callable[[str, str | None], None] | None = None,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        self.task_id = task_id
        self.channel = control_channel(task_id)
        self.service = service
        self.emit = emit
        self.timeout = timeout
        self.control = RemoteControl(last_seq=since)
        self.log_id = log_id  # the log the control seqs belong to (learnt when followed)
        self.on_abort = on_abort
        self.on_applied = on_applied
        self.messages: list[tuple[str, str]] = []  # (text, by), for the next request
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.service.on(COMMAND_TYPE, self._from_client_thread)
        self.service.on("subscribed", self._from_client_thread)
        self.service.on(LOG_CHANGED, self._from_client_thread)
        self.service.follow(self.channel, ResumePoint(self.control.last_seq, self.log_id))

    def stop(self) -> None:
        """The task ended: stop following, and fail nothing that still waits."""
        self.control.ended = True
        self.service.unfollow(self.channel)
        for kind in (COMMAND_TYPE, "subscribed", LOG_CHANGED):
            self.service.off(kind, self._from_client_thread)
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The requests that wait for an answer."""
        return [
            {"requestId": request.request_id, "kind": request.kind.value, **request.details}
            for request in self.control.pending.values()
        ]

    # --- asking ---------------------------------------------------------------

    async def request_approval(
        self, details: dict[str, Any], local: Awaitable[bool] | None = None
    ) -> Outcome:
        """Publish ``approval_requested`` and wait for the first decision."""
        return await self._ask(RequestKind.APPROVAL, details, local)

    async def ask_question(
        self, question: str, options: list[str] | None, local: Awaitable[str | None] | None
    ) -> Outcome:
        details: dict[str, Any] = {"question": question}
        if options:
            details["options"] = options
        return await self._ask(RequestKind.QUESTION, details, local)

    async def _ask(
        self, kind: RequestKind, details: dict[str, Any], local: Awaitable[Any] | None
    ) -> Outcome:
        request_id = random_id()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._waiting[request_id] = future
        self.control.open(request_id, kind, details)
        event = (
            RemoteEvent.APPROVAL_REQUESTED
            if kind is RequestKind.APPROVAL
            else RemoteEvent.QUESTION_ASKED
        )
        self.emit(event.value, {"requestId": request_id, **details})
        local_task = asyncio.ensure_future(local) if local is not None else None
        try:
            async with asyncio.timeout(self.timeout or None):
                while True:
                    waiters: set[asyncio.Future[Any]] = {future}
                    if local_task is not None:
                        waiters.add(local_task)
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    if future.done():
                        return future.result()
                    assert local_task is not None
                    answer = local_task.result() if not local_task.cancelled() else None
                    local_task = None
                    if answer is not None and self.control.pending.get(request_id):
                        return self._settle_locally(kind, request_id, answer)
        except TimeoutError:
            return self._settle_locally(kind, request_id, None, reason="timeout")
        finally:
            self._waiting.pop(request_id, None)
            if local_task is not None:
                local_task.cancel()

    def _settle_locally(
        self, kind: RequestKind, request_id: str, answer: Any, reason: str | None = None
    ) -> Outcome:
        """An answer that did not come through the hub (the terminal, a timeout)."""
        self.control.settle(request_id)
        by = LOCAL_USER if reason is None else NOBODY
        if kind is RequestKind.APPROVAL:
            approved = answer is True
            self.emit(
                RemoteEvent.APPROVAL_RESOLVED.value,
                {
                    "requestId": request_id,
                    "decision": "approve" if approved else "deny",
                    "by": by,
                    "reason": reason,
                },
            )
            return Outcome(approved, None, by, reason)
        text = answer if isinstance(answer, str) else None
        self.emit(
            RemoteEvent.QUESTION_ANSWERED.value,
            {"requestId": request_id, "answer": text, "by": by, "reason": reason},
        )
        return Outcome(text is not None, text, by, reason)

    # --- commands -------------------------------------------------------------

    def _from_client_thread(self, frame: dict[str, Any]) -> None:
        if frame.get("channel") != self.channel or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the task is over
            self._loop.call_soon_threadsafe(self.apply, frame)

    def apply(self, frame: dict[str, Any]) -> None:
        """Apply one delivered command (on the Task's loop); note the control log's id."""
        kind = frame.get("type")
        if kind == "subscribed" or kind == LOG_CHANGED:
            if kind == LOG_CHANGED:  # another log: its commands are all new to this task
                self.control.last_seq = 0
            found = frame.get("logId")
            if isinstance(found, str) and found != self.log_id:
                self.log_id = found
                if self.on_applied is not None:
                    self.on_applied(self.control.last_seq)
            return
        command = Command.from_event(frame)
        if command is None:
            return
        decision = self.control.apply(command)
        if decision is None:
            return  # this event was already applied
        if self.on_applied is not None:
            self.on_applied(self.control.last_seq)
        self._carry_out(command, decision)

    def _carry_out(self, command: Command, decision: Decision) -> None:
        if decision.event_type is not None:
            self.emit(decision.event_type.value, decision.payload)
        if decision.message is not None:
            self.messages.append((decision.message, command.by))
        if decision.abort and self.on_abort is not None:
            self.on_abort(command.by, command.reason)
        if decision.resolves is not None:
            future = self._waiting.get(decision.resolves)
            if future is not None and not future.done():
                future.set_result(
                    Outcome(
                        bool(decision.approved) if decision.answer is None else True,
                        decision.answer,
                        command.by,
                        command.reason,
                    )
                )
