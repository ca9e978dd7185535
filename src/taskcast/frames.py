"""Wire frames: parsing what clients send, rendering what the hub sends.

Sans-I/O: every function takes and returns plain values, so the protocol is
tested (and fuzzed) without a socket. See docs/protocol.md for the contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from taskcast.channels import (
    InvalidChannel,
    control_channel,
    task_channel,
    task_of_channel,
    validate_channel,
    validate_pattern,
)
from taskcast.commands import COMMAND_TYPE, command_payload_error
from taskcast.ids import random_id
from taskcast.vocabulary import ErrorCode

CONTROL_TYPES = frozenset(
    {"subscribe", "unsubscribe", "subscribed", "ack", "error", "ping", "pong", "auth"}
)
DEFAULT_CHANNEL = "events"
MAX_ID_LENGTH = 200
MAX_TYPE_LENGTH = 100
# The largest seq a client may name (SQLite's INTEGER); beyond it a clean error, not a 500.
MAX_SEQ = 2**63 - 1
# Who published, when the hub has no authentication.
ANONYMOUS = "anonymous"
_TYPE = re.compile(r"[A-Za-z0-9_.:-]+")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


# The span of instants a JavaScript Date holds (years -271821 to 275760): a timestamp
# outside it is no time at all, and one such event broke every dashboard that showed it.
MAX_TIMESTAMP_MS = 8_640_000_000_000_000


class ApiActionPayload(msgspec.Struct):
    """The seed contract's payload (DESIGN §1); extra keys are the user's business."""

    taskId: str
    message: str
    timestamp: Annotated[int, msgspec.Meta(ge=-MAX_TIMESTAMP_MS, le=MAX_TIMESTAMP_MS)]  # epoch ms


class FrameError(Exception):
    """A frame the hub refuses; rendered as an ``error`` frame, the connection stays."""

    def __init__(self, code: str, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id

    def to_frame(self) -> bytes:
        return error_frame(self.code, self.message, self.frame_id)


@dataclass(slots=True)
class Publish:
    """An event to store and fan out. ``body`` is the delivery frame without ``seq``."""

    id: str
    client_id: bool  # whether the publisher chose the id (idempotent resend possible)
    type: str
    channel: str
    source: str | None
    task_id: str | None  # from the channel (tasks.<taskId>), never from the payload alone
    body: bytes
    # The authenticated ``sub`` (or "anonymous"): recorded by the hub, never by the client.
    # Idempotency is scoped to it: the same id from two principals is two events.
    publisher: str = ANONYMOUS
    # The decoded payload, kept so the hub's summaries need not decode ``body`` again.
    payload: dict[str, Any] | None = None


@dataclass(slots=True)
class Subscribe:
    pattern: str
    since: int | None


@dataclass(slots=True)
class Unsubscribe:
    pattern: str


@dataclass(slots=True)
class Ping:
    id: Any


ClientFrame = Publish | Subscribe | Unsubscribe | Ping


def new_event_id() -> str:
    """A random 128-bit id for events published without one: nobody can guess (and so
    squat) the ids the hub will hand out next."""
    return random_id()


def decode_object(data: str | bytes) -> dict[str, Any]:
    """Decode one JSON object, refusing bad JSON and absurd nesting with a FrameError."""
    try:
        obj = _decode(data)
    except msgspec.DecodeError as exc:
        raise FrameError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise FrameError(ErrorCode.BAD_JSON, "frame is nested too deeply") from None
    except UnicodeDecodeError:  # bytes (an HTTP body): JSON is UTF-8
        raise FrameError(ErrorCode.BAD_JSON, "frame is not valid UTF-8") from None
    if not isinstance(obj, dict):
        raise FrameError(ErrorCode.INVALID_FRAME, "frame must be a JSON object")
    return obj


def parse_client_frame(data: str | bytes, publisher: str | None = None) -> ClientFrame:
    """Parse one text frame from a client; raise ``FrameError`` when it is refused.

    ``publisher`` is the authenticated ``sub`` of the connection (None without auth).
    """
    obj = decode_object(data)
    frame_type = obj.get("type")
    if not isinstance(frame_type, str) or not frame_type:
        raise FrameError(
            ErrorCode.INVALID_TYPE, "frame needs a non-empty string 'type'", _id_of(obj)
        )
    if frame_type in CONTROL_TYPES:
        return _parse_control(frame_type, obj)
    return parse_event(obj, publisher)


def parse_event(obj: dict[str, Any], publisher: str | None = None) -> Publish:
    """Validate a decoded event object and render its delivery body (encoded once).

    The body records ``publisher`` (the token's ``sub``, or "anonymous" without auth),
    overwriting any the client wrote; with auth, ``source`` is namespaced under the
    ``sub`` so that no one can pass for another principal.
    """
    raw_id = obj.get("id", obj.get("messageId"))
    frame_id = raw_id if isinstance(raw_id, str) else None
    frame_type = obj.get("type")
    if not isinstance(frame_type, str) or not frame_type:
        raise FrameError(ErrorCode.INVALID_TYPE, "event needs a non-empty string 'type'", frame_id)
    if frame_type in CONTROL_TYPES:
        raise FrameError(ErrorCode.RESERVED_TYPE, f"type {frame_type!r} is reserved", frame_id)
    if len(frame_type) > MAX_TYPE_LENGTH or not _TYPE.fullmatch(frame_type):
        raise FrameError(
            ErrorCode.INVALID_TYPE,
            f"type must match [A-Za-z0-9_.:-]{{1,{MAX_TYPE_LENGTH}}}",
            frame_id,
        )
    if raw_id is not None and (
        not isinstance(raw_id, str) or not raw_id or len(raw_id) > MAX_ID_LENGTH
    ):
        raise FrameError(
            ErrorCode.INVALID_EVENT, f"'id' must be a string of 1..{MAX_ID_LENGTH} characters", None
        )
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise FrameError(ErrorCode.INVALID_PAYLOAD, "'payload' must be a JSON object", frame_id)
    if frame_type == "api_action":
        try:
            msgspec.convert(payload, ApiActionPayload, strict=True)
        except msgspec.ValidationError as exc:
            raise FrameError(
                ErrorCode.INVALID_EVENT, f"invalid api_action payload: {exc}", frame_id
            ) from None
    elif frame_type == COMMAND_TYPE:
        problem = command_payload_error(payload)
        if problem is not None:
            raise FrameError(ErrorCode.INVALID_EVENT, f"invalid task_command: {problem}", frame_id)
    raw_source = obj.get("source", obj.get("senderId"))
    if raw_source is not None and (
        not isinstance(raw_source, str) or len(raw_source) > MAX_ID_LENGTH
    ):
        raise FrameError(
            ErrorCode.INVALID_EVENT,
            f"'source' must be a string of at most {MAX_ID_LENGTH}",
            frame_id,
        )
    payload_task = payload.get("taskId")
    if not isinstance(payload_task, str) or not payload_task:
        payload_task = None
    channel = obj.get("channel")
    try:
        if channel is None and frame_type == COMMAND_TYPE and payload_task:
            channel = validate_channel(control_channel(payload_task))
        elif channel is None:
            channel = (
                validate_channel(task_channel(payload_task)) if payload_task else DEFAULT_CHANNEL
            )
        elif isinstance(channel, str):
            validate_channel(channel)
        else:
            raise InvalidChannel("'channel' must be a string")
    except InvalidChannel as exc:
        raise FrameError(ErrorCode.INVALID_CHANNEL, str(exc), frame_id) from None
    owner = task_of_channel(channel)
    if owner is not None and payload_task is not None and payload_task != owner[1]:
        raise FrameError(
            ErrorCode.INVALID_EVENT,
            f"payload taskId {payload_task!r} does not match channel {channel!r}",
            frame_id,
        )
    if frame_type == COMMAND_TYPE and channel != control_channel(str(payload_task)):
        raise FrameError(
            ErrorCode.INVALID_EVENT,
            "a task_command goes to control.<taskId> of its taskId",
            frame_id,
        )
    source = raw_source
    if publisher is not None and not (
        source == publisher or (source is not None and source.startswith(publisher + "/"))
    ):
        source = publisher if source is None else f"{publisher}/{source}"[:MAX_ID_LENGTH]

    client_id = frame_id is not None
    event_id = frame_id if frame_id is not None else new_event_id()
    body = dict(obj)
    body.pop("seq", None)
    body["id"] = event_id
    body["channel"] = channel
    if source is not None:
        body["source"] = source
        if "senderId" in body:  # the alias must not keep the unchecked name
            body["senderId"] = source
    recorded = publisher if publisher is not None else ANONYMOUS
    body["publisher"] = recorded
    try:
        encoded = _encode(body)
    except RecursionError:
        raise FrameError(
            ErrorCode.INVALID_PAYLOAD, "payload is nested too deeply", frame_id
        ) from None
    return Publish(
        id=event_id,
        client_id=client_id,
        type=frame_type,
        channel=channel,
        source=source,
        task_id=owner[1] if owner is not None and owner[0] == "tasks" else None,
        body=encoded,
        publisher=recorded,
        payload=payload,
    )


def _parse_control(frame_type: str, obj: dict[str, Any]) -> ClientFrame:
    if frame_type == "ping":
        ping_id = obj.get("id")
        # The id is echoed in the pong: a bounded string or number, never a megabyte.
        if ping_id is not None and not (
            (isinstance(ping_id, str) and len(ping_id) <= MAX_ID_LENGTH)
            or (type(ping_id) is int and abs(ping_id) <= MAX_SEQ)
        ):
            raise FrameError(
                ErrorCode.INVALID_FRAME,
                f"ping 'id' must be a string of at most {MAX_ID_LENGTH} or an int",
            )
        return Ping(ping_id)
    if frame_type in ("subscribe", "unsubscribe"):
        pattern = obj.get("channel")
        try:
            if not isinstance(pattern, str):
                raise InvalidChannel(f"{frame_type} needs a string 'channel'")
            validate_pattern(pattern)
        except InvalidChannel as exc:
            raise FrameError(ErrorCode.INVALID_CHANNEL, str(exc), _id_of(obj)) from None
        if frame_type == "unsubscribe":
            return Unsubscribe(pattern)
        since = obj.get("since")
        if since is not None and (type(since) is not int or not 0 <= since <= MAX_SEQ):
            raise FrameError(
                ErrorCode.INVALID_FRAME,
                f"'since' must be an integer from 0 to {MAX_SEQ}",
                _id_of(obj),
            )
        return Subscribe(pattern, since)
    raise FrameError(
        ErrorCode.RESERVED_TYPE, f"type {frame_type!r} is not accepted from clients", _id_of(obj)
    )


def _id_of(obj: dict[str, Any]) -> str | None:
    value = obj.get("id", obj.get("messageId"))
    return value if isinstance(value, str) else None


def with_seq(body: bytes, seq: int) -> bytes:
    """Splice ``"seq":N`` into a stored body: the delivery frame, without re-encoding."""
    return b'%s,"seq":%d}' % (body[:-1], seq)


def ack_frame(event_id: str, seq: int, duplicate: bool = False) -> bytes:
    # Formatted, not built as a dict: one ack per publish makes this a hot path.
    tail = b',"duplicate":true}' if duplicate else b"}"
    return b'{"type":"ack","id":%s,"seq":%d%s' % (_encode(event_id), seq, tail)


def error_frame(code: str, message: str, frame_id: str | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if frame_id is not None:
        frame["id"] = frame_id
    return _encode(frame)


def subscribed_frame(
    pattern: str, head: int, since: int | None, oldest: int, log_id: str, *, ahead: bool = False
) -> bytes:
    """The answer to a subscribe: the head and the log's id (a ``since`` is a seq of one
    log); with ``since``, whether replay starts where asked (``recovered``) and whether
    ``since`` lies beyond the head (``ahead``: the log holds less than the client saw —
    restored from a backup, or not the log the client read)."""
    frame: dict[str, Any] = {
        "type": "subscribed",
        "channel": pattern,
        "head": head,
        "logId": log_id,
    }
    if since is not None:
        recovered = since + 1 >= oldest
        frame["recovered"] = recovered
        if not recovered:
            frame["oldest"] = oldest
        if ahead:
            frame["ahead"] = True
    return _encode(frame)


def pong_frame(ping_id: Any) -> bytes:
    frame: dict[str, Any] = {"type": "pong"}
    if ping_id is not None:
        frame["id"] = ping_id
    return _encode(frame)


def encode(obj: Any) -> bytes:
    """JSON-encode a value the way the hub does (compact, UTF-8)."""
    return _encode(obj)


def decode(data: str | bytes) -> Any:
    return _decode(data)
