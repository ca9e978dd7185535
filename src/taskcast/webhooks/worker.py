"""Webhook delivery: one asyncio task per webhook, reading the log from its cursor.

At least once, in seq order, never skipping: the cursor (the last seq a 2xx answered)
is saved in the store after each delivery, so a restarted hub goes on where it stopped
(a delivery cut short by a crash is sent again, with the same ``webhook-id``). A failing
endpoint is retried with exponential backoff and only ever waits on itself.

In a cluster every node keeps the registry (the store's records) but one node — the
holder of the ``webhooks`` leader lease, renewed every couple of seconds — delivers;
when it dies, another takes over within the lease's lifetime and goes on from the
saved cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from standardwebhooks import Webhook as Signer

from taskcast.client.resume import ResumePoint
from taskcast.frames import with_seq
from taskcast.ids import random_id
from taskcast.leases import Lease, acquire
from taskcast.store import EventQuery, EventStore, StoredEvent
from taskcast.webhooks.policy import (
    DEFAULT_GIVE_UP_SECONDS,
    Webhook,
    WebhookState,
    address_refusal,
    new_secret,
    record_failure,
    record_success,
)

log = logging.getLogger("taskcast.webhooks")

KIND = "webhook"
REQUEST_TIMEOUT_SECONDS = 10.0
PAGE = 200
LEADER_KIND, LEADER_ID = "leader", "webhooks"
LEADER_TTL_SECONDS = 10.0  # how long a dead leader's deliveries wait for a successor
LEADER_BEAT_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 5.0  # lease renewal, and how soon another node's change is seen


class WebhookDispatcher:
    def __init__(
        self,
        store: EventStore,
        head: Callable[[], int],
        *,
        allow_private: bool = True,
        give_up_seconds: float = DEFAULT_GIVE_UP_SECONDS,
        now_ms: Callable[[], int],
        clustered: bool = False,
    ) -> None:
        self.store = store
        self.head = head
        self.allow_private = allow_private
        self.give_up_seconds = give_up_seconds
        self.now_ms = now_ms
        self.hooks: dict[str, Webhook] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        # Alone, this node delivers; in a cluster, only while it holds the leader lease.
        self.clustered = clustered
        self.leading = not clustered
        self.node = random_id()[-12:]
        self._beat: asyncio.Task[None] | None = None
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        )
        if self.clustered:
            self._beat = asyncio.create_task(self._lead(), name="webhook-leader")
            return
        for record in (await self.store.load_records(KIND)).values():
            hook = _from_record(record)
            self.hooks[hook.id] = hook
            self._launch(hook)

    async def _lead(self) -> None:
        """Claim or renew the leader lease, then match the registry to the store. Ends
        on ``stop()`` even if a cancellation is swallowed inside the NATS client."""
        while not self._stopping:
            try:
                leading = await self._claim()
                records = await self.store.load_records(KIND)
            except Exception as exc:
                log.warning("webhook leadership check failed: %s", exc)
                leading, records = False, None
            if self._stopping:
                return
            if leading and not self.leading:
                log.info("this node now delivers webhooks (leader %s)", self.node)
            if records is not None:
                self._sync(records, leading)
            elif not leading:
                self._stand_down()
            self.leading = leading
            await asyncio.sleep(LEADER_BEAT_SECONDS)

    async def _claim(self) -> bool:
        outcome: list[bool] = []

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            current = Lease.from_record(record) if record is not None else None
            granted, lease = acquire(
                current, LEADER_ID, self.node, self.now_ms(), LEADER_TTL_SECONDS
            )
            outcome[:] = [granted]
            return lease.to_record() if granted else record

        await self.store.update_record(LEADER_KIND, LEADER_ID, change)
        return outcome[0]

    def _sync(self, records: dict[str, dict[str, Any]], leading: bool) -> None:
        stored = {hook_id: _from_record(record) for hook_id, record in records.items()}
        if not leading:
            self._stand_down()
            self.hooks = stored  # what GET /api/webhooks shows on this node
            return
        fresh_lead = not self.leading
        for hook_id in [hook_id for hook_id in self.hooks if hook_id not in stored]:
            self._cancel(hook_id)  # removed through another node
            del self.hooks[hook_id]
        for hook_id, hook in stored.items():
            mine = self.hooks.get(hook_id)
            revived = (
                mine is not None
                and mine.state is WebhookState.FAILED
                and hook.state is WebhookState.ACTIVE
            )
            if mine is None or fresh_lead or revived:
                self._cancel(hook_id)
                self.hooks[hook_id] = hook  # the saved cursor is where delivery goes on
                self._launch(hook)

    def _stand_down(self) -> None:
        for hook_id in list(self._tasks):
            self._cancel(hook_id)

    def _cancel(self, hook_id: str) -> None:
        task = self._tasks.pop(hook_id, None)
        if task is not None:
            task.cancel()
        self._wake.pop(hook_id, None)

    async def stop(self) -> None:
        self._stopping = True
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                    await asyncio.gather(self._beat, return_exceptions=True)
        for task in self._tasks.values():
            task.cancel()
        # A cancellation swallowed inside the NATS client leaves a task running on: it
        # ends at its next look at ``_stopping`` (woken for it), or is left after a while.
        self.notify()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()

    def notify(self) -> None:
        """New events were stored: wake every webhook that is waiting for some."""
        for wake in self._wake.values():
            wake.set()

    # --- registry -------------------------------------------------------------

    async def add(
        self, url: str, channel: str, types: tuple[str, ...], since: int | None
    ) -> Webhook:
        hook = Webhook(
            id=random_id()[-16:],
            url=url,
            channel=channel,
            types=types,
            secret=new_secret(),
            cursor=self.head() if since is None else since,
            log_id=self.store.log_id,
            created_at=self.now_ms(),
        )
        await self.store.save_record(KIND, hook.id, _to_record(hook))
        self.hooks[hook.id] = hook
        if self.leading:
            self._launch(hook)
        return hook

    async def remove(self, hook_id: str) -> bool:
        hook = self.hooks.pop(hook_id, None)
        if hook is None:
            return False
        self._cancel(hook_id)
        await self.store.delete_record(KIND, hook_id)
        return True

    async def enable(self, hook_id: str) -> Webhook | None:
        """Re-enable a failed webhook: it resumes from its cursor."""
        hook = self.hooks.get(hook_id)
        if hook is None:
            return None
        hook.state = WebhookState.ACTIVE
        hook.attempts, hook.failing_since = 0, None
        await self._save(hook)
        if self.leading and (hook_id not in self._tasks or self._tasks[hook_id].done()):
            self._launch(hook)
        return hook

    def describe(self, hook: Webhook) -> dict[str, Any]:
        """The public view (never the secret)."""
        return {
            "id": hook.id,
            "url": hook.url,
            "channel": hook.channel,
            "types": list(hook.types),
            "state": hook.state.value,
            "cursor": hook.cursor,
            "logId": hook.log_id,
            "lag": max(0, self.head() - hook.cursor),
            "delivered": hook.delivered,
            "failures": hook.failures,
            "lastError": hook.last_error,
            "failingSince": hook.failing_since,
            "createdAt": hook.created_at,
        }

    # --- delivery -------------------------------------------------------------

    def _launch(self, hook: Webhook) -> None:
        if hook.state is WebhookState.FAILED:
            return
        self._fit_to_log(hook)
        self._wake[hook.id] = asyncio.Event()
        self._tasks[hook.id] = asyncio.create_task(self._run(hook), name=f"webhook-{hook.id}")

    def _fit_to_log(self, hook: Webhook) -> None:
        """A cursor is a seq of one log: on another (a stream made again under the same
        records, a log file replaced) delivery starts at that log's beginning, said in
        the log; past the head of a log that is behind, at its head."""
        point = ResumePoint(hook.cursor, hook.log_id)
        point.fit(self.store.log_id, self.head(), ahead=hook.cursor > self.head())
        if point.problem is not None:
            log.warning("webhook %s: %s", hook.id, point.problem)
        hook.cursor, hook.log_id = point.last or 0, point.log_id

    async def _run(self, hook: Webhook) -> None:
        wake = self._wake[hook.id]
        try:
            while hook.state is WebhookState.ACTIVE and not self._stopping:
                wake.clear()
                query = EventQuery(
                    after=hook.cursor, until=self.head(), pattern=hook.channel, limit=PAGE
                )
                page = await self.store.query(query)
                wanted = [e for e in page.events if hook.wants(e.type, e.channel)]
                for event in wanted:
                    if not await self._deliver_until_done(hook, event):
                        return  # failed for good; the cursor stays before this event
                if page.scanned_to > hook.cursor:
                    hook.cursor = page.scanned_to  # nothing else there for this webhook
                    await self._save(hook)
                if not wanted and page.scanned_to >= self.head():
                    await wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook %s stopped", hook.id)

    async def _deliver_until_done(self, hook: Webhook, event: StoredEvent) -> bool:
        while not self._stopping:
            error = await self._post(hook, event)
            if error is None:
                record_success(hook, event.seq)
                await self._save(hook)
                return True
            delay = record_failure(hook, error, self.now_ms(), self.give_up_seconds)
            await self._save(hook)
            if hook.state is WebhookState.FAILED:
                log.warning("webhook %s failed for good: %s", hook.id, error)
                return False
            log.info("webhook %s: %s; retrying in %.0f s", hook.id, error, delay)
            await asyncio.sleep(delay)
        return False

    async def _post(self, hook: Webhook, event: StoredEvent) -> str | None:
        """One attempt; the error, or None for a 2xx."""
        assert self._session is not None
        refusal = await self._address_refusal(hook.url)
        if refusal is not None:
            return refusal
        body = with_seq(event.body, event.seq).decode()
        sent_at = datetime.datetime.now(tz=datetime.UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Signer(hook.secret).sign(event.id, sent_at, body),
        }
        try:
            async with self._session.post(
                hook.url, data=body.encode(), headers=headers, allow_redirects=False
            ) as reply:
                if 200 <= reply.status < 300:
                    return None
                return f"HTTP {reply.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _address_refusal(self, url: str) -> str | None:
        """Check what the target's name resolves to now (a name can be re-pointed)."""
        if self.allow_private:
            return None
        host = urlsplit(url).hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        except OSError as exc:
            return f"cannot resolve {host}: {exc}"
        for info in infos:
            refusal = address_refusal(str(info[4][0]), allow_private=False)
            if refusal is not None:
                return refusal
        return None

    async def _save(self, hook: Webhook) -> None:
        """Write the hook's state back, unless it was removed meanwhile (perhaps through
        another node): a late cursor save must not bring a deleted webhook back."""
        record = _to_record(hook)
        try:
            await self.store.update_record(
                KIND, hook.id, lambda current: record if current is not None else None
            )
        except Exception as exc:  # the next save writes the newer cursor anyway
            log.warning("webhook %s: could not save its cursor: %s", hook.id, exc)


def _to_record(hook: Webhook) -> dict[str, Any]:
    record = asdict(hook)
    record["types"] = list(hook.types)
    record["state"] = hook.state.value
    return record


def _from_record(record: dict[str, Any]) -> Webhook:
    fields = {key: value for key, value in record.items() if key in Webhook.__dataclass_fields__}
    hook = Webhook(**fields)
    hook.types = tuple(hook.types)
    hook.state = WebhookState(hook.state)
    return hook
