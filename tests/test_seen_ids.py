"""The filter that spares the resend lookup: it may say yes wrongly, never no wrongly."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from taskcast.frames import Publish, parse_client_frame
from taskcast.store import EventQuery, SqliteStore
from taskcast.store.seen_ids import MIN_CAPACITY, SeenIds

keys = st.tuples(st.text(max_size=12), st.text(max_size=40))


@given(st.lists(keys, max_size=200), st.lists(keys, max_size=200))
def test_every_key_added_is_held_and_few_others(
    added: list[tuple[str, str]], other: list[tuple[str, str]]
) -> None:
    seen = SeenIds()
    seen.update(added)
    assert all(seen.may_hold(key) for key in added)
    strangers = [key for key in other if key not in set(added)]
    assert sum(seen.may_hold(key) for key in strangers) <= max(2, len(strangers) // 20)


def test_it_says_when_it_outgrew_its_size() -> None:
    seen = SeenIds(MIN_CAPACITY)
    seen.update(("p", str(n)) for n in range(MIN_CAPACITY))
    assert not seen.full
    seen.add(("p", "one more"))
    assert seen.full


def _event(n: int) -> Publish:
    frame = {
        "type": "api_action",
        "id": f"e{n}",
        "payload": {"taskId": "t", "message": "m", "timestamp": n},
    }
    parsed = parse_client_frame(json.dumps(frame))
    assert isinstance(parsed, Publish)
    return parsed


async def test_the_log_s_filter_holds_every_id_even_those_appended_while_it_was_built(
    tmp_path: Path,
) -> None:
    """Built from SQLite on a reader thread as the log opens; ids appended meanwhile (and
    those only the journal held) join it when it is done: a resend is never missed."""
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    await store.append([_event(n) for n in range(50)], 1)
    await store.close()
    store = SqliteStore(tmp_path / "log.db")
    await store.open()  # the build has begun; these come before it ends
    try:
        await store.append([_event(n) for n in range(50, 80)], 1)
        assert store._seen is None
        await store.query(EventQuery())  # a fold, and time for the build
        for _ in range(1000):
            if store._seen is not None:
                break
            await store._threads.read(lambda: None)
        assert store._seen is not None
        assert all(store._seen.may_hold(("anonymous", f"e{n}")) for n in range(80))
        results = await store.append([_event(n) for n in (3, 60, 80)], 1)
        assert [(r.seq, r.duplicate) for r in results] == [(4, True), (61, True), (81, False)]
    finally:
        await store.close()
