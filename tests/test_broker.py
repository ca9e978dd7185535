from __future__ import annotations

from taskcast.broker import OutboundBuffer, ReplayCursor, Subscription, SubscriptionIndex


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
