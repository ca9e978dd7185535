"""OpenAI-compatible and Anthropic providers: the official SDKs over a real connection to a
local server that speaks their protocols (issue 3, test 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskcast.task import AnthropicProvider, OpenAIChatProvider, Task
from tests.fake_llm import FakeLLM, Reply

WRITE = {"id": "call_1", "name": "write_to_file", "arguments": {"path": "n.txt", "content": "42"}}
DONE = {"id": "call_2", "name": "attempt_completion", "arguments": {"result": "wrote n.txt"}}


def provider(kind: str, base: str, stream: bool) -> Any:
    if kind == "openai":
        return OpenAIChatProvider("gpt-test", base_url=f"{base}/v1", api_key="k", stream=stream)
    return AnthropicProvider("claude-test", base_url=base, api_key="k", stream=stream)


class Recorder:
    nonblocking = True

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_provider_runs_a_task_with_tool_calls(
    llm: FakeLLM, tmp_path: Path, kind: str, stream: bool
) -> None:
    llm.replies = [
        Reply(text="", tool_calls=[WRITE]),
        Reply(text="All done, the file holds 42.", tool_calls=[DONE]),
    ]
    recorder = Recorder()
    task = Task(
        provider(kind, llm.base, stream),
        communication_service=recorder,
        cwd=tmp_path,
        history_dir=tmp_path / ".history",
        approval="auto",
    )
    result = await task.run("write 42 to n.txt")
    assert result.status == "completed" and result.result == "wrote n.txt"
    assert (tmp_path / "n.txt").read_text() == "42"
    actions = [m["payload"] for m in recorder.messages if m["type"] == "api_action"]
    assert [a["message"] for a in actions] == [
        'write_to_file(path="n.txt", content="42")',
        "All done, the file holds 42.",
    ]
    usage = [m["payload"] for m in recorder.messages if m["type"] == "llm_usage"]
    assert usage[0]["inputTokens"] == 11 and usage[0]["outputTokens"] == 7
    assert usage[0]["cachedTokens"] == 3 and usage[0]["provider"] == kind
    assert usage[0]["finishReason"] in ("tool_calls", "tool_use")
    # The second request carries the tool call and its result in the provider's format.
    second = llm.requests[1]
    if kind == "openai":
        assert second["messages"][0]["role"] == "system"
        assert second["tools"][0]["type"] == "function"
        call_message = second["messages"][2]
        assert call_message["tool_calls"][0]["function"]["name"] == "write_to_file"
        assert second["messages"][3] == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "wrote 2 bytes to n.txt",
        }
    else:
        assert "system" in second and second["tools"][0]["input_schema"]["type"] == "object"
        assert second["messages"][1]["content"][0]["type"] == "tool_use"
        result_block = second["messages"][2]["content"][0]
        assert result_block["type"] == "tool_result" and result_block["tool_use_id"] == "call_1"
        assert result_block["is_error"] is False
    assert bool(second.get("stream")) is stream


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_server_errors_are_retried_then_succeed(
    llm: FakeLLM, tmp_path: Path, kind: str
) -> None:
    llm.replies = [
        Reply(status=500),
        Reply(status=529 if kind == "anthropic" else 503),
        Reply(text="fine", tool_calls=[DONE]),
    ]
    recorder = Recorder()
    task = Task(
        provider(kind, llm.base, True),
        communication_service=recorder,
        cwd=tmp_path,
        history_dir=tmp_path / ".history",
        approval="auto",
        retry_base_delay=0.01,
    )
    result = await task.run("go")
    assert result.status == "completed"
    types = [m["type"] for m in recorder.messages]
    assert types.count("api_retry") == 2 and types.count("api_action") == 1


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_client_errors_fail_at_once(llm: FakeLLM, tmp_path: Path, kind: str) -> None:
    llm.replies = [Reply(status=400)]
    recorder = Recorder()
    task = Task(
        provider(kind, llm.base, False),
        communication_service=recorder,
        cwd=tmp_path,
        history_dir=tmp_path / ".history",
        retry_base_delay=0.01,
    )
    result = await task.run("go")
    assert result.status == "failed" and "400" in result.error
    assert not any(m["type"] == "api_action" for m in recorder.messages)
    assert len(llm.requests) == 1


async def test_anthropic_errors_inside_a_200_stream_are_retried_and_v1_is_accepted(
    llm: FakeLLM, tmp_path: Path
) -> None:
    llm.replies = [
        Reply(stream_error="overloaded_error"),
        Reply(text="", tool_calls=[DONE]),
    ]
    provider = AnthropicProvider(
        "claude-test", base_url=f"{llm.base}/v1/", api_key="k", stream=True
    )
    task = Task(provider, cwd=tmp_path, history_dir=tmp_path / ".h", retry_base_delay=0.01)
    result = await task.run("finish")
    assert result.status == "completed", result.error  # retried, and /v1 not doubled
    assert len(llm.requests) == 2


def test_tool_summaries_show_values_as_json() -> None:
    from taskcast.task.events import summarize_arguments

    shown = summarize_arguments({"path": "src", "recursive": False, "depth": 2, "tags": ["a"]})
    assert shown == 'path="src", recursive=false, depth=2, tags=["a"]'
