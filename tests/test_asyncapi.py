"""docs/asyncapi.yaml must describe the frames the hub really sends and accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from taskcast.frames import (
    Publish,
    ack_frame,
    decode,
    error_frame,
    parse_client_frame,
    pong_frame,
    subscribed_frame,
    with_seq,
)

DOC = yaml.safe_load((Path(__file__).parent.parent / "docs" / "asyncapi.yaml").read_text())


def validate(message: str, instance: Any) -> None:
    schema = {**DOC, "$ref": f"#/components/messages/{message}/payload"}
    jsonschema.Draft202012Validator(schema).validate(instance)


def all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in all_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in all_refs(value)]
    return []


def test_document_is_asyncapi_3_and_every_ref_resolves() -> None:
    assert DOC["asyncapi"].startswith("3.")
    for ref in all_refs(DOC):
        node: Any = DOC
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]


def test_real_frames_match_their_schemas() -> None:
    seed = {"type": "api_action", "payload": {"taskId": "t", "message": "m", "timestamp": 1}}
    validate("apiAction", seed)
    publish = parse_client_frame(json.dumps(seed))
    assert isinstance(publish, Publish)
    validate("delivery", decode(with_seq(publish.body, 1)))
    validate("ack", decode(ack_frame("e", 3, duplicate=True)))
    validate("subscribed", decode(subscribed_frame("tasks.>", 9, 2, 5, "sqlite-x")))
    validate("subscribed", decode(subscribed_frame("tasks.>", 9, 12, 5, "sqlite-x", ahead=True)))
    validate("pong", decode(pong_frame(4)))
    validate("error", decode(error_frame("invalid_event", "bad", "e")))
    validate("subscribe", {"type": "subscribe", "channel": "tasks.>", "since": 0})


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "api_action", "payload": {"taskId": "t", "message": "m", "timestamp": "1"}},
        {"type": "api_action", "payload": {"taskId": "t", "message": "m"}},
    ],
)
def test_schema_refuses_what_the_hub_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate("apiAction", bad)


def test_every_error_code_is_defined_once_and_documented() -> None:
    import re

    from taskcast.vocabulary import ErrorCode

    source = "\n".join(
        path.read_text() for path in (Path(__file__).parent.parent / "src").rglob("*.py")
    )
    bare = re.findall(
        r'(?:FrameError|error_frame|json_error|bad_request)\(\s*(?:\d+,\s*)?"([a-z_]+)"', source
    )
    assert bare == [], f"error codes as bare strings instead of ErrorCode: {bare}"
    documented = set(
        DOC["components"]["messages"]["error"]["payload"]["properties"]["code"]["enum"]
    )
    assert documented == {code.value for code in ErrorCode}
    protocol_md = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    assert all(f"`{code.value}`" in protocol_md for code in ErrorCode)


def test_orchestration_messages_match_what_the_task_and_hub_send() -> None:
    """The command a client sends and every answer event, as the real code builds them."""
    from taskcast.commands import CommandAction, RemoteEvent, RequestKind
    from taskcast.task.remote import Command, RemoteControl

    command = {
        "type": "task_command",
        "payload": {"taskId": "t", "action": "deny", "requestId": "r1", "reason": "no"},
    }
    validate("taskCommand", command)
    parse_client_frame(json.dumps(command))  # the hub accepts it as well
    for bad in ({"taskId": "t", "action": "approve"}, {"taskId": "t", "action": "message"}):
        with pytest.raises(jsonschema.ValidationError):
            validate("taskCommand", {"type": "task_command", "payload": bad})
    control = RemoteControl()
    control.open("r1", RequestKind.APPROVAL, {"tool": "write_to_file"})
    control.open("q1", RequestKind.QUESTION, {"question": "?"})
    stamp = {"taskId": "t", "timestamp": 1}
    decisions = {
        "approvalResolved": control.apply(Command("e1", 1, CommandAction.DENY, "bob", "r1")),
        "commandRejected": control.apply(Command("e2", 2, CommandAction.APPROVE, "eve", "r1")),
        "questionAnswered": control.apply(Command("e3", 3, CommandAction.REPLY, "bob", "q1", "x")),
        "userMessage": control.apply(Command("e4", 4, CommandAction.MESSAGE, "bob", None, "go")),
    }
    names = {
        "approvalResolved": RemoteEvent.APPROVAL_RESOLVED,
        "commandRejected": RemoteEvent.COMMAND_REJECTED,
        "questionAnswered": RemoteEvent.QUESTION_ANSWERED,
        "userMessage": RemoteEvent.USER_MESSAGE,
    }
    for message, decision in decisions.items():
        assert decision is not None and decision.event_type is names[message]
        validate(
            message, {"type": decision.event_type.value, "payload": {**stamp, **decision.payload}}
        )
    validate(
        "approvalRequested",
        {
            "type": "approval_requested",
            "payload": {
                **stamp,
                "requestId": "r",
                "tool": "write_to_file",
                "arguments": {"path": "a"},
                "summary": 'path="a"',
            },
        },
    )
    validate(
        "questionAsked",
        {
            "type": "question_asked",
            "payload": {**stamp, "requestId": "q", "question": "?", "options": ["a"]},
        },
    )
    validate(
        "taskAborted", {"type": "task_aborted", "payload": {**stamp, "by": "bob", "reason": None}}
    )
