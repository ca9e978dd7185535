"""``taskcast hub --workers N`` (issue 15): several hub processes share one port with
SO_REUSEPORT over one NATS stream; a worker that dies is restarted and its clients
resume on the others."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp

from taskcast.client import CommunicationService, subscribe
from taskcast.hub.workers import worker_argv
from tests.conftest import REPO, HubProcess
from tests.helpers import seed, wait_until
from tests.nats_servers import NatsServer, unique_stream


def test_worker_command_lines_drop_workers_and_share_the_port() -> None:
    argv = ["hub", "--workers", "3", "--store", "nats://x", "--workers=2", "--port", "0"]
    assert worker_argv(argv, 4100) == [
        "hub",
        "--store",
        "nats://x",
        "--port",
        "0",
        "--port",
        "4100",
        "--reuse-port",
    ]


def test_workers_need_a_shared_log() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 2 and "--store nats://" in done.stderr


async def pids(hub: HubProcess, tries: int = 40) -> set[int]:
    """Which processes answer: each request on a new connection (the kernel spreads them)."""
    seen: set[int] = set()
    for _ in range(tries):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
            session.get(f"{hub.http}/healthz") as r,
        ):
            seen.add((await r.json())["pid"])
    return seen


async def test_workers_share_the_port_and_survive_a_kill_9(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    hub = HubProcess(nats_server.url, "--workers", "2", "--nats-stream", unique_stream("w")).start(
        tmp_path / "hub.log"
    )
    try:
        first = await pids(hub)
        assert len(first) == 2  # two processes behind one port
        total = 1500
        seen: dict[int, list[int]] = {n: [] for n in range(4)}

        async def watch(n: int) -> None:
            async for frame in subscribe(hub.url, "tasks.>", since=0):
                seen[n].append(frame["seq"])

        watchers = [asyncio.create_task(watch(n)) for n in seen]
        sent: list[str] = []

        def publish() -> None:
            service = CommunicationService(hub.url)
            for n in range(total):
                sent.append(service.send_message(seed("w", str(n))))
                if n % 10 == 9:
                    threading.Event().wait(0.02)
            assert service.flush(60)
            service.close()

        publisher = threading.Thread(target=publish)
        publisher.start()
        await wait_until(lambda: min(len(v) for v in seen.values()) > total // 3, 60, "a third")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)  # its clients reconnect to the port: the other worker
        await asyncio.get_running_loop().run_in_executor(None, publisher.join, 120)
        await wait_until(lambda: min(len(v) for v in seen.values()) >= total, 60, "every event")
        for task in watchers:
            task.cancel()
        for seqs in seen.values():
            assert seqs == list(range(1, total + 1))  # each once, in order, on every subscriber
        # The supervisor restarts the killed worker; under load the new one may still be
        # starting when the last event arrives: wait until it answers too.
        async with asyncio.timeout(60):
            while len(replaced := await pids(hub)) < 2:
                pass
        assert victim not in replaced
        assert hub.terminate(signal.SIGTERM) == 0  # workers stop gracefully with it
        assert not [p for p in first | replaced if _alive(p)]
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def test_workers_do_not_outlive_a_supervisor_killed_with_9(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    hub = HubProcess(
        nats_server.url, "--workers", "2", "--nats-stream", unique_stream("orphan")
    ).start(tmp_path / "hub.log")
    workers = asyncio.run(pids(hub))
    hub.kill9()
    for pid in workers:
        for _ in range(200):
            if not _alive(pid):
                break
            threading.Event().wait(0.05)
        assert not _alive(pid), f"worker {pid} outlived its supervisor"
