"""Shared fixtures: a real hub process on a free loopback port, Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from tests.fake_llm import FakeLLM
from tests.helpers import SECRET
from tests.nats_servers import NatsServer, jetstream_ready, unique_stream

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


class HubProcess:
    """A ``taskcast hub`` subprocess; ``--port 0`` and the announced address avoid races."""

    def __init__(self, store: str, *extra: str, port: int = 0) -> None:
        self.store = store
        self.extra = list(extra)
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log_path: Path | None = None

    @property
    def http(self) -> str:
        """The HTTP base of the hub's port (https:// when it serves TLS)."""
        return self.url.replace("ws", "http", 1).removesuffix("/ws")

    def start(self, log_path: Path) -> HubProcess:
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "taskcast",
            "hub",
            "--port",
            str(self.port),
            "--store",
            self.store,
            *self.extra,
        ]
        log = open(log_path, "a")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("taskcast hub listening on "):
                self.url = line.split()[-1]
                self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                # Keep reading stdout so the hub can never block on a full pipe.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return self
        raise RuntimeError(f"hub did not start; see {log_path}: {log_path.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(20)

    def restart(self) -> HubProcess:
        """Start again on the same port and store (after a kill or a stop)."""
        assert self.log_path is not None
        return self.start(self.log_path)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One NATS server with JetStream for the whole run (tests use their own streams)."""
    root = tmp_path_factory.mktemp("nats")
    (root / "js").mkdir()
    server = NatsServer("single", root / "js").start()
    jetstream_ready(server.url)
    yield server
    server.stop()


@pytest.fixture
def hub_store() -> str:
    """The store kind ``start_hub`` uses: sqlite, or nats with TASKCAST_TEST_STORE=nats
    (the whole suite on cluster mode); a module overrides it to run on both always."""
    return os.environ.get("TASKCAST_TEST_STORE", "sqlite")


@pytest.fixture
def start_hub(tmp_path: Path, hub_store: str, request: pytest.FixtureRequest) -> Iterator[object]:
    hubs: list[HubProcess] = []
    stream = unique_stream("hub")

    def start(*extra: str, store: str | None = None) -> HubProcess:
        store_url = store or f"sqlite:{tmp_path / f'events{len(hubs)}.db'}"
        if store is None and hub_store == "nats":
            # Every hub this test starts is a node of one cluster-mode log.
            server: NatsServer = request.getfixturevalue("nats_server")
            store_url = server.url
            extra = (*extra, "--nats-stream", stream)
        hub = HubProcess(store_url, *extra).start(tmp_path / f"hub{len(hubs)}.log")
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.kill()
            hub.proc.wait(10)


@pytest.fixture
def secure_hub(start_hub: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Start hubs that require tokens signed with ``helpers.SECRET``."""
    monkeypatch.setenv("TASKCAST_SECRET", SECRET)

    def start(*extra: str) -> HubProcess:
        hub: HubProcess = start_hub(*extra)
        return hub

    return start


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which("chromium"):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/test-deps installs it)")
        pytest.skip("chromium is not installed")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        await launched.close()


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    """A local server speaking the OpenAI and Anthropic protocols, replaying ``replies``."""
    server = await FakeLLM([]).start()
    yield server
    await server.stop()
