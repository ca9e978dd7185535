"""Approval policies: which tool calls run at once and which need a yes first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from taskcast.task.conversation import ToolCall
from taskcast.task.tools import is_read_only

Confirm = Callable[[ToolCall], Awaitable[bool]]
MODES = ("auto", "read-only", "ask", "remote")
# One safe default for the Python API and the CLI: reads run, writes and commands ask.
DEFAULT_APPROVAL = "read-only"
# Tools that only talk to the user never need approval, whatever the mode.
_CONVERSATIONAL = frozenset({"ask_followup_question", "attempt_completion"})


@dataclass(frozen=True)
class ApprovalPolicy:
    """``auto``: everything runs. ``read-only``: reads run, writes and commands ask.
    ``ask``: every tool that acts asks. ``remote``: like ``read-only``, and the asking
    goes to the hub (``approval_requested``; any approver with the ``control`` claim
    answers; ``confirm``, when given, races it at the terminal). With no one to ask
    (``confirm`` None, not remote) the answer is no, and the model is told so."""

    mode: str = DEFAULT_APPROVAL
    confirm: Confirm | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"approval mode must be one of {MODES}, not {self.mode!r}")

    def needs_confirmation(self, call: ToolCall) -> bool:
        if self.mode == "auto" or call.name in _CONVERSATIONAL:
            return False
        if self.mode in ("read-only", "remote"):
            return not is_read_only(call.name)
        return True

    async def approve(self, call: ToolCall) -> bool:
        if not self.needs_confirmation(call):
            return True
        if self.confirm is None:
            return False
        return await self.confirm(call)
