"""What the cluster tests share: hub nodes over one R3 stream, agents publishing
through them at an agent's pace, and the stream read back from NATS itself."""

from __future__ import annotations

import datetime
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import nats

from taskcast.client import CommunicationService
from taskcast.store.nats_layout import channel_of, stored_event, subject_prefix
from tests.conftest import HubProcess
from tests.helpers import seed
from tests.nats_servers import NatsCluster, unique_stream


class Nodes:
    """Hub processes over one R3 stream of the cluster."""

    def __init__(self, cluster: NatsCluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.stream = unique_stream("c")
        self.hubs: list[HubProcess] = []

    def start(self, *extra: str, store: str | None = None) -> HubProcess:
        """A node on the whole cluster, or on ``store`` (some of its servers)."""
        hub = HubProcess(
            store or self.cluster.url, "--nats-stream", self.stream, "--nats-replicas", "3", *extra
        )
        hub.start(self.root / f"node{len(self.hubs)}.log")
        self.hubs.append(hub)
        return hub

    def stop(self) -> None:
        for hub in self.hubs:
            if hub.proc is not None and hub.proc.poll() is None:
                hub.proc.kill()
                hub.proc.wait(10)


class Publisher:
    """One agent: ``count`` events through a CommunicationService over ``urls``, ten
    every ``pause`` seconds; keeps what it sent, and when acks came."""

    def __init__(self, urls: list[str], name: str, count: int, pause: float = 0.04) -> None:
        self.urls, self.name, self.count, self.pause = urls, name, count, pause
        self.sent: list[str] = []
        self.acked_at: list[float] = []
        self.refused_at: list[float] = []  # store_unavailable answers (the SDK resends)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Publisher:
        self.thread.start()
        return self

    def _run(self) -> None:
        service = CommunicationService(self.urls, source=self.name)
        service.on("ack", lambda _: self.acked_at.append(time.monotonic()))
        service.on(
            "error",
            lambda frame: (
                self.refused_at.append(time.monotonic())
                if frame.get("code") == "store_unavailable"
                else None
            ),
        )
        try:
            for n in range(self.count):
                self.sent.append(
                    service.send_message(seed(f"chaos-{self.name}", f"{self.name}-{n}"))
                )
                if n % 10 == 9:
                    threading.Event().wait(self.pause)  # an agent's pace, not a flood
            assert service.flush(180), f"{self.name}: {service.pending} events never acknowledged"
        except BaseException as exc:
            self.error = exc
        finally:
            service.close(timeout=5)
            self.done.set()


async def stream_events(cluster: NatsCluster, stream: str) -> list[tuple[int, str, str]]:
    """(seq, task id, event id) of every message in the stream, read from NATS itself."""
    nc = await nats.connect(servers=cluster.url.split(","))
    prefix = subject_prefix(stream)
    found: list[tuple[int, str, str]] = []
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(stream)
        sub = await js.subscribe(f"{prefix}.>", stream=stream, ordered_consumer=True)
        while len(found) < info.state.messages:
            msg = await sub.next_msg(timeout=10)
            event = stored_event(
                msg.metadata.sequence.stream, channel_of(prefix, msg.subject), msg.data
            )
            found.append((event.seq, event.task_id or "", event.id))
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found


def check_stream(stored: list[tuple[int, str, str]], publishers: list[Publisher]) -> None:
    """Every sent event in the stream once, in each publisher's order."""
    total = sum(len(p.sent) for p in publishers)
    assert len(stored) == total, f"{len(stored)} events in the stream for {total} sent"
    by_publisher: dict[str, list[str]] = {p.name: [] for p in publishers}
    for _, task_id, event_id in stored:
        by_publisher[task_id.removeprefix("chaos-")].append(event_id)
    for publisher in publishers:
        assert by_publisher[publisher.name] == publisher.sent, (
            f"{publisher.name}: stream order differs from send order"
        )


def longest_gap(times: list[float]) -> float:
    """The longest time between two consecutive moments (seconds)."""
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def describe(publishers: list[Publisher], logs: list[Path]) -> dict[str, Any]:
    """What the publishers met: each one's longest stretch without an ack, and the
    refusals the nodes logged (an event not stored: answered ``store_unavailable``)."""
    refused: list[datetime.datetime] = []
    for path in logs:
        for line in path.read_text().splitlines():
            if " not stored: " in line:
                refused.append(datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"))
    refused.sort()
    return {
        "longest_ack_gap_s": {p.name: round(longest_gap(p.acked_at), 2) for p in publishers},
        "refused_events": len(refused),
        "refused_over_s": round((refused[-1] - refused[0]).total_seconds(), 2) if refused else 0,
        "refusals_seen_by_publishers": sum(len(p.refused_at) for p in publishers),
    }
