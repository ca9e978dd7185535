"""The agent ``Task``: LLM requests, tool calls, history, and event emission.

The seed contract (docs/task.md): after every successful API response — once the
assistant message is in the API conversation history and before anything else —
a Task with a communication service sends
``{"type": "api_action", "payload": {"taskId", "message", "timestamp"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from taskcast.files import ensure_private_dir, write_private
from taskcast.leases import DEFAULT_TTL_SECONDS
from taskcast.task.approval import DEFAULT_APPROVAL, ApprovalPolicy
from taskcast.task.conversation import AssistantTurn, Message, ToolCall, Usage
from taskcast.task.emitter import Emitter, MessageSink
from taskcast.task.events import (
    MAX_OUTPUT,
    api_action_payload,
    approval_arguments,
    final_payload,
    llm_usage_payload,
    now_ms,
    summarize_arguments,
    tool_executed_payload,
    truncate,
)
from taskcast.task.handoff import LeaseKeeper, fetch_history
from taskcast.task.history import HISTORY_EVENT, RESUMED_EVENT, history_payloads
from taskcast.task.providers.base import NO_API_KEY, Provider, ProviderError
from taskcast.task.redaction import Redactor, secret_environment_values
from taskcast.task.remote_link import LOCAL_USER, RemoteLink
from taskcast.task.tools import (
    DEFAULT_TOOLS,
    TOOLS,
    Ask,
    ToolContext,
    ToolResult,
    command_environment,
    run_tool,
)
from taskcast.vocabulary import FINAL_STATUSES, EventType

log = logging.getLogger("taskcast.task")

PayloadBuilder = Callable[[dict[str, Any], AssistantTurn], dict[str, Any]]
DEFAULT_HISTORY_DIR = Path(".taskcast") / "tasks"
HISTORY_FILE = "api_conversation_history.jsonl"
# The event that ends a task with each final status.
FINAL_EVENTS = {
    str(status): str(event) for event, status in FINAL_STATUSES.items()
}  # one message per line, appended
LEGACY_HISTORY_FILE = "api_conversation_history.json"  # before JSON Lines

SYSTEM_PROMPT = """You are a capable software agent working in the directory {cwd}.
Use the tools to inspect and change files and to run commands. Paths are relative to
that directory and may not leave it. When the task is done, call attempt_completion
with a short summary of the result."""


@dataclass
class TaskResult:
    task_id: str
    status: str  # completed | failed | aborted
    result: str = ""
    error: str = ""
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    duration_ms: int = 0
    denied: list[str] = field(default_factory=list)  # tools that were not allowed to run


class TaskAborted(Exception):
    pass


class TaskFailed(Exception):
    pass


class Task:
    def __init__(
        self,
        api: Provider,
        *,
        communication_service: MessageSink | None = None,
        task_id: str | None = None,
        cwd: str | os.PathLike[str] = ".",
        tools: Iterable[str] = DEFAULT_TOOLS,
        approval: ApprovalPolicy | str = DEFAULT_APPROVAL,
        history_dir: str | os.PathLike[str] = DEFAULT_HISTORY_DIR,
        payload_builder: PayloadBuilder | None = None,
        system_prompt: str | None = None,
        ask: Ask | None = None,
        max_turns: int = 50,
        max_retries: int = 4,
        retry_base_delay: float = 1.0,
        command_timeout: float = 60.0,
        command_env: Iterable[str] = (),
        redact_patterns: Iterable[str] = (),
        approval_timeout: float = 600.0,
        remote_control: bool = True,
        lease_seconds: float | None = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.api = api
        self.task_id = task_id or uuid.uuid4().hex
        self.cwd = Path(cwd).resolve()
        tool_names = list(tools)
        unknown = [name for name in tool_names if name not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {sorted(TOOLS)}")
        self.tools = [TOOLS[name][0] for name in tool_names]
        self.approval = (
            approval if isinstance(approval, ApprovalPolicy) else ApprovalPolicy(approval)
        )
        self.history_dir = Path(history_dir) / self.task_id
        self.payload_builder = payload_builder
        self.system_prompt = system_prompt or SYSTEM_PROMPT.format(cwd=self.cwd)
        self.max_turns = max_turns
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.context = ToolContext(
            self.cwd,
            command_timeout=command_timeout,
            ask=ask,
            env=command_environment(command_env),
            allowed=frozenset(tool_names),
        )
        self.api_conversation_history: list[Message] = []
        self.status = "idle"
        self.usage = Usage()
        self._emitter = Emitter(communication_service)
        api_key = getattr(getattr(api, "client", None), "api_key", None)
        self.redactor = Redactor(
            redact_patterns,
            [
                *secret_environment_values(),
                *([api_key] if isinstance(api_key, str) and _worth_hiding(api_key) else []),
            ],
        )
        self._abort = threading.Event()
        self._aborted_by: str | None = None
        self._abort_reason: str | None = None
        self._runner: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control_seq = 0
        self.denied: list[str] = []  # tool calls denied in this run
        self._history_file: IO[str] | None = None
        # Set when the task was taken over from the hub: {"from", "lastSeq"}.
        self.resumed_from: dict[str, Any] | None = None
        # One runner at a time: a Task publishing to a hub holds its lease on the task id.
        # Every node the service knows (a cluster): the lease requests fail over too.
        hub_url = getattr(communication_service, "urls", None) or getattr(
            communication_service, "url", None
        )
        self._lease = (
            LeaseKeeper(
                hub_url, getattr(communication_service, "token", None), self.task_id, lease_seconds
            )
            if isinstance(hub_url, str | list) and lease_seconds
            else None
        )
        # Remote orchestration: a service that can follow channels (CommunicationService)
        # links the Task to control.<taskId> — abort and message always, approvals and
        # questions with approval="remote" (docs/orchestration.md).
        self.remote: RemoteLink | None = None
        if (
            remote_control
            and communication_service is not None
            and _can_follow(communication_service)
        ):
            self.remote = RemoteLink(
                self.task_id,
                communication_service,  # type: ignore[arg-type]
                self._emit,
                timeout=approval_timeout,
                on_abort=self._abort_from_remote,
                on_applied=self._remember_control_seq,
            )
            self.context.ask_options = self._ask_remotely
        elif self.approval.mode == "remote":
            raise ValueError(
                "approval='remote' needs a CommunicationService (a hub to ask through)"
            )

    # --- resuming ---------------------------------------------------------

    @classmethod
    def resume(
        cls,
        task_id: str,
        api: Provider,
        *,
        history_dir: str | os.PathLike[str] = DEFAULT_HISTORY_DIR,
        **options: Any,
    ) -> Task:
        """A Task that continues from the history saved under ``history_dir/task_id``."""
        task = cls(api, task_id=task_id, history_dir=history_dir, **options)
        task.api_conversation_history = load_history(task.history_dir)
        meta = task.history_dir / "task.json"
        if meta.exists():
            saved = json.loads(meta.read_text())
            control_seq, control_log = saved.get("controlSeq", 0), saved.get("controlLogId")
            task._control_seq = control_seq if isinstance(control_seq, int) else 0
            if task.remote is not None:  # commands already applied are not applied again
                task.remote.control.last_seq = task._control_seq
                # ... on that log: on another, its commands are all new (remote_link.py)
                task.remote.log_id = control_log if isinstance(control_log, str) else None
        return task

    @classmethod
    async def from_hub(
        cls,
        task_id: str,
        *,
        hub: str,
        provider: Provider,
        cwd: str | os.PathLike[str] = ".",
        token: Any = None,
        **options: Any,
    ) -> Task:
        """A Task rebuilt from the hub's log — its exact conversation history and system
        prompt — ready to ``await task.run()`` on as the same task id (it publishes
        ``task_resumed``). Its history is saved under ``history_dir`` like any Task's."""
        fetched = await fetch_history(hub, task_id, token)
        if fetched.system_prompt is not None:
            options.setdefault("system_prompt", fetched.system_prompt)
        task = cls(provider, task_id=task_id, cwd=cwd, **options)
        task.api_conversation_history = []
        (task.history_dir / HISTORY_FILE).unlink(missing_ok=True)  # the log is the truth
        for message in fetched.messages:
            task.api_conversation_history.append(message)
            task._persist_message(message)
        task.resumed_from = {"from": fetched.last_runner, "lastSeq": fetched.last_seq}
        return task

    # --- running ------------------------------------------------------------

    def run_sync(self, prompt: str | None = None) -> TaskResult:
        """Run to the end from synchronous code."""
        return asyncio.run(self.run(prompt))

    def abort(self, reason: str | None = None, *, by: str | None = None) -> None:
        """Stop the task now: cancels an in-flight API request or a running command (its
        process group is killed). Thread-safe."""
        if not self._abort.is_set():
            self._aborted_by, self._abort_reason = by, reason
        self._abort.set()
        if self._runner is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to stop
                self._loop.call_soon_threadsafe(self._runner.cancel)

    def pending(self) -> list[dict[str, Any]]:
        """Approval requests and questions waiting for an answer (remote orchestration)."""
        return self.remote.pending() if self.remote is not None else []

    def _abort_from_remote(self, by: str, reason: str | None) -> None:
        self.abort(reason, by=by)

    def _remember_control_seq(self, seq: int) -> None:
        self._control_seq = seq
        self._save_meta()

    async def run(self, prompt: str | None = None) -> TaskResult:
        """Run to the end. Raises ``TaskLeaseHeld`` (and changes nothing) when another
        instance is running this task."""
        if self._lease is not None:
            await self._lease.acquire()
        try:
            return await self._run(prompt)
        finally:
            if self._lease is not None:
                await self._lease.release()
            if self._history_file is not None:
                self._history_file.close()
                self._history_file = None

    async def _run(self, prompt: str | None) -> TaskResult:
        self._loop = asyncio.get_running_loop()
        self._runner = asyncio.current_task()
        started = time.monotonic()
        turns = 0
        known = len(self.api_conversation_history)
        if prompt is not None:
            self._append({"role": "user", "content": prompt}, announce=False)
        elif not self.api_conversation_history:
            raise ValueError("a new task needs a prompt")
        self.status = "running"
        self._save_meta()
        if self.remote is not None:
            self.remote.start()
        self._emit(
            EventType.TASK_STARTED,
            {
                "prompt": truncate(prompt or "(resumed)", MAX_OUTPUT),
                "provider": self.api.name,
                "model": self.api.model,
                "systemPrompt": self.system_prompt,
                "instance": self._lease.holder if self._lease is not None else None,
            },
        )
        if self.resumed_from is not None:
            self._emit(RESUMED_EVENT, self.resumed_from)
        for index in range(known, len(self.api_conversation_history)):
            self._announce(index)
        outcome: TaskResult
        try:
            completion: str | None = None
            while completion is None:
                if turns >= self.max_turns:
                    raise TaskFailed(f"turn limit reached ({self.max_turns})")
                self._check_abort()
                self._take_user_messages()
                turn = await self._request()
                turns += 1
                completion = await self._handle_turn(turn)
            outcome = self._finish("completed", turns, started, result=completion)
        except TaskFailed as exc:
            outcome = self._finish("failed", turns, started, error=str(exc))
        except (TaskAborted, asyncio.CancelledError):
            if not self._abort.is_set():
                raise
            outcome = self._finish("aborted", turns, started, error="aborted")
        finally:
            self._runner = None
            if self.remote is not None:
                self.remote.stop()
        return outcome

    def _take_user_messages(self) -> None:
        """Steering: messages sent to the running task join the conversation before the
        next request."""
        if self.remote is None:
            return
        while self.remote.messages:
            text, _ = self.remote.messages.pop(0)
            self._append({"role": "user", "content": text})

    async def _handle_turn(self, turn: AssistantTurn) -> str | None:
        """Record and announce one response, run its tools; the result text when done."""
        self._append(turn.to_message(), announce=False)
        self._emit_api_action(turn)  # the seed contract: first, right after the append
        self._announce(len(self.api_conversation_history) - 1)
        self.usage.input_tokens += turn.usage.input_tokens
        self.usage.output_tokens += turn.usage.output_tokens
        self._emit(
            EventType.LLM_USAGE,
            llm_usage_payload(self.task_id, self.api.name, self.api.model, turn),
        )
        if not turn.tool_calls:
            return turn.text or "(no result)"
        completion: str | None = None
        for call in turn.tool_calls:
            self._check_abort()
            result = await self._run_tool(call)
            self._append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "name": call.name,
                    "content": result.content,
                    "is_error": result.is_error,
                }
            )
            if result.completed:
                completion = result.content
        return completion

    def _emit_api_action(self, turn: AssistantTurn) -> None:
        payload = api_action_payload(self.task_id, turn)
        if self.payload_builder is not None:
            try:
                payload = self.payload_builder(payload, turn)
            except Exception:
                log.exception("payload_builder failed; sending the default payload")
        self._emitter.emit(
            {"type": EventType.API_ACTION.value, "payload": self.redactor.payload(payload)}
        )

    async def _request(self) -> AssistantTurn:
        attempt = 0
        while True:
            try:
                return await self.api.complete(
                    self.system_prompt, self.api_conversation_history, self.tools
                )
            except ProviderError as exc:
                if not exc.transient or attempt >= self.max_retries:
                    raise TaskFailed(f"API request failed: {exc}") from exc
                delay = self.retry_base_delay * 2**attempt * random.uniform(0.5, 1.0)
                log.warning("API request failed (%s); retry %d in %.1fs", exc, attempt + 1, delay)
                self._emit(
                    EventType.API_RETRY,
                    {
                        "attempt": attempt + 1,
                        "error": truncate(str(exc), 500),
                        "delayMs": int(delay * 1000),
                    },
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def _run_tool(self, call: ToolCall) -> ToolResult:
        started = time.monotonic()
        approved, denial = await self._approve(call)
        if not approved:
            self.denied.append(call.name)
        if approved:
            result = await run_tool(self.context, call.name, call.arguments)
        else:
            result = ToolResult(f"the user denied {call.name}{denial}", is_error=True)
        self._emit(
            EventType.TOOL_EXECUTED,
            tool_executed_payload(
                call.name,
                call.arguments,
                result.content,
                success=not result.is_error,
                approved=approved,
                duration_ms=int((time.monotonic() - started) * 1000),
                truncated=result.truncated,
            ),
        )
        return result

    async def _approve(self, call: ToolCall) -> tuple[bool, str]:
        """Whether the call may run, and (when denied) what to tell the model about why."""
        if self.approval.mode != "remote" or not self.approval.needs_confirmation(call):
            return await self.approval.approve(call), ""
        assert self.remote is not None
        local = self.approval.confirm(call) if self.approval.confirm is not None else None
        outcome = await self.remote.request_approval(
            {
                "tool": call.name,
                **approval_arguments(call.arguments),
                "summary": summarize_arguments(call.arguments),
                "toolCallId": call.id,  # the call in the history (AG-UI interrupts name it)
            },
            local,
        )
        if outcome.approved:
            return True, ""
        why = f" ({outcome.reason})" if outcome.reason else ""
        return False, f": denied by {outcome.by}{why}"

    async def _ask_remotely(self, question: str, options: list[str] | None) -> str | None:
        assert self.remote is not None
        if self.approval.mode != "remote":
            return await self.context.ask(question) if self.context.ask is not None else None
        local = self.context.ask(question) if self.context.ask is not None else None
        outcome = await self.remote.ask_question(question, options, local)
        return outcome.answer

    def _check_abort(self) -> None:
        if self._abort.is_set():
            raise TaskAborted()

    def _finish(
        self, status: str, turns: int, started: float, *, result: str = "", error: str = ""
    ) -> TaskResult:
        self.status = status
        outcome = TaskResult(
            self.task_id,
            status,
            result,
            error,
            turns,
            self.usage,
            int((time.monotonic() - started) * 1000),
            list(self.denied),
        )
        payload = final_payload(
            status,
            turns=turns,
            duration_ms=outcome.duration_ms,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            result=result,
            error=error,
        )
        if self.denied:  # say so: "completed" is not "did what it said" when tools were denied
            payload["deniedTools"] = list(self.denied)
        if status == "aborted":
            payload["by"] = self._aborted_by or LOCAL_USER
            payload["reason"] = self._abort_reason
        self._emit(FINAL_EVENTS[status], payload)
        self._save_meta(result=result, error=error)
        return outcome

    # --- history and events -----------------------------------------------

    def _append(self, message: Message, *, announce: bool = True) -> None:
        self.api_conversation_history.append(message)
        self._persist_message(message)
        if announce:
            self._announce(len(self.api_conversation_history) - 1)

    def _announce(self, index: int) -> None:
        """Publish a history message so followers can rebuild the conversation."""
        for payload in history_payloads(index, self.api_conversation_history[index]):
            self._emit(HISTORY_EVENT, payload)

    def _persist_message(self, message: Message) -> None:
        """Append one line to the history file (JSON Lines): constant work per message,
        where rewriting the whole file each time grew with the task (quadratic)."""
        if self._history_file is None:
            ensure_private_dir(self.history_dir)
            legacy = self.history_dir / LEGACY_HISTORY_FILE
            if legacy.exists():  # written by an older taskcast: continue in the new format
                legacy.unlink()
            self._history_file = open_private_append(self.history_dir / HISTORY_FILE)
            if self._history_file.tell() == 0 and len(self.api_conversation_history) > 1:
                for earlier in self.api_conversation_history[:-1]:  # resumed from JSON
                    self._history_file.write(_history_line(earlier))
        self._history_file.write(_history_line(message))

    def _save_meta(self, **extra: Any) -> None:
        self._write_json(
            "task.json",
            {
                "taskId": self.task_id,
                "status": self.status,
                "cwd": str(self.cwd),
                "provider": self.api.name,
                "model": self.api.model,
                "controlSeq": self._control_seq,
                "controlLogId": self.remote.log_id if self.remote is not None else None,
                "updatedAt": now_ms(),
                **extra,
            },
        )

    def _write_json(self, name: str, value: Any) -> None:
        # Private (0600 in a 0700 directory): the history holds unredacted tool output.
        ensure_private_dir(self.history_dir)
        data = json.dumps(value, ensure_ascii=False, indent=1).encode()
        write_private(self.history_dir / name, data)

    def _emit(self, event_type: str, payload: dict[str, Any]) -> None:
        payload = self.redactor.payload({"taskId": self.task_id, **payload, "timestamp": now_ms()})
        self._emitter.emit({"type": str(event_type), "payload": payload})


def _can_follow(service: object) -> bool:
    return all(
        callable(getattr(service, name, None)) for name in ("on", "off", "follow", "unfollow")
    )


def _worth_hiding(api_key: object) -> bool:
    """A real key: not the placeholder, and long enough that hiding it cannot mangle
    ordinary text (a local server's key "k" would turn every k into [REDACTED])."""
    return isinstance(api_key, str) and api_key != NO_API_KEY and len(api_key) >= 8


def _history_line(message: Message) -> str:
    return json.dumps(message, ensure_ascii=False) + "\n"


def load_history(directory: Path) -> list[Message]:
    """A saved history: JSON Lines, or the whole-file JSON of older versions."""
    lines = directory / HISTORY_FILE
    if lines.exists():
        return [json.loads(line) for line in lines.read_text().splitlines() if line.strip()]
    legacy = directory / LEGACY_HISTORY_FILE
    if legacy.exists():
        history: list[Message] = json.loads(legacy.read_text())
        return history
    raise FileNotFoundError(f"no saved history in {directory}")


def open_private_append(path: Path) -> IO[str]:
    """A line-buffered append handle on a 0600 file (each line reaches the OS at once)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return open(fd, "a", buffering=1, encoding="utf-8")
