"""The hub process: aiohttp app, the ``/ws`` endpoint, start-up and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import WSMsgType, web

from taskcast.frames import error_frame
from taskcast.hub.config import HubConfig
from taskcast.hub.connection import ClientConnection, WebSocketSink
from taskcast.hub.core import Hub
from taskcast.hub.http_api import HUB_KEY, add_routes
from taskcast.store import open_store

log = logging.getLogger("taskcast.hub")


async def websocket_endpoint(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB_KEY]
    if not hub.accepting:
        raise web.HTTPServiceUnavailable(text="hub is shutting down")
    ws = web.WebSocketResponse(
        max_msg_size=hub.config.max_frame_bytes,
        compress=False,
        autoping=True,
        timeout=hub.config.close_timeout_seconds,  # for the peer's close reply
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the handshake
        return ws
    connection = ClientConnection(
        WebSocketSink(ws, transport), hub.config.max_subscriber_buffer, request.remote or "?"
    )
    hub.attach(connection)
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                hub.handle_text(connection, message.data)
            elif message.type == WSMsgType.BINARY:
                connection.send(
                    error_frame("binary_unsupported", "frames must be JSON text frames")
                )
            elif message.type == WSMsgType.ERROR:
                break
    finally:
        hub.detach(connection)
    return ws


DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"


async def dashboard_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-cache"})


def build_app(hub: Hub) -> web.Application:
    app = web.Application(client_max_size=hub.config.max_frame_bytes)
    app[HUB_KEY] = hub
    app.router.add_get("/ws", websocket_endpoint)
    add_routes(app)
    app.router.add_get("/", dashboard_page)
    app.router.add_static("/dashboard/", DASHBOARD)
    return app


async def serve(
    config: HubConfig,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a hub until SIGINT/SIGTERM (or ``stop``), then shut down gracefully."""
    store = open_store(config.store, config.retention, fsync=config.fsync)
    await store.open()
    hub = Hub(store, config)
    runner = web.AppRunner(build_app(hub), access_log=None, handle_signals=False)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals_installed = False
    try:
        await hub.start()
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else config.port
        url = f"ws://{config.host}:{port}/ws"
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        signals_installed = True
        log.info("listening on %s (store %s, head %d)", url, store.description, store.head)
        if ready is not None:
            ready(url)
        await stop.wait()
        log.info("shutting down: committing pending events, closing clients")
        await site.stop()
    finally:
        await hub.stop()
        await runner.cleanup()
        await store.close()
        if signals_installed:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def announce(url: str) -> None:
    """The line tests and scripts wait for: the bound address (works with --port 0)."""
    sys.stdout.write(f"taskcast hub listening on {url}\n")
    sys.stdout.flush()
