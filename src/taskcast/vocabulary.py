"""The closed sets of the protocol, defined once: event types a Task publishes, task
statuses, and error codes. The dashboard reads them from ``/dashboard/constants.json``;
docs/protocol.md and docs/asyncapi.yaml list them (a test checks both)."""

from __future__ import annotations

from enum import StrEnum

from taskcast.commands import COMMAND_TYPE, RemoteEvent


class EventType(StrEnum):
    TASK_STARTED = "task_started"
    API_ACTION = "api_action"  # the seed contract
    LLM_USAGE = "llm_usage"
    TOOL_EXECUTED = "tool_executed"
    API_RETRY = "api_retry"
    HISTORY_APPENDED = "history_appended"
    TASK_RESUMED = "task_resumed"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_ABORTED = "task_aborted"
    AGENT_HANDOFF = "agent_handoff"  # integrations: a run moved to another agent
    RUNNER_LOST = "runner_lost"  # the hub: the runner's lease lapsed, the task not ended
    TASK_COMMAND = COMMAND_TYPE
    APPROVAL_REQUESTED = RemoteEvent.APPROVAL_REQUESTED.value
    QUESTION_ASKED = RemoteEvent.QUESTION_ASKED.value
    APPROVAL_RESOLVED = RemoteEvent.APPROVAL_RESOLVED.value
    QUESTION_ANSWERED = RemoteEvent.QUESTION_ANSWERED.value
    USER_MESSAGE = RemoteEvent.USER_MESSAGE.value
    COMMAND_REJECTED = RemoteEvent.COMMAND_REJECTED.value


class TaskStatus(StrEnum):
    ACTIVE = "active"  # known only from events other than task_started
    IDLE = "idle"  # active, then quiet
    RUNNING = "running"
    LOST = "lost"  # its runner's lease lapsed before it ended: resume it elsewhere
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


# The event that ends a task, and the status it leaves.
FINAL_STATUSES: dict[str, TaskStatus] = {
    EventType.TASK_COMPLETED: TaskStatus.COMPLETED,
    EventType.TASK_FAILED: TaskStatus.FAILED,
    EventType.TASK_ABORTED: TaskStatus.ABORTED,
}


class ErrorCode(StrEnum):
    """The ``code`` of an error frame or an HTTP error body."""

    BAD_JSON = "bad_json"
    INVALID_FRAME = "invalid_frame"
    INVALID_TYPE = "invalid_type"
    RESERVED_TYPE = "reserved_type"
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_EVENT = "invalid_event"
    INVALID_CHANNEL = "invalid_channel"
    BINARY_UNSUPPORTED = "binary_unsupported"
    STORE_UNAVAILABLE = "store_unavailable"
    SHUTTING_DOWN = "shutting_down"
    REPLAY_FAILED = "replay_failed"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    INVALID_QUERY = "invalid_query"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"  # HTTP only: a route that takes other methods
    UNAUTHORIZED = "unauthorized"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    BAD_HOST = "bad_host"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_WEBHOOK = "invalid_webhook"
    INVALID_LEASE = "invalid_lease"
    LEASE_HELD = "lease_held"
    INVALID_INPUT = "invalid_input"  # AG-UI: a body that is not a RunAgentInput for the task
    ALREADY_RESOLVED = "already_resolved"  # AG-UI: a resume for an interrupt already answered
