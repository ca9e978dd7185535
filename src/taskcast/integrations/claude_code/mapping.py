"""Claude Code hook events → taskcast events, and the hooks' answers (pure: no I/O).

One Claude Code session is one task: ``taskId`` = ``session_id``. Each hook call feeds
``Session.on_hook`` the hook's JSON and the transcript bytes the session's file holds
now; it returns the events to publish, in order, and what the hook answers Claude Code.
The ``Session`` is plain JSON, saved between hook calls (each is a process of its own).

What comes from where:
- every API response — an ``assistant`` message of the transcript (JSON Lines; one line
  per content block, grouped by ``message.id``, the usage repeated on each: counted
  once) — gives a seed-exact ``api_action``, its ``history_appended`` and its
  ``llm_usage``, in transcript order, once; the transcript lags (a message is written
  after it streamed), so a message is taken once a later line follows it, or at
  ``Stop``/``SessionEnd``, where ``last_assistant_message`` stands in for a final text
  the transcript does not hold yet (its usage follows when it appears);
- tool results in the transcript give ``history_appended`` (role ``tool``);
- ``UserPromptSubmit``: ``task_started`` (the first prompt) or ``user_message``, and the
  prompt's ``history_appended``; ``PostToolUse``: ``tool_executed``;
- ``SessionEnd``: ``task_completed`` (unless the session was aborted remotely). ``Stop``
  ends a turn, not the task: an interactive session goes on after it.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from taskcast.commands import CommandAction, Rejection, RemoteEvent
from taskcast.task.events import (
    MAX_OUTPUT,
    approval_arguments,
    final_payload,
    response_message,
    summarize_arguments,
    tool_executed_payload,
    truncate,
    usage_payload,
)
from taskcast.task.history import history_payloads
from taskcast.vocabulary import EventType

AGENT = "claude-code"
PROVIDER = "anthropic"
# Tools that change things: asked for with --approve remote unless --approve-tools says.
DEFAULT_APPROVE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit", "Bash")
MAX_APPLIED = 1000  # command ids remembered, against applying one twice

Event = tuple[str, dict[str, Any]]  # (type, payload without taskId/timestamp)


class Session:
    """Where one session's publishing stands (saved as JSON between hook calls). A plain
    class, as every type here: this module is on the hook's path, which must not pay
    for importing ``dataclasses``."""

    FIELDS: dict[str, Any] = {
        "offset": 0,  # transcript bytes taken so far (complete lines, closed messages)
        "started": False,
        "ended": False,
        "prompts": 0,
        "history": 0,  # the next history_appended index
        "counter": 0,  # events made: their ids are cc-<session>-<counter>
        "turns": 0,  # API responses
        "input_tokens": 0,
        "output_tokens": 0,
        "model": None,
        "last_text": "",
        "tool_names": {},  # tool_use_id → name
        "finals": [],  # texts taken from Stop, not yet seen in the transcript
        "control_seq": 0,  # commands read up to this seq of control.<session>
        "applied": [],  # ids of commands applied
        "open_requests": {},  # requestId → tool, while a hook call waits for it
        "resolved": [],  # requestIds settled
        "messages": [],  # [text, by] for the next Stop
        "aborted": None,  # {"by", "reason"} once aborted remotely
    }

    def __init__(self, session_id: str, **saved: Any) -> None:
        self.session_id = session_id
        for name, default in self.FIELDS.items():
            value = saved.get(name, default)
            setattr(
                self,
                name,
                json.loads(json.dumps(value)) if isinstance(value, dict | list) else value,
            )

    offset: int
    started: bool
    ended: bool
    prompts: int
    history: int
    counter: int
    turns: int
    input_tokens: int
    output_tokens: int
    model: str | None
    last_text: str
    tool_names: dict[str, str]
    finals: list[str]
    control_seq: int
    applied: list[str]
    open_requests: dict[str, str]
    resolved: list[str]
    messages: list[list[str]]
    aborted: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            **{name: getattr(self, name) for name in self.FIELDS},
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Session:
        return cls(
            str(saved.get("session_id", "")), **{k: v for k, v in saved.items() if k in cls.FIELDS}
        )

    def event_id(self) -> str:
        """The next event's id: the same for the same event if a crashed hook's work is
        done again (the hub stores an id once)."""
        self.counter += 1
        return f"cc-{self.session_id}-{self.counter}"


# --- the transcript ------------------------------------------------------------------


class ToolCall(NamedTuple):
    """A tool call of a response (what ``task.events`` renders: ``name``, ``arguments``)."""

    id: str
    name: str
    arguments: dict[str, Any]


class Response(NamedTuple):
    """One API response, from its transcript lines."""

    message_id: str
    model: str | None
    text: str
    tool_calls: list[ToolCall]
    usage: dict[str, Any]
    stop_reason: str | None


class ToolResult(NamedTuple):
    tool_use_id: str
    content: str
    is_error: bool


class ModelNamed(NamedTuple):
    """The transcript's ``model`` attachment: the model the session runs on."""

    model: str


Item = Response | ToolResult | ModelNamed


def read_transcript(data: bytes, offset: int, final: bool) -> tuple[list[Item], int]:
    """The responses and tool results after ``offset``, and the offset after them. A
    response is taken once a later line follows it (its lines come together, after it
    streamed), or when ``final``; one still open stays for the next call."""
    items: list[Item] = []
    group: list[dict[str, Any]] = []
    group_start = offset
    position = offset
    end = data.rfind(b"\n") + 1  # complete lines only: the last may be half written
    while position < end:
        line_end = data.index(b"\n", position) + 1
        try:
            line = json.loads(data[position:line_end])
        except ValueError:
            line = {}
        message = line.get("message") if isinstance(line, dict) else None
        kind = None  # attachments, system lines, a subagent's own conversation
        if isinstance(message, dict) and not line.get("isSidechain"):
            kind = line.get("type")
        if kind == "assistant" and isinstance(message, dict):
            if group and group[0].get("id") != message.get("id"):
                items.append(_response(group))
                group = []
            if not group:
                group_start = position
            group.append(message)
        else:
            if group:
                items.append(_response(group))
                group = []
            if kind == "user" and isinstance(message, dict):
                items.extend(_tool_results(message))
            elif isinstance(line, dict) and line.get("type") == "attachment":
                attachment = line.get("attachment") or {}
                identity = attachment.get("identity") if isinstance(attachment, dict) else None
                if isinstance(identity, dict) and isinstance(identity.get("modelId"), str):
                    items.append(ModelNamed(identity["modelId"]))
        position = line_end
    if group:
        if final:
            items.append(_response(group))
        else:
            return items, group_start
    return items, end


def _response(lines: list[dict[str, Any]]) -> Response:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for line in lines:
        content = line.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                arguments = block.get("input")
                calls.append(
                    ToolCall(
                        str(block.get("id", "")),
                        str(block.get("name", "tool")),
                        arguments if isinstance(arguments, dict) else {"input": arguments},
                    )
                )
    last = lines[-1]
    usage = last.get("usage")
    return Response(
        str(lines[0].get("id", "")),
        last.get("model") if isinstance(last.get("model"), str) else None,
        "\n\n".join(texts),
        calls,
        usage if isinstance(usage, dict) else {},
        last.get("stop_reason") if isinstance(last.get("stop_reason"), str) else None,
    )


def _tool_results(message: dict[str, Any]) -> list[ToolResult]:
    content = message.get("content")
    results = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            results.append(
                ToolResult(
                    str(block.get("tool_use_id", "")),
                    _text_of(block.get("content")),
                    block.get("is_error") is True,
                )
            )
    return results


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return "" if content is None else json.dumps(content, ensure_ascii=False)


# --- what each hook publishes --------------------------------------------------------


def transcript_events(session: Session, items: list[Item]) -> list[Event]:
    """The events of what the transcript gained, in its order."""
    events: list[Event] = []
    for item in items:
        if isinstance(item, ModelNamed):
            session.model = item.model
            continue
        if isinstance(item, ToolResult):
            name = session.tool_names.get(item.tool_use_id, "tool")
            events += _history(
                session,
                {
                    "role": "tool",
                    "tool_call_id": item.tool_use_id,
                    "name": name,
                    "content": item.content,
                    "is_error": item.is_error,
                },
            )
            continue
        for call in item.tool_calls:
            session.tool_names[call.id] = call.name
        if item.model:
            session.model = item.model
        if not item.tool_calls and item.text in session.finals:
            session.finals.remove(item.text)  # published at Stop already: only its usage
        else:
            events += _response_events(session, item.text, item.tool_calls)
        events.append(_usage(session, item))
    return events


def _response_events(session: Session, text: str, calls: list[ToolCall]) -> list[Event]:
    session.turns += 1
    if text.strip():
        session.last_text = text
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": call.id, "name": call.name, "arguments": call.arguments} for call in calls
        ]
    # The seed contract: exactly taskId, message, timestamp (added when published).
    seed: Event = (EventType.API_ACTION, {"message": response_message(text, calls)})
    return [seed, *_history(session, message)]


def _usage(session: Session, response: Response) -> Event:
    usage = response.usage
    input_tokens = _int(usage.get("input_tokens"))
    output_tokens = _int(usage.get("output_tokens"))
    session.input_tokens += input_tokens
    session.output_tokens += output_tokens
    model = response.model or session.model or "unknown"
    payload = usage_payload(
        "",
        PROVIDER,
        model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=_int(usage.get("cache_read_input_tokens")),
        finish_reason=response.stop_reason,
    )
    return EventType.LLM_USAGE, _without_envelope(payload)


def _history(session: Session, message: dict[str, Any]) -> list[Event]:
    events: list[Event] = [
        (EventType.HISTORY_APPENDED, p) for p in history_payloads(session.history, message)
    ]
    session.history += 1
    return events


def prompt_events(session: Session, hook: dict[str, Any]) -> list[Event]:
    """``UserPromptSubmit``: the task starts with its first prompt; later ones steer."""
    prompt = str(hook.get("prompt") or "")
    events: list[Event] = []
    session.prompts += 1
    if not session.started:
        events.append(start_event(session, hook, prompt))
    else:
        events.append(
            (RemoteEvent.USER_MESSAGE, {"text": truncate(prompt, MAX_OUTPUT), "by": "user"})
        )
    return events + _history(session, {"role": "user", "content": prompt})


def start_event(session: Session, hook: dict[str, Any], prompt: str = "") -> Event:
    session.started = True
    return (
        EventType.TASK_STARTED,
        {
            "prompt": truncate(prompt, MAX_OUTPUT),
            "provider": PROVIDER,
            "model": session.model or "unknown",
            "agent": AGENT,
            "cwd": str(hook.get("cwd") or ""),
            "systemPrompt": None,
            "instance": f"{AGENT}:{session.session_id}",
        },
    )


def tool_event(hook: dict[str, Any]) -> Event:
    """``PostToolUse`` → ``tool_executed`` (it fires for tools that ran)."""
    response = hook.get("tool_response")
    failed = isinstance(response, dict) and (
        response.get("is_error") is True or response.get("interrupted") is True
    )
    arguments = tool_input(hook)
    return (
        EventType.TOOL_EXECUTED,
        tool_executed_payload(
            str(hook.get("tool_name") or "tool"),
            arguments,
            _text_of(response) if not isinstance(response, dict) else _tool_output(response),
            success=not failed,
            duration_ms=_int(hook.get("duration_ms")),
        ),
    )


def _tool_output(response: dict[str, Any]) -> str:
    if "stdout" in response:  # Bash
        return "\n".join(str(response.get(key) or "") for key in ("stdout", "stderr")).strip()
    for key in ("content", "result", "output"):
        if isinstance(response.get(key), str):
            return str(response[key])
    return json.dumps(response, ensure_ascii=False)[:MAX_OUTPUT]


def stop_final(session: Session, items: list[Item], hook: dict[str, Any]) -> list[Event]:
    """At ``Stop``: the final response from ``last_assistant_message`` when the
    transcript does not hold it yet (its usage comes when it does)."""
    text = hook.get("last_assistant_message")
    if not isinstance(text, str) or not text.strip():
        return []
    if any(
        isinstance(item, Response) and not item.tool_calls and item.text == text for item in items
    ):
        return []
    if text == session.last_text:
        return []
    session.finals.append(text)
    return _response_events(session, text, [])


def end_events(session: Session, hook: dict[str, Any]) -> list[Event]:
    """``SessionEnd``: the task's end, once (an abort already ended it)."""
    if session.ended:
        return []
    session.ended = True
    if session.aborted is not None:
        return []
    payload = final_payload(
        "completed",
        turns=session.turns,
        duration_ms=0,
        input_tokens=session.input_tokens,
        output_tokens=session.output_tokens,
        result=session.last_text,
    )
    payload["reason"] = str(hook.get("reason") or "")
    return [(EventType.TASK_COMPLETED, payload)]


# --- remote approval and steering ----------------------------------------------------


def approval_request(request_id: str, hook: dict[str, Any]) -> Event:
    arguments = tool_input(hook)
    return (
        RemoteEvent.APPROVAL_REQUESTED,
        {
            "requestId": request_id,
            "tool": str(hook.get("tool_name") or "tool"),
            **approval_arguments(arguments),
            "summary": summarize_arguments(arguments),
            "toolCallId": str(hook.get("tool_use_id") or ""),  # the call in the history
        },
    )


def resolution(request_id: str, approved: bool, by: str, reason: str | None) -> Event:
    return (
        RemoteEvent.APPROVAL_RESOLVED,
        {
            "requestId": request_id,
            "decision": "approve" if approved else "deny",
            "by": by,
            "reason": reason,
        },
    )


def denied_tool(hook: dict[str, Any], reason: str) -> Event:
    """A tool that did not run because it was denied (as a Task reports one)."""
    arguments = tool_input(hook)
    return (
        EventType.TOOL_EXECUTED,
        tool_executed_payload(
            str(hook.get("tool_name") or "tool"), arguments, reason, success=False, approved=False
        ),
    )


class Decided(NamedTuple):
    """An approval's outcome, when a command settled it."""

    request_id: str
    approved: bool
    by: str
    reason: str | None


def apply_commands(
    session: Session, commands: list[dict[str, Any]], waiting_for: str | None = None
) -> tuple[list[Event], Decided | None]:
    """Apply delivered ``task_command`` events (seq order): abort and message always;
    approve/deny for ``waiting_for`` (this hook's own request) settle it, for another
    hook's open request are left to that hook, and for anything else are rejected.
    Each command once, whichever hook reads it first."""
    events: list[Event] = []
    decided: Decided | None = None
    for frame in commands:
        seq = frame.get("seq")
        payload = frame.get("payload")
        command_id = str(frame.get("id") or "")
        if not isinstance(payload, dict) or not isinstance(seq, int):
            continue
        request_id = payload.get("requestId")
        action = payload.get("action")
        by = str(frame.get("publisher") or "anonymous")
        reason = payload.get("reason") if isinstance(payload.get("reason"), str) else None
        is_decision = action in (CommandAction.APPROVE, CommandAction.DENY, CommandAction.REPLY)
        if is_decision and request_id in session.open_requests and request_id != waiting_for:
            continue  # another hook call waits for it: its own to apply
        session.control_seq = max(session.control_seq, seq)
        if command_id in session.applied:
            continue
        session.applied = [*session.applied, command_id][-MAX_APPLIED:]
        if session.ended or session.aborted is not None:
            events.append(_rejected(payload, command_id, by, Rejection.TASK_ENDED))
        elif action == CommandAction.ABORT:
            session.aborted = {"by": by, "reason": reason}
            payload_end = final_payload(
                "aborted",
                turns=session.turns,
                duration_ms=0,
                input_tokens=session.input_tokens,
                output_tokens=session.output_tokens,
            )
            events.append((EventType.TASK_ABORTED, {**payload_end, "by": by, "reason": reason}))
            if waiting_for is not None and decided is None:
                decided = Decided(waiting_for, False, by, reason or "the session was aborted")
        elif action == CommandAction.MESSAGE:
            session.messages.append([str(payload.get("text") or ""), by])
        elif request_id == waiting_for and waiting_for is not None and decided is None:
            if action == CommandAction.REPLY:
                events.append(_rejected(payload, command_id, by, Rejection.WRONG_KIND))
                continue
            decided = Decided(waiting_for, action == CommandAction.APPROVE, by, reason)
        else:
            why = (
                Rejection.ALREADY_RESOLVED
                if request_id in session.resolved
                else Rejection.UNKNOWN_REQUEST
            )
            events.append(_rejected(payload, command_id, by, why))
    return events, decided


def _rejected(payload: dict[str, Any], command_id: str, by: str, reason: Rejection) -> Event:
    return (
        RemoteEvent.COMMAND_REJECTED,
        {
            "action": payload.get("action"),
            "requestId": payload.get("requestId"),
            "commandId": command_id,
            "by": by,
            "reason": reason.value,
        },
    )


def take_messages(session: Session) -> tuple[str, list[Event]]:
    """The steering messages for this ``Stop``: the text Claude continues with, and
    their ``user_message`` answers and history."""
    texts = [text for text, _ in session.messages]
    events: list[Event] = []
    for text, by in session.messages:
        events.append((RemoteEvent.USER_MESSAGE, {"text": truncate(text, MAX_OUTPUT), "by": by}))
    session.messages = []
    joined = "\n\n".join(texts)
    if joined:
        events += _history(session, {"role": "user", "content": joined})
    return joined, events


# --- the hooks' answers ---------------------------------------------------------------


def permission_answer(allow: bool, reason: str) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow" if allow else "deny",
            "permissionDecisionReason": reason,
        }
    }


def stop_session(reason: str) -> dict[str, Any]:
    """Ends the session at this hook (``continue: false``)."""
    return {"continue": False, "stopReason": reason}


def continue_with(text: str) -> dict[str, Any]:
    """A ``Stop`` answer that makes Claude go on with ``text``."""
    return {"decision": "block", "reason": text}


def tool_input(hook: dict[str, Any]) -> dict[str, Any]:
    value = hook.get("tool_input")
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _without_envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key not in ("taskId", "timestamp")}
