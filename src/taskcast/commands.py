"""Task commands on the wire (pure): the closed sets and the payload check.

Commands are ordinary events: ``task_command`` on ``control.<taskId>``, payload
``{"taskId", "action", "requestId"?, "text"?, "reason"?}``. The hub refuses a malformed
one with ``invalid_event`` (``command_payload_error``), so nothing malformed is stored;
publishing one needs the token's ``control`` claim. docs/orchestration.md.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

COMMAND_TYPE = "task_command"
MAX_TEXT = 100_000


class CommandAction(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    REPLY = "reply"
    ABORT = "abort"
    MESSAGE = "message"


class RequestKind(StrEnum):
    APPROVAL = "approval"
    QUESTION = "question"


class Rejection(StrEnum):
    """Why a command changed nothing (the ``reason`` of ``command_rejected``)."""

    ALREADY_RESOLVED = "already_resolved"
    UNKNOWN_REQUEST = "unknown_request"
    TASK_ENDED = "task_ended"
    WRONG_KIND = "wrong_kind"  # approve/deny for a question, reply for an approval


class RemoteEvent(StrEnum):
    """The events a Task publishes on ``tasks.<taskId>`` for remote orchestration."""

    APPROVAL_REQUESTED = "approval_requested"
    QUESTION_ASKED = "question_asked"
    APPROVAL_RESOLVED = "approval_resolved"
    QUESTION_ANSWERED = "question_answered"
    USER_MESSAGE = "user_message"
    COMMAND_REJECTED = "command_rejected"


_NEEDS_REQUEST = {CommandAction.APPROVE, CommandAction.DENY, CommandAction.REPLY}
_NEEDS_TEXT = {CommandAction.REPLY, CommandAction.MESSAGE}
_ACTIONS = frozenset(action.value for action in CommandAction)


def command_payload_error(payload: dict[str, Any]) -> str | None:
    """Why a ``task_command`` payload is invalid (None when it is fine)."""
    raw_action = payload.get("action")
    if not isinstance(raw_action, str) or raw_action not in _ACTIONS:
        return f"'action' must be one of {sorted(_ACTIONS)}"
    action = CommandAction(raw_action)
    if not isinstance(payload.get("taskId"), str) or not payload["taskId"]:
        return "'taskId' (a string) is required"
    request_id = payload.get("requestId")
    if action in _NEEDS_REQUEST and (not isinstance(request_id, str) or not request_id):
        return f"{action.value} needs a string 'requestId'"
    text = payload.get("text")
    if action in _NEEDS_TEXT and (not isinstance(text, str) or not text.strip()):
        return f"{action.value} needs a non-empty string 'text'"
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
        return f"'text' must be a string of at most {MAX_TEXT} characters"
    reason = payload.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        return "'reason' must be a string of at most 2000 characters"
    return None


def command_fields(
    action: str,
    request_id: str | None = None,
    text: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A command payload without ``taskId``: the action and whichever fields are given."""
    fields: dict[str, Any] = {"action": CommandAction(action).value}
    for key, value in (("requestId", request_id), ("text", text), ("reason", reason)):
        if value:
            fields[key] = value
    return fields
