"""The AG-UI translation (``taskcast.agui_events``, pure) as properties over any task's
log: every event is an AG-UI 1.0 event exactly as the protocol defines it, a run's ids
are unique, and a reader who reconnects after any event — as the door does it — gets
exactly the rest of the run."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from taskcast.agui_events import (
    AguiRun,
    Identified,
    Position,
    event_ids,
    identified,
    parse_position,
)
from tests.agui_reader import check_event

TASK = "t1"


@st.composite
def task_logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A task's events as the hub delivers them: increasing seqs (with gaps: other
    tasks' events), history messages in index order, requests opened and answered."""
    seq = 0
    index = 0
    calls = 0
    open_requests: list[str] = []
    events: list[dict[str, Any]] = []
    history = draw(st.booleans())

    def add(kind: str, **payload: Any) -> None:
        nonlocal seq
        seq += draw(st.integers(1, 3))
        events.append(
            {
                "type": kind,
                "seq": seq,
                "channel": f"tasks.{TASK}",
                "payload": {"taskId": TASK, "timestamp": 1_000 * seq, **payload},
            }
        )

    add("task_started", prompt="go", provider="p", model="m")
    if history:
        add("history_appended", index=0, message={"role": "user", "content": "go"})
        index = 1
    for _ in range(draw(st.integers(0, 12))):
        step = draw(
            st.sampled_from(["response", "usage", "tool", "ask", "answer", "say", "other", "text"])
        )
        if step == "response":
            text = draw(st.sampled_from(["", "Thinking.", "A longer answer, with ünïcode."]))
            tool_calls = []
            for _ in range(draw(st.integers(0, 2))):
                calls += 1
                tool_calls.append(
                    {"id": f"c{calls}", "name": "write_to_file", "arguments": {"n": calls}}
                )
            if not text and not tool_calls:
                text = "ok"
            add("api_action", message=text or "write_to_file(...)")
            if history:
                message = {"role": "assistant", "content": text, "tool_calls": tool_calls}
                add("history_appended", index=index, message=message)
                index += 1
                for call in tool_calls:
                    result = {"role": "tool", "content": "done", "tool_call_id": call["id"]}
                    add("history_appended", index=index, message=result)
                    index += 1
        elif step == "usage":
            add("llm_usage", inputTokens=3, outputTokens=2, model="m")
        elif step == "tool":
            add("tool_executed", tool="write_to_file", success=draw(st.booleans()))
        elif step == "ask" and not open_requests:
            request_id = f"r{seq}"
            open_requests.append(request_id)
            if draw(st.booleans()):
                add("approval_requested", requestId=request_id, tool="x", toolCallId="c1")
            else:
                add("question_asked", requestId=request_id, question="Which?", options=["a"])
        elif step == "answer" and open_requests:
            add("approval_resolved", requestId=open_requests.pop(), decision="approve", by="a")
        elif step == "say" and history:
            add("history_appended", index=index, message={"role": "user", "content": "more"})
            index += 1
        elif step == "other":
            add("agent_handoff", fromAgent="a", toAgent="b")
        elif step == "text" and not history:
            add("api_action", message="plain")
    end = draw(st.sampled_from([None, "task_completed", "task_failed", "task_aborted"]))
    if end == "task_failed":
        add(end, error="boom")
    elif end is not None:
        add(end, result="done")
    return events


def whole_run(events: list[dict[str, Any]], started_after: int) -> list[Identified]:
    """What a reader gets who started the run after the first ``started_after`` events
    and read it to its end without a break (as the door makes it)."""
    run = AguiRun(TASK, "run-1")
    for event in events[:started_after]:
        run.fold(event)
    upto = events[started_after - 1]["seq"]
    out = identified(upto, run.start(), opening=True)
    for event in events[started_after:]:
        out += identified(event["seq"], run.feed(event))
    return out


def reconnected(events: list[dict[str, Any]], last_id: str) -> list[Identified]:
    """What a reader who reconnects with ``Last-Event-ID: last_id`` gets (the door's
    steps: fold up to the position, resume there, then every later event live)."""
    position = parse_position(last_id)
    assert position is not None
    run = AguiRun(TASK, "run-1")
    inside = position.part > 0 and not position.opening
    held = None
    for event in events:
        if event["seq"] < position.seq or (event["seq"] == position.seq and not inside):
            run.fold(event)
        elif event["seq"] == position.seq:
            held = event
    out = run.resume(position, held)
    if not out and run.over:
        return []  # the door answers 204
    for event in events:
        if event["seq"] > position.seq:
            out += identified(event["seq"], run.feed(event))
    return out


@settings(max_examples=150, deadline=None)
@given(task_logs(), st.data())
def test_a_reconnect_after_any_event_gets_exactly_the_rest(
    events: list[dict[str, Any]], data: st.DataObject
) -> None:
    started_after = data.draw(st.integers(1, len(events)))
    run = whole_run(events, started_after)
    ids = [event_id for event_id, _ in run]
    assert len(ids) == len(set(ids))
    for _, event in run:
        check_event(event)
    assert run[0][1]["type"] == "RUN_STARTED"
    ends = [e for _, e in run if e["type"] in ("RUN_FINISHED", "RUN_ERROR")]
    assert len(ends) <= 1 and (not ends or run[-1][1] is ends[0])
    for cut in range(len(run)):
        assert reconnected(events, run[cut][0]) == run[cut + 1 :], run[cut][0]


@settings(max_examples=100, deadline=None)
@given(task_logs())
def test_steps_open_and_close_in_pairs_and_messages_are_never_started_twice(
    events: list[dict[str, Any]],
) -> None:
    run = [event for _, event in whole_run(events, 1)]
    open_step: str | None = None
    started: set[str] = set()
    for event in run:
        if event["type"] == "STEP_STARTED":
            assert open_step is None
            open_step = event["stepName"]
        elif event["type"] == "STEP_FINISHED":
            assert open_step == event["stepName"]
            open_step = None
        elif event["type"] in ("TEXT_MESSAGE_START", "TOOL_CALL_START"):
            key = event.get("messageId") or event["toolCallId"]
            assert key not in started
            started.add(key)
        elif event["type"] in ("RUN_FINISHED", "RUN_ERROR"):
            assert open_step is None  # the run ends with no step open


@given(st.integers(0, 2**62), st.integers(1, 50), st.booleans())
def test_every_id_names_one_position(seq: int, count: int, opening: bool) -> None:
    ids = event_ids(seq, count, opening)
    assert len(set(ids)) == count and ids[-1] == str(seq)
    positions = [parse_position(event_id) for event_id in ids]
    assert positions[-1] == Position(seq)
    assert positions[:-1] == [Position(seq, k, opening) for k in range(1, count)]


@given(st.text(max_size=30))
def test_an_id_the_door_never_gave_is_no_position(value: str) -> None:
    position = parse_position(value)
    if position is not None:
        assert value.split(".")[0].isdigit()
        assert value in event_ids(position.seq, position.part + 1, position.opening)


def test_ids_with_other_digits_or_leading_zeros_are_refused() -> None:
    for value in ("007", "7.01", "7.0", "7.s0", "³", "٣", "7.", ".1", "7.s", "7.x1", "-1", ""):
        assert parse_position(value) is None, value
    assert parse_position("0") == Position(0)
    assert parse_position("12.s3") == Position(12, 3, True)
