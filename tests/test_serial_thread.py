"""The SQLite writer's thread: calls in order, outcomes back on the loop, cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from taskcast.store.serial_thread import SerialThread


async def test_calls_run_in_order_on_one_thread_and_answer_on_the_loop() -> None:
    serial = SerialThread("test-serial")
    ran: list[tuple[int, int | None]] = []

    def record(i: int) -> int:
        ran.append((i, threading.get_ident()))
        return i * 10

    results = await asyncio.gather(*(serial.call(record, i) for i in range(200)))
    assert results == [i * 10 for i in range(200)]
    assert [i for i, _ in ran] == list(range(200))
    assert len({ident for _, ident in ran}) == 1
    assert ran[0][1] != threading.get_ident()
    await serial.shutdown()


async def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    serial = SerialThread("test-serial")

    def fail() -> None:
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        await serial.call(fail)
    assert await serial.call(lambda: "still here") == "still here"
    await serial.shutdown()


async def test_stop_iteration_reaches_the_caller_as_a_runtime_error() -> None:
    serial = SerialThread("test-serial")
    with pytest.raises(RuntimeError, match="StopIteration"):
        await asyncio.wait_for(serial.call(next, iter(())), 10)
    await serial.shutdown()


async def test_a_call_cancelled_before_it_started_is_not_run() -> None:
    serial = SerialThread("test-serial")
    gate = threading.Event()
    ran: list[str] = []
    blocker = serial.call(gate.wait)
    queued = serial.call(ran.append, "queued")
    queued.cancel()
    after = serial.call(ran.append, "after")
    gate.set()
    assert await blocker is True
    await after
    assert ran == ["after"]
    with pytest.raises(asyncio.CancelledError):
        await queued
    await serial.shutdown()


async def test_shutdown_runs_what_was_queued_then_refuses_new_calls() -> None:
    serial = SerialThread("test-serial")
    ran: list[int] = []
    pending = [serial.call(ran.append, i) for i in range(50)]
    await serial.shutdown()
    assert ran == list(range(50))
    assert await asyncio.gather(*pending) == [None] * 50
    with pytest.raises(RuntimeError, match="shut down"):
        serial.call(ran.append, 99)


async def test_a_second_shutdown_also_waits_for_the_queue() -> None:
    serial = SerialThread("test-serial")
    gate = threading.Event()
    ran: list[int] = []
    serial.call(gate.wait)
    pending = [serial.call(ran.append, i) for i in range(5)]
    first = asyncio.ensure_future(serial.shutdown())
    second = asyncio.ensure_future(serial.shutdown())
    try:
        for _ in range(20):  # loop passes, not time: a shutdown that did not wait is done
            await asyncio.sleep(0)
        assert not first.done() and not second.done()  # the gate still holds the queue
    finally:
        gate.set()  # else the thread, and the loop's teardown with it, would wait forever
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert ran == list(range(5))
    await asyncio.gather(*pending)


async def test_a_call_refused_because_the_thread_cannot_start_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serial = SerialThread("test-serial")
    start = serial._thread.start

    def cannot_start() -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(serial._thread, "start", cannot_start)
    ran: list[str] = []
    with pytest.raises(RuntimeError, match="can't start"):
        serial.call(ran.append, "refused")
    monkeypatch.setattr(serial._thread, "start", start)
    await serial.call(ran.append, "next")
    assert ran == ["next"]  # the refused call was never queued
    await serial.shutdown()


async def test_shutdown_of_a_thread_never_used_returns_at_once() -> None:
    await SerialThread("test-serial").shutdown()
