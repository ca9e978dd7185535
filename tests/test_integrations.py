"""Integrations (issue 13): a LangGraph agent, an OpenAI Agents SDK run and a hand-rolled
loop publish the Task's events through a real hub; their models are the official SDK
clients talking to the fake OpenAI server over HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskcast import CommunicationService, TaskRecorder
from tests.conftest import REPO, HubProcess
from tests.fake_llm import FakeLLM, Reply
from tests.nats_servers import free_port

SEED_KEYS = {"taskId", "message", "timestamp"}


async def task_events(hub: HubProcess, task_id: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/events", params={"channel": f"tasks.{task_id}"}) as r,
    ):
        events: list[dict[str, Any]] = await r.json()
        return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "history_appended"]


# --- a hand-rolled loop -------------------------------------------------------------


async def test_task_recorder_gives_a_hand_rolled_loop_the_task_events(start_hub: Any) -> None:
    hub = start_hub()
    service = CommunicationService(hub.url)
    with TaskRecorder(service, "loop-1", provider="mine", model="m1") as rec:
        rec.api_action("", [("read_file", {"path": "a.txt"})])
        rec.usage(12, 5, finish_reason="tool_calls")
        rec.tool("read_file", {"path": "a.txt"}, "hello")
        rec.api_action("The file says hello.")
        rec.usage(20, 6)
    async with TaskRecorder(service, "loop-2") as failing:
        failing.tool("run", {"cmd": "x"}, "boom", success=False)
    with pytest.raises(RuntimeError), TaskRecorder(service, "loop-3"):
        raise RuntimeError("the loop broke")
    assert await service.aflush(10)
    await service.aclose()
    events = await task_events(hub, "loop-1")
    assert kinds(events) == [
        "task_started",
        "api_action",
        "llm_usage",
        "tool_executed",
        "api_action",
        "llm_usage",
        "task_completed",
    ]
    actions = [e["payload"] for e in events if e["type"] == "api_action"]
    assert all(set(p) == SEED_KEYS for p in actions)  # the seed contract, exactly
    assert [p["message"] for p in actions] == ['read_file(path="a.txt")', "The file says hello."]
    (done,) = [e["payload"] for e in events if e["type"] == "task_completed"]
    assert done["result"] == "The file says hello." and done["turns"] == 2
    assert (done["inputTokens"], done["outputTokens"]) == (32, 11)
    (started,) = [e["payload"] for e in events if e["type"] == "task_started"]
    assert (started["provider"], started["model"]) == ("mine", "m1")
    second = await task_events(hub, "loop-2")
    assert [e["payload"]["success"] for e in second if e["type"] == "tool_executed"] == [False]
    third = await task_events(hub, "loop-3")
    assert kinds(third)[-1] == "task_failed"
    assert "RuntimeError: the loop broke" in third[-1]["payload"]["error"]


# --- LangChain / LangGraph ----------------------------------------------------------


def _langgraph_agent(llm: FakeLLM) -> Any:
    """A tool-calling LangGraph graph: the model node, then its tools, until it answers."""
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @tool
    def explode(reason: str) -> str:
        """A tool that fails."""
        raise ValueError(f"cannot: {reason}")

    model = ChatOpenAI(model="gpt-test", base_url=f"{llm.base}/v1", api_key="sk-test")
    bound = model.bind_tools([add, explode])

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode([add, explode], handle_tool_errors=True))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()


AGENT_SCRIPT = [
    Reply(tool_calls=[{"id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}]),
    Reply(tool_calls=[{"id": "c2", "name": "explode", "arguments": {"reason": "test"}}]),
    Reply(text="2 + 3 = 5, and explode failed."),
]


async def test_a_langgraph_agent_publishes_one_api_action_per_model_response(
    start_hub: Any, llm: FakeLLM
) -> None:
    from taskcast.integrations.langchain import TaskcastCallbackHandler

    hub = start_hub()
    llm.replies = list(AGENT_SCRIPT)
    service = CommunicationService(hub.url)
    agent = _langgraph_agent(llm)
    handler = TaskcastCallbackHandler(service, task_id="lg-1")
    state = await agent.ainvoke(
        {"messages": [("user", "add 2 and 3, then explode")]}, config={"callbacks": [handler]}
    )
    assert state["messages"][-1].content == "2 + 3 = 5, and explode failed."
    assert await service.aflush(10)
    events = await task_events(hub, "lg-1")
    assert kinds(events) == [
        "task_started",
        "api_action",
        "llm_usage",
        "tool_executed",
        "api_action",
        "llm_usage",
        "tool_executed",
        "api_action",
        "llm_usage",
        "task_completed",
    ]
    actions = [e["payload"] for e in events if e["type"] == "api_action"]
    assert all(set(p) == SEED_KEYS for p in actions)
    assert [p["message"] for p in actions] == [
        "add(a=2, b=3)",
        'explode(reason="test")',
        "2 + 3 = 5, and explode failed.",
    ]
    tools = [e["payload"] for e in events if e["type"] == "tool_executed"]
    assert [(t["tool"], t["success"], t["output"]) for t in tools] == [
        ("add", True, "5"),
        ("explode", False, "ValueError: cannot: test"),
    ]
    usage = [e["payload"] for e in events if e["type"] == "llm_usage"]
    assert {
        (u["model"], u["inputTokens"], u["outputTokens"], u["cachedTokens"]) for u in usage
    } == {("gpt-test", 11, 7, 3)}
    assert events[0]["payload"]["prompt"] == "add 2 and 3, then explode"
    assert events[-1]["payload"]["result"] == "2 + 3 = 5, and explode failed."

    # Sync, with no task id: the outermost run's id names the task; a plain chat model too.
    llm.replies = [Reply(text="plain answer")]
    plain = TaskcastCallbackHandler(service)
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="gpt-test", base_url=f"{llm.base}/v1", api_key="sk-test")
    answer = await asyncio.to_thread(chat.invoke, "just answer", config={"callbacks": [plain]})
    assert answer.content == "plain answer"
    assert await service.aflush(10)
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/api/tasks") as r:
        tasks = {t["taskId"]: t for t in await r.json()}
    (other,) = [t for t in tasks if t != "lg-1"]
    assert len(other) == 36  # a run id (UUID)
    assert kinds(await task_events(hub, other)) == [
        "task_started",
        "api_action",
        "llm_usage",
        "task_completed",
    ]
    await service.aclose()


async def test_langgraph_events_wait_in_the_outbox_while_the_hub_is_down(
    llm: FakeLLM, tmp_path: Path
) -> None:
    from taskcast.integrations.langchain import TaskcastCallbackHandler

    port = free_port()
    hub = HubProcess(f"sqlite:{tmp_path / 'events.db'}", port=port)
    service = CommunicationService(f"ws://127.0.0.1:{port}/ws")
    llm.replies = list(AGENT_SCRIPT)
    agent = _langgraph_agent(llm)
    await agent.ainvoke(
        {"messages": [("user", "add 2 and 3, then explode")]},
        config={"callbacks": [TaskcastCallbackHandler(service, task_id="offline")]},
    )
    assert service.pending >= 10  # nothing reached a hub yet
    hub.start(tmp_path / "hub.log")
    try:
        assert await service.aflush(20)
        events = await task_events(hub, "offline")
        assert kinds(events)[0] == "task_started" and kinds(events)[-1] == "task_completed"
        assert kinds(events).count("api_action") == 3
    finally:
        await service.aclose()
        hub.terminate()


def test_an_integration_without_its_extra_names_the_extra() -> None:
    """Run where langchain_core cannot be imported: the error says what to install."""
    code = (
        "import sys; sys.modules['langchain_core'] = None\n"
        "try:\n    import taskcast.integrations.langchain\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert "pip install 'taskcast[langchain]'" in out.stdout, out
