"""Integrations (issue 13): a LangGraph agent, an OpenAI Agents SDK run and a hand-rolled
loop publish the Task's events through a real hub; their models are the official SDK
clients talking to the fake OpenAI server over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskcast import CommunicationService, TaskRecorder
from tests.agui_reader import read_run, run_input
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

    # langchain-openai types api_key as the SecretStr pydantic makes of a str.
    model = ChatOpenAI(model="gpt-test", base_url=f"{llm.base}/v1", api_key="sk-test")  # type: ignore[arg-type]
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
    # Through the AG-UI door: each response an assistant message, the tools as CUSTOM.
    async with aiohttp.ClientSession() as session:
        run = await read_run(session, hub.http, "lg-1", run_input("lg-1"))
    assert [m["content"] for m in run[1]["messages"]] == [p["message"] for p in actions]
    assert run[2]["snapshot"]["toolFailures"] == 1
    assert run[-1]["outcome"] == {"type": "success"}
    assert run[-1]["result"] == "2 + 3 = 5, and explode failed."

    # Sync, with no task id: the outermost run's id names the task; a plain chat model too.
    llm.replies = [Reply(text="plain answer")]
    plain = TaskcastCallbackHandler(service)
    from langchain_openai import ChatOpenAI

    # langchain-openai types api_key as the SecretStr pydantic makes of a str.
    chat = ChatOpenAI(model="gpt-test", base_url=f"{llm.base}/v1", api_key="sk-test")  # type: ignore[arg-type]
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


# --- OpenAI Agents SDK ---------------------------------------------------------------


def _agents(llm: FakeLLM) -> Any:
    from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace upload to OpenAI from a test
    client = AsyncOpenAI(base_url=f"{llm.base}/v1", api_key="sk-test")
    model = OpenAIChatCompletionsModel(model="gpt-agents", openai_client=client)

    @function_tool
    def lookup(topic: str) -> str:
        """Look a topic up."""
        return f"notes on {topic}"

    @function_tool
    def broken(topic: str) -> str:
        """Always fails."""
        raise RuntimeError("no such thing")

    writer = Agent(name="writer", instructions="Write the answer.", model=model)
    return Agent(
        name="triage",
        instructions="Look things up, then hand off.",
        model=model,
        tools=[lookup, broken],
        handoffs=[writer],
    )


async def test_an_openai_agents_run_with_tools_and_a_handoff(start_hub: Any, llm: FakeLLM) -> None:
    from taskcast.integrations.openai_agents import TaskcastRunHooks

    hub = start_hub()
    llm.replies = [
        Reply(
            tool_calls=[
                {"id": "t1", "name": "lookup", "arguments": {"topic": "otters"}},
                {"id": "t2", "name": "broken", "arguments": {"topic": "otters"}},
            ]
        ),
        Reply(tool_calls=[{"id": "h1", "name": "transfer_to_writer", "arguments": {}}]),
        Reply(text="Otters hold hands while sleeping."),
    ]
    service = CommunicationService(hub.url)
    hooks = TaskcastRunHooks(service, task_id="agents-1")
    from agents import Runner

    result = await Runner.run(_agents(llm), "tell me about otters", hooks=hooks)
    assert result.final_output == "Otters hold hands while sleeping."
    assert await service.aflush(10)
    events = await task_events(hub, "agents-1")
    assert kinds(events) == [
        "task_started",
        "api_action",
        "llm_usage",
        "tool_executed",
        "tool_executed",
        "api_action",
        "llm_usage",
        "agent_handoff",
        "api_action",
        "llm_usage",
        "task_completed",
    ]
    actions = [e["payload"] for e in events if e["type"] == "api_action"]
    assert all(set(p) == SEED_KEYS for p in actions)
    assert actions[0]["message"] == 'lookup(topic="otters"); broken(topic="otters")'
    assert actions[1]["message"] == "transfer_to_writer()"
    assert actions[2]["message"] == "Otters hold hands while sleeping."
    tools = {e["payload"]["tool"]: e["payload"] for e in events if e["type"] == "tool_executed"}
    assert tools["lookup"]["success"] and tools["lookup"]["output"] == "notes on otters"
    assert tools["lookup"]["arguments"] == 'topic="otters"'
    assert not tools["broken"]["success"]
    (handoff,) = [e["payload"] for e in events if e["type"] == "agent_handoff"]
    assert (handoff["fromAgent"], handoff["toAgent"]) == ("triage", "writer")
    usage = [e["payload"] for e in events if e["type"] == "llm_usage"]
    assert [(u["model"], u["inputTokens"], u["outputTokens"]) for u in usage] == [
        ("gpt-agents", 11, 7)
    ] * 3
    assert events[0]["payload"]["prompt"] == "tell me about otters"
    assert events[-1]["payload"]["result"] == "Otters hold hands while sleeping."

    # A run that raises (the model endpoint fails for good): task_failed through hooks.run.
    llm.replies = [Reply(status=400)]
    failing = TaskcastRunHooks(service, task_id="agents-2")
    with pytest.raises(Exception, match="scripted failure"):
        await failing.run(_agents(llm), "this will fail")
    assert await service.aflush(10)
    assert kinds(await task_events(hub, "agents-2")) == ["task_started", "task_failed"]
    await service.aclose()


# --- remote approval through the hub ---------------------------------------------------


async def decide_remotely(
    hub: HubProcess, task_id: str, action: str, **extra: Any
) -> dict[str, Any]:
    """Act as a person at the dashboard: wait for the task's open request, answer it."""
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            async with session.get(f"{hub.http}/api/pending", params={"taskId": task_id}) as r:
                pending = await r.json()
            if pending:
                break
            await asyncio.sleep(0.05)
        (request,) = pending
        body = {"action": action, "requestId": request["requestId"], **extra}
        async with session.post(f"{hub.http}/api/tasks/{task_id}/commands", json=body) as r:
            assert r.status == 200, await r.text()
        return dict(request)


async def test_an_agents_sdk_tool_approval_is_asked_through_the_hub(
    start_hub: Any, llm: FakeLLM
) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    from taskcast.integrations.openai_agents import TaskcastRunHooks

    set_tracing_disabled(True)
    removed: list[str] = []

    @function_tool(needs_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file (asks a person first)."""
        removed.append(path)
        return f"deleted {path}"

    client = AsyncOpenAI(base_url=f"{llm.base}/v1", api_key="sk-test")
    agent = Agent(
        name="cleaner",
        model=OpenAIChatCompletionsModel(model="gpt-agents", openai_client=client),
        tools=[delete_file],
    )
    llm.replies = [
        Reply(tool_calls=[{"id": "d1", "name": "delete_file", "arguments": {"path": "old.log"}}]),
        Reply(text="Deleted old.log."),
    ]
    hub = start_hub()
    service = CommunicationService(hub.url)
    hooks = TaskcastRunHooks(service, task_id="approve-1")
    run = asyncio.create_task(hooks.run(agent, "clean up", remote_approvals=True))
    request = await decide_remotely(hub, "approve-1", "approve")
    result = await asyncio.wait_for(run, 30)
    assert result.final_output == "Deleted old.log." and removed == ["old.log"]
    assert request["tool"] == "delete_file" and request["arguments"] == {"path": "old.log"}
    assert await service.aflush(10)
    events = kinds(await task_events(hub, "approve-1"))
    assert events.count("task_started") == 1 and events[-1] == "task_completed"
    assert events.index("approval_requested") < events.index("approval_resolved")
    assert events.index("approval_resolved") < events.index("tool_executed")
    await service.aclose()


async def test_a_langgraph_interrupt_is_answered_through_the_hub(
    start_hub: Any, llm: FakeLLM
) -> None:
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition
    from langgraph.types import interrupt

    from taskcast.integrations.langchain import TaskcastCallbackHandler

    @tool
    def drop_table(name: str) -> str:
        """Drop a database table."""
        return f"dropped {name}"

    # langchain-openai types api_key as the SecretStr pydantic makes of a str.
    model = ChatOpenAI(model="gpt-test", base_url=f"{llm.base}/v1", api_key="sk-test")  # type: ignore[arg-type]
    bound = model.bind_tools([drop_table])

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    async def guarded_tools(state: MessagesState) -> dict[str, Any]:
        answers = []
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        for call in last.tool_calls:
            decision = interrupt({"tool": call["name"], "arguments": call["args"]})
            if decision["approved"]:
                content = str(await drop_table.ainvoke(call["args"]))
            else:
                content = f"denied by {decision['by']}: {decision['reason']}"
            answers.append(ToolMessage(content, tool_call_id=call["id"], name=call["name"]))
        return {"messages": answers}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_node("tools", guarded_tools)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    graph = builder.compile(checkpointer=InMemorySaver())

    llm.replies = [
        Reply(tool_calls=[{"id": "x1", "name": "drop_table", "arguments": {"name": "users"}}]),
        Reply(text="I did not drop it: it was denied."),
    ]
    hub = start_hub()
    service = CommunicationService(hub.url)
    handler = TaskcastCallbackHandler(service, task_id="interrupt-1")
    run = asyncio.create_task(
        handler.run_graph(
            graph,
            {"messages": [("user", "drop the users table")]},
            {"configurable": {"thread_id": "t1"}},
        )
    )
    await decide_remotely(hub, "interrupt-1", "deny", reason="production data")
    state = await asyncio.wait_for(run, 30)
    assert state["messages"][-1].content == "I did not drop it: it was denied."
    denial = state["messages"][-2]
    assert denial.content.startswith("denied by ") and "production data" in denial.content
    assert await service.aflush(10)
    events = await task_events(hub, "interrupt-1")
    names = kinds(events)
    assert names.count("task_started") == 1 and names.count("task_completed") == 1
    assert names.count("api_action") == 2 and "tool_executed" not in names  # never ran
    (resolved,) = [e["payload"] for e in events if e["type"] == "approval_resolved"]
    assert resolved["decision"] == "deny" and resolved["reason"] == "production data"
    await service.aclose()


# --- the examples of docs/integrations.md run as they are --------------------------------

COUNT = {"id": "w1", "name": "word_count", "arguments": {"text": "the quick brown fox"}}
EXAMPLE_REPLIES = {
    "recorder": [Reply(tool_calls=[COUNT]), Reply(text="4 words.")],
    "langchain": [Reply(tool_calls=[COUNT]), Reply(text="4 words.")],
    "openai-agents": [
        Reply(tool_calls=[COUNT]),
        Reply(tool_calls=[{"id": "h1", "name": "transfer_to_writer", "arguments": {}}]),
        Reply(text="The text has 4 words."),
    ],
}


def doc_examples() -> dict[str, str]:
    text = (REPO / "docs" / "integrations.md").read_text()
    found = {}
    for part in text.split("<!-- example: ")[1:]:
        name, _, rest = part.partition(" -->")
        found[name] = rest.split("```python\n", 1)[1].split("```", 1)[0]
    return found


@pytest.mark.parametrize("name", sorted(EXAMPLE_REPLIES))
async def test_the_documented_examples_run(
    name: str, start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    llm.replies = list(EXAMPLE_REPLIES[name])
    script = tmp_path / f"{name}.py"
    script.write_text(doc_examples()[name])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPENAI")},
        "TASKCAST_HUB": hub.url,
        "OPENAI_BASE_URL": f"{llm.base}/v1",
        "OPENAI_API_KEY": "sk-test",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not llm.replies  # every scripted response was asked for
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/api/tasks") as r:
        (task,) = await r.json()
    events = kinds(await task_events(hub, task["taskId"]))
    assert events[0] == "task_started" and events[-1] == "task_completed"
    assert events.count("api_action") == len(EXAMPLE_REPLIES[name])
    assert "tool_executed" in events
