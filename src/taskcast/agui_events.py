"""A taskcast task as an AG-UI 1.0 run (pure: no I/O).

``AguiRun`` folds a task's delivered events, in seq order — first the log as it stands
(``fold``), then live (``feed``) — into AG-UI events: the conversation rebuilt from
``history_appended`` (a ``MESSAGES_SNAPSHOT`` of what came before, then
``TEXT_MESSAGE_*``, ``TOOL_CALL_*`` and ``TOOL_CALL_RESULT`` as it grows), a turn as a
``STEP_STARTED``/``STEP_FINISHED``, the task summary as ``STATE_SNAPSHOT``, every other
taskcast event as ``CUSTOM`` (name = its type), and the run's end: ``RUN_FINISHED`` when
the task completes (or is aborted: outcome ``cancelled``) or waits for a person (outcome
``interrupt``, one per open approval or question), ``RUN_ERROR`` when it fails.

A task that publishes no history (the seed's bare ``api_action``, a ``TaskRecorder``)
still reads as a conversation: each ``api_action`` is an assistant message.

Every AG-UI event carries the seq of the taskcast event it comes from (its SSE ``id``),
so a reader that reconnects with ``Last-Event-ID`` goes on after it. Only the shapes
AG-UI 1.0 defines are made: no extra fields, no nulls for absent optionals.

``run_input_problem`` and ``commands_for`` read the client's ``RunAgentInput``: answers
to interrupts (``resume``) become ``approve``/``deny``/``reply`` commands, and user
messages the task has not seen become ``message`` commands (steering).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from taskcast.commands import CommandAction, RemoteEvent
from taskcast.summaries import TaskSummaries
from taskcast.task.history import HISTORY_EVENT, HistoryBuilder, HistoryGap
from taskcast.vocabulary import EventType

PROTOCOL_VERSION = "1.0"
AgEvent = dict[str, Any]

APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "reason": {"type": "string"},
    },
    "required": ["approved"],
}

# Represented by messages, not as CUSTOM (their content is in the messages).
_AS_MESSAGES = frozenset({EventType.API_ACTION, EventType.HISTORY_APPENDED})
_ENDS: dict[str, str] = {
    EventType.TASK_COMPLETED: "completed",
    EventType.TASK_ABORTED: "cancelled",
    EventType.TASK_FAILED: "failed",
}


def history_message_id(index: int) -> str:
    return f"h{index}"


def action_message_id(seq: int) -> str:
    return f"a{seq}"


def agui_message(index: int, message: dict[str, Any]) -> AgEvent | None:
    """A history message (as a Task keeps it) as an AG-UI message; None for a role AG-UI
    has no message for."""
    role = message.get("role")
    message_id = history_message_id(index)
    content = _text(message.get("content"))
    if role == "user":
        return {"id": message_id, "role": "user", "content": content}
    if role in ("system", "developer"):
        return {"id": message_id, "role": role, "content": content}
    if role == "assistant":
        shaped: AgEvent = {"id": message_id, "role": "assistant"}
        if content:
            shaped["content"] = content
        calls = [
            _tool_call(call) for call in message.get("tool_calls") or [] if isinstance(call, dict)
        ]
        if calls:
            shaped["toolCalls"] = calls
        return shaped
    if role == "tool":
        # No ``error`` field, though a failed tool's message could carry one: the live
        # ``TOOL_CALL_RESULT`` cannot, and a viewer who joined late must hold the same
        # conversation as one who watched it happen. The content says what went wrong.
        return {
            "id": message_id,
            "role": "tool",
            "content": content,
            "toolCallId": str(message.get("tool_call_id") or ""),
        }
    return None


def _tool_call(call: dict[str, Any]) -> AgEvent:
    arguments = call.get("arguments")
    return {
        "id": str(call.get("id") or ""),
        "type": "function",
        "function": {
            "name": str(call.get("name") or "tool"),
            "arguments": arguments if isinstance(arguments, str) else _compact(arguments or {}),
        },
    }


def _compact(value: Any) -> str:
    """JSON as JavaScript's ``JSON.stringify`` writes it: what a front-end compares."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in value
        )
    return "" if value is None else json.dumps(value, ensure_ascii=False)


class Position(NamedTuple):
    """Where a reader stands in a run's stream, from the SSE id it saw last (see
    ``event_ids``): every AG-UI event made from the taskcast event at ``seq`` (or, with
    ``opening``, the run's opening at ``seq``) up to its ``part``-th; ``part`` 0: all."""

    seq: int
    part: int = 0
    opening: bool = False


def event_ids(seq: int, count: int, opening: bool = False) -> list[str]:
    """The SSE ids of ``count`` AG-UI events made at ``seq``: ``<seq>`` for the last,
    ``<seq>.<k>`` (the run's opening: ``<seq>.s<k>``) for the k-th before it — so an id
    names one event exactly and a reconnect after any of them goes on exactly there."""
    mark = "s" if opening else ""
    return [f"{seq}.{mark}{k}" for k in range(1, count)] + [str(seq)] if count else []


Identified = tuple[str, AgEvent]  # (its SSE id, the AG-UI event)


def identified(
    seq: int, events: list[AgEvent], opening: bool = False, skip: int = 0
) -> list[Identified]:
    """The AG-UI events made at ``seq`` with their ids, from the ``skip``-th on."""
    return list(zip(event_ids(seq, len(events), opening), events, strict=True))[skip:]


def parse_position(value: str) -> Position | None:
    """The position an SSE id (``Last-Event-ID``) names; None for one this door never gave."""
    head, dot, part = value.partition(".")
    opening = part.startswith("s")
    digits = part[1:] if opening else part
    if not _canonical(head, 19) or (dot and (not _canonical(digits, 6) or digits == "0")):
        return None
    return Position(int(head), int(digits), opening) if dot else Position(int(head))


def _canonical(digits: str, longest: int) -> bool:
    """ASCII digits as ``str(int)`` writes them (so one position has one id)."""
    return (
        0 < len(digits) <= longest
        and digits.isascii()
        and digits.isdigit()
        and (digits == "0" or digits[0] != "0")
    )


class AguiRun:
    """One AG-UI run over a task's events. What it sends is a function of the log alone
    (and of the run's input): the state is the task summary folded here, as of each event
    (by the publisher's ``timestamp``), not the hub's summary at the time of sending — so
    the events a reader gets after a reconnect are the very ones it would have got."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.history = HistoryBuilder()
        self.summaries = TaskSummaries(max_tasks=1)
        self.ts = 0  # ms, the latest event's timestamp
        self.messages: list[AgEvent] = []  # what MESSAGES_SNAPSHOT restates
        self.with_history = False  # the task publishes history_appended
        self.pending: dict[str, dict[str, Any]] = {}  # open requests by requestId
        self.settled: set[str] = set()
        self.ended: str | None = None  # completed | cancelled | failed
        self.end_payload: dict[str, Any] = {}
        self.turns = 0  # assistant responses so far: the open step is the last one
        self.step_open = False  # this run sent STEP_STARTED for turn ``turns``
        self.finished = False  # RUN_FINISHED or RUN_ERROR made: the stream ends

    def fold(self, event: dict[str, Any]) -> None:
        """Take an event that came before this run (or before where a reader stands)."""
        self._take(event, emit=False)

    def settle(self, request_ids: set[str]) -> None:
        """Requests this run's input answered: the task has the commands and its
        ``approval_resolved`` may come later — they are not open any more for this run."""
        for request_id in request_ids:
            self.pending.pop(request_id, None)
            self.settled.add(request_id)

    def start(self) -> list[AgEvent]:
        """The run's opening, after ``fold``: RUN_STARTED, the messages so far, the state,
        the turn under way; for a task that ended or waits for someone, at once its end."""
        opening: list[AgEvent] = [
            {
                "type": "RUN_STARTED",
                "threadId": self.thread_id,
                "runId": self.run_id,
                "protocolVersion": PROTOCOL_VERSION,
            },
            {"type": "MESSAGES_SNAPSHOT", "messages": list(self.messages)},
        ]
        ending = self._ending()  # the state, then the end
        if ending:
            return opening + ending
        opening.append(self._state())
        if self.ended is None and self.turns:
            opening.append(self._open_step())
        return opening

    def enter(self) -> None:
        """Stand where a reader of this run stands, after ``fold``: in a live run, the
        turn under way has its step open (the opening or the response sent it)."""
        self.step_open = self.turns > 0 and self.ended is None

    def resume(self, position: Position, held: dict[str, Any] | None) -> list[Identified]:
        """Where a reader who reconnects at ``position`` goes on, after ``fold`` of the log
        up to ``position.seq`` — or, inside the events of one taskcast event
        (``part`` > 0, not the opening), up to before it: ``held`` is that event. Then
        the reader gets what follows ``position.seq`` live."""
        if position.opening:
            return identified(position.seq, self.start(), opening=True, skip=position.part)
        self.enter()
        if position.part and held is not None:
            return identified(position.seq, self.feed(held), skip=position.part)
        return []

    @property
    def over(self) -> bool:
        """Whether the log, as folded, already holds this run's end (a reader who
        reconnects after it has nothing more to get)."""
        return self.finished or self.ended is not None or bool(self.pending)

    def feed(self, event: dict[str, Any]) -> list[AgEvent]:
        """The AG-UI events of one taskcast event, live (none once the run finished)."""
        if self.finished:
            return []
        return self._take(event, emit=True) + self._ending()

    # --- inside ------------------------------------------------------------------------------

    def _take(self, event: dict[str, Any], *, emit: bool) -> list[AgEvent]:
        kind = event.get("type")
        payload = event.get("payload")
        seq = event.get("seq")
        if not isinstance(payload, dict) or not isinstance(kind, str) or not isinstance(seq, int):
            return []
        if isinstance(payload.get("timestamp"), int):
            self.ts = max(self.ts, payload["timestamp"])
        self.summaries.observe(
            seq,
            self.ts,
            kind,
            self.thread_id,
            _str(event.get("source")),
            b"",
            str(event.get("channel") or ""),
            payload,
        )
        out: list[AgEvent] = []
        if kind == HISTORY_EVENT:
            self.with_history = True
            before = len(self.history.messages)
            try:
                completed = self.history.add(payload, seq)
            except HistoryGap:
                completed = None
            if completed is not None:
                shaped = agui_message(before, completed)
                if shaped is not None:
                    out += self._add_message(shaped, emit)
        elif kind == EventType.API_ACTION:
            if not self.with_history:
                shaped = {
                    "id": action_message_id(seq),
                    "role": "assistant",
                    "content": str(payload.get("message", "")),
                }
                out += self._add_message(shaped, emit)
        else:
            out.append({"type": "CUSTOM", "name": kind, "value": payload})
            if kind in (RemoteEvent.APPROVAL_REQUESTED, RemoteEvent.QUESTION_ASKED):
                request_id = payload.get("requestId")
                if isinstance(request_id, str) and request_id not in self.settled:
                    self.pending[request_id] = {"kind": kind, **payload}
            elif kind in (RemoteEvent.APPROVAL_RESOLVED, RemoteEvent.QUESTION_ANSWERED):
                request_id = str(payload.get("requestId"))
                self.pending.pop(request_id, None)
                self.settled.add(request_id)
            elif kind in _ENDS:
                self.ended = _ENDS[kind]
                self.end_payload = payload
                self.pending.clear()
            elif kind in (EventType.TASK_STARTED, EventType.TASK_RESUMED):
                self.ended = None  # running (again)
            if kind in (EventType.LLM_USAGE, EventType.TOOL_EXECUTED):
                out.append(self._state())
        return out if emit else []

    def _add_message(self, message: AgEvent, emit: bool) -> list[AgEvent]:
        """Keep a message; an assistant response is a new turn, and its step."""
        self.messages.append(message)
        out: list[AgEvent] = []
        if message["role"] == "assistant":
            out += self._close_step()
            self.turns += 1
            if emit:
                out.append(self._open_step())
        return out + self._message_events(message) if emit else []

    def _message_events(self, message: AgEvent) -> list[AgEvent]:
        """A message as it arrives: its text, its tool calls, or (a tool's) its result."""
        role = message["role"]
        message_id = message["id"]
        if role == "tool":
            return [
                {
                    "type": "TOOL_CALL_RESULT",
                    "messageId": message_id,
                    "toolCallId": message["toolCallId"],
                    "content": message["content"],
                    "role": "tool",
                }
            ]
        out: list[AgEvent] = []
        if message.get("content") or role != "assistant":
            out += [
                {"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": role},
                {
                    "type": "TEXT_MESSAGE_CONTENT",
                    "messageId": message_id,
                    "delta": message.get("content", ""),
                },
                {"type": "TEXT_MESSAGE_END", "messageId": message_id},
            ]
        for call in message.get("toolCalls", []):
            out += [
                {
                    "type": "TOOL_CALL_START",
                    "toolCallId": call["id"],
                    "toolCallName": call["function"]["name"],
                    "parentMessageId": message_id,
                },
                {
                    "type": "TOOL_CALL_ARGS",
                    "toolCallId": call["id"],
                    "delta": call["function"]["arguments"],
                },
                {"type": "TOOL_CALL_END", "toolCallId": call["id"]},
            ]
        return out

    def _open_step(self) -> AgEvent:
        self.step_open = True
        return {"type": "STEP_STARTED", "stepName": f"turn {self.turns}"}

    def _close_step(self) -> list[AgEvent]:
        if not self.step_open:
            return []
        self.step_open = False
        return [{"type": "STEP_FINISHED", "stepName": f"turn {self.turns}"}]

    def _state(self) -> AgEvent:
        summary = self.summaries.get(self.thread_id)
        snapshot = summary.to_json(self.ts) if summary is not None else {}
        return {"type": "STATE_SNAPSHOT", "snapshot": snapshot}

    def _ending(self) -> list[AgEvent]:
        """When the task ended or waits for a person: close what is open, end the run."""
        if self.finished or (self.ended is None and not self.pending):
            return []
        self.finished = True
        out = self._close_step()
        if self.ended == "failed":
            error = str(self.end_payload.get("error") or "the task failed")
            return [*out, self._state(), {"type": "RUN_ERROR", "message": error}]
        finished: AgEvent = {
            "type": "RUN_FINISHED",
            "threadId": self.thread_id,
            "runId": self.run_id,
        }
        if self.ended == "cancelled":
            finished["outcome"] = {"type": "cancelled"}
        elif self.ended == "completed":
            finished["outcome"] = {"type": "success"}
            result = self.end_payload.get("result")
            if isinstance(result, str):
                finished["result"] = result
        else:
            finished["outcome"] = {
                "type": "interrupt",
                "interrupts": [interrupt(request) for request in self.pending.values()],
            }
        return [*out, self._state(), finished]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def interrupt(request: dict[str, Any]) -> AgEvent:
    """An open approval or question as an AG-UI interrupt (id = its requestId)."""
    shaped: AgEvent = {"id": str(request["requestId"])}
    if request["kind"] == RemoteEvent.APPROVAL_REQUESTED:
        shaped["reason"] = "tool_call"
        shaped["message"] = (
            f"Allow {request.get('tool', 'the tool')}: {request.get('summary', '')}".strip()
        )
        if isinstance(request.get("toolCallId"), str) and request["toolCallId"]:
            shaped["toolCallId"] = request["toolCallId"]
        shaped["responseSchema"] = APPROVAL_SCHEMA
    else:
        shaped["reason"] = "input_required"
        shaped["message"] = str(request.get("question", ""))
        answer: AgEvent = {"type": "string"}
        if isinstance(request.get("options"), list) and request["options"]:
            answer["enum"] = [str(option) for option in request["options"]]
        shaped["responseSchema"] = {
            "type": "object",
            "properties": {"answer": answer},
            "required": ["answer"],
        }
    return shaped


# --- the client's input -----------------------------------------------------------------


def run_input_problem(body: Any, task_id: str) -> str | None:
    """Why ``body`` is not a ``RunAgentInput`` for this task (None when it is one)."""
    if not isinstance(body, dict):
        return "the body must be a RunAgentInput object"
    for key in ("threadId", "runId"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"'{key}' (a string) is required"
    if body["threadId"] != task_id:
        return (
            f"threadId {body['threadId']!r} is not this task ({task_id!r}): threadId = the task id"
        )
    for key in ("messages", "tools", "context"):
        if key in body and not isinstance(body[key], list):
            return f"'{key}' must be a list"
    messages = body.get("messages", [])
    if any(
        not isinstance(m, dict)
        or not isinstance(m.get("id"), str)
        or not isinstance(m.get("role"), str)
        for m in messages
    ):
        return "every message needs a string 'id' and 'role'"
    resume = body.get("resume")
    if resume is not None:
        if not isinstance(resume, list):
            return "'resume' must be a list"
        for entry in resume:
            if not isinstance(entry, dict) or not isinstance(entry.get("interruptId"), str):
                return "every resume entry needs a string 'interruptId'"
            if entry.get("status") not in ("resolved", "cancelled"):
                return "a resume entry's 'status' is 'resolved' or 'cancelled'"
            if (
                "payload" in entry
                and entry["payload"] is not None
                and not isinstance(entry["payload"], dict)
            ):
                return "a resume entry's 'payload' must be an object"
    return None


def resumed_ids(body: dict[str, Any]) -> set[str]:
    """The interrupts a (valid) run input answers."""
    return {str(entry["interruptId"]) for entry in body.get("resume") or []}


class ResumeRefused(ValueError):
    """A resume entry that answers nothing open (``status``: the HTTP answer)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def commands_for(
    body: dict[str, Any],
    task_id: str,
    pending: dict[str, dict[str, Any]],
    settled: set[str],
) -> list[dict[str, Any]]:
    """The commands a run's input asks for, as ``task_command`` frames (their ids made from
    the input, so a client that sends the same input again changes nothing): each resume
    entry → approve / deny / reply; each user message that is none of the task's own →
    ``message``. ``pending``: the task's open requests (requestId → the summary's view).
    Raises ``ResumeRefused`` for an interrupt that is unknown or already answered."""
    frames: list[dict[str, Any]] = []
    for entry in body.get("resume") or []:
        request_id = entry["interruptId"]
        request = pending.get(request_id)
        if request is None:
            if request_id in settled:
                raise ResumeRefused(
                    409, "already_resolved", f"interrupt {request_id} was already answered"
                )
            raise ResumeRefused(
                404, "not_found", f"no open interrupt {request_id} on task {task_id}"
            )
        payload = entry.get("payload") or {}
        fields: dict[str, Any] = {"taskId": task_id, "requestId": request_id}
        if request.get("kind") == RemoteEvent.QUESTION_ASKED:
            answer = payload.get("answer")
            if entry["status"] == "cancelled" or not isinstance(answer, str) or not answer.strip():
                raise ResumeRefused(
                    400,
                    "invalid_input",
                    f"interrupt {request_id} is a question: answer with payload.answer (a string)",
                )
            fields.update(action=CommandAction.REPLY.value, text=answer)
        else:
            approved = entry["status"] == "resolved" and payload.get("approved") is True
            if entry["status"] == "resolved" and not isinstance(payload.get("approved"), bool):
                raise ResumeRefused(
                    400,
                    "invalid_input",
                    f"interrupt {request_id}: payload.approved (a boolean) is required",
                )
            fields["action"] = (CommandAction.APPROVE if approved else CommandAction.DENY).value
            reason = payload.get("reason") if entry["status"] == "resolved" else "cancelled"
            if isinstance(reason, str) and reason:
                fields["reason"] = reason[:2000]
        frames.append(
            {"type": "task_command", "id": f"agui-{task_id}-{request_id}", "payload": fields}
        )
    for message in body.get("messages") or []:
        if message.get("role") != "user" or _is_ours(message["id"]):
            continue
        text = _text(message.get("content")).strip()
        if text:
            frames.append(
                {
                    "type": "task_command",
                    "id": f"agui-{task_id}-say-{message['id']}"[:200],
                    "payload": {
                        "taskId": task_id,
                        "action": CommandAction.MESSAGE.value,
                        "text": text,
                    },
                }
            )
    return frames


def _is_ours(message_id: str) -> bool:
    """Ids this door gave (``h<index>``, ``a<seq>``): messages the task already has."""
    return len(message_id) > 1 and message_id[0] in "ha" and message_id[1:].isdigit()
