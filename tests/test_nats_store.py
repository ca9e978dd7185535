"""The NATS store's pure layout, client failover, and how a hub meets a NATS that is
missing, refuses, or already holds another stream (issue 12)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskcast.client.failover import HubRotation, hub_urls
from taskcast.frames import parse_event
from taskcast.store import Retention
from taskcast.store.nats_layout import (
    InvalidStreamName,
    channel_of,
    envelope,
    msg_id,
    plan_stream,
    record_id_of,
    record_key,
    stored_event,
    stream_conflict,
    subject_of,
    subject_prefix,
)
from tests.conftest import REPO, HubProcess
from tests.helpers import publish_acked, scripted_run, seed, self_signed
from tests.nats_servers import NatsServer, free_port, unique_stream

texts = st.text(min_size=1, max_size=40)


@given(
    task=st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True),
    message=st.text(max_size=200),
    publisher=texts,
    event_id=texts,
    ts=st.integers(0, 2**53),
)
def test_an_event_survives_the_envelope(
    task: str, message: str, publisher: str, event_id: str, ts: int
) -> None:
    event = parse_event(seed(task, message, id=event_id), publisher)
    subject = subject_of("taskcast", event.channel)
    back = stored_event(7, channel_of("taskcast", subject), envelope(event, ts))
    assert (back.seq, back.id, back.channel, back.type, back.task_id) == (
        7,
        event.id,
        event.channel,
        event.type,
        event.task_id,
    )
    assert (back.source, back.ts, back.body, back.publisher) == (
        event.source,
        ts,
        event.body,
        publisher,
    )


@given(a=st.tuples(texts, texts), b=st.tuples(texts, texts))
def test_dedup_keys_are_per_publisher_and_header_safe(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    one = parse_event(seed("t", id=a[1]), a[0])
    two = parse_event(seed("t", id=b[1]), b[0])
    assert (msg_id(one) == msg_id(two)) == (a == b)
    assert msg_id(one).isalnum() and len(msg_id(one)) == 48


@given(kind=st.sampled_from(["webhook", "lease", "leader"]), record=st.text(min_size=1))
def test_record_keys_round_trip_any_id(kind: str, record: str) -> None:
    key = record_key(kind, record)
    assert all(c.isalnum() or c == "." for c in key)
    assert record_id_of(key) == (kind, record)


def test_the_stream_plan_follows_the_flags() -> None:
    plan = plan_stream("TASKCAST", 3, Retention(max_events=1000), 86400.0)
    assert plan.subjects == ("taskcast.>",) and plan.replicas == 3 and plan.max_msgs == 1000
    assert plan.max_age_seconds == 0 and plan.duplicate_window_seconds == 86400.0
    aged = plan_stream("X", 1, Retention(max_age_seconds=60), 86400.0)
    assert aged.max_msgs == -1 and aged.duplicate_window_seconds == 60  # JetStream's rule
    with pytest.raises(InvalidStreamName):
        subject_prefix("a.b")
    with pytest.raises(ValueError):
        plan_stream("X", 0, Retention(), 1.0)
    assert stream_conflict(plan, ["taskcast.>"], "file") is None
    problem = stream_conflict(plan, ["orders.>"], "file")
    assert problem is not None and "--nats-stream" in problem
    assert stream_conflict(plan, ["taskcast.>"], "memory") is not None


def test_hub_urls_take_lists_repeats_and_commas() -> None:
    assert hub_urls("ws://a/ws") == ["ws://a/ws"]
    assert hub_urls("ws://a/ws, ws://b/ws") == ["ws://a/ws", "ws://b/ws"]
    assert hub_urls(["ws://a/ws", "ws://b/ws,ws://c/ws"]) == ["ws://a/ws", "ws://b/ws", "ws://c/ws"]
    with pytest.raises(ValueError):
        hub_urls([" "])
    rotation = HubRotation(["a", "b", "c"])
    assert [rotation.current, rotation.next(), rotation.next(), rotation.next()] == list("abca")


def _hub_fails(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", "--port", "0", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1, done
    return done.stderr


def test_credentials_without_their_extra_name_it(tmp_path: Path) -> None:
    creds = tmp_path / "hub.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    err = _hub_fails("--store", f"nats://127.0.0.1:{free_port()}", "--nats-credentials", str(creds))
    assert "taskcast[nats-auth]" in err and "Traceback" not in err


def test_a_hub_without_nats_says_so_and_exits(tmp_path: Path) -> None:
    err = _hub_fails("--store", f"nats://127.0.0.1:{free_port()}")
    assert "cannot reach NATS" in err and "Traceback" not in err
    plain = NatsServer("plain", tmp_path, jetstream=False).start()
    try:
        err = _hub_fails("--store", plain.url)
    finally:
        plain.stop()
    assert "is JetStream on?" in err and "Traceback" not in err


async def test_a_hub_refuses_a_stream_that_holds_something_else(nats_server: NatsServer) -> None:
    stream = unique_stream("other")
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name=stream, subjects=[f"orders-{stream}.>"])
    finally:
        await nc.close()
    err = _hub_fails("--store", nats_server.url, "--nats-stream", stream)
    assert "pick another --nats-stream" in err
    err = _hub_fails("--store", nats_server.url, "--nats-stream", "bad.name")
    assert "invalid NATS stream name" in err


async def test_a_node_that_starts_later_catches_up_and_restarts_lose_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    stream = unique_stream("late")
    first = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "a.log")
    try:
        async with aiohttp.ClientSession() as session:
            publisher = await session.ws_connect(first.url)
            await publish_acked(publisher, [seed(f"t{n % 3}", str(n)) for n in range(300)])
            late = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "b.log")
            try:
                async with session.get(f"{late.http}/api/tasks") as r:
                    tasks: list[dict[str, Any]] = await r.json()
                assert sorted(t["taskId"] for t in tasks) == ["t0", "t1", "t2"]
                async with session.get(f"{late.http}/healthz") as r:
                    assert (await r.json())["head"] == 300
                first.kill9()
                first.restart()
                async with session.get(f"{first.http}/api/events?limit=1000") as r:
                    assert [e["seq"] for e in await r.json()] == list(range(1, 301))
            finally:
                late.terminate()
    finally:
        first.terminate()


@pytest.fixture
def lone_nats(tmp_path: Path) -> Any:
    (tmp_path / "js").mkdir()
    server = NatsServer("lone", tmp_path / "js").start()
    yield server
    server.stop()


async def test_nats_going_away_refuses_then_resumes_without_loss(
    lone_nats: NatsServer, tmp_path: Path
) -> None:
    """The only NATS server restarts under a hub: publishes in between get a retryable
    error (never a false ack), and the hub serves again once NATS is back."""
    hub = HubProcess(lone_nats.url, "--nats-stream", "S").start(tmp_path / "hub.log")
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(hub.url)
            await publish_acked(ws, [seed("r", "before", id="e1")])
            lone_nats.kill9()
            await ws.send_json(seed("r", "during", id="e2"))
            reply = await ws.receive_json(timeout=30)
            assert reply["type"] == "error" and reply["code"] == "store_unavailable"
            lone_nats.start()
            ws2 = await session.ws_connect(hub.url)
            acks: list[dict[str, Any]] = []
            for _ in range(300):  # until NATS is back: resend with a pause, as an outbox does
                await ws2.send_json(seed("r", "during", id="e2"))
                answer = await ws2.receive_json(timeout=30)
                if answer["type"] == "ack":
                    acks.append(answer)
                    break
                await ws2.close()
                await asyncio.sleep(0.1)
                ws2 = await session.ws_connect(hub.url)
            assert acks and acks[0]["seq"] == 2
            async with session.get(f"{hub.http}/api/events") as r:
                assert [e["id"] for e in await r.json()] == ["e1", "e2"]
    finally:
        hub.terminate()


async def test_a_hub_talks_to_a_nats_that_wants_tls_and_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "js").mkdir()
    secured = NatsServer(
        "secured",
        tmp_path / "js",
        extra=(
            "--tls",
            "--tlscert",
            str(cert),
            "--tlskey",
            str(key),
            "--user",
            "hub",
            "--pass",
            "s3cret",
        ),
    ).start()
    try:
        url = f"nats://hub:s3cret@127.0.0.1:{secured.port}"
        # Without --nats-tls, or with a wrong password: a clear refusal, no hub.
        assert "cannot reach NATS" in _hub_fails("--store", url)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system CAs, plus this test's
        wrong = f"nats://hub:nope@127.0.0.1:{secured.port}"
        refused = _hub_fails("--store", wrong, "--nats-tls")
        assert "nope" not in refused  # a password in the URL is never shown
        assert "cannot reach NATS" in refused and "authorization violation" in refused.lower()
        hub = HubProcess(url, "--nats-tls").start(tmp_path / "hub.log")
        try:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(hub.url)
                (ack,) = await publish_acked(ws, [seed("tls", "over TLS")])
                assert ack["seq"] == 1
                async with session.get(f"{hub.http}/healthz") as r:
                    assert "hub:***@127.0.0.1" in (await r.json())["store"]
        finally:
            hub.terminate()
    finally:
        secured.stop()
    assert "s3cret" not in (tmp_path / "hub.log").read_text()


async def test_cli_run_and_listen_skip_a_dead_node(start_hub: Any, tmp_path: Path) -> None:
    """``--hub`` repeated: the first node is down, the CLI goes on with the next one."""
    hub = start_hub()
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    env = {**os.environ, "COLUMNS": "200"}
    listen = [sys.executable, "-m", "taskcast", "listen", "tasks.>", "--json", "--since", "0"]
    listener = subprocess.Popen(
        [*listen, "--count", "23", "--hub", dead, "--hub", hub.url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    run = await asyncio.to_thread(
        subprocess.run,
        scripted_run(tmp_path, "failover", "--hub", dead, "--hub", hub.url),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all events acknowledged" in run.stdout
    out, _ = await asyncio.to_thread(listener.communicate, timeout=30)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(1, 24))


def test_a_node_stops_at_once_even_while_another_holds_the_webhook_lease(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """SIGTERM right after start, while a dead node's webhook leader lease still runs:
    the stop must not wait on the leadership loop (it once hung here)."""
    stream = unique_stream("stop")
    first = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "a.log")
    first.kill9()
    for attempt in range(3):
        second = HubProcess(nats_server.url, "--nats-stream", stream)
        second.start(tmp_path / f"b{attempt}.log")
        assert second.terminate() == 0  # within terminate's 20 s, cleanly
