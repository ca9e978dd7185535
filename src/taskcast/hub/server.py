"""The hub process: aiohttp app, the ``/ws`` endpoint, start-up and graceful shutdown."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import ipaddress
import logging
import resource
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from taskcast.commands import CommandAction, Rejection, RemoteEvent, RequestKind
from taskcast.frames import error_frame
from taskcast.hub.agui import add_routes as add_agui_routes
from taskcast.hub.config import HubConfig
from taskcast.hub.connection import WebSocketSink, open_connection
from taskcast.hub.core import Hub
from taskcast.hub.http_api import HUB_KEY, add_routes
from taskcast.hub.middleware import (
    http_refusal,
    make_access_middleware,
    make_cors_hook,
    principal_of,
)
from taskcast.hub.websocket_door import Doors
from taskcast.store import open_store
from taskcast.vocabulary import FINAL_STATUSES, ErrorCode, EventType, TaskStatus

STUCK_STOP_SECONDS = 15.0
# Python's cyclic GC runs a young collection every 700 container allocations; a publish
# allocates tens (its JSON, its frame, its ack), so a busy hub collected thousands of
# times a second. Every 50,000 instead: durable publishes with 8 publishers went from
# 56,000 to 75,000/s (5 interleaved rounds). Garbage without cycles is freed at once
# anyway; only cycles wait longer.
GC_THRESHOLDS = (50_000, 20, 10)
# Connections the kernel queues before the hub accepts them: room for a reconnect storm
# (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096
log = logging.getLogger("taskcast.hub")


class ClientErrorsAreDebug(logging.Filter):
    """A request aiohttp cannot parse is the client's mistake, already answered 400:
    aiohttp logs each as an ERROR with a traceback, which lets anyone flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        # A body its Content-Encoding does not describe, found when aiohttp drains what
        # a handler did not read: the parse error is the cause of a RequestPayloadError.
        if isinstance(error, RequestPayloadError):
            error = error.__cause__
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = f"{record.getMessage()}: {error.message}"
            record.args, record.exc_info, record.exc_text = (), None, None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_CLIENT_ERRORS = ClientErrorsAreDebug()


async def websocket_endpoint(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB_KEY]
    config = hub.config
    peer = request.remote or "?"
    refusal = hub.admission_refusal(peer)
    if refusal is not None:
        hub.count_refused(refusal.code)
        raise http_refusal(refusal)
    ws = web.WebSocketResponse(
        max_msg_size=config.max_frame_bytes,
        compress=False,
        autoping=True,
        timeout=config.close_timeout_seconds,  # for the peer's close reply
        # After idle/2 without a frame the hub pings; no pong within idle/4 closes the
        # connection; 0 means no limit. (A per-receive timeout would arm a timer per
        # frame: ~12% of the publish path in a profile.)
        heartbeat=config.idle_timeout_seconds / 2 if config.idle_timeout_seconds else None,
    )
    writer = await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the handshake
        return ws
    connection = open_connection(
        WebSocketSink(ws, writer, transport, config.close_timeout_seconds),
        config,
        peer,
        principal_of(request),
        hub.write_pass,
    )
    hub.attach(connection)
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                hub.handle_text(connection, message.data)
            elif message.type == WSMsgType.BINARY:
                hub.reply(
                    connection,
                    error_frame(ErrorCode.BINARY_UNSUPPORTED, "frames must be JSON text frames"),
                )
            elif message.type == WSMsgType.ERROR:
                if getattr(message.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                    hub.stats.oversized_frames += 1
                break
    finally:
        if isinstance(ws.exception(), TimeoutError):  # no pong: a dead or frozen peer
            hub.stats.idle_disconnects += 1
        hub.detach(connection)
    return ws


DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"


async def dashboard_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-cache"})


async def dashboard_constants(request: web.Request) -> web.Response:
    """The closed sets the dashboard shares with Python, from their one definition."""
    return web.json_response(
        {
            "commandActions": {a.name: a.value for a in CommandAction},
            "remoteEvents": {e.name: e.value for e in RemoteEvent},
            "requestKinds": {k.name: k.value for k in RequestKind},
            "rejections": {r.name: r.value for r in Rejection},
            "eventTypes": {e.name: e.value for e in EventType},
            "taskStatuses": {s.name: s.value for s in TaskStatus},
            "errorCodes": {c.name: c.value for c in ErrorCode},
            "finalStatuses": {str(e): str(s) for e, s in FINAL_STATUSES.items()},
        },
        headers={"Cache-Control": "no-cache"},
    )


async def favicon(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        DASHBOARD / "favicon.svg",
        headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"},
    )


def build_app(hub: Hub) -> web.Application:
    app = web.Application(
        client_max_size=hub.config.max_frame_bytes,
        middlewares=[make_access_middleware(hub.config, hub.count_refused)],
    )
    app[HUB_KEY] = hub
    if hub.config.allowed_origins:
        app.on_response_prepare.append(make_cors_hook(hub.config))
    app.router.add_get("/ws", websocket_endpoint)
    add_routes(app)
    add_agui_routes(app)
    app.router.add_get("/", dashboard_page)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/dashboard/constants.json", dashboard_constants)
    app.router.add_static("/dashboard/", DASHBOARD)
    return app


async def serve(
    config: HubConfig,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a hub until SIGINT/SIGTERM (or ``stop``), then shut down gracefully."""
    check_exposure(config)
    logging.getLogger("aiohttp.server").addFilter(_CLIENT_ERRORS)  # once: a set
    gc.set_threshold(*GC_THRESHOLDS)
    open_files = raise_open_files_limit(config.max_connections)
    ssl_context = tls_context(config)
    store = open_store(config.store, config.retention, fsync=config.fsync, nats=config.nats)
    await store.open()
    hub = Hub(store, config)
    runner = web.AppRunner(
        build_app(hub),
        access_log=None,  # request lines can carry ?token=: never logged
        handle_signals=False,
        keepalive_timeout=config.handshake_timeout_seconds,
    )
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals_installed = False
    listener: asyncio.Server | None = None
    doors: Doors | None = None
    try:
        await hub.start()
        await runner.setup()
        assert runner.server is not None
        # Every connection enters by the front door: websockets are served there,
        # anything else is handed to aiohttp (websocket_door.py says why).
        doors = Doors(hub, runner.server)
        doors.start()
        listener = await loop.create_server(
            doors,
            config.host,
            config.port,
            reuse_address=True,
            reuse_port=config.reuse_port or None,
            ssl=ssl_context,
            backlog=LISTEN_BACKLOG,
        )
        port = listener.sockets[0].getsockname()[1] if listener.sockets else config.port
        url = f"{'wss' if ssl_context else 'ws'}://{config.host}:{port}/ws"
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        signals_installed = True
        log.info(
            "listening on %s (store %s, head %d; open files limit %d for --max-connections %d)",
            url,
            store.description,
            store.head,
            open_files,
            config.max_connections,
        )
        # What start-up made lives as long as the hub: never scan it again.
        gc.freeze()
        if ready is not None:
            ready(url)
        await stop.wait()
        log.info("shutting down: committing pending events, closing clients")
        # A stop that hangs says where: every thread's stack in the log after 15 s.
        faulthandler.dump_traceback_later(STUCK_STOP_SECONDS, exit=False)
    finally:
        if listener is not None:
            listener.close()  # no new connections; the open ones are closed below
        await hub.stop()
        if doors is not None:
            await doors.stop()
        await runner.cleanup()
        await store.close()
        if signals_installed:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


# Files a hub keeps open besides its connections: the log, its WAL and lock, listeners,
# the client sessions of webhooks, logs.
SPARE_FILES = 256


class TooFewFiles(RuntimeError):
    """The process may not open enough files for --max-connections."""


def raise_open_files_limit(max_connections: int) -> int:
    """Raise this process's open-files soft limit to its hard limit (every connection is
    a file) and return it; refuse to start when even that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, max_connections + SPARE_FILES)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("raised the open files limit from %d to %d", soft, target)
    if target < max_connections + SPARE_FILES:
        raise TooFewFiles(
            f"--max-connections {max_connections} needs about {max_connections + SPARE_FILES} "
            f"open files, but this process may open at most {target} (ulimit -n; the hard "
            "limit cannot be raised from here): lower --max-connections or run more hub "
            "processes"
        )
    return target


class UnsafeBind(RuntimeError):
    """Binding beyond loopback without authentication."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_exposure(config: HubConfig) -> None:
    """Without a token verifier the hub serves anyone who can reach it: loopback only,
    unless the operator says --insecure."""
    if config.verifier is not None or is_loopback(config.host):
        return
    if not config.insecure:
        raise UnsafeBind(
            f"refusing to bind {config.host} without authentication: set TASKCAST_SECRET "
            "(or --secret-file / --public-key-file), or pass --insecure"
        )
    log.warning(
        "serving %s WITHOUT authentication (--insecure): anyone can read and publish", config.host
    )


def tls_context(config: HubConfig) -> ssl.SSLContext | None:
    if not config.tls_cert and not config.tls_key:
        return None
    if not (config.tls_cert and config.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def announce(url: str) -> None:
    """The line tests and scripts wait for: the bound address (works with --port 0)."""
    sys.stdout.write(f"taskcast hub listening on {url}\n")
    sys.stdout.flush()
