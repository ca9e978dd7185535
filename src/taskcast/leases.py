"""Leases: one runner per task at a time (pure decisions; the hub stores them).

A running Task holds a lease on its task id, renewed by a heartbeat. Another runner is
refused while the lease is held; once its holder releases it or lets it lapse (its
machine died), the next one gets it. Time is passed in, so this is tested without clocks.
"""

from __future__ import annotations

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
