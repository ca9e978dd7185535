"""Following and handing off a task through the hub (the thin I/O layer).

``fetch_history`` rebuilds a task's conversation from its events (``history.py`` does the
folding); ``LeaseKeeper`` holds the hub's lease on a task id while a Task runs, so a
second runner is refused until the first ends or its lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from taskcast.client.failover import HubUrls
from taskcast.client.hub_http import HubError, hub_request
from taskcast.client.subscriber import TokenSource
from taskcast.ids import random_id
from taskcast.task.history import HISTORY_EVENT, HistoryBuilder

log = logging.getLogger("taskcast.task")

PAGE = 10_000


class TaskLeaseHeld(RuntimeError):
    """Another instance is running this task (it holds the hub's lease)."""

    def __init__(self, task_id: str, holder: str, expires_at: int | None = None) -> None:
        super().__init__(f"task {task_id} is running on {holder}; refusing to run it twice")
        self.holder = holder
        self.expires_at = expires_at


def instance_name() -> str:
    """Who is running a task: host, process, and a random part (two runs never clash)."""
    return f"{socket.gethostname()}:{os.getpid()}:{random_id()[-6:]}"


@dataclass
class FetchedTask:
    messages: list[dict[str, Any]]
    system_prompt: str | None
    last_seq: int
    last_runner: str | None  # the instance that started it last (its lease holder)


async def fetch_history(hub: HubUrls, task_id: str, token: TokenSource = None) -> FetchedTask:
    """The task's conversation, rebuilt from its events in the hub's log."""
    builder = HistoryBuilder()
    system_prompt: str | None = None
    runner: str | None = None
    since = 0
    while True:
        page = await hub_request(
            hub, token, "GET", f"/api/events?channel=tasks.{task_id}&since={since}&limit={PAGE}"
        )
        for event in page:
            payload = event.get("payload") or {}
            if event.get("type") == HISTORY_EVENT:
                builder.add(payload, event.get("seq", 0))
            elif event.get("type") == "task_started":
                if isinstance(payload.get("systemPrompt"), str):
                    system_prompt = payload["systemPrompt"]
                runner = payload.get("instance") or event.get("publisher") or runner
        if len(page) < PAGE:
            break
        since = page[-1]["seq"]
    if not builder.messages:
        raise LookupError(f"the hub has no history for task {task_id}")
    return FetchedTask(builder.messages, system_prompt, builder.last_seq, runner)


class LeaseKeeper:
    """Takes the lease when the task starts, renews it every ttl/6, releases it at the end."""

    def __init__(self, hub: HubUrls, token: TokenSource, task_id: str, ttl: float) -> None:
        self.hub = hub
        self.token = token
        self.task_id = task_id
        self.ttl = ttl
        self.holder = instance_name()
        self._beat: asyncio.Task[None] | None = None
        self.held = False

    async def acquire(self) -> None:
        """Raises ``TaskLeaseHeld`` when another instance runs the task. A hub that cannot
        be reached does not stop the task (its events wait in the outbox)."""
        try:
            await self._request()
        except HubError as exc:
            if exc.status == 409:
                body = exc.body
                raise TaskLeaseHeld(
                    self.task_id, str(body.get("holder")), body.get("expiresAt")
                ) from None
            log.warning("could not take the lease on %s: %s", self.task_id, exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("hub unreachable, running %s without a lease: %s", self.task_id, exc)
        self._beat = asyncio.create_task(self._heartbeat())

    async def _request(self) -> None:
        await hub_request(
            self.hub,
            self.token,
            "POST",
            f"/api/tasks/{self.task_id}/lease",
            {"holder": self.holder, "ttl": self.ttl},
            timeout=max(2.0, self.ttl / 3),
        )
        self.held = True

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 6)
            try:
                await self._request()
            except HubError as exc:
                if exc.status == 409:
                    log.error("task %s was taken over by %s", self.task_id, exc.body.get("holder"))
                    return
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue  # renewed at the next beat, once the hub is back

    async def release(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beat
        if self.held:
            with contextlib.suppress(HubError, aiohttp.ClientError, OSError, TimeoutError):
                await hub_request(
                    self.hub,
                    self.token,
                    "DELETE",
                    f"/api/tasks/{self.task_id}/lease?holder={quote(self.holder)}",
                    timeout=5.0,
                )
