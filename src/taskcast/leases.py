"""Leases: one runner per task at a time (pure decisions; the hub stores them).

A running Task holds a lease on its task id, renewed by a heartbeat. Another runner is
refused while the lease is held; once its holder releases it or lets it lapse (its
machine died), the next one gets it. Time is passed in, so this is tested without clocks.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_TTL_SECONDS = 30.0
MAX_TTL_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Lease:
    task_id: str
    holder: str
    expires_at: int  # ms since the epoch
    acquired_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "holder": self.holder,
            "expiresAt": self.expires_at,
            "acquiredAt": self.acquired_at,
        }

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Lease:
        return cls(
            **{key: record[key] for key in ("task_id", "holder", "expires_at", "acquired_at")}
        )


def acquire(
    current: Lease | None, task_id: str, holder: str, now_ms: int, ttl_seconds: float
) -> tuple[bool, Lease]:
    """Grant (or renew) the lease to ``holder`` unless another holds a live one.
    Returns whether it was granted, and the lease that now stands."""
    if current is not None and current.holder != holder and current.expires_at > now_ms:
        return False, current
    ttl_ms = int(min(max(ttl_seconds, 1.0), MAX_TTL_SECONDS) * 1000)
    acquired = current.acquired_at if current is not None and current.holder == holder else now_ms
    return True, Lease(task_id, holder, now_ms + ttl_ms, acquired)


def may_release(current: Lease | None, holder: str) -> bool:
    """Only the holder releases a lease (a lapsed one is simply replaced)."""
    return current is not None and current.holder == holder


class Lapse(enum.Enum):
    """What the hub does about a lease record it finds."""

    KEEP = "keep"  # still held
    FORGET = "forget"  # lapsed after its task ended (the runner died after the end)
    REPORT = "report"  # lapsed while its task had not ended: publish runner_lost, forget it


def lapse_of(lease: Lease, now_ms: int, task_ended: bool) -> Lapse:
    """A lapsed lease means a runner that stopped renewing: dead, or cut off from the
    hub for longer than its TTL."""
    if lease.expires_at > now_ms:
        return Lapse.KEEP
    return Lapse.FORGET if task_ended else Lapse.REPORT


def runner_lost_id(lease: Lease) -> str:
    """The event id of one lease's ``runner_lost``: the same on every hub node (each may
    report it; the log keeps one), and another for the next run's lease."""
    return f"runner-lost-{lease.task_id}-{lease.acquired_at}"
