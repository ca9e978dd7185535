"""Subscribing with automatic resume: an async iterator of delivered events."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp

from taskcast.client.failover import HubRotation, HubUrls
from taskcast.client.resume import ResumePoint, Resumption
from taskcast.frames import CONTROL_TYPES, decode

log = logging.getLogger("taskcast.client")


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter (never a thundering herd after a hub restart)."""
    return random.uniform(base / 2, min(cap, base * 2**attempt))


# A bearer token, or a callable that returns the current one: it is called before every
# (re)connection, so a hub that closes a connection at the token's exp (4401) is met
# with a fresh token.
TokenSource = str | Callable[[], str | None] | None


def auth_headers(token: TokenSource) -> dict[str, str]:
    value = token() if callable(token) else token
    return {"Authorization": f"Bearer {value}"} if value else {}


async def subscribe(
    url: HubUrls,
    pattern: str,
    since: int | ResumePoint | None = None,
    *,
    token: TokenSource = None,
    session: aiohttp.ClientSession | None = None,
    on_status: Callable[[str, str | None], None] | None = None,
    strict: bool = False,
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield every event matching ``pattern`` after ``since`` (or from now), forever.

    After any disconnect — a network drop, a hub restart, a slow-consumer close —
    it reconnects with backoff and resubscribes from the last seq it yielded, and it
    drops any event it has already yielded, so the caller sees each seq once, in order.
    ``on_status("subscribed", None)`` / ``on_status("retrying", error)`` tell a caller (the
    CLI) how the connection is doing. Given several hub URLs (the nodes of a cluster),
    it moves to the next one after each failure and resumes there.

    ``since`` may be a ``ResumePoint`` (a seq and the id of the log it belongs to, saved
    by an earlier run): it is kept up to date as events are yielded, so the caller can
    save ``point.to_json()`` at any time. A point of another log is not resumed silently:
    it logs a warning and starts from the new log's beginning, or with ``strict`` raises
    ``LogMismatch``; so does a seq beyond the log's head (it goes on from the head).
    """
    own_session = session is None
    http = session or aiohttp.ClientSession()
    point = since if isinstance(since, ResumePoint) else ResumePoint(since)
    point.strict = point.strict or strict
    hubs = HubRotation(url)
    attempt = 0
    try:
        while True:
            url = hubs.current
            try:
                async with http.ws_connect(url, headers=auth_headers(token), heartbeat=20) as ws:
                    await ws.send_str(point.request(pattern).decode())
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        frame = decode(message.data)
                        kind = frame.get("type")
                        if kind == "subscribed":
                            attempt = 0
                            verdict = point.subscribed(frame)
                            if verdict is Resumption.REFUSE:
                                raise point.mismatch()
                            if point.problem is not None:
                                log.warning("subscription %s: %s", pattern, point.problem)
                            if on_status is not None:
                                on_status("subscribed", None)
                            if verdict is Resumption.RESTART:
                                await ws.send_str(point.request(pattern).decode())
                            elif frame.get("recovered") is False:
                                log.warning(
                                    "events %s..%s were dropped by retention before replay",
                                    (point.last or 0) + 1,
                                    frame.get("oldest", 0) - 1,
                                )
                            continue
                        if kind == "error":
                            log.warning("hub error on subscription %s: %s", pattern, frame)
                            continue
                        seq = frame.get("seq")
                        if kind in CONTROL_TYPES or not isinstance(seq, int):
                            continue
                        if point.accept(seq):
                            yield frame
                    if ws.close_code is not None:
                        log.info("subscription %s closed (%s); resuming", pattern, ws.close_code)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("subscription %s: %s; reconnecting", pattern, exc)
                if on_status is not None:
                    detail = str(exc) or type(exc).__name__
                    on_status("retrying", detail if len(hubs.urls) == 1 else f"{url}: {detail}")
            hubs.next()
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1
    finally:
        if own_session:
            await http.close()
