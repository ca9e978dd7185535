"""Per-task summaries folded from the event log (pure: events in, summaries out).

The hub feeds every stored event through ``TaskSummaries.observe`` (at start-up
from the log, then as events commit), so ``GET /api/tasks`` never scans the log.
Only lifecycle, usage and tool events are decoded; ``api_action`` is counted from
its columns alone, since it is the most frequent event.

A summary belongs to the channel ``tasks.<taskId>``: only events on that channel (or
below it) count, so a publisher allowed elsewhere cannot write into another task's
summary. Memory is bounded: prompts and results are cut to a length, at most
``max_tasks`` summaries are kept (the least recently active go first), and summaries
whose events retention removed are dropped with them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from taskcast.vocabulary import FINAL_STATUSES, TaskStatus

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


IDLE_AFTER_MS = 5 * 60 * 1000


@dataclass(slots=True)
class TaskSummary:
    task_id: str
    channel: str = ""
    # "running" once a task_started was seen; a task known only from other events (say,
    # the seed's api_action alone) is "active", and "idle" after IDLE_AFTER_MS of quiet.
    status: str = TaskStatus.ACTIVE
    api_actions: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    tool_denials: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    started_at: int = 0  # ms
    last_activity: int = 0  # ms
    ended_at: int | None = None
    provider: str | None = None
    model: str | None = None
    source: str | None = None
    prompt: str | None = None
    result: str | None = None
    error: str | None = None
    # Open approval requests and questions, by requestId (remote orchestration).
    pending: dict[str, dict[str, Any]] | None = None

    def current_status(self, now_ms: int) -> str:
        if self.status == TaskStatus.ACTIVE and now_ms - self.last_activity > IDLE_AFTER_MS:
            return TaskStatus.IDLE
        return self.status

    def to_json(self, now_ms: int) -> dict[str, Any]:
        # A running task's duration goes on with the clock; one known only from other
        # events (or whose runner was lost) lasted until its last event, as far as
        # anyone knows (an api_action sent a minute ago is no task running a minute).
        if self.ended_at is not None:
            end = self.ended_at
        else:
            end = now_ms if self.status == TaskStatus.RUNNING else self.last_activity
        return {
            "taskId": self.task_id,
            "channel": self.channel,
            "status": self.current_status(now_ms),
            "apiActions": self.api_actions,
            "toolCalls": self.tool_calls,
            "toolFailures": self.tool_failures,
            "toolDenials": self.tool_denials,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cachedTokens": self.cached_tokens,
            "events": self.events,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "startedAt": self.started_at,
            "lastActivity": self.last_activity,
            "endedAt": self.ended_at,
            "durationMs": max(0, end - self.started_at),
            "provider": self.provider,
            "model": self.model,
            "source": self.source,
            "prompt": self.prompt,
            "result": self.result,
            "error": self.error,
            "pending": len(self.pending or ()),
        }


class TaskSummaries:
    def __init__(self, max_tasks: int = 100_000, text_chars: int = 4_000) -> None:
        # Least recently active first: every observed event moves its task to the end.
        self.tasks: OrderedDict[str, TaskSummary] = OrderedDict()
        self.max_tasks = max_tasks
        self.text_chars = text_chars

    def observe(
        self,
        seq: int,
        ts: int,
        event_type: str,
        task_id: str | None,
        source: str | None,
        body: bytes,
        channel: str = "",
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Fold one stored event in. ``payload``, when the caller already decoded it (the
        hub's publish path), saves decoding ``body`` again."""
        if task_id is None or not _on_task_channel(channel, task_id):
            return
        summary = self.tasks.get(task_id)
        if summary is None:
            if len(self.tasks) >= self.max_tasks:
                self.tasks.popitem(last=False)
            summary = self.tasks[task_id] = TaskSummary(
                task_id, channel=f"tasks.{task_id}", first_seq=seq, started_at=ts, source=source
            )
        else:
            self.tasks.move_to_end(task_id)
        summary.events += 1
        summary.last_seq = seq
        summary.last_activity = ts
        if summary.status == TaskStatus.LOST and event_type != "runner_lost":
            # Something publishes for it again: resumed elsewhere (task_resumed), or the
            # runner was only cut off from the hub and is back.
            summary.status = TaskStatus.RUNNING
        if event_type == "api_action":
            summary.api_actions += 1
            return
        if event_type not in _DECODED:
            return
        if payload is None:
            try:
                payload = _decode(body).get("payload", {})
            except (msgspec.DecodeError, AttributeError):
                return
        if not isinstance(payload, dict):
            return
        if event_type == "runner_lost":
            if summary.status not in FINAL_STATUSES.values():
                summary.status = TaskStatus.LOST
        elif event_type == "task_started":
            summary.status = TaskStatus.RUNNING
            summary.ended_at = None
            summary.started_at = min(summary.started_at, ts)
            summary.provider = _str(payload.get("provider")) or summary.provider
            summary.model = _str(payload.get("model")) or summary.model
            summary.prompt = self._text(payload.get("prompt")) or summary.prompt
        elif event_type == "llm_usage":
            summary.input_tokens += _int(payload.get("inputTokens"))
            summary.output_tokens += _int(payload.get("outputTokens"))
            summary.cached_tokens += _int(payload.get("cachedTokens"))
            summary.model = _str(payload.get("model")) or summary.model
            summary.provider = _str(payload.get("provider")) or summary.provider
        elif event_type == "tool_executed":
            summary.tool_calls += 1
            if payload.get("success") is False:
                summary.tool_failures += 1
            if payload.get("approved") is False:
                summary.tool_denials += 1
        elif event_type in _OPENS:
            self._open_request(summary, seq, ts, event_type, payload)
        elif event_type in _SETTLES:
            if summary.pending:
                summary.pending.pop(str(payload.get("requestId")), None)
        else:
            summary.status = FINAL_STATUSES[event_type]
            summary.ended_at = ts
            summary.pending = None  # an ended task waits for nothing
            summary.result = self._text(payload.get("result"))
            summary.error = self._text(payload.get("error"))

    def _open_request(
        self, summary: TaskSummary, seq: int, ts: int, event_type: str, payload: dict[str, Any]
    ) -> None:
        request_id = _str(payload.get("requestId"))
        if request_id is None:
            return
        pending = summary.pending if summary.pending is not None else {}
        if len(pending) >= MAX_PENDING_PER_TASK:
            pending.pop(next(iter(pending)))
        request: dict[str, Any] = {
            "taskId": summary.task_id,
            "requestId": request_id,
            "kind": "approval" if event_type == "approval_requested" else "question",
            "seq": seq,
            "requestedAt": ts,
        }
        for key in ("tool", "summary", "question"):
            if (text := self._text(payload.get(key))) is not None:
                request[key] = text
        for key in ("arguments", "options"):
            value = payload.get(key)
            if value is not None:
                # Kept whole up to the text limit; beyond it, read the event by its seq.
                if len(_encode(value)) <= self.text_chars * 4:
                    request[key] = value
                else:
                    request[key + "Truncated"] = True
        if payload.get("argumentsTruncated") is True:
            request["argumentsTruncated"] = True
        pending[request_id] = request
        summary.pending = pending

    def pending_requests(
        self, visible: Callable[[TaskSummary], bool] | None = None, task_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Open approval requests and questions across tasks, oldest first."""
        found = [
            request
            for summary in self.tasks.values()
            if summary.pending
            and (task_id is None or summary.task_id == task_id)
            and (visible is None or visible(summary))
            for request in summary.pending.values()
        ]
        found.sort(key=lambda request: int(request["seq"]))
        return found

    def _text(self, value: Any) -> str | None:
        text = _str(value)
        if text is not None and len(text) > self.text_chars:
            return text[: self.text_chars] + "…"
        return text

    def get(self, task_id: str) -> TaskSummary | None:
        return self.tasks.get(task_id)

    def dump(self) -> bytes:
        """Every summary, least recently active first (what ``load`` takes back): a
        cluster node starts from this instead of folding the whole log."""
        return _snapshot_encoder.encode(list(self.tasks.values()))

    def load(self, data: bytes) -> None:
        """Replace the summaries with a ``dump``'s."""
        self.tasks = OrderedDict(
            (summary.task_id, summary) for summary in _snapshot_decoder.decode(data)
        )
        while len(self.tasks) > self.max_tasks:
            self.tasks.popitem(last=False)

    def forget_before(self, oldest_seq: int) -> int:
        """Drop summaries whose every event retention removed; returns how many."""
        dropped = 0
        while self.tasks:
            first = next(iter(self.tasks.values()))
            if first.last_seq >= oldest_seq:
                break
            self.tasks.popitem(last=False)
            dropped += 1
        return dropped

    def listing(
        self,
        status: str | None = None,
        limit: int = 500,
        before: int | None = None,
        visible: Callable[[TaskSummary], bool] | None = None,
        now_ms: int = 0,
    ) -> list[TaskSummary]:
        """Most recently active first; ``before`` (a ``lastSeq``) continues a listing."""
        chosen: list[TaskSummary] = []
        for summary in reversed(self.tasks.values()):
            if len(chosen) >= limit:
                break
            if before is not None and summary.last_seq >= before:
                continue
            if status is not None and summary.current_status(now_ms) != status:
                continue
            if visible is not None and not visible(summary):
                continue
            chosen.append(summary)
        return chosen


_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(list[TaskSummary])

_OPENS = frozenset({"approval_requested", "question_asked"})
_SETTLES = frozenset({"approval_resolved", "question_answered"})
_DECODED = frozenset(
    {
        "task_started",
        "runner_lost",
        "llm_usage",
        "tool_executed",
        *FINAL_STATUSES,
        *_OPENS,
        *_SETTLES,
    }
)
MAX_PENDING_PER_TASK = 100


def _on_task_channel(channel: str, task_id: str) -> bool:
    """Whether ``channel`` is ``tasks.<task_id>`` or below it ("" when unknown: trusted)."""
    if not channel:
        return True
    return channel.startswith("tasks.") and (
        channel[6:] == task_id or channel[6:].startswith(task_id + ".")
    )


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
