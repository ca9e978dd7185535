"""The hub's WriteQueue: websockets written in time slices, the loop polled between."""

from __future__ import annotations

import asyncio

import pytest

from taskcast.hub.connection import ClientConnection, DirectSink
from taskcast.hub.write_queue import WriteQueue


class RecordingTransport(asyncio.Transport):
    """What the socket was handed, one entry per write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


class RecordingSink(DirectSink):
    __slots__ = ("transport",)

    def __init__(self) -> None:
        self.transport = RecordingTransport()

    @property
    def closed(self) -> bool:
        return False

    async def close(self, code: int, reason: bytes) -> None:
        return None


async def test_writers_run_in_order_and_the_loop_runs_between_slices() -> None:
    queue = WriteQueue(slice_seconds=0)  # one writer per slice
    seen: list[str] = []
    loop = asyncio.get_running_loop()

    def writer(name: str) -> None:
        seen.append(name)
        if name == "a":
            loop.call_soon(seen.append, "loop")

    for name in "abc":
        queue.add(lambda name=name: writer(name))
    assert len(queue) == 3
    while len(queue):
        await asyncio.sleep(0)
    assert seen == ["a", "loop", "b", "c"]


async def test_a_long_slice_writes_everyone_in_one_pass() -> None:
    queue = WriteQueue(slice_seconds=10)
    seen: list[str] = []
    loop = asyncio.get_running_loop()

    def writer(name: str) -> None:
        seen.append(name)
        if name == "a":
            loop.call_soon(seen.append, "loop")

    for name in "abc":
        queue.add(lambda name=name: writer(name))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert seen == ["a", "b", "c", "loop"]


async def test_a_writer_that_raises_does_not_strand_the_others() -> None:
    queue = WriteQueue(slice_seconds=10)
    seen: list[str] = []
    errors: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))

    def broken() -> None:
        raise RuntimeError("socket gone")

    queue.add(broken)
    queue.add(lambda: seen.append("b"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert seen == ["b"]
    assert len(queue) == 0
    assert [type(error) for error in errors] == [RuntimeError]
    # The queue still works afterwards.
    queue.add(lambda: seen.append("c"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert seen == ["b", "c"]


async def test_frames_queued_before_a_connections_turn_go_in_the_same_write() -> None:
    """An event committed while a fan-out is being written rides along to every
    subscriber not yet written: one write for them, two for those already written."""
    queue = WriteQueue(slice_seconds=0)
    first, second = (
        ClientConnection(RecordingSink(), 1 << 20, peer, writes=queue) for peer in "ab"
    )
    for connection in (first, second):
        assert connection.deliver(b'{"seq":1}', 1)
    await asyncio.sleep(0)  # one slice: ``first`` is written, ``second`` waits its turn
    for connection in (first, second):
        assert connection.deliver(b'{"seq":2}', 2)
    while len(queue):
        await asyncio.sleep(0)
    first_writes = first.sink.transport.writes  # type: ignore[attr-defined]
    second_writes = second.sink.transport.writes  # type: ignore[attr-defined]
    assert len(first_writes) == 2
    assert len(second_writes) == 1
    assert b'{"seq":1}' in second_writes[0] and b'{"seq":2}' in second_writes[0]
    assert second_writes[0].index(b'{"seq":1}') < second_writes[0].index(b'{"seq":2}')
    assert first.last_sent_seq == second.last_sent_seq == 2


def test_a_websocket_connection_needs_the_write_queue() -> None:
    with pytest.raises(TypeError, match="WriteQueue"):
        ClientConnection(RecordingSink(), 1 << 20, "a")
