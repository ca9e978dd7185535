"""A raw reader of taskcast's AG-UI door (``POST /ag-ui/tasks/{taskId}``), and the check
every event it reads passes: the ``ag-ui-protocol`` package's models (1.0), with no field
the protocol does not define and no null for an absent optional."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from ag_ui.core import Event
from pydantic import BaseModel, TypeAdapter

EVENT = TypeAdapter(Event)
Read = tuple[str, dict[str, Any]]  # (SSE id, AG-UI event)


def check_event(event: dict[str, Any]) -> None:
    """Fail unless ``event`` is an AG-UI 1.0 event exactly as the protocol defines it."""
    model = EVENT.validate_python(event)
    _strict(model, event["type"])


def _strict(model: BaseModel, where: str) -> None:
    assert not model.model_extra, f"{where}: fields AG-UI does not define: {model.model_extra}"
    for name in model.model_fields_set:
        value = getattr(model, name)
        assert value is not None, f"{where}: {name} is null (an absent optional is left out)"
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                _strict(item, f"{where}.{name}")
            elif hasattr(item, "root") and isinstance(item.root, BaseModel):
                _strict(item.root, f"{where}.{name}")


def run_input(task_id: str, run_id: str = "run-1", **fields: Any) -> dict[str, Any]:
    """A ``RunAgentInput`` as ``HttpAgent`` sends it."""
    return {
        "threadId": task_id,
        "runId": run_id,
        "messages": [],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
        **fields,
    }


class Stream:
    """One POST to the door, read an SSE event at a time (LF line endings only)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[Read] = []

    async def next(self) -> Read | None:
        """The next event (checked), or None when the stream ended."""
        fields: dict[str, str] = {}
        while True:
            raw = await self.response.content.readline()
            if not raw:
                return None
            assert b"\r" not in raw, f"not an LF line ending: {raw!r}"
            line = raw.decode().removesuffix("\n")
            if line == "":
                if "data" in fields:
                    event = json.loads(fields["data"])
                    check_event(event)
                    assert "id" in fields, f"{event['type']} has no id"
                    read = (fields["id"], event)
                    self.events.append(read)
                    return read
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                assert key not in fields, f"two {key} lines in one event"
                fields[key] = value

    async def until(self, done: Any) -> list[Read]:
        """Read until ``done(event)`` is true for an event (or the stream ends)."""
        out: list[Read] = []
        while (read := await self.next()) is not None:
            out.append(read)
            if done(read[1]):
                break
        return out

    async def rest(self) -> list[Read]:
        return await self.until(lambda event: False)

    def close(self) -> None:
        self.response.close()


async def open_run(
    session: aiohttp.ClientSession,
    http: str,
    task_id: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Stream:
    """POST a run; fails unless the door answered a 200 event stream."""
    response = await session.post(
        f"{http}/ag-ui/tasks/{task_id}",
        json=body if body is not None else run_input(task_id),
        headers={"Accept": "text/event-stream", **(headers or {})},
    )
    if response.status != 200:
        text = await response.text()
        response.close()
        raise AssertionError(f"{response.status}: {text}")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return Stream(response)


async def read_run(
    session: aiohttp.ClientSession,
    http: str,
    task_id: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A whole run, to its end: its events."""
    stream = await open_run(session, http, task_id, body, headers)
    try:
        return [event for _, event in await stream.rest()]
    finally:
        stream.close()


def messages_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation a client assembles from a run's events (as ``HttpAgent`` does):
    the last snapshot, then the messages that arrived."""
    messages: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    calls: dict[str, dict[str, Any]] = {}
    for event in events:
        kind = event["type"]
        if kind == "MESSAGES_SNAPSHOT":
            messages = [dict(m) for m in event["messages"]]
            by_id = {m["id"]: m for m in messages}
        elif kind == "TEXT_MESSAGE_START":
            message = {"id": event["messageId"], "role": event["role"], "content": ""}
            messages.append(message)
            by_id[message["id"]] = message
        elif kind == "TEXT_MESSAGE_CONTENT":
            by_id[event["messageId"]]["content"] += event["delta"]
        elif kind == "TOOL_CALL_START":
            parent = by_id.get(event["parentMessageId"])
            if parent is None:
                parent = {"id": event["parentMessageId"], "role": "assistant"}
                messages.append(parent)
                by_id[parent["id"]] = parent
            call = {
                "id": event["toolCallId"],
                "type": "function",
                "function": {"name": event["toolCallName"], "arguments": ""},
            }
            parent.setdefault("toolCalls", []).append(call)
            calls[call["id"]] = call
        elif kind == "TOOL_CALL_ARGS":
            calls[event["toolCallId"]]["function"]["arguments"] += event["delta"]
        elif kind == "TOOL_CALL_RESULT":
            message = {
                "id": event["messageId"],
                "role": "tool",
                "content": event["content"],
                "toolCallId": event["toolCallId"],
            }
            messages.append(message)
            by_id[message["id"]] = message
    return messages
