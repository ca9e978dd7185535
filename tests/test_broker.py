from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from taskcast.broker import (
    CACHE_REFERENCES,
    OutboundBuffer,
    ReplayCursor,
    Subscription,
    SubscriptionIndex,
)
from taskcast.channels import matches


class Conn:
    pass


def test_index_routes_by_pattern_and_forgets_removed() -> None:
    index: SubscriptionIndex[Conn] = SubscriptionIndex()
    a, b = Conn(), Conn()
    all_tasks = Subscription(a, "tasks.>", live=True)
    one_task = Subscription(b, "tasks.t1", live=True)
    index.add(all_tasks)
    index.add(one_task)
    index.add(one_task)
    assert len(index) == 2
    assert index.match("tasks.t1") == [all_tasks, one_task]
    assert index.match("tasks.t2") == [all_tasks]
    assert index.match("events") == []
    index.remove(all_tasks)
    assert index.match("tasks.t1") == [one_task]
    index.remove(all_tasks)
    assert len(index) == 1


def test_outbound_buffer_refuses_live_frames_past_the_limit() -> None:
    buffer = OutboundBuffer(limit=10)
    assert buffer.offer(b"12345", 1)
    assert buffer.offer(b"12345", 2)
    assert not buffer.offer(b"1", 3)
    buffer.put(b"reply")  # replies are never refused
    assert buffer.size == 15 and not buffer.below_low_water()
    assert buffer.take() == [(1, b"12345"), (2, b"12345"), (0, b"reply")]
    assert buffer.last_taken_seq == 2 and buffer.size == 0 and buffer.below_low_water()


@given(
    st.lists(st.tuples(st.integers(0, 50), st.binary(max_size=8)), max_size=12),
    st.integers(0, 14),
    st.integers(0, 50),
)
def test_outbound_buffer_consume_keeps_what_was_not_handed_over(
    queued: list[tuple[int, bytes]], count: int, before: int
) -> None:
    """A write that the kernel took in part: the frames handed over are forgotten, the
    rest stay queued in order, the size counts them, and the last seq handed over is
    remembered (a slow consumer's close names it)."""
    buffer = OutboundBuffer(limit=1000, last_taken_seq=before)
    for seq, frame in queued:
        buffer.put(frame, seq)
    buffer.consume(count)
    handed, kept = queued[:count], queued[count:]
    assert buffer.frames == kept
    assert buffer.size == sum(len(frame) for _, frame in kept)
    assert buffer.last_taken_seq == next((s for s, _ in reversed(handed) if s), before)


def test_replay_cursor_goes_live_only_at_the_head() -> None:
    cursor = ReplayCursor(5)
    assert cursor.next_range(5) is None
    assert cursor.next_range(9) == (5, 9)
    cursor.advance(7)
    assert cursor.next_range(9) == (7, 9)
    cursor.advance(3)
    assert cursor.position == 7
    cursor.advance(9)
    assert cursor.next_range(9) is None
    assert cursor.next_range(12) == (9, 12)


async def test_a_closing_connection_is_not_counted_as_delivered() -> None:
    """The hub's own fan-out, in process, with a sink that keeps what it is sent."""
    import json

    from taskcast.frames import Publish, Subscribe, parse_client_frame
    from taskcast.hub.config import HubConfig
    from taskcast.hub.connection import ClientConnection
    from taskcast.hub.core import Hub
    from taskcast.store import MemoryStore

    class KeepingSink:
        def __init__(self) -> None:
            self.frames: list[bytes] = []

        @property
        def closed(self) -> bool:
            return False

        async def write(self, frames: list[tuple[int, bytes]]) -> None:
            self.frames.extend(frame for _, frame in frames)

        async def close(self, code: int, reason: bytes) -> None:
            return None

    hub = Hub(MemoryStore(), HubConfig())
    await hub.start()
    try:
        open_one, closing_one = (ClientConnection(KeepingSink(), 1 << 20, p) for p in "ab")
        for connection in (open_one, closing_one):
            hub.attach(connection)
            hub.subscribe(connection, Subscribe("tasks.>", None))
        closing_one.begin_close()
        event = parse_client_frame(
            json.dumps(
                {"type": "api_action", "payload": {"taskId": "t", "message": "m", "timestamp": 1}}
            )
        )
        assert isinstance(event, Publish)
        await hub.publish(event)
        assert hub.stats.delivered == {"api_action": 1}  # the open one only
    finally:
        await hub.stop()


async def test_a_burst_read_over_two_loop_passes_is_one_commit(tmp_path: Path) -> None:
    """An idle hub woken by one event commits what the next loop pass reads with it: a
    burst that arrives in two reads costs one commit and one fan-out pass, not two."""
    import asyncio
    import json

    from taskcast.frames import Publish, parse_client_frame
    from taskcast.hub.config import HubConfig
    from taskcast.hub.core import Hub
    from taskcast.store import AppendResult
    from taskcast.store.sqlite import SqliteStore

    def event(step: int) -> Publish:
        frame = {
            "type": "api_action",
            "payload": {"taskId": "t", "message": f"{step}", "timestamp": 1},
        }
        parsed = parse_client_frame(json.dumps({**frame, "id": f"e{step}"}))
        assert isinstance(parsed, Publish)
        return parsed

    store = SqliteStore(tmp_path / "events.db")
    await store.open()
    hub = Hub(store, HubConfig())
    await hub.start()
    try:
        commits = hub.stats.commits

        async def read_in_the_next_pass() -> AppendResult:
            await asyncio.sleep(0)
            return await hub.publish(event(2))

        first = asyncio.create_task(hub.publish(event(1)))
        second = asyncio.create_task(read_in_the_next_pass())
        results = await asyncio.gather(first, second)
        assert [result.seq for result in results] == [1, 2]
        assert hub.stats.commits == commits + 1
        # Once it is busy, events that arrive meanwhile simply form the next batch.
        assert (await hub.publish(event(3))).seq == 3
        assert hub.stats.commits == commits + 2
    finally:
        await hub.stop()
        await store.close()


tokens = st.sampled_from(["tasks", "control", "t1", "t2", "x"])
channels_st = st.lists(tokens, min_size=1, max_size=3).map(".".join)
patterns_st = st.lists(
    st.sampled_from(["tasks", "t1", "t2", "x", "*", ">"]), min_size=1, max_size=3
)


@given(
    st.lists(patterns_st.filter(lambda p: ">" not in p[:-1]).map(".".join), max_size=12),
    st.lists(st.integers(0, 11), max_size=6),
    st.lists(channels_st, min_size=1, max_size=6),
)
def test_index_matches_exactly_what_brute_force_matches(
    patterns: list[str], removals: list[int], channels: list[str]
) -> None:
    """Literal patterns looked up, wildcards tried: the same subscriptions as testing
    every pattern, through adds, removes and the cache."""
    index: SubscriptionIndex[object] = SubscriptionIndex()
    live = [Subscription(object(), pattern) for pattern in patterns]
    for subscription in live:
        index.add(subscription)
    for channel in channels:
        index.match(channel)  # fill the cache before the removals
    for position in removals:
        if position < len(live):
            index.remove(live.pop(position))
    for channel in channels:
        expected = {id(s) for s in live if matches(s.pattern, channel)}
        found = index.match(channel)
        assert {id(s) for s in found} == expected
        assert len(found) == len(expected)


def test_channels_matched_by_the_same_patterns_share_one_cached_list() -> None:
    """1,000 dashboards on ``tasks.>`` and 5,000 task channels: one list in the cache,
    not one per channel (which would be 5,000,000 references)."""
    index: SubscriptionIndex[object] = SubscriptionIndex()
    dashboards = [Subscription(object(), "tasks.>") for _ in range(1_000)]
    for subscription in dashboards:
        index.add(subscription)
    routes = [index.match(f"tasks.t{n}") for n in range(5_000)]
    assert all(route is routes[0] for route in routes)
    assert routes[0] == dashboards
    assert index.cached_references == 1_000


def test_the_route_cache_keeps_to_its_budget_of_references() -> None:
    """Each task followed by its own subscriber too: every channel's list differs, so
    the cache is dropped whenever it would pass its budget — and routes stay right."""
    index: SubscriptionIndex[object] = SubscriptionIndex()
    dashboards = [Subscription(object(), "tasks.>") for _ in range(1_000)]
    followers = [Subscription(object(), f"tasks.t{n}") for n in range(3_000)]
    for subscription in [*dashboards, *followers]:
        index.add(subscription)
    for n in range(3_000):
        route = index.match(f"tasks.t{n}")
        assert route == [*dashboards, followers[n]]
        assert index.cached_references <= CACHE_REFERENCES
    assert index.match("tasks.t0") == [*dashboards, followers[0]]
