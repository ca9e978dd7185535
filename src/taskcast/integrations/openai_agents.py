"""OpenAI Agents SDK: ``TaskcastRunHooks`` publishes a run's events.

``Runner.run(agent, input, hooks=TaskcastRunHooks(service))``: the run is the task;
every model response becomes one seed-exact ``api_action`` plus ``llm_usage``, every
function tool run a ``tool_executed``, every hand-off between agents an
``agent_handoff``, and the final output ``task_completed``. The SDK has no hook for a
run that raises: ``await hooks.run(agent, input, ...)`` runs it and records
``task_failed`` too (or call ``hooks.fail(error)`` yourself), and with
``remote_approvals=True`` routes the SDK's tool approvals through the hub. One hooks
object may serve runs one after another; each is its own task unless ``task_id`` is given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from taskcast.integrations import missing_extra
from taskcast.recorder import TaskRecorder
from taskcast.task.emitter import MessageSink

try:
    from agents import Agent, RunContextWrapper, RunHooks, Runner, Tool
    from agents.items import ModelResponse, TResponseInputItem
    from agents.tool import default_tool_error_function
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("openai-agents", "openai-agents") from exc

# What a function tool that raised returns to the model by default (the SDK has no
# tool-error hook): seen as a tool result, it is recorded as a failed run.
TOOL_ERROR_OUTPUT = default_tool_error_function(None, Exception())  # type: ignore[arg-type]


class TaskcastRunHooks(RunHooks[Any]):
    """Publish an Agents SDK run as a taskcast task."""

    def __init__(
        self,
        service: MessageSink | None,
        task_id: str | None = None,
        *,
        redact_patterns: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.task_id = task_id
        self.redact_patterns = tuple(redact_patterns)
        self.recorder: TaskRecorder | None = None
        self._llm_started = 0.0
        self._tools: dict[str, tuple[dict[str, Any], float]] = {}  # by tool call id

    def _task(self, agent: Agent[Any]) -> TaskRecorder:
        if self.recorder is None:
            self.recorder = TaskRecorder(
                self.service,
                self.task_id,
                provider="openai",
                model=_model_name(agent),
                redact_patterns=self.redact_patterns,
            )
        return self.recorder

    async def run(
        self,
        agent: Agent[Any],
        input: Any,
        *,
        remote_approvals: bool = False,
        approval_timeout: float = 600.0,
        **kwargs: Any,
    ) -> Any:
        """``Runner.run`` with these hooks, recording ``task_failed`` if it raises.

        With ``remote_approvals``, a tool that needs approval (``needs_approval``) is
        asked through the hub — ``approval_requested``, answered by ``taskcast approve``
        / ``deny`` or the dashboard — and the run resumes with the decision."""
        try:
            result = await Runner.run(agent, input, hooks=self, **kwargs)
            while remote_approvals and result.interruptions:
                state = result.to_state()
                for item in result.interruptions:
                    recorder = self._task(agent)
                    outcome = await recorder.request_approval(
                        str(item.tool_name),
                        _arguments_of(item.arguments or ""),
                        timeout=approval_timeout,
                    )
                    if outcome.approved:
                        state.approve(item)
                    else:
                        why = f" ({outcome.reason})" if outcome.reason else ""
                        state.reject(item, rejection_message=f"denied by {outcome.by}{why}")
                result = await Runner.run(agent, state, hooks=self, **kwargs)
            return result
        except BaseException as error:
            self.fail(error)
            raise

    def fail(self, error: BaseException | str) -> None:
        if self.recorder is not None:
            self.recorder.fail(error)
            self.recorder = None

    # --- the SDK's hooks -----------------------------------------------------------

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        self._task(agent).start(_prompt_of(input_items), agent=agent.name)
        self._llm_started = time.monotonic()

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        recorder = self._task(agent)
        text, calls = _response_of(response)
        recorder.api_action(text, calls)
        usage = response.usage
        details = getattr(usage, "input_tokens_details", None)
        recorder.usage(
            usage.input_tokens,
            usage.output_tokens,
            model=_model_name(agent),
            cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            latency_ms=int((time.monotonic() - self._llm_started) * 1000),
            finish_reason="tool_calls" if calls else "stop",
        )

    async def on_agent_end(self, context: Any, agent: Agent[Any], output: Any) -> None:
        recorder = self._task(agent)
        recorder.complete(output if isinstance(output, str) else json.dumps(output, default=str))
        self.recorder = None  # the next run is a new task

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]
    ) -> None:
        self._task(from_agent).handoff(from_agent.name, to_agent.name)

    async def on_tool_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool
    ) -> None:
        call_id = str(getattr(context, "tool_call_id", "") or tool.name)
        self._tools[call_id] = (
            _arguments_of(getattr(context, "tool_arguments", "")),
            time.monotonic(),
        )

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object
    ) -> None:
        call_id = str(getattr(context, "tool_call_id", "") or tool.name)
        arguments, started = self._tools.pop(call_id, ({}, time.monotonic()))
        output = result if isinstance(result, str) else str(result)
        self._task(agent).tool(
            tool.name,
            arguments,
            output,
            success=output != TOOL_ERROR_OUTPUT,
            duration_ms=int((time.monotonic() - started) * 1000),
        )


def _model_name(agent: Agent[Any]) -> str:
    model = agent.model
    if isinstance(model, str):
        return model
    return str(getattr(model, "model", None) or type(model).__name__ if model else "default")


def _prompt_of(items: list[TResponseInputItem]) -> str:
    """The first user message of the run's input."""
    for item in items:
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
    return ""


def _response_of(response: ModelResponse) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The response's text and its tool calls (hand-offs are tool calls too)."""
    texts: list[str] = []
    calls: list[tuple[str, dict[str, Any]]] = []
    for item in response.output:
        kind = getattr(item, "type", None)
        if kind == "message":
            for part in getattr(item, "content", []) or []:
                text = getattr(part, "text", None)
                if isinstance(text, str):
                    texts.append(text)
        elif kind == "function_call":
            calls.append(
                (str(getattr(item, "name", "")), _arguments_of(getattr(item, "arguments", "")))
            )
    return "".join(texts), calls


def _arguments_of(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"input": raw}
    return value if isinstance(value, dict) else {"input": value}
