"""Cluster mode on a real 3-server NATS cluster with an R3 stream and several hub nodes
(issue 12): one numbering on every node, resume on another node, leases and webhooks
across nodes, and chaos — hub nodes and NATS servers killed with -9 under load."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from taskcast.client import CommunicationService, subscribe
from tests.cluster_load import Nodes, stream_events
from tests.conftest import HubProcess
from tests.helpers import collect_events, publish_acked, seed, wait_until
from tests.helpers import subscribe as subscribe_frame
from tests.nats_servers import NatsCluster, jetstream_ready


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nats_cluster = NatsCluster(tmp_path_factory.mktemp("cluster")).start()
    yield nats_cluster
    nats_cluster.stop()


@pytest.fixture
def nodes(cluster: NatsCluster, tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(cluster, tmp_path)
    yield started
    started.stop()


async def test_every_node_numbers_every_event_alike_and_resumes_anywhere(nodes: Nodes) -> None:
    a, b, c = nodes.start(), nodes.start(), nodes.start()
    async with aiohttp.ClientSession() as session:
        on_b = await session.ws_connect(b.url)
        on_c = await session.ws_connect(c.url)
        await subscribe_frame(on_b, "tasks.>")
        await subscribe_frame(on_c, "tasks.>")
        to_a = await session.ws_connect(a.url)
        to_b = await session.ws_connect(b.url)
        acks = await publish_acked(to_a, [seed("x", f"a{n}", id=f"a{n}") for n in range(20)])
        acks += await publish_acked(to_b, [seed("y", f"b{n}", id=f"b{n}") for n in range(20)])
        assert sorted(ack["seq"] for ack in acks) == list(range(1, 41))
        seen_b = await collect_events(on_b, 40)
        seen_c = await collect_events(on_c, 40)
        assert [e["seq"] for e in seen_b] == list(range(1, 41))
        assert [(e["seq"], e["id"]) for e in seen_b] == [(e["seq"], e["id"]) for e in seen_c]
        by_id = {ack["id"]: ack["seq"] for ack in acks}
        assert all(by_id[e["id"]] == e["seq"] for e in seen_b)  # the ack's seq everywhere
        # A resend through another node is the same event (Nats-Msg-Id), not a new one.
        (again,) = await publish_acked(to_b, [seed("x", "a0", id="a0")])
        assert again == {**acks[0], "duplicate": True}
        # A subscriber that read up to seq 25 on B resumes on C: no gap, no repeat.
        await publish_acked(to_a, [seed("z", f"late{n}") for n in range(5)])
        resumed = await session.ws_connect(c.url)
        reply = await subscribe_frame(resumed, "tasks.>", since=25)
        # C's head may still trail A's acks (each node follows the log at its own pace);
        # whatever it has not read yet reaches the subscriber live, in order.
        assert 25 <= reply["head"] <= 45 and reply.get("recovered", True)
        rest = await collect_events(resumed, 20)
        assert [e["seq"] for e in rest] == list(range(26, 46))
        # Summaries, the audit API and analytics answer the same on every node.
        for hub in (a, b, c):
            async with session.get(f"{hub.http}/api/tasks") as r:
                assert {t["taskId"] for t in await r.json()} == {"x", "y", "z"}
            async with session.get(f"{hub.http}/api/events", params={"taskId": "y"}) as r:
                assert [e["seq"] for e in await r.json()] == [e["seq"] for e in seen_b[20:40]]


async def test_a_lease_is_one_holders_across_nodes_and_webhooks_are_sent_once(
    nodes: Nodes,
) -> None:
    a, b = nodes.start(), nodes.start()

    async def lease(hub: HubProcess, holder: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{hub.http}/api/tasks/t1/lease", json={"holder": holder}) as r,
        ):
            return r.status

    # Two runners racing on two nodes: exactly one gets the task.
    statuses = await asyncio.gather(*(lease(hub, f"r{n}") for n, hub in enumerate([a, b] * 4)))
    assert sorted(statuses) == [200] + [409] * 7

    received: list[dict[str, Any]] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        got.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            body = {"url": f"http://127.0.0.1:{port}/hook", "channel": "tasks.>", "since": 0}
            async with session.post(f"{b.http}/api/webhooks", json=body) as r:
                assert r.status == 201
            to_a = await session.ws_connect(a.url)
            await publish_acked(to_a, [seed("w", str(n)) for n in range(10)])
            await wait_until(lambda: len({e["seq"] for e in received}) >= 10, 30, "10 webhooks")
            async with session.get(f"{a.http}/api/webhooks") as r:
                (listed,) = await r.json()  # registered on B, listed on A too
        assert [e["seq"] for e in received] == list(range(1, 11))  # once each, in order
        assert listed["url"].endswith("/hook")
    finally:
        await runner.cleanup()


def _publisher(
    urls: list[str], name: str, count: int, sent: list[str], done: threading.Event
) -> None:
    """One agent: ``count`` events through a CommunicationService over every node."""
    service = CommunicationService(urls, source=name)
    try:
        for n in range(count):
            sent.append(service.send_message(seed(f"chaos-{name}", f"{name}-{n}")))
            if n % 10 == 9:
                threading.Event().wait(0.04)  # an agent's pace (~200 events/s), not a flood
        assert service.flush(120), f"{name}: {service.pending} events never acknowledged"
    finally:
        service.close(timeout=5)
        done.set()


@pytest.mark.timeout(240)
async def test_chaos_nothing_acked_is_lost_repeated_or_reordered(
    cluster: NatsCluster, nodes: Nodes
) -> None:
    a, b, c = nodes.start(), nodes.start(), nodes.start()
    urls = [a.url, b.url, c.url]
    per_publisher = 3000
    names = ["p0", "p1", "p2"]
    sent: dict[str, list[str]] = {name: [] for name in names}
    finished = {name: threading.Event() for name in names}
    # Subscribers on the nodes that survive, each also failing over between them.
    seen: dict[str, list[int]] = {"b": [], "c": []}

    async def watch(key: str, hubs: list[str]) -> None:
        async for frame in subscribe(hubs, "tasks.>", since=0):
            seen[key].append(frame["seq"])

    watchers = [
        asyncio.create_task(watch("b", [b.url, c.url])),
        asyncio.create_task(watch("c", [c.url, b.url])),
    ]
    threads = [
        threading.Thread(
            target=_publisher,
            args=(urls[i:] + urls[:i], name, per_publisher, sent[name], finished[name]),
            daemon=True,
        )
        for i, name in enumerate(names)
    ]
    for thread in threads:
        thread.start()
    total = per_publisher * len(names)
    await wait_until(lambda: len(seen["b"]) > total // 5, 60, "a fifth of the events")
    a.kill9()  # a hub node dies mid-stream: its clients move to B and C
    await wait_until(lambda: len(seen["b"]) > total // 2, 60, "half of the events")
    victim = cluster.servers[1]
    victim.kill9()  # a NATS server dies: the R3 stream goes on on the other two
    await wait_until(lambda: len(seen["b"]) > 2 * total // 3, 90, "two thirds of the events")
    victim.start()  # and comes back, catching up from its peers
    for thread in threads:
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 150)
    assert all(event.is_set() for event in finished.values())
    await wait_until(lambda: min(len(v) for v in seen.values()) >= total, 60, "every event seen")
    for task in watchers:
        task.cancel()
    jetstream_ready(cluster.url)

    stored = await stream_events(cluster, nodes.stream)
    assert len(stored) == total, "lost or duplicated events in the stream"
    by_publisher: dict[str, list[str]] = {name: [] for name in names}
    for _, task_id, event_id in stored:
        by_publisher[task_id.removeprefix("chaos-")].append(event_id)
    for name in names:
        assert by_publisher[name] == sent[name], f"{name}: stream order differs from send order"
    for key, seqs in seen.items():
        assert seqs == sorted(set(seqs)), f"subscriber {key} saw a repeat or a step back"
        assert seqs[:total] == [seq for seq, _, _ in stored], f"subscriber {key} missed events"
