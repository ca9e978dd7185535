"""How taskcast lays its log out on NATS JetStream (pure: no I/O).

One stream holds every event as one message. A channel ``tasks.abc`` is the subject
``<prefix>.tasks.abc``, the prefix being the stream name in lower case
(``TASKCAST`` → ``taskcast.tasks.abc``), so several taskcast streams can share a
NATS account without overlapping subjects. The message is a msgpack envelope
of the fields the log keeps; the stream sequence is the event's ``seq``. A
publisher-chosen id becomes ``Nats-Msg-Id`` (hashed with the publisher, so ids
stay unique per publisher as in the SQLite log): JetStream drops a resend inside
its duplicate window and answers with the first seq.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from taskcast.frames import Publish
from taskcast.store.base import Retention, StoredEvent

DEFAULT_STREAM = "TASKCAST"
DEFAULT_DUPLICATE_WINDOW_SECONDS = 24 * 3600.0
MSG_ID_HEADER = "Nats-Msg-Id"
# JetStream's atomic batch publish (ADR-50, nats-server 2.12+): a batch is stored
# whole or not at all, its seqs consecutive; only the commit message is answered.
BATCH_ID_HEADER = "Nats-Batch-Id"
BATCH_SEQUENCE_HEADER = "Nats-Batch-Sequence"
BATCH_COMMIT_HEADER = "Nats-Batch-Commit"
ATOMIC_BATCH_MAX = 1000  # the server's limit of messages per batch
ATOMIC_SINCE = (2, 12)  # the first server version with atomic batches
ATOMIC_DISABLED_ERR = 10174  # the stream does not (or no longer) allow atomic batches
ATOMIC_DUPLICATE_ERR = 10201  # a duplicate id in a batch refuses it whole
MAX_MSG_SIZE_ERR = 10054  # a message over the stream's max_msg_size
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")

_Envelope = tuple[str, str, str | None, str | None, int, str, bytes]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Envelope)


class NatsUnavailable(RuntimeError):
    """NATS could not be reached, or its JetStream refused the stream."""


class InvalidStreamName(ValueError):
    """A stream name NATS would not accept as a name or as a subject token."""


def subject_prefix(stream: str) -> str:
    if not _STREAM_NAME.fullmatch(stream):
        raise InvalidStreamName(f"invalid NATS stream name {stream!r}: use [A-Za-z0-9_-]")
    return stream.lower()


def shown_servers(servers: list[str]) -> str:
    """The NATS URLs as logs, errors and /healthz may show them: a password in a URL
    (``nats://user:secret@host``) is masked."""
    shown = []
    for server in servers:
        parts = urlsplit(server)
        if parts.password is not None:
            netloc = f"{parts.username}:***@{parts.hostname}"
            if parts.port is not None:
                netloc += f":{parts.port}"
            server = urlunsplit(parts._replace(netloc=netloc))
        shown.append(server)
    return ",".join(shown)


def stream_log_id(name: str, created: datetime.datetime | None) -> str:
    """The log id of a stream: its name and creation time — every node of a cluster
    names the same log, and a stream deleted and made again is another log."""
    when = created.isoformat(timespec="microseconds") if created is not None else "unknown"
    return f"{name}@{when}"


def subject_of(prefix: str, channel: str) -> str:
    """Channels are already valid subject tokens (``[A-Za-z0-9_-]`` between dots)."""
    return f"{prefix}.{channel}"


def channel_of(prefix: str, subject: str) -> str:
    return subject[len(prefix) + 1 :]


def msg_id(event: Publish) -> str:
    """The dedup key of a publisher-chosen id: fixed length, header-safe."""
    digest = hashlib.sha256(f"{event.publisher}\x00{event.id}".encode()).hexdigest()
    return digest[:48]


def envelope(event: Publish, now_ms: int) -> bytes:
    fields: _Envelope = (
        event.id,
        event.type,
        event.task_id,
        event.source,
        now_ms,
        event.publisher,
        event.body,
    )
    return _encoder.encode(fields)


def stored_event(seq: int, channel: str, data: bytes) -> StoredEvent:
    event_id, event_type, task_id, source, ts, publisher, body = _decoder.decode(data)
    return StoredEvent(seq, event_id, channel, event_type, task_id, source, ts, body, publisher)


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The stream settings a hub wants, from its flags."""

    name: str
    subjects: tuple[str, ...]
    replicas: int
    max_msgs: int  # -1: no limit
    max_age_seconds: float  # 0: no limit
    duplicate_window_seconds: float

    def as_config(self) -> dict[str, Any]:
        """Keyword arguments of ``nats.js.api.StreamConfig``."""
        return {
            "name": self.name,
            "subjects": list(self.subjects),
            "num_replicas": self.replicas,
            "max_msgs": self.max_msgs,
            "max_age": self.max_age_seconds,
            "duplicate_window": self.duplicate_window_seconds,
        }


def atomic_batches_in(version: tuple[int, int]) -> bool:
    """Whether a server of this (major, minor) version stores atomic batches."""
    return version >= ATOMIC_SINCE


def atomic_chunks(count: int) -> list[range]:
    """The batches ``count`` events go out in, in order."""
    return [range(i, min(i + ATOMIC_BATCH_MAX, count)) for i in range(0, count, ATOMIC_BATCH_MAX)]


def batch_headers(
    batch_id: str, position: int, commit: bool, event_id: str | None
) -> dict[str, str]:
    """The headers of the ``position``-th message (from 1) of an atomic batch."""
    headers = {BATCH_ID_HEADER: batch_id, BATCH_SEQUENCE_HEADER: str(position)}
    if commit:
        headers[BATCH_COMMIT_HEADER] = "1"
    if event_id is not None:
        headers[MSG_ID_HEADER] = event_id
    return headers


def header_bytes(headers: dict[str, str]) -> int:
    """What ``headers`` take of a message on the wire (``NATS/1.0``, a line each, the
    blank line): the server holds headers and payload together to ``max_payload``."""
    return 12 + sum(len(key.encode()) + len(value.encode()) + 4 for key, value in headers.items())


# The most header bytes a taskcast message carries: the last of a full atomic batch, with
# a publisher's id (its length is fixed: ``msg_id``).
MAX_HEADER_BYTES = header_bytes(
    batch_headers("x" * len(secrets.token_urlsafe(16)), ATOMIC_BATCH_MAX, True, "x" * 48)
)


def fits_payload(data: bytes, max_payload: int) -> bool:
    """Whether an envelope fits the server's ``max_payload`` with any headers it may get.
    One rule for every message, batched or not: over it, an event is never sent (nats-py
    checks the payload alone, and the server drops the connection for the rest)."""
    return len(data) + MAX_HEADER_BYTES <= max_payload


def batch_answer(data: bytes) -> int | tuple[int, str]:
    """A batch commit's answer: the batch's last seq, or (err_code, description)."""
    try:
        answer = json.loads(data)
        error = answer.get("error")
        if error is None:
            return int(answer["seq"])
        return int(error.get("err_code", 0)), str(error.get("description", ""))
    except (ValueError, TypeError, KeyError, AttributeError):
        return 0, f"not a JetStream answer: {data[:200]!r}"


def batch_seqs(last_seq: int, count: int) -> list[int]:
    """A committed batch's seqs: consecutive, ending at the commit's answered seq."""
    return list(range(last_seq - count + 1, last_seq + 1))


def plan_stream(
    name: str, replicas: int, retention: Retention, duplicate_window_seconds: float
) -> StreamPlan:
    if replicas < 1 or replicas > 5:
        raise ValueError("--nats-replicas must be 1..5")
    if duplicate_window_seconds <= 0:
        raise ValueError("the duplicate window must be positive")
    max_age = retention.max_age_seconds or 0.0
    # JetStream refuses a duplicate window longer than the age limit.
    window = min(duplicate_window_seconds, max_age) if max_age else duplicate_window_seconds
    return StreamPlan(
        name=name,
        subjects=(f"{subject_prefix(name)}.>",),
        replicas=replicas,
        max_msgs=retention.max_events if retention.max_events is not None else -1,
        max_age_seconds=max_age,
        duplicate_window_seconds=window,
    )


def stream_conflict(
    plan: StreamPlan, subjects: list[str] | None, storage: str | None
) -> str | None:
    """Why an existing stream cannot hold this hub's log (the rest is updated to fit)."""
    if sorted(subjects or []) != sorted(plan.subjects):
        return (
            f"NATS stream {plan.name} exists with subjects {subjects}, not {list(plan.subjects)}:"
            " pick another --nats-stream"
        )
    if storage not in (None, "file"):
        return f"NATS stream {plan.name} uses {storage} storage; taskcast needs file storage"
    return None


def record_key(kind: str, record_id: str) -> str:
    """A KV key for one record: ids may hold characters KV keys may not."""
    return f"{kind}.{record_id.encode().hex()}"


def record_id_of(key: str) -> tuple[str, str]:
    kind, _, encoded = key.partition(".")
    return kind, bytes.fromhex(encoded).decode()
