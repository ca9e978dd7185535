"""Load generator processes for the benchmarks: fast websocket clients built on picows.

Each runs in its own process so the server under test, not the client, is measured.
Subscribers only count frames in throughput mode; in latency mode they decode each
frame and compare its ``sentNs`` (CLOCK_MONOTONIC, shared by all processes) with now.

Four wire dialects, one per kind of server:
- ``taskcast``: subscribe frame, acknowledged publishes (a window of unacked events);
- ``plain``: a relay that forwards every text frame to every other client;
- ``socketio``: Engine.IO/Socket.IO v4 over a websocket (``40`` connect, ``42[...]``
  events, ``2``/``3`` ping/pong);
- ``nats``: the NATS client protocol over the server's websocket listener (``CONNECT``,
  ``SUB tasks.>``, ``PUB``/``MSG``; core NATS, nothing stored), in binary frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

# picows logs each pause/resume of writing; under load that is noise, not news.
logging.getLogger("picows").setLevel(logging.ERROR)

PAYLOAD_PAD = 200  # characters of message text: ~200-byte api_action payloads
SUBSCRIBE = b'{"type":"subscribe","channel":"tasks.>"}'
SUBSCRIBE_FROM_START = b'{"type":"subscribe","channel":"tasks.>","since":0}'


def api_action(i: int, sent_ns: int, task: str = "bench") -> dict[str, Any]:
    text = f"step {i}: " + "x" * PAYLOAD_PAD
    return {
        "type": "api_action",
        "payload": {
            "taskId": task,
            "message": text[:PAYLOAD_PAD],
            "timestamp": time.time_ns() // 1_000_000,
            "sentNs": sent_ns,
        },
    }


_encode = msgspec.json.Encoder().encode


NATS_CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n'
NATS_SUBJECT = b"tasks.bench"


def encode_event(mode: str, i: int, tasks: int = 0) -> bytes:
    """Compact JSON, as every client library sends it. ``tasks``: spread the events
    round-robin over that many tasks (``t0``, ``t1``, …; channel or subject
    ``tasks.t<n>``) instead of one hot channel."""
    # taskcast-soak: a new task every 1,000 events (task summaries must not pile up).
    if tasks:
        task = f"t{i % tasks}"
    elif mode == "taskcast-soak":
        task = f"soak-{i // 1000}"
    else:
        task = "bench"
    event = _encode(api_action(i, time.monotonic_ns(), task))
    if mode == "socketio":
        return b'42["event",' + event + b"]"
    if mode == "nats":
        subject = f"tasks.{task}".encode() if tasks else NATS_SUBJECT
        return b"PUB %s %d\r\n%s\r\n" % (subject, len(event), event)
    return event


def subscribe_frame(mode: str, task: int | None) -> bytes:
    """What a subscriber sends to follow one task (``tasks.t<n>``) or every task."""
    if mode == "nats":
        subject = b"tasks.>" if task is None else b"tasks.t%d" % task
        return NATS_CONNECT + b"SUB %s 1\r\nPING\r\n" % subject
    if task is None:
        return SUBSCRIBE
    return b'{"type":"subscribe","channel":"tasks.t%d"}' % task


class NatsStream:
    """Splits the NATS protocol bytes of a websocket stream into ``MSG`` payloads (a
    frame may hold many messages, or part of one) and notes ``PONG``/``PING``."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.pongs = 0
        self.pings = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        payloads: list[bytes] = []
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(buffer[:end])
            if line.startswith(b"MSG "):
                size = int(line.rsplit(b" ", 1)[1])
                if len(buffer) < end + 2 + size + 2:
                    break  # the rest of this message is in a later frame
                payloads.append(bytes(buffer[end + 2 : end + 2 + size]))
                del buffer[: end + 2 + size + 2]
                continue
            if line == b"PONG":
                self.pongs += 1
            elif line == b"PING":
                self.pings += 1
            del buffer[: end + 2]
        return payloads


def cpu_seconds_of(pid: int) -> float:
    """User+system CPU time of a process, from /proc."""
    user, system = cpu_split_of(pid)
    return user + system


def cpu_split_of(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, from /proc: system time is the kernel's
    socket work done on the process's behalf."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def tcp_counters() -> dict[str, int]:
    """The host's TCP counters that say its kernel ran short of socket memory: how
    often it entered memory pressure, pruned receive queues, dropped segments there,
    and how many segments were sent again (/proc/net/netstat and /proc/net/snmp)."""
    wanted = {
        ("TcpExt", "TCPMemoryPressures"): "memory_pressures",
        ("TcpExt", "PruneCalled"): "prunes",
        ("TcpExt", "TCPRcvQDrop"): "receive_queue_drops",
        ("Tcp", "RetransSegs"): "retransmitted_segments",
    }
    counters: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        with open(path) as table:
            lines = table.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=True):
            prefix, _, header = names.partition(": ")
            for name, value in zip(header.split(), values.split()[1:], strict=True):
                key = wanted.get((prefix, name))
                if key is not None:
                    counters[key] = int(value)
    return counters


def tcp_memory_pages() -> int:
    """Pages the host's TCP sockets hold now (both ends of every loopback connection)."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


def tcp_memory_limits() -> tuple[int, int, int]:
    """net.ipv4.tcp_mem in pages: below the first the kernel leaves TCP alone, above
    the second it is under memory pressure, the third is the hard limit."""
    low, pressure, high = Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()
    return int(low), int(pressure), int(high)


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")


def page_reporting() -> tuple[int, int] | None:
    """Free page reporting (a VM's virtio-balloon): the order of the free blocks the
    guest hands back to its host, and how many KiB it has handed back so far; None
    where the kernel does not report. Memory handed back faults in at the host when
    it is touched again, so a kernel that cycles through gigabytes of socket buffers
    pays for it in every copy into them."""
    try:
        order = int((PAGE_REPORTING / "page_reporting_order").read_text())
        reported = int((PAGE_REPORTING / "reported_kib").read_text())
    except (OSError, ValueError):
        return None
    return order, reported


def rss_bytes_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class SubscriberResult:
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latencies_us: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    connected: int = 0
    dropped: int = 0  # connections the server closed before the end


@dataclass
class _Shared:
    expected: int
    latency: bool
    mode: str
    done: asyncio.Event
    decode: Any = field(default_factory=lambda: msgspec.json.Decoder().decode)
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latencies: list[float] = field(default_factory=list)
    ready: int = 0


class _Subscriber(WSListener):
    def __init__(self, shared: _Shared, task: int | None = None) -> None:
        self.shared = shared
        self.task = task  # follow this one task, or all
        self.nats = NatsStream() if shared.mode == "nats" else None

    def on_ws_connected(self, transport: WSTransport) -> None:
        if self.shared.mode == "taskcast":
            transport.send(WSMsgType.TEXT, subscribe_frame("taskcast", self.task))
        elif self.shared.mode in ("plain", "taskcast-replay"):
            self.shared.ready += 1  # a replaying subscriber subscribes only on "go"
        elif self.shared.mode == "nats":
            # PING after SUB: the PONG says the subscription is in place.
            transport.send(WSMsgType.BINARY, subscribe_frame("nats", self.task))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.nats is not None:
            self._nats_frame(transport, frame)
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        shared = self.shared
        # Widened: mypy's strict equality rejects memoryview == bytes, which works.
        head: memoryview | bytes = frame.get_payload_as_memoryview()[:20]
        if shared.mode == "socketio":
            if head[:2] == b"42":
                event = True
            else:
                if head[:1] == b"0":
                    transport.send(WSMsgType.TEXT, b"40")
                elif head[:2] == b"40":
                    shared.ready += 1
                elif head == b"2":
                    transport.send(WSMsgType.TEXT, b"3")
                return
        else:
            event = head == b'{"type":"api_action"'
            if not event:
                if head[:19] == b'{"type":"subscribed':
                    shared.ready += 1
                return
        now = time.monotonic_ns()
        if shared.latency:
            data = frame.get_payload_as_bytes()
            obj = shared.decode(data[2:] if shared.mode == "socketio" else data)
            event_obj = obj[1] if shared.mode == "socketio" else obj
            shared.latencies.append((now - event_obj["payload"]["sentNs"]) / 1000)
        if not shared.count:
            shared.first_ns = now
        shared.count += 1
        shared.last_ns = now
        if shared.count >= shared.expected:
            shared.done.set()

    def _nats_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        assert self.nats is not None
        shared = self.shared
        pongs = self.nats.pongs
        payloads = self.nats.feed(frame.get_payload_as_bytes())
        if self.nats.pongs > pongs and pongs == 0:
            shared.ready += 1
        while self.nats.pings:
            self.nats.pings -= 1
            transport.send(WSMsgType.BINARY, b"PONG\r\n")
        if not payloads:
            return
        now = time.monotonic_ns()
        if shared.latency:
            for data in payloads:
                sent = shared.decode(data)["payload"]["sentNs"]
                shared.latencies.append((now - sent) / 1000)
        if not shared.count:
            shared.first_ns = now
        shared.count += len(payloads)
        shared.last_ns = now
        if shared.count >= shared.expected:
            shared.done.set()


def subscriber_process(
    url: str,
    mode: str,
    connections: int,
    events: int,
    latency: bool,
    ready: Any,
    results: Any,
    timeout: float,
    go: Any,
    source: str | None = None,
    first_task: int | None = None,
    release: Any = None,
) -> None:
    """Open ``connections`` subscribers; report once each got ``events`` (or on timeout).
    ``source``: the local address to connect from (each 127.x.y.z has its own ~28,000
    ephemeral ports, so tens of thousands of connections need several).
    ``first_task``: subscriber ``i`` follows task ``t<first_task + i>`` alone.
    ``release``: an event to wait for after reporting and before disconnecting, so that
    the server's CPU read between the two counts deliveries, not the closing of every
    connection (at 10,000 subscribers and 200 events each, the hub's closes were 18.9%
    of its workers' samples)."""

    async def main() -> None:
        shared = _Shared(events * connections, latency, mode, asyncio.Event())
        transports = []
        extra: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
        for index in range(connections):
            task = None if first_task is None else first_task + index
            transport, _listener = await ws_connect(
                lambda task=task: _Subscriber(shared, task),
                url,
                websocket_handshake_timeout=30,
                read_buffer_init_size=2048,
                **extra,
            )
            transports.append(transport)
        deadline = time.monotonic() + 30 + connections / 1000
        while shared.ready < connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ready.put(os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        if mode == "taskcast-replay":
            for transport in transports:
                transport.send(WSMsgType.TEXT, SUBSCRIBE_FROM_START)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shared.done.wait(), timeout)
        dropped = sum(1 for transport in transports if transport.is_disconnected)
        sample = shared.latencies[:: max(1, len(shared.latencies) // 20_000)]
        result = SubscriberResult(
            shared.count,
            shared.first_ns,
            shared.last_ns,
            sample,
            own_cpu_seconds(),
            shared.ready,
            dropped,
        )
        results.put(result)
        if release is not None:
            await asyncio.get_running_loop().run_in_executor(None, release.wait, timeout)
        for transport in transports:
            transport.disconnect()

    asyncio.run(main())


class _Publisher(WSListener):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.acked = 0
        self.window = asyncio.Event()
        self.ready = asyncio.Event()
        self.nats = NatsStream() if mode == "nats" else None

    def on_ws_connected(self, transport: WSTransport) -> None:
        if self.mode == "nats":
            transport.send(WSMsgType.BINARY, NATS_CONNECT + b"PING\r\n")
        elif self.mode != "socketio":
            self.ready.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.nats is not None:
            self.nats.feed(frame.get_payload_as_bytes())
            if self.nats.pongs:
                self.ready.set()
            while self.nats.pings:
                self.nats.pings -= 1
                transport.send(WSMsgType.BINARY, b"PONG\r\n")
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        head: memoryview | bytes = frame.get_payload_as_memoryview()[:12]
        if self.mode.startswith("taskcast"):
            if head == b'{"type":"ack':
                self.acked += 1
                self.window.set()
        elif self.mode == "socketio":
            if head[:2] == b"40":
                self.ready.set()
            elif head[:1] == b"0":
                transport.send(WSMsgType.TEXT, b"40")
            elif head[:1] == b"2" and len(head) == 1:
                transport.send(WSMsgType.TEXT, b"3")


def publisher_process(
    url: str,
    mode: str,
    events: int,
    rate: float | None,
    window: int,
    ready: Any,
    go: Any,
    results: Any,
    finish: Any,
    tasks: int = 0,
) -> None:
    """Publish ``events``: as fast as the server takes them, or paced at ``rate``/s;
    round-robin over ``tasks`` tasks when given (see ``encode_event``)."""

    async def main() -> None:
        transport, listener = await ws_connect(lambda: _Publisher(mode), url)
        assert isinstance(listener, _Publisher)
        await asyncio.wait_for(listener.ready.wait(), 30)
        ready.put(os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        acks = mode.startswith("taskcast")
        start = time.monotonic_ns()
        sent = 0
        if rate is None:
            while sent < events:
                if acks:
                    while sent - listener.acked >= window:
                        listener.window.clear()
                        await listener.window.wait()
                    burst = window - (sent - listener.acked)
                else:
                    burst = 100
                kind = WSMsgType.BINARY if mode == "nats" else WSMsgType.TEXT
                for _ in range(min(burst, events - sent)):
                    transport.send(kind, encode_event(mode, sent, tasks))
                    sent += 1
                if not acks:
                    await asyncio.sleep(0)
        else:
            tick, credit, next_at = 0.005, 0.0, time.monotonic()
            while sent < events:
                credit += rate * tick
                while credit >= 1 and sent < events:
                    kind = WSMsgType.BINARY if mode == "nats" else WSMsgType.TEXT
                    transport.send(kind, encode_event(mode, sent, tasks))
                    sent += 1
                    credit -= 1
                next_at += tick
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if acks:
            while listener.acked < events:
                listener.window.clear()
                try:
                    await asyncio.wait_for(listener.window.wait(), 30)
                except TimeoutError:
                    break
        elapsed = (time.monotonic_ns() - start) / 1e9
        results.put(
            {
                "start_ns": start,
                "elapsed": elapsed,
                "acked": listener.acked,
                "cpu": own_cpu_seconds(),
            }
        )
        # Stay connected until the subscribers are done: closing now could drop frames
        # still in this socket's buffers, and a relay would never deliver them.
        await asyncio.get_running_loop().run_in_executor(None, finish.wait, 300)
        transport.disconnect()

    asyncio.run(main())


class Publishers:
    """Publisher processes (``start_publishers``): connected, each waiting for ``go``."""

    def __init__(self, processes: list[mp.process.BaseProcess], results: Any, finish: Any):
        self.processes = processes
        self.results = results
        self.finish = finish

    def running(self) -> bool:
        """True while some publisher is still sending (none has reported yet)."""
        return any(p.is_alive() for p in self.processes) and self.results.empty()

    def outcomes(self, timeout: float) -> list[dict[str, Any]]:
        """Each publisher's report (``publisher_process``) once it has sent everything."""
        return [self.results.get(timeout=timeout) for _ in self.processes]

    def release(self) -> None:
        """Let them disconnect — only once the subscribers have everything (a relay
        would drop what a closing publisher's socket still holds) — and reap them."""
        self.finish.set()
        for process in self.processes:
            process.join(30)


def start_publishers(
    urls: str | list[str],
    mode: str,
    events: int,
    go: Any,
    *,
    rate: float | None = None,
    count: int = 1,
    tasks: int = 0,
    window: int = 1000,
) -> Publishers:
    """``count`` publishers of ``events`` each (``publisher_process``), over ``urls`` in
    turn; returns once all are connected, before ``go`` — so the caller reads the
    server's CPU between the two."""
    ctx = mp.get_context("spawn")
    ready, results, finish = ctx.Queue(), ctx.Queue(), ctx.Event()
    targets = [urls] if isinstance(urls, str) else urls
    processes = [
        spawn(
            publisher_process,
            targets[i % len(targets)],
            mode,
            events,
            rate,
            window,
            ready,
            go,
            results,
            finish,
            tasks,
        )
        for i in range(count)
    ]
    for _ in processes:
        ready.get(timeout=60)
    return Publishers(processes, results, finish)


class Subscribers:
    """Subscriber processes (``start_subscribers``): connected, each waiting for ``go``."""

    def __init__(self, processes: list[mp.process.BaseProcess], results: Any, release: Any):
        self.processes = processes
        self.results = results
        self._release = release

    def outcomes(self, timeout: float) -> list[SubscriberResult]:
        """Each process's report once its subscribers got everything (or timed out)."""
        return [self.results.get(timeout=timeout) for _ in self.processes]

    def release(self, timeout: float = 30) -> None:
        """Let them disconnect (those started with ``release=True`` wait for it after
        reporting) and reap them."""
        if self._release is not None:
            self._release.set()
        for process in self.processes:
            process.join(timeout)


def start_subscribers(
    urls: str | list[str],
    mode: str,
    go: Any,
    *,
    processes: int,
    per_process: int,
    events: int,
    latency: bool = False,
    timeout: float = 120.0,
    ready_timeout: float = 90.0,
    own_addresses: bool = False,
    one_task_each: bool = False,
    release: bool = False,
) -> Subscribers:
    """``processes`` load generators of ``per_process`` subscribers each
    (``subscriber_process``), over ``urls`` in turn, each waiting for ``events``; returns
    once all are connected, before ``go``. ``own_addresses``: process i connects from
    127.0.0.(2 + i) (ephemeral ports for tens of thousands of connections);
    ``one_task_each``: every subscriber follows a task of its own; ``release``: they stay
    connected after reporting until ``Subscribers.release`` (so the server's CPU read in
    between counts no closes)."""
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    released = ctx.Event() if release else None
    targets = [urls] if isinstance(urls, str) else urls
    spawned = [
        spawn(
            subscriber_process,
            targets[index % len(targets)],
            mode,
            per_process,
            events,
            latency,
            ready,
            results,
            timeout,
            go,
            f"127.0.0.{2 + index}" if own_addresses else None,
            index * per_process if one_task_each else None,
            released,
        )
        for index in range(processes)
    ]
    for _ in spawned:
        ready.get(timeout=ready_timeout)
    return Subscribers(spawned, results, released)


def publishing_seconds(outcomes: list[dict[str, Any]]) -> float:
    """From the first publisher's start to the last one's last ack."""
    start: int = min(o["start_ns"] for o in outcomes)
    end: float = max(o["start_ns"] + o["elapsed"] * 1e9 for o in outcomes)
    return (end - start) / 1e9


def idle_process(url: str, mode: str, connections: int, ready: Any, release: Any) -> None:
    """Hold ``connections`` idle subscribers open until released (memory per connection)."""

    async def main() -> None:
        shared = _Shared(1, False, mode, asyncio.Event())
        transports: list[WSTransport] = []
        for start in range(0, connections, 200):
            batch = await asyncio.gather(
                *(
                    ws_connect(lambda: _Subscriber(shared), url, websocket_handshake_timeout=60)
                    for _ in range(min(200, connections - start))
                )
            )
            transports.extend(t for t, _ in batch)
        deadline = time.monotonic() + 60
        while shared.ready < connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ready.put(shared.ready)
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        for transport in transports:
            transport.disconnect()

    asyncio.run(main())


def spawn(target: Any, *args: Any) -> mp.process.BaseProcess:
    process = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process
