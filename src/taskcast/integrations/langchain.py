"""LangChain and LangGraph: ``TaskcastCallbackHandler`` publishes a run's events.

Pass it in ``callbacks=[...]`` (or ``config={"callbacks": [...]}``) of any chat model,
chain, agent or LangGraph graph. The outermost run is the task (its id is the task id
unless one is given); every model response inside it becomes one seed-exact
``api_action`` plus ``llm_usage``, every tool run a ``tool_executed``. It is a sync
handler that LangChain calls inline in async runs too (``run_inline``): it only queues
events in the service's outbox and never blocks or raises into the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from taskcast.integrations import missing_extra
from taskcast.recorder import TaskRecorder
from taskcast.task.emitter import MessageSink

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatGeneration, LLMResult
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("langchain", "langchain-core") from exc

# A LangGraph interrupt pauses a graph (to wait for a person); it is not a failure.
PAUSES = frozenset({"GraphInterrupt", "NodeInterrupt", "Interrupt"})


class TaskcastCallbackHandler(BaseCallbackHandler):
    """Publish a LangChain/LangGraph run as a taskcast task."""

    run_inline = True  # called in the run's own thread/loop: queuing an event is instant
    raise_error = False

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
        self._root: UUID | None = None
        self._paused = False  # the last run stopped at an interrupt: the next one resumes it
        self._interrupted = False  # a node of the current run raised an interrupt
        self._models: dict[UUID, tuple[str, str, float]] = {}  # provider, model, started
        self._tools: dict[UUID, tuple[str, dict[str, Any], float]] = {}

    # --- the outermost run is the task ----------------------------------------------

    def _begin(self, run_id: UUID, parent_run_id: UUID | None, prompt: str, model: str) -> None:
        if parent_run_id is not None or self._root is not None:
            return
        self._root = run_id
        if self._paused and self.recorder is not None:
            self._paused = False  # resuming after an interrupt: the same task goes on
            return
        self.recorder = TaskRecorder(
            self.service,
            self.task_id or str(run_id),
            model=model,
            redact_patterns=self.redact_patterns,
        )
        self.recorder.start(prompt)

    def _end(
        self, run_id: UUID, *, result: str | None = None, error: Any = None, paused: bool = False
    ) -> None:
        if run_id != self._root or self.recorder is None:
            return
        self._root = None
        interrupted, self._interrupted = self._interrupted, False
        if paused or interrupted or type(error).__name__ in PAUSES:
            self._paused = True  # waiting for a person: resumed by the next run
            return
        if error is None:
            self.recorder.complete(result)
        else:
            self.recorder.fail(error)
        self.recorder = None  # the next outermost run is a new task

    async def run_graph(
        self,
        graph: Any,
        input: Any,
        config: dict[str, Any] | None = None,
        *,
        approval_timeout: float = 600.0,
    ) -> Any:
        """Run a LangGraph graph with this handler and answer each ``interrupt`` through
        the hub, resuming until the graph ends. An interrupt whose value is a dict with a
        ``tool`` is an approval (resumed with ``{"approved", "by", "reason"}``); any
        other value is a question (resumed with the reply text, or None on timeout).
        The graph needs a checkpointer and ``config`` a ``thread_id``, as for any resume."""
        from langgraph.types import Command

        config = dict(config or {})
        config["callbacks"] = [*(config.get("callbacks") or []), self]
        result = await graph.ainvoke(input, config)
        while isinstance(result, dict) and result.get("__interrupt__"):
            answers = {}
            for pending in result["__interrupt__"]:
                answers[pending.id] = await self._answer(pending.value, approval_timeout)
            result = await graph.ainvoke(Command(resume=answers), config)
        return result

    async def _answer(self, value: Any, timeout: float) -> Any:
        recorder = self.recorder or TaskRecorder(self.service, self.task_id)
        if isinstance(value, dict) and isinstance(value.get("tool"), str):
            arguments = value.get("arguments")
            outcome = await recorder.request_approval(
                value["tool"], arguments if isinstance(arguments, dict) else {}, timeout=timeout
            )
            return {"approved": outcome.approved, "by": outcome.by, "reason": outcome.reason}
        options = value.get("options") if isinstance(value, dict) else None
        question = value.get("question") if isinstance(value, dict) else value
        return await recorder.ask(
            _text_of(question), options if isinstance(options, list) else None, timeout=timeout
        )

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._begin(run_id, parent_run_id, _prompt_of(inputs), "unknown")

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        paused = isinstance(outputs, dict) and bool(outputs.get("__interrupt__"))
        self._end(run_id, result=_result_of(outputs), paused=paused)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if type(error).__name__ in PAUSES:
            self._interrupted = True  # a node stopped for a person; the graph returns paused
        self._end(run_id, error=error)

    # --- model responses ------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        prompt = _text_of(messages[0][-1].content) if messages and messages[0] else ""
        self._model_started(run_id, parent_run_id, serialized, metadata, invocation_params, prompt)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        prompt = prompts[0] if prompts else ""
        self._model_started(run_id, parent_run_id, serialized, metadata, invocation_params, prompt)

    def _model_started(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        serialized: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        params: dict[str, Any] | None,
        prompt: str,
    ) -> None:
        meta, params = metadata or {}, params or {}
        model = str(
            meta.get("ls_model_name")
            or params.get("model")
            or params.get("model_name")
            or (serialized or {}).get("name")
            or "unknown"
        )
        provider = str(meta.get("ls_provider") or params.get("_type") or "unknown")
        self._models[run_id] = (provider, model, time.monotonic())
        self._begin(run_id, parent_run_id, prompt, model)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        provider, model, started = self._models.pop(run_id, ("unknown", "unknown", 0.0))
        recorder = self.recorder
        if recorder is None or not response.generations or not response.generations[0]:
            return
        generation = response.generations[0][0]
        message = generation.message if isinstance(generation, ChatGeneration) else None
        text = _text_of(message.content) if message is not None else generation.text
        calls = [
            (str(call.get("name")), dict(call.get("args") or {}))
            for call in (getattr(message, "tool_calls", None) or [])
        ]
        recorder.api_action(text, calls)
        usage = getattr(message, "usage_metadata", None) or _llm_output_usage(response)
        info = {**(generation.generation_info or {}), **getattr(message, "response_metadata", {})}
        recorder.usage(
            int(usage.get("input_tokens", 0)),
            int(usage.get("output_tokens", 0)),
            model=model,
            provider=provider,
            response_model=info.get("model_name") or info.get("model"),
            cached_tokens=int((usage.get("input_token_details") or {}).get("cache_read", 0) or 0),
            latency_ms=int((time.monotonic() - started) * 1000) if started else None,
            finish_reason=info.get("finish_reason") or info.get("stop_reason"),
        )
        self._end(run_id, result=text)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._models.pop(run_id, None)
        self._end(run_id, error=error)

    # --- tools ----------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str((serialized or {}).get("name") or kwargs.get("name") or "tool")
        self._tools[run_id] = (name, inputs or _arguments_of(input_str), time.monotonic())
        self._begin(run_id, parent_run_id, input_str, "unknown")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        failed = getattr(output, "status", None) == "error"  # a ToolMessage marked as error
        self._tool_done(run_id, _text_of(getattr(output, "content", output)), not failed)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._tool_done(run_id, f"{type(error).__name__}: {error}", False)

    def _tool_done(self, run_id: UUID, output: str, success: bool) -> None:
        name, arguments, started = self._tools.pop(run_id, ("tool", {}, time.monotonic()))
        if self.recorder is not None:
            duration = int((time.monotonic() - started) * 1000)
            self.recorder.tool(name, arguments, output, success=success, duration_ms=duration)
        self._end(run_id, result=output, error=None if success else output)


def _text_of(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text")
        ]
        return "".join(parts)
    return "" if content is None else str(content)


def _prompt_of(inputs: Any) -> str:
    """What started the run: the last message of a graph's state, or the input text."""
    if isinstance(inputs, str):
        return inputs
    if isinstance(inputs, dict):
        messages = inputs.get("messages")
        if isinstance(messages, list) and messages:
            last = messages[-1]
            if isinstance(last, tuple) and len(last) == 2:
                return _text_of(last[1])
            return _text_of(getattr(last, "content", last))
        for key in ("input", "question", "query", "prompt"):
            if key in inputs:
                return _text_of(inputs[key])
    return _text_of(getattr(inputs, "content", "")) if inputs is not None else ""


def _result_of(outputs: Any) -> str | None:
    """The run's answer: the last message of a graph's state, or the output text."""
    if isinstance(outputs, dict):
        messages = outputs.get("messages")
        if isinstance(messages, list) and messages:
            return _text_of(getattr(messages[-1], "content", messages[-1]))
        for key in ("output", "answer", "result"):
            if key in outputs:
                return _text_of(outputs[key])
        return None
    if outputs is None:
        return None
    return _text_of(getattr(outputs, "content", outputs))


def _arguments_of(input_str: str) -> dict[str, Any]:
    try:
        value = json.loads(input_str)
    except (TypeError, ValueError):
        return {"input": input_str}
    return value if isinstance(value, dict) else {"input": value}


def _llm_output_usage(response: LLMResult) -> dict[str, Any]:
    """Token counts of models that report them only in ``llm_output`` (OpenAI style)."""
    usage = (response.llm_output or {}).get("token_usage") or {}
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "output_tokens": usage.get("completion_tokens", 0),
    }
