"""Access control, safe defaults, abuse limits and redaction (issue 5), against real hubs."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskcast.auth import Principal, TokenVerifier, covers, create_token
from taskcast.channels import matches
from taskcast.client import CommunicationService
from taskcast.task import ScriptedProvider, Task
from taskcast.task.redaction import Redactor
from tests.conftest import REPO, HubProcess
from tests.helpers import SECRET, bearer, publish_acked, recv, seed, self_signed, send, token


async def upgrade_status(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, headers=headers or {})
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


@pytest.mark.filterwarnings("ignore:The HMAC key is")
async def test_bad_tokens_get_401_at_upgrade(secure_hub: Any) -> None:
    hub = secure_hub()
    now = int(time.time())
    good_claims = {"sub": "x", "exp": now + 600, "publish": ["tasks.>"], "subscribe": []}
    cases = {
        "missing": None,
        "garbage": "not-a-jwt",
        "expired": token(["tasks.>"], ttl=-60),
        "wrong signature": jwt.encode(good_claims, "another-secret-of-32-bytes-or-more!!", "HS256"),
        # PyJWT's annotation leaves out the None key that algorithm "none" takes.
        "alg none": jwt.encode(good_claims, None, algorithm="none"),  # type: ignore[arg-type]
        "wrong algorithm": jwt.encode(good_claims, SECRET, algorithm="HS512"),
        "no exp": jwt.encode({"sub": "x", "publish": ["tasks.>"]}, SECRET, "HS256"),
    }
    for name, value in cases.items():
        headers = bearer(value) if value else None
        assert await upgrade_status(hub.url, headers) == 401, name
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{hub.http}/api/events", headers=headers or {}) as response,
        ):
            assert response.status == 401, name
            body = await response.json()
            assert body["code"] == "unauthorized"
            assert value is None or value not in json.dumps(body)
    assert await upgrade_status(hub.url, bearer(token(["tasks.>"]))) == 101
    assert await upgrade_status(f"{hub.url}?token={token(['tasks.>'])}") == 101
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.http}/healthz") as response:
            assert set(await response.json()) == {"status", "logId"}  # nothing more for strangers
        async with session.get(f"{hub.http}/") as response:
            assert response.status == 200  # the dashboard page itself holds no data
        async with session.get(f"{hub.http}/metrics") as response:
            assert response.status == 401


async def test_publish_and_subscribe_are_scoped(secure_hub: Any) -> None:
    hub = secure_hub()
    agent = token(publish=["tasks.*"], subscribe=["tasks.*"])
    narrow = token(publish=["tasks.alpha"], subscribe=["tasks.alpha"])
    async with aiohttp.ClientSession() as session:
        watcher = await session.ws_connect(hub.url, headers=bearer(token(subscribe=[">"])))
        await send(watcher, {"type": "subscribe", "channel": ">", "since": 0})
        assert (await recv(watcher))["type"] == "subscribed"

        ws = await session.ws_connect(hub.url, headers=bearer(narrow))
        (ok,) = await publish_acked(ws, [seed("alpha")])
        assert ok["type"] == "ack"
        (refused,) = await publish_acked(ws, [seed("beta", id="b1")])
        assert refused == {
            "type": "error",
            "code": "forbidden",
            "message": "not allowed to publish to tasks.beta",
            "id": "b1",
        }
        for pattern in ("tasks.beta", "tasks.*", "tasks.>", ">", "*"):
            await send(ws, {"type": "subscribe", "channel": pattern})
            reply = await recv(ws)
            assert reply["code"] == "forbidden", pattern
        await send(ws, {"type": "subscribe", "channel": "tasks.alpha"})
        assert (await recv(ws))["type"] == "subscribed"

        wide = await session.ws_connect(hub.url, headers=bearer(agent))
        for pattern in ("tasks.>", ">", "tasks.*.x"):
            await send(wide, {"type": "subscribe", "channel": pattern})
            assert (await recv(wide))["code"] == "forbidden", pattern  # wider than allowed
        await send(wide, {"type": "subscribe", "channel": "tasks.*"})
        assert (await recv(wide))["type"] == "subscribed"

        # Only the allowed event was stored and delivered.
        first = await recv(watcher)
        assert first["payload"]["taskId"] == "alpha"
        await send(watcher, {"type": "ping", "id": 1})
        assert await recv(watcher) == {"type": "pong", "id": 1}

        # The HTTP API applies the same rules.
        async with session.post(
            f"{hub.http}/api/events", json=seed("beta"), headers=bearer(narrow)
        ) as response:
            assert response.status == 403
        async with session.get(
            f"{hub.http}/api/events", params={"channel": "tasks.>"}, headers=bearer(narrow)
        ) as response:
            assert response.status == 403
        async with session.get(f"{hub.http}/api/events", headers=bearer(narrow)) as response:
            assert [e["channel"] for e in await response.json()] == ["tasks.alpha"]
        async with session.get(
            f"{hub.http}/api/events/stream", params={"channel": ">"}, headers=bearer(narrow)
        ) as response:
            assert response.status == 403
    async with aiohttp.ClientSession() as session:
        publisher = await session.ws_connect(hub.url, headers=bearer(token(publish=[">"])))
        await publish_acked(publisher, [seed("gamma", "secret plans")])
        async with session.get(f"{hub.http}/api/tasks", headers=bearer(narrow)) as response:
            assert [t["taskId"] for t in await response.json()] == ["alpha"]
        async with session.get(f"{hub.http}/api/tasks/gamma", headers=bearer(narrow)) as response:
            assert response.status == 404


async def test_rs256_and_es256_tokens(start_hub: Any, tmp_path: Path) -> None:
    for algorithm, key in (
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ):
        public = tmp_path / f"{algorithm}.pub"
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        hub = start_hub("--public-key-file", str(public), "--algorithm", algorithm)
        good = create_token(
            private,
            subject="k",
            publish=["tasks.>"],
            subscribe=[],
            ttl_seconds=60,
            algorithm=algorithm,
        )
        assert await upgrade_status(hub.url, bearer(good)) == 101
        # Algorithm confusion: an HS256 token signed with the public key as secret.
        confused = jwt.encode(
            {"sub": "k", "exp": int(time.time()) + 60, "publish": [">"]},
            "x" * 40,
            algorithm="HS256",
        )
        assert await upgrade_status(hub.url, bearer(confused)) == 401
        hub.terminate()


async def test_rate_limit(secure_hub: Any) -> None:
    hub = secure_hub("--publish-rate", "5", "--publish-burst", "10")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url, headers=bearer(token(publish=["tasks.>"])))
        replies = await publish_acked(ws, [seed("r", str(i), id=f"r{i}") for i in range(30)])
        by_id = {r["id"]: r.get("code", r["type"]) for r in replies}
        codes = [by_id[f"r{i}"] for i in range(30)]
        assert codes[:10] == ["ack"] * 10  # the burst
        assert codes.count("rate_limited") >= 15
        await asyncio.sleep(1.0)  # the bucket refills
        (later,) = await publish_acked(ws, [seed("r", "later")])
        assert later["type"] == "ack"
        async with session.get(
            f"{hub.http}/metrics", headers=bearer(token(subscribe=[">"], metrics=True))
        ) as response:
            text = await response.text()
    assert 'taskcast_frames_rejected_total{code="rate_limited"}' in text


async def test_connection_and_subscription_limits(start_hub: Any) -> None:
    hub = start_hub("--max-connections", "3", "--max-subscriptions", "2")
    async with aiohttp.ClientSession() as session:
        held = [await session.ws_connect(hub.url) for _ in range(3)]
        assert await upgrade_status(hub.url) == 503
        await send(held[0], {"type": "subscribe", "channel": "a"})
        await send(held[0], {"type": "subscribe", "channel": "b"})
        await send(held[0], {"type": "subscribe", "channel": "c"})
        replies = [await recv(held[0]) for _ in range(3)]
        assert [r["type"] for r in replies[:2]] == ["subscribed", "subscribed"]
        assert replies[2]["code"] == "too_many_subscriptions"
        await held[2].close()
        await asyncio.sleep(0.2)
        assert await upgrade_status(hub.url) == 101  # room again
        async with session.get(f"{hub.http}/metrics") as response:
            assert 'taskcast_connections_refused_total{reason="max_connections"} 1.0' in (
                await response.text()
            )


async def test_oversized_frame_and_idle_and_handshake_timeouts(start_hub: Any) -> None:
    hub = start_hub("--max-frame-bytes", "2048", "--idle-timeout", "1", "--handshake-timeout", "1")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url, autoping=False)
        await ws.send_str(json.dumps(seed("big", "x" * 4096)))
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
        await asyncio.sleep(0.2)
        async with session.get(f"{hub.http}/metrics") as response:
            assert "taskcast_oversized_frames_total 1.0" in await response.text()
        idle = await session.ws_connect(hub.url, autoping=False)  # never answers pings
        started = time.monotonic()
        while True:
            message = await idle.receive(timeout=10)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert time.monotonic() - started < 5
    # A request never finished; and a few bytes, not even enough to route.
    for partial in (b"GET /ws HTTP/1.1\r\nHost: x\r\n", b"GE"):
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        writer.write(partial)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert time.monotonic() - started < 5
        writer.close()


async def test_requests_nobody_can_parse_are_answered_400_and_flood_no_log(
    start_hub: Any,
) -> None:
    """Malformed HTTP is the client's mistake: a 400 for each, and neither an ERROR nor
    a traceback in the hub's log (aiohttp writes both for each, so anyone could fill the
    disk), and the hub serves on."""
    hub = start_hub()
    broken = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nbadheader\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /api/events?since=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    # A body its Content-Encoding does not describe, to a door that answers without
    # reading it (aiohttp drains it afterwards): answered as usual, nothing logged.
    for head in (b"GET /healthz", b"POST /api/events", b"DELETE /api/tasks/x/lease"):
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        writer.write(
            head + b" HTTP/1.1\r\nHost: x\r\nContent-Encoding: deflate\r\n"
            b"Content-Length: 8\r\nConnection: close\r\n\r\nnot defl"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 "), (head, answer[:80])
        writer.close()
    for request in broken * 25:
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), (request, answer[:80])
        writer.close()
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/healthz") as r:
        assert r.status == 200
    log = hub.log_path.read_text()
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]


async def test_tls_round_trip(secure_hub: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    hub = secure_hub("--tls-cert", str(cert), "--tls-key", str(key))
    assert hub.url.startswith("wss://")
    context = ssl.create_default_context(cafile=str(cert))
    credentials = bearer(token(publish=["tasks.>"], subscribe=["tasks.>"]))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        listener = await session.ws_connect(hub.url, headers=credentials)
        await send(listener, {"type": "subscribe", "channel": "tasks.>"})
        assert (await recv(listener))["type"] == "subscribed"
        publisher = await session.ws_connect(hub.url, headers=credentials)
        (ack,) = await publish_acked(publisher, [seed("tls")])
        assert ack["type"] == "ack"
        assert (await recv(listener))["payload"]["taskId"] == "tls"
        assert hub.http.startswith("https://")
        async with session.get(f"{hub.http}/api/events", headers=credentials) as response:
            assert len(await response.json()) == 1
    async with aiohttp.ClientSession() as session:  # the default trust store refuses it
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.ws_connect(hub.url, headers=credentials)


async def test_token_in_url_never_reaches_the_log(secure_hub: Any) -> None:
    hub = secure_hub("--verbose")
    value = token(publish=["tasks.>"], subscribe=["tasks.*"])
    expired = token(["tasks.>"], ttl=-60)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{hub.url}?token={value}")
        await publish_acked(ws, [seed("log"), {"type": "bad type!", "payload": {}}])
        await send(ws, {"type": "subscribe", "channel": ">"})
        await recv(ws)
        await ws.close()
        assert await upgrade_status(f"{hub.url}?token={expired}") == 401
        async with session.get(f"{hub.http}/api/events?token={value}&since=x") as response:
            assert response.status == 400
    hub.terminate()
    log = hub.log_path.read_text()
    assert "listening on" in log
    for secret in (value, expired, SECRET):
        assert secret not in log
    for jwt_value in (value, expired):
        assert jwt_value.split(".")[2] not in log  # not even the signature


async def test_origin_allow_list(start_hub: Any) -> None:
    hub = start_hub("--allowed-origin", "http://dash.example")
    assert await upgrade_status(hub.url, {"Origin": "http://evil.example"}) == 403
    assert await upgrade_status(hub.url, {"Origin": "http://dash.example"}) == 101
    assert await upgrade_status(hub.url) == 101  # non-browser clients send no Origin


HUB_ON_ALL_INTERFACES = [
    sys.executable,
    "-m",
    "taskcast",
    "hub",
    "--host",
    "0.0.0.0",
    "--port",
    "0",
    "--store",
    "memory",
]


def test_binding_beyond_loopback_needs_auth_or_insecure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TASKCAST_SECRET"}
    refused = subprocess.run(
        HUB_ON_ALL_INTERFACES,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0 and "without authentication" in refused.stderr
    insecure = HubProcess("memory", "--host", "0.0.0.0", "--insecure").start(tmp_path / "i.log")
    insecure.terminate()
    assert "WITHOUT authentication" in (tmp_path / "i.log").read_text()
    env["TASKCAST_SECRET"] = SECRET
    secured = subprocess.Popen(
        HUB_ON_ALL_INTERFACES,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert secured.stdout is not None
    assert secured.stdout.readline().startswith("taskcast hub listening on ws://0.0.0.0:")
    secured.terminate()
    secured.wait(10)


def test_token_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "TASKCAST_SECRET": SECRET}
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskcast",
            "token",
            "create",
            "--publish",
            "tasks.>",
            "--subscribe",
            "tasks.*",
            "--ttl",
            "2h",
            "--sub",
            "agent-7",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    value = created.stdout.strip()
    principal = TokenVerifier(SECRET).verify(value)
    assert principal == Principal(
        "agent-7", ("tasks.>",), ("tasks.*",), False, principal.expires_at
    )
    assert principal.expires_at is not None and 7100 < principal.expires_at - time.time() <= 7200
    inspected = subprocess.run(
        [sys.executable, "-m", "taskcast", "token", "inspect", value],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert '"sub": "agent-7"' in inspected.stdout and "valid for agent-7" in inspected.stdout


tokens = st.text(alphabet="ab", min_size=1, max_size=2)
patterns = st.lists(st.one_of(tokens, st.just("*")), min_size=1, max_size=4).flatmap(
    lambda parts: st.one_of(st.just(".".join(parts)), st.just(".".join([*parts, ">"])))
)
channels = st.lists(tokens, min_size=1, max_size=6).map(".".join)


@given(patterns, patterns, channels)
def test_covers_is_sound(allowed: str, requested: str, channel: str) -> None:
    """If ``allowed`` covers ``requested``, every channel ``requested`` matches is allowed."""
    if covers(allowed, requested) and matches(requested, channel):
        assert matches(allowed, channel)


@given(patterns)
def test_a_pattern_covers_itself(pattern: str) -> None:
    assert covers(pattern, pattern)


fuzz_frames = st.one_of(
    st.text(max_size=60),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["api_action", "note", "subscribe", "ping", "ack"])},
        optional={
            "channel": st.sampled_from(["tasks.a", "tasks.b", "tasks.>", ">", "x.*", "bad..ch"]),
            "payload": st.dictionaries(
                st.sampled_from(["taskId", "message", "timestamp"]),
                st.one_of(st.text(max_size=4), st.integers()),
            ),
            "since": st.integers(min_value=-1, max_value=5),
        },
    ).map(json.dumps),
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(fuzz_frames, min_size=1, max_size=12))
def test_fuzz_with_auth_never_leaks_or_breaks(secure_hub: Any, frames: list[str]) -> None:
    hub = getattr(test_fuzz_with_auth_never_leaks_or_breaks, "hub", None)
    if hub is None or hub.proc.poll() is not None:
        hub = secure_hub()
        test_fuzz_with_auth_never_leaks_or_breaks.hub = hub  # type: ignore[attr-defined]
    limited = token(publish=["tasks.a"], subscribe=["tasks.a"])

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(hub.url, headers=bearer(limited))
            for raw in frames:
                await ws.send_str(raw)
            await send(ws, {"type": "ping", "id": "end"})
            while True:
                frame = await recv(ws)
                if frame == {"type": "pong", "id": "end"}:
                    break
                if "seq" in frame and frame.get("type") not in ("ack",):
                    assert frame["channel"] == "tasks.a"  # nothing from elsewhere leaks
            async with session.get(
                f"{hub.http}/api/events", headers=bearer(token(subscribe=[">"]))
            ) as response:
                stored = await response.json()
            assert {e["channel"] for e in stored} <= {"tasks.a"}

    asyncio.run(run())  # the hub is kept for the next example


def test_redactor_hides_common_secrets() -> None:
    redactor = Redactor([r"internal-\d{4}"], literals=["hunter2-literal"])
    text = (
        "key sk-proj-abcdefghijklmnopqrstuvwx1234 aws AKIAABCDEFGHIJKLMNOP "
        "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 auth: Bearer abcdefghijklmnopqrstu "
        "password=correcthorse api_key: 'zzzzzzzz' internal-1234 hunter2-literal "
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY----- ok"
    )
    redacted = redactor.text(text)
    for secret in (
        "sk-proj-abc",
        "AKIAABCD",
        "ghp_abc",
        "abcdefghijklmnopqrstu",
        "correcthorse",
        "zzzzzzzz",
        "internal-1234",
        "hunter2-literal",
        "MIIB",
    ):
        assert secret not in redacted, secret
    assert redacted.endswith("ok") and "password=[REDACTED]" in redacted
    assert redactor.payload({"a": ["sk-ant-abcdefghijklmnopqrstuv"], "n": 3}) == {
        "a": ["[REDACTED]"],
        "n": 3,
    }


async def test_secrets_are_redacted_from_emitted_events(
    start_hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", "tok-very-secret-value")
    hub = start_hub()
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz123456\n")
    script = [
        {
            "text": "Reading the env file.",
            "tool_calls": [{"name": "read_file", "arguments": {"path": ".env"}}],
        },
        {
            "text": "",
            "tool_calls": [
                {
                    "name": "execute_command",
                    "arguments": {"command": "echo $DEPLOY_TOKEN; echo code-7777"},
                }
            ],
        },
        {
            "text": "The key is sk-abcdefghijklmnopqrstuvwxyz123456, done.",
            "tool_calls": [
                {"name": "attempt_completion", "arguments": {"result": "found code-7777"}}
            ],
        },
    ]
    service = CommunicationService(hub.url)
    task = Task(
        ScriptedProvider(script),
        communication_service=service,
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        approval="auto",
        redact_patterns=[r"code-\d{4}"],
        command_env=["DEPLOY_TOKEN"],  # commands see only what is allowed by name
    )
    assert (await task.run("find the key")).status == "completed"
    assert await service.aflush(10)
    await service.aclose()
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/api/events") as r:
        log = await r.text()
    for secret in ("sk-abcdefghijklmnopqrstuvwxyz123456", "tok-very-secret-value", "code-7777"):
        assert secret not in log, [e for e in json.loads(log) if secret in json.dumps(e)]
    assert "[REDACTED]" in log
    events = json.loads(log)
    action = next(
        e for e in events if e["type"] == "api_action" and "key is" in e["payload"]["message"]
    )
    assert set(action["payload"]) == {"taskId", "message", "timestamp"}
    # The model itself still saw the real tool output (redaction is for events only).
    assert "tok-very-secret-value" in task.api_conversation_history[4]["content"]


async def test_idle_timeout_zero_means_no_limit(start_hub: Any) -> None:
    hub = start_hub("--idle-timeout", "0")
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(hub.url)
        await send(listener, {"type": "subscribe", "channel": "tasks.>"})
        assert (await recv(listener))["type"] == "subscribed"
        publisher = await session.ws_connect(hub.url)
        (ack,) = await publish_acked(publisher, [seed("idle", "still open")])
        assert ack["type"] == "ack"
        delivered = await recv(listener)  # it was closed right after subscribing before
        assert delivered["payload"]["message"] == "still open"


def test_the_hub_raises_its_open_files_limit_or_refuses_clearly(tmp_path: Path) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    command = [sys.executable, "-m", "taskcast", "hub", "--port", "0", "--store", "memory"]
    hub = subprocess.Popen(
        [*command, "--max-connections", "500"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_soft_limit,
    )
    try:
        assert hub.stdout is not None and hub.stdout.readline().startswith("taskcast hub listening")
    finally:
        hub.terminate()
        _, err = hub.communicate(timeout=20)
    if hard != resource.RLIM_INFINITY:
        assert f"raised the open files limit from 1024 to {hard}" in err
        assert f"open files limit {hard} for --max-connections 500" in err
        refused = subprocess.run(
            [*command, "--max-connections", str(hard)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode == 1
        assert f"may open at most {hard}" in refused.stderr
        assert "run more hub processes" in refused.stderr
