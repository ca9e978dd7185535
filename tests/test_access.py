"""The door policy as a table of cases, without sockets (hub/access.py). The same
decisions are then checked over the wire, door by door, in test_attacks.py."""

from __future__ import annotations

import pytest

from taskcast.auth import ANONYMOUS_ADMIN, Principal, TokenVerifier
from taskcast.hub.access import (
    browser_refusal,
    connection_refusal,
    host_allowed,
    metrics_refusal,
    publish_refusal,
    read_refusal,
    subscription_refusal,
)
from taskcast.hub.config import HubConfig
from taskcast.ratelimit import BucketTable, TokenBucket

NO_AUTH = HubConfig(port=8765, allowed_hosts=("hub.internal",))
WITH_AUTH = HubConfig(verifier=TokenVerifier("x" * 32))
ORIGINS = HubConfig(verifier=TokenVerifier("x" * 32), allowed_origins=("https://dash.example",))
OWN = "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    ("config", "method", "host", "origin", "content_type", "expected"),
    [
        (NO_AUTH, "GET", "127.0.0.1:8765", None, None, None),
        (NO_AUTH, "GET", "127.0.0.1:8765", OWN, None, None),
        (NO_AUTH, "GET", "127.0.0.1:8765", "http://evil.example", None, "forbidden"),
        (NO_AUTH, "GET", "127.0.0.1:8765", "null", None, "forbidden"),
        (NO_AUTH, "GET", "evil.example:8765", None, None, "bad_host"),
        (NO_AUTH, "GET", None, None, None, "bad_host"),
        (NO_AUTH, "GET", "localhost:8765", None, None, None),
        (NO_AUTH, "GET", "[::1]:8765", None, None, None),
        (NO_AUTH, "GET", "10.0.0.5:8765", None, None, None),  # IP literals cannot rebind
        (NO_AUTH, "GET", "HUB.internal", None, None, None),
        (NO_AUTH, "POST", "127.0.0.1:8765", None, "application/json", None),
        (NO_AUTH, "POST", "127.0.0.1:8765", None, "application/json; charset=utf-8", None),
        (NO_AUTH, "POST", "127.0.0.1:8765", None, "text/plain", "unsupported_media_type"),
        (NO_AUTH, "POST", "127.0.0.1:8765", None, None, "unsupported_media_type"),
        (NO_AUTH, "POST", "127.0.0.1:8765", OWN, "application/json", None),
        (WITH_AUTH, "GET", "anything.example", "http://evil.example", None, None),
        (WITH_AUTH, "POST", "anything.example", None, "text/plain", "unsupported_media_type"),
        (ORIGINS, "GET", "hub.example", "https://dash.example", None, None),
        (ORIGINS, "GET", "hub.example", "http://evil.example", None, "forbidden"),
        (ORIGINS, "GET", "hub.example", None, None, None),
    ],
)
def test_browser_rules(
    config: HubConfig,
    method: str,
    host: str | None,
    origin: str | None,
    content_type: str | None,
    expected: str | None,
) -> None:
    refusal = browser_refusal(
        config, method=method, host=host, origin=origin, content_type=content_type
    )
    assert (refusal.code if refusal else None) == expected


def test_host_names_need_configuring() -> None:
    assert host_allowed(NO_AUTH, "hub.internal:80")
    assert not host_allowed(NO_AUTH, "hub.internal.evil.example")
    assert not host_allowed(NO_AUTH, "a b")


def test_connection_caps() -> None:
    config = HubConfig(max_connections=10, max_connections_per_ip=2)
    assert connection_refusal(config, accepting=True, open_total=9, open_from_peer=1) is None
    refused = connection_refusal(config, accepting=True, open_total=9, open_from_peer=2)
    assert refused is not None and refused.code == "too_many_connections"
    refused = connection_refusal(config, accepting=True, open_total=10, open_from_peer=0)
    assert refused is not None and refused.code == "too_many_connections"
    refused = connection_refusal(config, accepting=False, open_total=0, open_from_peer=0)
    assert refused is not None and refused.code == "shutting_down"
    unlimited = HubConfig(max_connections_per_ip=0)
    assert connection_refusal(unlimited, accepting=True, open_total=1, open_from_peer=999) is None


def test_publish_read_subscription_and_metrics_decisions() -> None:
    agent = Principal("agent", publish=("tasks.a.>",), subscribe=("tasks.a",))
    assert publish_refusal(agent, "tasks.a.x", accepting=True, bucket=None, now=0) is None
    refused = publish_refusal(agent, "tasks.b", accepting=True, bucket=None, now=0, event_id="e")
    assert refused is not None and (refused.code, refused.frame_id) == ("forbidden", "e")
    bucket = TokenBucket(1, 1)
    assert publish_refusal(agent, "tasks.a.x", accepting=True, bucket=bucket, now=0) is None
    refused = publish_refusal(agent, "tasks.a.x", accepting=True, bucket=bucket, now=0)
    assert refused is not None and refused.code == "rate_limited"
    assert read_refusal(agent, "tasks.a") is None
    assert read_refusal(agent, "tasks.>") is not None
    config = HubConfig(max_subscriptions=2)
    assert subscription_refusal(config, current=2, replacing=True) is None
    assert subscription_refusal(config, current=2, replacing=False) is not None
    assert metrics_refusal(agent) is not None
    assert metrics_refusal(Principal("scraper", metrics=True)) is None
    assert metrics_refusal(ANONYMOUS_ADMIN) is None


def test_bucket_table_is_bounded_and_per_key() -> None:
    table = BucketTable(rate=1, burst=1, max_keys=2)
    first = table.get("a")
    assert first is not None and first.allow(0) and not first.allow(0)
    assert table.get("a") is first
    table.get("b")
    table.get("c")  # "a" was the least recently used: forgotten
    again = table.get("a")
    assert again is not first
    assert BucketTable(rate=0, burst=0).get("a") is None
