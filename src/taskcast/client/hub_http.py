"""The hub's HTTP API from a client: one request helper, used by the CLI and the Task."""

from __future__ import annotations

from typing import Any

import aiohttp

from taskcast.client.failover import HubUrls, hub_urls
from taskcast.client.subscriber import TokenSource, auth_headers


class HubError(Exception):
    """The hub answered with an error (``status``, and its error body when it sent one)."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"hub answered {status}: {message}")
        self.status = status
        self.body = body if isinstance(body, dict) else {}


def http_base(hub: str) -> str:
    """``ws://host:port/ws`` → ``http://host:port`` (``wss`` → ``https``)."""
    base = hub.removesuffix("/ws").rstrip("/")
    if base.startswith("ws"):
        base = "http" + base[2:]
    return base


async def hub_request(
    hub: HubUrls,
    token: TokenSource,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float = 30.0,
) -> Any:
    """One request to the hub's API; raises ``HubError`` for anything but 2xx and
    ``aiohttp.ClientError``/``OSError`` when the hub cannot be reached. Given several
    nodes, it asks the next when one cannot be reached (an answer, even an error, counts)."""
    urls = hub_urls(hub)
    for url in urls[:-1]:
        try:
            return await _request(url, token, method, path, body, timeout)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError):
            continue
    return await _request(urls[-1], token, method, path, body, timeout)


async def _request(
    hub: str,
    token: TokenSource,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    timeout: float,
) -> Any:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.request(
            method,
            http_base(hub) + path,
            json=body if body is not None or method != "POST" else {},
            headers=auth_headers(token),
        ) as reply,
    ):
        answer = await reply.json(content_type=None)
        if reply.status >= 300:
            raise HubError(reply.status, answer)
        return answer
