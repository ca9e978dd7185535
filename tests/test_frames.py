from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskcast.frames import (
    CONTROL_TYPES,
    FrameError,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    decode,
    parse_client_frame,
    subscribed_frame,
    with_seq,
)

SEED = {
    "type": "api_action",
    "payload": {"taskId": "t1", "message": "done", "timestamp": 1725997600000},
}


def test_seed_frame_is_valid_as_is() -> None:
    frame = parse_client_frame(json.dumps(SEED))
    assert isinstance(frame, Publish)
    assert frame.channel == "tasks.t1"
    assert frame.task_id == "t1"
    assert not frame.client_id
    delivered = decode(with_seq(frame.body, 7))
    assert delivered["payload"] == SEED["payload"]
    assert delivered["seq"] == 7
    assert delivered["channel"] == "tasks.t1"
    assert delivered["id"] == frame.id


def test_aliases_and_explicit_fields() -> None:
    frame = parse_client_frame(
        json.dumps({**SEED, "messageId": "m1", "senderId": "agent-a", "channel": "team.x"})
    )
    assert isinstance(frame, Publish)
    assert (frame.id, frame.source, frame.channel, frame.client_id) == (
        "m1",
        "agent-a",
        "team.x",
        True,
    )
    body = decode(frame.body)
    assert body["id"] == "m1" and body["source"] == "agent-a" and body["messageId"] == "m1"


def test_event_without_task_id_goes_to_events() -> None:
    frame = parse_client_frame('{"type":"note","payload":{"x":1}}')
    assert isinstance(frame, Publish) and frame.channel == "events" and frame.task_id is None


def test_client_seq_is_replaced_by_the_hubs() -> None:
    frame = parse_client_frame(json.dumps({**SEED, "seq": 99}))
    assert isinstance(frame, Publish)
    assert decode(with_seq(frame.body, 3))["seq"] == 3


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        ("[1,2]", "invalid_frame"),
        ('"text"', "invalid_frame"),
        ("{}", "invalid_type"),
        ('{"type": 5, "payload": {}}', "invalid_type"),
        ('{"type": "", "payload": {}}', "invalid_type"),
        ('{"type": "bad type", "payload": {}}', "invalid_type"),
        ('{"type": "note"}', "invalid_payload"),
        ('{"type": "note", "payload": [1]}', "invalid_payload"),
        ('{"type": "note", "payload": "x"}', "invalid_payload"),
        ('{"type": "ack", "id": "a", "seq": 1}', "reserved_type"),
        ('{"type": "error", "payload": {}}', "reserved_type"),
        ('{"type": "auth", "token": "x"}', "reserved_type"),
        ('{"type": "note", "payload": {}, "channel": "a.*"}', "invalid_channel"),
        ('{"type": "note", "payload": {}, "channel": 3}', "invalid_channel"),
        ('{"type": "note", "payload": {"taskId": "a b"}}', "invalid_channel"),
        ('{"type": "note", "payload": {}, "id": 5}', "invalid_event"),
        ('{"type": "note", "payload": {}, "id": ""}', "invalid_event"),
        ('{"type": "note", "payload": {}, "source": 5}', "invalid_event"),
        ('{"type": "api_action", "payload": {"taskId": "t", "message": "m"}}', "invalid_event"),
        (
            '{"type":"api_action","payload":{"taskId":"t","message":"m","timestamp":"1"}}',
            "invalid_event",
        ),
        (
            '{"type":"api_action","payload":{"taskId":"t","message":"m","timestamp":1.5}}',
            "invalid_event",
        ),
        (
            '{"type":"api_action","payload":{"taskId":"t","message":"m","timestamp":true}}',
            "invalid_event",
        ),
        (
            '{"type":"api_action","payload":{"taskId":1,"message":"m","timestamp":1}}',
            "invalid_event",
        ),
        (  # no time a Date holds: past year 275760, or before year -271821
            '{"type":"api_action","payload":{"taskId":"t","message":"m",'
            '"timestamp":1180591620717411303424}}',
            "invalid_event",
        ),
        (
            '{"type":"api_action","payload":{"taskId":"t","message":"m",'
            '"timestamp":8640000000000001}}',
            "invalid_event",
        ),
        (
            '{"type":"api_action","payload":{"taskId":"t","message":"m",'
            '"timestamp":-8640000000000001}}',
            "invalid_event",
        ),
        ('{"type": "subscribe"}', "invalid_channel"),
        ('{"type": "subscribe", "channel": "a.>.b"}', "invalid_channel"),
        ('{"type": "subscribe", "channel": "a", "since": -1}', "invalid_frame"),
        ('{"type": "subscribe", "channel": "a", "since": "3"}', "invalid_frame"),
        ('{"type": "subscribe", "channel": "a", "since": true}', "invalid_frame"),
    ],
)
def test_refused_frames(raw: str, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(raw)
    assert caught.value.code == code
    error = decode(caught.value.to_frame())
    assert error["type"] == "error" and error["code"] == code and error["message"]


def test_the_latest_timestamp_a_clock_can_show_is_taken() -> None:
    frame = parse_client_frame(
        '{"type":"api_action","payload":{"taskId":"t","message":"m","timestamp":8640000000000000}}'
    )
    assert isinstance(frame, Publish) and frame.payload is not None
    assert frame.payload["timestamp"] == 8_640_000_000_000_000
    before_1970 = parse_client_frame(
        '{"type":"api_action","payload":{"taskId":"t","message":"m","timestamp":-1}}'
    )
    assert isinstance(before_1970, Publish)  # accepted before the bound came: still is


def test_error_echoes_the_event_id() -> None:
    with pytest.raises(FrameError) as caught:
        parse_client_frame('{"type":"api_action","id":"e1","payload":{}}')
    assert decode(caught.value.to_frame())["id"] == "e1"


def test_control_frames() -> None:
    assert parse_client_frame('{"type":"subscribe","channel":"tasks.>","since":4}') == Subscribe(
        "tasks.>", 4
    )
    assert parse_client_frame('{"type":"subscribe","channel":"tasks.>"}') == Subscribe(
        "tasks.>", None
    )
    assert parse_client_frame('{"type":"unsubscribe","channel":"x"}') == Unsubscribe("x")
    assert parse_client_frame('{"type":"ping","id":3}') == Ping(3)


def test_subscribed_reports_unrecoverable_since() -> None:
    assert decode(subscribed_frame("a", 10, 2, 5, "log-1")) == {
        "type": "subscribed",
        "channel": "a",
        "head": 10,
        "logId": "log-1",
        "recovered": False,
        "oldest": 5,
    }
    assert decode(subscribed_frame("a", 10, 4, 5, "log-1"))["recovered"] is True
    assert "recovered" not in decode(subscribed_frame("a", 10, None, 5, "log-1"))
    ahead = decode(subscribed_frame("a", 10, 12, 5, "log-1", ahead=True))
    assert ahead["ahead"] is True and ahead["recovered"] is True


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from([*CONTROL_TYPES, "api_action", "note"]), st.text()),
        "payload": json_values,
        "id": json_values,
        "channel": st.one_of(st.text(max_size=20), json_values),
        "since": json_values,
        "source": json_values,
    },
)


@given(frame_like)
def test_fuzz_structured_frames_parse_or_refuse_cleanly(obj: dict[str, Any]) -> None:
    try:
        frame = parse_client_frame(json.dumps(obj))
    except FrameError as exc:
        assert exc.code and exc.message
        return
    if isinstance(frame, Publish):
        delivered = decode(with_seq(frame.body, 1))
        assert delivered["payload"] == obj["payload"]
        assert delivered["seq"] == 1 and delivered["channel"] == frame.channel


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzz_arbitrary_bytes_never_crash(data: bytes | str) -> None:
    with contextlib.suppress(FrameError):
        parse_client_frame(data)


@given(json_values.filter(lambda v: isinstance(v, dict)), st.integers(min_value=1))
def test_with_seq_adds_exactly_seq(payload: dict[str, Any], seq: int) -> None:
    obj = {"type": "note", "payload": payload}
    frame = parse_client_frame(json.dumps(obj))
    assert isinstance(frame, Publish)
    delivered = decode(with_seq(frame.body, seq))
    assert delivered.pop("seq") == seq
    assert delivered == decode(frame.body)


identities = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_.", min_size=1, max_size=12)
task_tokens = st.text(alphabet="abcdefghij0123456789_-", min_size=1, max_size=6)


@given(
    frame_like.map(lambda o: {**o, "publisher": o.get("source")}),
    identities,
    task_tokens,
)
def test_publisher_and_source_can_never_be_forged(
    obj: dict[str, Any], subject: str, task: str
) -> None:
    """Whatever a client writes, the stored event names the authenticated sub as its
    publisher, its source starts with that sub, and a task event's payload taskId is
    its channel's."""
    obj = {**obj, "type": "note", "channel": f"tasks.{task}"}
    try:
        frame = parse_client_frame(json.dumps(obj), subject)
    except FrameError as exc:
        assert exc.code in ("invalid_payload", "invalid_event")
        return
    assert isinstance(frame, Publish)
    stored = decode(frame.body)
    assert stored["publisher"] == frame.publisher == subject
    assert stored["source"] == subject or stored["source"].startswith(subject + "/")
    assert frame.task_id == task
    payload_task = stored["payload"].get("taskId")
    assert not isinstance(payload_task, str) or payload_task in ("", task)


@given(st.integers(min_value=1, max_value=20_000))
def test_deep_nesting_is_a_clean_error(depth: int) -> None:
    raw = '{"type":"note","payload":{"a":' + "[" * depth + "]" * depth + "}}"
    try:
        frame = parse_client_frame(raw)
    except FrameError as exc:
        assert exc.code in ("bad_json", "invalid_payload")
    else:
        assert isinstance(frame, Publish)
