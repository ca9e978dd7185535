"""``TaskRecorder``: the events of a ``Task`` for an agent loop taskcast does not run.

A hand-rolled loop, or a framework integration (LangChain, OpenAI Agents), tells the
recorder what happened — a model response, its token usage, a tool run, a hand-off —
and the recorder emits the same events with the same payloads as taskcast's own
``Task``: the seed-exact ``api_action`` after every successful model response, then
``llm_usage``, ``tool_executed``, and ``task_started`` / ``task_completed`` /
``task_failed`` around the whole. Everything goes through the service's outbox, redacted,
and never blocks or raises into the agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from taskcast.ids import random_id
from taskcast.task.conversation import ToolCall
from taskcast.task.emitter import Emitter, MessageSink
from taskcast.task.events import (
    MAX_OUTPUT,
    approval_arguments,
    final_payload,
    now_ms,
    response_message,
    summarize_arguments,
    tool_executed_payload,
    truncate,
    usage_payload,
)
from taskcast.task.redaction import Redactor
from taskcast.task.remote_link import Outcome, RemoteLink
from taskcast.vocabulary import EventType

log = logging.getLogger("taskcast.recorder")

# A tool call as integrations see it: (name, arguments) or a ToolCall.
ToolCallLike = ToolCall | tuple[str, dict[str, Any]]


class TaskRecorder:
    """Record one task's events; ``with`` (or ``async with``) starts it and ends it as
    completed, or failed when the block raises.

    ``task_id`` defaults to a new random id. ``provider``/``model`` describe the model
    for ``task_started`` and ``llm_usage`` unless a call names its own.
    """

    def __init__(
        self,
        service: MessageSink | None,
        task_id: str | None = None,
        *,
        provider: str = "unknown",
        model: str = "unknown",
        redact_patterns: Iterable[str] = (),
    ) -> None:
        self.task_id = task_id or random_id()
        self.provider = provider
        self.model = model
        self.turns = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.result: str | None = None  # the task's result; the last response by default
        self.status: str | None = None  # None until started; then running, completed, failed
        self.service = service
        self._emitter = Emitter(service)
        self._redactor = Redactor(redact_patterns)
        self._started = time.monotonic()
        self._remote: RemoteLink | None = None
        self.aborted_by: str | None = None  # set when someone sent `abort` through the hub

    # --- the task's life --------------------------------------------------------

    def start(self, prompt: str | None = None, **extra: Any) -> None:
        """``task_started`` (once); ``extra`` joins its payload (e.g. ``agent``)."""
        if self.status is not None:
            return
        self.status = "running"
        self._started = time.monotonic()
        self._emit(
            EventType.TASK_STARTED,
            {
                "prompt": truncate(prompt or "", MAX_OUTPUT),
                "provider": self.provider,
                "model": self.model,
                "systemPrompt": None,
                "instance": None,
                **extra,
            },
        )

    def complete(self, result: str | None = None) -> None:
        """``task_completed`` with the result (the last response's text when not given)."""
        self._end("completed", result=result if result is not None else self.result or "")

    def fail(self, error: BaseException | str) -> None:
        """``task_failed``; ``error`` is an exception or a message."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._end("failed", error=text)

    def _end(self, status: str, *, result: str = "", error: str = "") -> None:
        if self.status in ("completed", "failed"):
            return
        self.start()
        self.status = status
        if self._remote is not None:
            self._remote.stop()
            self._remote = None
        event = EventType.TASK_COMPLETED if status == "completed" else EventType.TASK_FAILED
        self._emit(
            event,
            final_payload(
                status,
                turns=self.turns,
                duration_ms=int((time.monotonic() - self._started) * 1000),
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                result=result,
                error=error,
            ),
        )

    # --- what happens in it -----------------------------------------------------

    def api_action(self, text: str = "", tool_calls: Iterable[ToolCallLike] = ()) -> None:
        """One successful model response: the seed-exact ``api_action``, its message the
        response text, or the rendered tool calls when there is no text."""
        self.start()
        self.turns += 1
        calls = [_tool_call(call) for call in tool_calls]
        message = response_message(text or "", calls)
        if text and text.strip():
            self.result = text
        payload = {"taskId": self.task_id, "message": message, "timestamp": now_ms()}
        self._emitter.emit(
            {"type": EventType.API_ACTION.value, "payload": self._redactor.payload(payload)}
        )

    def usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        model: str | None = None,
        provider: str | None = None,
        response_model: str | None = None,
        cached_tokens: int = 0,
        latency_ms: int | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """``llm_usage`` for one model response."""
        self.start()
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        payload = usage_payload(
            self.task_id,
            provider or self.provider,
            model or self.model,
            response_model=response_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            latency_ms=latency_ms,
            finish_reason=finish_reason,
        )
        self._emit(EventType.LLM_USAGE, payload)

    def tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        output: Any = "",
        *,
        success: bool = True,
        duration_ms: int = 0,
    ) -> None:
        """``tool_executed`` for one tool run (``success=False`` when it raised)."""
        self.start()
        text = output if isinstance(output, str) else str(output)
        self._emit(
            EventType.TOOL_EXECUTED,
            tool_executed_payload(
                name, arguments or {}, text, success=success, duration_ms=duration_ms
            ),
        )

    def handoff(self, from_agent: str, to_agent: str) -> None:
        """``agent_handoff``: the conversation moves from one agent to another."""
        self.start()
        self._emit(EventType.AGENT_HANDOFF, {"fromAgent": from_agent, "toAgent": to_agent})

    # --- asking people through the hub (docs/orchestration.md) --------------------

    async def request_approval(
        self, tool: str, arguments: dict[str, Any] | None = None, *, timeout: float = 600.0
    ) -> Outcome:
        """Publish ``approval_requested`` for a tool call and wait for the first
        ``approve``/``deny`` sent to the task (``taskcast approve``, the dashboard); a
        timeout denies. Needs a ``CommunicationService`` (it follows ``control.<taskId>``)."""
        arguments = arguments or {}
        details = {
            "tool": tool,
            **approval_arguments(arguments),
            "summary": summarize_arguments(arguments),
        }
        return await self._link(timeout).request_approval(details)

    async def ask(
        self, question: str, options: list[str] | None = None, *, timeout: float = 600.0
    ) -> str | None:
        """Publish ``question_asked`` and wait for a ``reply``; None on timeout."""
        outcome = await self._link(timeout).ask_question(question, options, None)
        return outcome.answer

    def _link(self, timeout: float) -> RemoteLink:
        self.start()
        if self._remote is None:
            service = self.service
            if not all(hasattr(service, name) for name in ("on", "off", "follow", "unfollow")):
                raise TypeError("asking through the hub needs a CommunicationService")
            self._remote = RemoteLink(
                self.task_id,
                service,  # type: ignore[arg-type]
                self._emit,
                timeout=timeout,
                on_abort=self._abort_from_remote,
            )
            self._remote.start()
        self._remote.timeout = timeout
        return self._remote

    def _abort_from_remote(self, by: str, reason: str | None) -> None:
        self.aborted_by = by
        log.warning("task %s: abort requested by %s (%s)", self.task_id, by, reason)

    def _emit(self, event_type: str, payload: dict[str, Any]) -> None:
        payload = self._redactor.payload({"taskId": self.task_id, **payload, "timestamp": now_ms()})
        self._emitter.emit({"type": str(event_type), "payload": payload})

    # --- with / async with ------------------------------------------------------

    def __enter__(self) -> TaskRecorder:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        if error is None:
            self.complete()
        elif not isinstance(error, GeneratorExit):
            self.fail(error)

    async def __aenter__(self) -> TaskRecorder:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> None:
        self.__exit__(kind, error, tb)


def _tool_call(call: ToolCallLike) -> ToolCall:
    if isinstance(call, ToolCall):
        return call
    name, arguments = call
    return ToolCall("", name, arguments if isinstance(arguments, dict) else {"input": arguments})
