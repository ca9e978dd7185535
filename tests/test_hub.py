"""The hub end to end: a real hub process, real websocket clients (issue 2, tests 1-4, 6-9)."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    collect_events,
    publish_acked,
    recv,
    seed,
    send,
    small_receive_buffer,
    subscribe,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=["sqlite", "nats"])
def hub_store(request: pytest.FixtureRequest) -> str:
    """Every test here runs on the embedded log and on a NATS JetStream stream."""
    return str(request.param)


async def test_seed_frame_round_trip(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(hub.url)
        reply = await subscribe(listener, "tasks.>")
        log_id = reply.pop("logId")
        assert reply == {"type": "subscribed", "channel": "tasks.>", "head": 0}
        async with session.get(f"{hub.http}/healthz") as health:
            assert (await health.json())["logId"] == log_id  # the same log, over HTTP
        publisher = await session.ws_connect(hub.url)
        frame = {
            "type": "api_action",
            "payload": {
                "taskId": "task-42",
                "message": "I read the file.",
                "timestamp": 1725997600000,
            },
        }
        await send(publisher, frame)
        ack = await recv(publisher)
        assert ack["type"] == "ack" and ack["seq"] == 1 and isinstance(ack["id"], str)
        (delivered,) = await collect_events(listener, 1)
        assert delivered["payload"] == frame["payload"]
        assert delivered["type"] == "api_action"
        assert delivered["id"] == ack["id"]
        assert delivered["seq"] == 1
        assert delivered["channel"] == "tasks.task-42"
        assert set(delivered) == {"type", "payload", "id", "seq", "channel", "publisher"}
        assert delivered["publisher"] == "anonymous"  # recorded by the hub (no auth here)


async def test_patterns_route_over_the_wire(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        star = await session.ws_connect(hub.url)
        await subscribe(star, "tasks.*")
        exact = await session.ws_connect(hub.url)
        await subscribe(exact, "tasks.a")
        deep = await session.ws_connect(hub.url)
        await subscribe(deep, "tasks.a.>")
        publisher = await session.ws_connect(hub.url)
        await publish_acked(
            publisher,
            [
                seed("a"),
                seed("b"),
                {"type": "tool_executed", "channel": "tasks.a.tools", "payload": {}},
                {"type": "note", "payload": {}},
            ],
        )
        assert [e["channel"] for e in await collect_events(star, 2)] == ["tasks.a", "tasks.b"]
        assert [e["channel"] for e in await collect_events(exact, 1)] == ["tasks.a"]
        assert [e["channel"] for e in await collect_events(deep, 1)] == ["tasks.a.tools"]
        await send(star, {"type": "subscribe", "channel": "tasks.>.x"})
        error = await recv(star)
        assert error["type"] == "error" and error["code"] == "invalid_channel"
        await send(star, {"type": "unsubscribe", "channel": "tasks.*"})
        await send(star, {"type": "ping", "id": 1})
        assert await recv(star) == {"type": "pong", "id": 1}
        await publish_acked(publisher, [seed("c")])
        await send(star, {"type": "ping", "id": 2})
        assert await recv(star) == {"type": "pong", "id": 2}  # nothing delivered in between


async def test_events_of_a_batch_go_out_in_order_each_before_its_ack(start_hub: Any) -> None:
    """Events are delivered in runs (one chunk per subscriber for consecutive events of
    the same channel); a run ends where the channel changes. Every subscriber sees each
    event once in seq order, and a publisher subscribed to its own channels has each
    event before its ack (read-your-writes on one connection)."""
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        watcher = await session.ws_connect(hub.url)
        await subscribe(watcher, "tasks.>")
        publisher = await session.ws_connect(hub.url)
        await subscribe(publisher, "tasks.>")
        frames = [
            {**seed(f"t{i % 3 if i % 7 else 9}", f"m{i}"), "id": f"run-{i}"} for i in range(300)
        ]
        for frame in frames:
            await send(publisher, frame)
        seen: set[str] = set()
        acked: list[int] = []
        while len(acked) < len(frames):
            reply = await recv(publisher)
            if reply["type"] == "ack":
                assert reply["id"] in seen, "an ack before its event"
                acked.append(reply["seq"])
            else:
                seen.add(reply["id"])
        watched = await collect_events(watcher, len(frames))
        assert [e["seq"] for e in watched] == sorted(acked) == acked
        assert [e["id"] for e in watched] == [f["id"] for f in frames]
        assert [e["payload"]["taskId"] for e in watched] == [f["payload"]["taskId"] for f in frames]


async def test_resume_after_disconnect_gets_exactly_the_missed_events(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(hub.url)
        await subscribe(listener, "tasks.>")
        publisher = await session.ws_connect(hub.url)
        await publish_acked(publisher, [seed("r", f"before {i}") for i in range(10)])
        seen = await collect_events(listener, 10)
        last = seen[-1]["seq"]
        await listener.close()
        await publish_acked(publisher, [seed("r", f"missed {i}") for i in range(1000)])
        listener = await session.ws_connect(hub.url)
        reply = await subscribe(listener, "tasks.>", since=last)
        assert reply["head"] == last + 1000 and reply["recovered"] is True
        missed = await collect_events(listener, 1000)
        assert [e["seq"] for e in missed] == list(range(last + 1, last + 1001))
        assert [e["payload"]["message"] for e in missed] == [f"missed {i}" for i in range(1000)]
        await send(listener, {"type": "ping"})
        assert await recv(listener) == {"type": "pong"}  # and nothing more


async def test_replay_meets_live_without_gap_or_duplicate(start_hub: Any) -> None:
    hub = start_hub()
    per_publisher = 3000

    async def publisher(session: aiohttp.ClientSession, name: str) -> None:
        ws = await session.ws_connect(hub.url)
        for start in range(0, per_publisher, 100):
            await publish_acked(ws, [seed(name, f"{name}-{i}") for i in range(start, start + 100)])
        await ws.close()

    async def late_subscriber(session: aiohttp.ClientSession, delay: float) -> list[int]:
        await asyncio.sleep(delay)
        ws = await session.ws_connect(hub.url)
        await subscribe(ws, "tasks.>", since=0)
        events = await collect_events(ws, 3 * per_publisher, timeout=60)
        await ws.close()
        return [e["seq"] for e in events]

    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(publisher(session, f"p{n}") for n in range(3)),
            *(late_subscriber(session, delay) for delay in (0.05, 0.2, 0.5)),
        )
    for seqs in results[3:]:
        assert seqs == list(range(1, 3 * per_publisher + 1))


async def test_slow_consumer_is_dropped_and_loses_nothing(start_hub: Any) -> None:
    # The slow one reads only once everything is published: give the hub time to wait
    # for its answer to the 4008 close (by default 2 s, which a loaded machine may pass).
    hub = start_hub("--max-subscriber-buffer", str(1024 * 1024), "--close-timeout", "60")
    total = 6000
    padding = "x" * 2000
    async with (
        aiohttp.ClientSession() as session,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        ) as slow_session,
    ):
        fast = []
        for _ in range(2):
            ws = await session.ws_connect(hub.url)
            await subscribe(ws, "tasks.>")
            fast.append(ws)
        slow = await slow_session.ws_connect(hub.url)
        await subscribe(slow, "tasks.>")
        publisher = await session.ws_connect(hub.url)

        async def publish_all() -> None:
            for _ in range(0, total, 100):
                await publish_acked(publisher, [seed("s", padding) for _ in range(100)])

        fast_results = await asyncio.gather(
            publish_all(), *(collect_events(ws, total, timeout=60) for ws in fast)
        )
        for events in fast_results[1:]:
            assert [e["seq"] for e in events] == list(range(1, total + 1))

        # Only now does the slow one read: what was buffered, then close 4008.
        received: list[int] = []
        while True:
            message = await slow.receive(timeout=30)
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if "seq" in frame:
                received.append(frame["seq"])
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert slow.close_code == 4008
        assert message.extra is not None
        reason = json.loads(message.extra)
        assert reason["code"] == "slow_consumer" and reason["lastSeq"] >= len(received) > 0
        assert len(received) < total
        assert received == list(range(1, len(received) + 1))

        resumed = await session.ws_connect(hub.url)
        await subscribe(resumed, "tasks.>", since=received[-1])
        rest = await collect_events(resumed, total - len(received), timeout=60)
        assert received + [e["seq"] for e in rest] == list(range(1, total + 1))
        async with session.get(f"{hub.http}/healthz") as response:
            assert (await response.json())["status"] == "ok"


BAD_FRAMES = [
    ("not json at all", "bad_json"),
    ("[]", "invalid_frame"),
    ('{"payload": {}}', "invalid_type"),
    ('{"type": 12, "payload": {}}', "invalid_type"),
    ('{"type": "note", "payload": 3}', "invalid_payload"),
    ('{"type": "ack", "id": "x", "seq": 3}', "reserved_type"),
    ('{"type": "subscribed", "channel": "x"}', "reserved_type"),
    ('{"type":"api_action","payload":{"taskId":"t","message":5,"timestamp":1}}', "invalid_event"),
]


async def test_bad_input_gets_errors_and_the_hub_keeps_serving(start_hub: Any) -> None:
    hub = start_hub("--max-frame-bytes", "10000")
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(hub.url)
        await subscribe(listener, ">")
        rude = await session.ws_connect(hub.url)
        for raw, code in BAD_FRAMES:
            await rude.send_str(raw)
            error = await recv(rude)
            assert error["type"] == "error" and error["code"] == code, (raw, error)
        await rude.send_bytes(b'{"type":"note","payload":{}}')
        assert (await recv(rude))["code"] == "binary_unsupported"
        (ack,) = await publish_acked(rude, [seed("ok")])  # the same connection still works
        assert ack["type"] == "ack"
        await rude.send_str(json.dumps(seed("big", "x" * 20_000)))
        closing = await rude.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
        (ok,) = await collect_events(listener, 1)
        assert ok["payload"]["taskId"] == "ok"
        publisher = await session.ws_connect(hub.url)
        await publish_acked(publisher, [seed("after")])
        (after,) = await collect_events(listener, 1)
        assert after["payload"]["taskId"] == "after" and after["seq"] == 2
        # Over HTTP a body past the limit is the documented JSON error, not aiohttp's text.
        body = json.dumps(seed("big", "x" * 20_000)).encode()
        async with session.post(
            f"{hub.http}/api/events", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 413 and response.content_type == "application/json"
            assert (await response.json())["code"] == "too_large"


fuzz_frames = st.one_of(
    st.text(max_size=100),
    st.dictionaries(
        st.sampled_from(["type", "payload", "id", "channel", "since", "source", "messageId"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=10),
            st.sampled_from(["api_action", "subscribe", "ack", "ping", "tasks.>", "a.*.b"]),
            st.dictionaries(
                st.sampled_from(["taskId", "message", "timestamp"]),
                st.one_of(st.integers(), st.text(max_size=5)),
            ),
        ),
    ).map(json.dumps),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(fuzz_frames, min_size=1, max_size=15))
def test_fuzzed_frames_never_break_the_hub(start_hub: Any, frames: list[str]) -> None:
    hub = getattr(test_fuzzed_frames_never_break_the_hub, "hub", None)
    if hub is None or hub.proc.poll() is not None:
        hub = start_hub()
        test_fuzzed_frames_never_break_the_hub.hub = hub  # type: ignore[attr-defined]

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            fuzzer = await session.ws_connect(hub.url)
            for raw in frames:
                await fuzzer.send_str(raw)
            await send(fuzzer, {"type": "ping", "id": "end"})
            while True:
                frame = await recv(fuzzer)
                if frame == {"type": "pong", "id": "end"}:
                    break
            good = await session.ws_connect(hub.url)
            (ack,) = await publish_acked(good, [seed("good")])
            assert ack["type"] == "ack"

    asyncio.run(run())  # the hub is kept for the next example (one hub for all of them)


async def test_duplicate_id_is_acked_with_the_first_seq_and_not_redelivered(
    start_hub: Any,
) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(hub.url)
        await subscribe(listener, "tasks.>")
        publisher = await session.ws_connect(hub.url)
        first, second = await publish_acked(
            publisher, [seed("d", "first", id="evt-1"), seed("d", "resent", id="evt-1")]
        )
        assert first == {"type": "ack", "id": "evt-1", "seq": 1}
        assert second == {"type": "ack", "id": "evt-1", "seq": 1, "duplicate": True}
        (alias,) = await publish_acked(publisher, [seed("d", "alias", messageId="evt-1")])
        assert alias["seq"] == 1
        await publish_acked(publisher, [seed("d", "sentinel")])
        events = await collect_events(listener, 2)
        assert [(e["seq"], e["payload"]["message"]) for e in events] == [
            (1, "first"),
            (2, "sentinel"),
        ]


async def test_retention_reports_unrecoverable_since(start_hub: Any) -> None:
    hub = start_hub("--retain-events", "5", "--trim-interval", "0.1")
    async with aiohttp.ClientSession() as session:
        publisher = await session.ws_connect(hub.url)
        await publish_acked(publisher, [seed("old", str(i)) for i in range(20)])
        async with asyncio.timeout(20):  # until retention has trimmed to the last 5
            while True:
                async with session.get(f"{hub.http}/healthz") as r:
                    if (await r.json())["oldest"] == 16:
                        break
                await asyncio.sleep(0.05)
        listener = await session.ws_connect(hub.url)
        reply = await subscribe(listener, "tasks.>", since=2)
        assert reply.pop("logId")
        assert reply == {
            "type": "subscribed",
            "channel": "tasks.>",
            "head": 20,
            "recovered": False,
            "oldest": 16,
        }
        kept = await collect_events(listener, 5)
        assert [e["seq"] for e in kept] == [16, 17, 18, 19, 20]


async def test_sigterm_commits_and_closes_clients_with_1001(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(hub.url)
        await subscribe(listener, "tasks.>")
        publisher = await session.ws_connect(hub.url)
        await publish_acked(publisher, [seed("bye")])
        assert hub.terminate(signal.SIGTERM) == 0
        await collect_events(listener, 1)
        closing = await listener.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
    hub.restart()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/events") as response,
    ):
        assert [e["payload"]["taskId"] for e in await response.json()] == ["bye"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_http_publish_and_audit_query(start_hub: Any, store: str) -> None:
    hub = start_hub() if store == "sqlite" else start_hub(store="memory")
    async with aiohttp.ClientSession() as session:
        for i in range(5):
            async with session.post(f"{hub.http}/api/events", json=seed(f"h{i % 2}", str(i))) as r:
                assert r.status == 200
                ack = await r.json()
                assert ack["type"] == "ack" and ack["seq"] == i + 1
        note = {"type": "note", "id": "n1", "payload": {"taskId": "h0"}, "channel": "notes.x"}
        async with session.post(f"{hub.http}/api/events", json=note) as r:
            assert (await r.json())["seq"] == 6
        async with session.post(f"{hub.http}/api/events", data="{oops", headers=JSON) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_json"
        # Bytes that are not UTF-8, and a body its Content-Encoding does not describe:
        # 400 bad_json, not a 500 with a traceback; every door that reads a body.
        latin = b'{"type":"x","payload":{"a":"\xe9"}}'
        for path in ("/api/events", "/api/tasks/h0/commands", "/ag-ui/tasks/h0"):
            async with session.post(f"{hub.http}{path}", data=latin, headers=JSON) as r:
                assert r.status == 400, (path, await r.text())
                assert await r.json() == {
                    "type": "error",
                    "code": "bad_json",
                    "message": "frame is not valid UTF-8",
                }
        # No such route, or not that method: the same JSON error object as every refusal.
        async with session.get(f"{hub.http}/api/nonexistent") as r:
            assert r.status == 404 and (await r.json())["code"] == "not_found"
        async with session.put(f"{hub.http}/api/events", json={}) as r:
            assert r.status == 405 and (await r.json())["code"] == "method_not_allowed"
            assert r.headers["Allow"] == "GET, HEAD, POST"
        gzipped = {**JSON, "Content-Encoding": "gzip"}
        async with session.post(f"{hub.http}/api/events", data=b"not gzip", headers=gzipped) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_json", await r.text()
        assert hub.log_path is not None and "Traceback" not in hub.log_path.read_text()
        async with session.post(f"{hub.http}/api/events", json={"type": "ack"}) as r:
            assert r.status == 400 and (await r.json())["code"] == "reserved_type"
        base = f"{hub.http}/api/events"
        async with session.get(base, params={"channel": "tasks.*", "taskId": "h0"}) as r:
            assert [e["seq"] for e in await r.json()] == [1, 3, 5]
        async with session.get(base, params={"type": "note"}) as r:
            assert [e["id"] for e in await r.json()] == ["n1"]
        async with session.get(base, params={"since": 2, "until": 4}) as r:
            assert [e["seq"] for e in await r.json()] == [3, 4]
        async with session.get(base, params={"limit": 2}) as r:
            assert [e["seq"] for e in await r.json()] == [1, 2]
            assert r.headers["X-Taskcast-Next-Since"] == "2" and 'rel="next"' in r.headers["Link"]
        async with session.get(base, headers={"Accept": "application/x-ndjson"}) as r:
            assert r.content_type == "application/x-ndjson"
            lines = (await r.text()).splitlines()
            assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
        for odd in ("x", "1_0", "+5", " 5", "\u0663", "\uff11"):  # int() takes all but x
            async with session.get(base, params={"since": odd}) as r:
                assert r.status == 400 and (await r.json())["code"] == "invalid_query", odd
        async with session.get(base, params={"channel": "a.>.b"}) as r:
            assert r.status == 400 and (await r.json())["code"] == "invalid_channel"
        async with session.get(f"{hub.http}/healthz") as r:
            health = await r.json()
            assert health["status"] == "ok" and health["head"] == 6
