"""Remote orchestration, the task's side: what a delivered command does to a task.

A running Task follows its control channel and feeds each delivered command to
``RemoteControl.apply``, which decides — first decision wins, each event id applied
once — and says which event answers it. No I/O here: the Task (``task.py``) waits and
emits. The command's wire format is ``taskcast.commands``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskcast.commands import (
    COMMAND_TYPE,
    CommandAction,
    Rejection,
    RemoteEvent,
    RequestKind,
    command_payload_error,
)


@dataclass(frozen=True, slots=True)
class Command:
    """One delivered command, with who sent it (the hub-recorded publisher)."""

    event_id: str
    seq: int
    action: CommandAction
    by: str
    request_id: str | None = None
    text: str | None = None
    reason: str | None = None

    @classmethod
    def from_event(cls, frame: dict[str, Any]) -> Command | None:
        """The command in a delivered ``task_command`` frame; None if it is not one."""
        payload = frame.get("payload")
        if frame.get("type") != COMMAND_TYPE or not isinstance(payload, dict):
            return None
        if command_payload_error(payload) is not None:
            return None
        return cls(
            event_id=str(frame.get("id", "")),
            seq=frame["seq"] if isinstance(frame.get("seq"), int) else 0,
            action=CommandAction(payload["action"]),
            by=str(frame.get("publisher") or "anonymous"),
            request_id=payload.get("requestId"),
            text=payload.get("text"),
            reason=payload.get("reason"),
        )


@dataclass(slots=True)
class PendingRequest:
    request_id: str
    kind: RequestKind
    details: dict[str, Any]  # tool/arguments/summary, or question/options


@dataclass(frozen=True, slots=True)
class Decision:
    """What applying a command does: the answer event to publish (type, payload), and
    the effect on the task (resolve a request, abort, or add a user message)."""

    event_type: RemoteEvent | None
    payload: dict[str, Any]
    resolves: str | None = None  # the requestId it settles
    approved: bool | None = None  # for approvals
    answer: str | None = None  # for questions
    abort: bool = False
    message: str | None = None


@dataclass
class RemoteControl:
    """A task's open requests and the commands already applied (a small state machine)."""

    pending: dict[str, PendingRequest] = field(default_factory=dict)
    resolved: set[str] = field(default_factory=set)
    applied: set[str] = field(default_factory=set)  # command event ids
    last_seq: int = 0  # the last command seq applied: where to follow from on resume
    ended: bool = False

    def open(self, request_id: str, kind: RequestKind, details: dict[str, Any]) -> None:
        self.pending[request_id] = PendingRequest(request_id, kind, details)

    def settle(self, request_id: str) -> None:
        """A request settled locally (a terminal answer, a timeout)."""
        if self.pending.pop(request_id, None) is not None:
            self.resolved.add(request_id)

    def apply(self, command: Command) -> Decision | None:
        """Decide a command; None when this event id was already applied."""
        if command.event_id in self.applied:
            return None
        self.applied.add(command.event_id)
        self.last_seq = max(self.last_seq, command.seq)
        if self.ended:
            return _rejected(command, Rejection.TASK_ENDED)
        if command.action is CommandAction.ABORT:
            return Decision(None, {}, abort=True)
        if command.action is CommandAction.MESSAGE:
            text = command.text or ""
            return Decision(
                RemoteEvent.USER_MESSAGE, {"text": text, "by": command.by}, message=text
            )
        request_id = command.request_id or ""
        request = self.pending.get(request_id)
        if request is None:
            reason = (
                Rejection.ALREADY_RESOLVED
                if request_id in self.resolved
                else Rejection.UNKNOWN_REQUEST
            )
            return _rejected(command, reason)
        if command.action is CommandAction.REPLY:
            if request.kind is not RequestKind.QUESTION:
                return _rejected(command, Rejection.WRONG_KIND)
            self.settle(request_id)
            return Decision(
                RemoteEvent.QUESTION_ANSWERED,
                {"requestId": request_id, "answer": command.text, "by": command.by},
                resolves=request_id,
                answer=command.text,
            )
        if request.kind is not RequestKind.APPROVAL:
            return _rejected(command, Rejection.WRONG_KIND)
        self.settle(request_id)
        approved = command.action is CommandAction.APPROVE
        return Decision(
            RemoteEvent.APPROVAL_RESOLVED,
            {
                "requestId": request_id,
                "decision": command.action.value,
                "by": command.by,
                "reason": command.reason,
            },
            resolves=request_id,
            approved=approved,
        )


def _rejected(command: Command, reason: Rejection) -> Decision:
    return Decision(
        RemoteEvent.COMMAND_REJECTED,
        {
            "action": command.action.value,
            "requestId": command.request_id,
            "commandId": command.event_id,
            "by": command.by,
            "reason": reason.value,
        },
    )
