"""``GET /metrics``: the hub's counters in Prometheus text format.

The hot path only bumps plain ints (``HubStats``); this collector turns them into
metric families at scrape time, so counting costs fan-out nothing measurable.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from taskcast.hub.core import COMMIT_BUCKETS, Hub


def _by_label(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family


class HubCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        yield from event_counters(self.hub)
        yield from connection_counters(self.hub)
        yield commit_histogram(self.hub)
        yield from gauges(self.hub)
        yield from webhook_metrics(self.hub)


def event_counters(hub: Hub) -> Iterator[Metric]:
    """What happened to events: published, delivered, refused, replayed."""
    stats = hub.stats
    yield _by_label(
        "taskcast_events_published", "Events stored in the log", "type", stats.published
    )
    yield _by_label(
        "taskcast_events_delivered", "Live deliveries to subscribers", "type", stats.delivered
    )
    yield _by_label(
        "taskcast_frames_rejected", "Frames refused with an error", "code", stats.rejected
    )
    yield CounterMetricFamily(
        "taskcast_events_duplicate",
        "Resent ids acknowledged, not stored",
        value=stats.duplicates,
    )
    yield CounterMetricFamily(
        "taskcast_replays", "Subscriptions that replayed from the log", value=stats.replays
    )
    yield CounterMetricFamily(
        "taskcast_events_replayed", "Events sent by replays", value=stats.replayed
    )
    yield CounterMetricFamily(
        "taskcast_slow_consumer_disconnects",
        "Connections closed with 4008 for not reading",
        value=stats.slow_consumers,
    )


def connection_counters(hub: Hub) -> Iterator[Metric]:
    """Why connections were refused or closed."""
    stats = hub.stats
    refused = CounterMetricFamily(
        "taskcast_connections_refused",
        "Connections refused (unauthorized, origin, max_connections)",
        labels=["reason"],
    )
    for reason, count in stats.refused.items():
        refused.add_metric([reason], count)
    yield refused
    yield CounterMetricFamily(
        "taskcast_idle_disconnects",
        "Connections closed for sending nothing within the idle timeout",
        value=stats.idle_disconnects,
    )
    yield CounterMetricFamily(
        "taskcast_token_expiry_closes",
        "Connections closed (4401) because their token expired",
        value=stats.expired_tokens,
    )
    yield CounterMetricFamily(
        "taskcast_oversized_frames",
        "Connections closed with 1009 for a frame over --max-frame-bytes",
        value=stats.oversized_frames,
    )


def commit_histogram(hub: Hub) -> Metric:
    """How long durable commits take."""
    stats = hub.stats
    cumulative, buckets = 0, []
    for bound, count in zip((*COMMIT_BUCKETS, float("inf")), stats.commit_buckets, strict=True):
        cumulative += count
        buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
    return HistogramMetricFamily(
        "taskcast_store_commit_seconds",
        "Time to durably commit one batch of events",
        buckets=buckets,
        sum_value=stats.commit_seconds_sum,
    )


def gauges(hub: Hub) -> Iterator[Metric]:
    """The hub's state now: connections, queues, the log, tasks."""
    connections = list(hub.connections)
    yield GaugeMetricFamily("taskcast_connections", "Open connections", value=len(connections))
    yield GaugeMetricFamily(
        "taskcast_publishers",
        "Open connections that have published",
        value=hub.publishers,
    )
    yield GaugeMetricFamily(
        "taskcast_subscribers",
        "Open connections with a subscription",
        value=hub.subscribers,
    )
    yield GaugeMetricFamily("taskcast_subscriptions", "Active subscriptions", value=len(hub.index))
    yield GaugeMetricFamily(
        "taskcast_subscriber_lag_events",
        "Most frames queued for one connection, not yet written",
        value=max((c.queued_frames for c in connections), default=0),
    )
    yield GaugeMetricFamily(
        "taskcast_subscribers_behind",
        "Connections whose socket is full: what comes for them waits until they read",
        value=sum(1 for c in connections if c.behind),
    )
    yield GaugeMetricFamily(
        "taskcast_subscriber_queued_bytes",
        "Bytes queued for all connections, not yet written",
        value=sum(c.queued_bytes for c in connections),
    )
    yield GaugeMetricFamily("taskcast_log_head_seq", "Last seq delivered", value=hub.published_head)
    yield GaugeMetricFamily("taskcast_log_oldest_seq", "Oldest seq kept", value=hub.store.oldest)
    yield GaugeMetricFamily(
        "taskcast_tasks", "Tasks seen in the log", value=len(hub.summaries.tasks)
    )


def webhook_metrics(hub: Hub) -> Iterator[Metric]:
    hooks = list(hub.webhooks.hooks.values())
    delivered = CounterMetricFamily(
        "taskcast_webhook_deliveries", "Events a webhook answered with 2xx", labels=["webhook"]
    )
    failures = CounterMetricFamily(
        "taskcast_webhook_failures", "Failed webhook delivery attempts", labels=["webhook"]
    )
    lag = GaugeMetricFamily(
        "taskcast_webhook_lag_seq", "Log head minus the webhook's cursor", labels=["webhook"]
    )
    for hook in hooks:
        delivered.add_metric([hook.id], hook.delivered)
        failures.add_metric([hook.id], hook.failures)
        lag.add_metric([hook.id], max(0, hub.published_head - hook.cursor))
    yield from (delivered, failures, lag)


def render_metrics(hub: Hub) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return generate_latest(registry)
