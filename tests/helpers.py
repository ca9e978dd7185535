"""Small raw-websocket helpers for tests (deliberately not the taskcast client SDK)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from taskcast.auth import create_token


def seed(task_id: str = "t1", message: str = "hello", **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "api_action",
        "payload": {"taskId": task_id, "message": message, "timestamp": int(time.time() * 1000)},
    }
    frame.update(extra)
    return frame


async def send(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
    await ws.send_str(json.dumps(frame))


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, f"expected text, got {message}"
    frame: dict[str, Any] = json.loads(message.data)
    return frame


async def subscribe(
    ws: aiohttp.ClientWebSocketResponse, channel: str, since: int | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
    if since is not None:
        frame["since"] = since
    await send(ws, frame)
    reply = await recv(ws)
    assert reply["type"] == "subscribed", reply
    return reply


async def collect_events(
    ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 30
) -> list[dict[str, Any]]:
    """Receive ``count`` delivered events (frames with a seq), ignoring replies."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            frame = await recv(ws, timeout)
            if "seq" in frame and frame.get("type") not in ("ack", "subscribed"):
                events.append(frame)
    return events


async def publish_acked(
    ws: aiohttp.ClientWebSocketResponse, frames: list[dict[str, Any]], timeout: float = 10
) -> list[dict[str, Any]]:
    """Pipeline ``frames`` and wait for one ack (or error) each, in order (``timeout``
    for each reply)."""
    for frame in frames:
        await send(ws, frame)
    replies: list[dict[str, Any]] = []
    while len(replies) < len(frames):
        reply = await recv(ws, timeout)
        if reply["type"] in ("ack", "error"):
            replies.append(reply)
    return replies


SECRET = "s3cret-for-tests-only-0123456789abcdef"


def token(
    publish: list[str] | None = None,
    subscribe: list[str] | None = None,
    ttl: int = 600,
    subject: str = "tester",
    **extra: Any,
) -> str:
    return create_token(
        SECRET,
        subject=subject,
        publish=publish or [],
        subscribe=subscribe or [],
        ttl_seconds=ttl,
        **extra,
    )


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def wait_for_event(
    hub: Any,
    task_id: str,
    wanted: Callable[[dict[str, Any]], bool],
    timeout: float = 20,
    token: str | None = None,
) -> dict[str, Any]:
    """Until the task's log holds an event ``wanted`` accepts (returned): watched on a
    subscription from the start of the log, not polled. ``hub``: a HubProcess."""
    headers = bearer(token) if token else None
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(hub.url, headers=headers) as ws,
    ):
        await subscribe(ws, f"tasks.{task_id}", since=0)
        async with asyncio.timeout(timeout):
            while True:
                frame = await recv(ws, timeout)
                if "seq" in frame and frame.get("type") != "subscribed" and wanted(frame):
                    return frame


async def wait_until(condition: Any, timeout: float = 20, what: str = "a condition") -> None:
    """Wait for a state the test needs (checked every 10 ms), instead of a fixed sleep."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own trust anchor) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def scripted_run(tmp_path: Path, task_id: str, *extra: str) -> list[str]:
    """``taskcast run`` of the built-in scripted agent (no model needed), auto-approved:
    23 events on ``tasks.<task_id>``."""
    return [
        sys.executable,
        "-m",
        "taskcast",
        "run",
        "write hello and run it",
        "--approve",
        "auto",
        "--cwd",
        str(tmp_path / "work"),
        "--mkdir",
        "--history-dir",
        str(tmp_path / "h"),
        "--task-id",
        task_id,
        *extra,
    ]


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a tiny receive buffer, so a reader that stops reading
    pushes back on the hub at once instead of after megabytes of kernel buffering."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def metric(
    session: aiohttp.ClientSession, http: str, name: str, headers: dict[str, str] | None = None
) -> float:
    """The value of an unlabelled sample on the hub's /metrics."""
    async with session.get(f"{http}/metrics", headers=headers) as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")
