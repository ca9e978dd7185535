"""``taskcast claude-code hook``: what each Claude Code hook call runs (the I/O layer).

One process per hook call, so it starts light (stdlib HTTP, no aiohttp unless it must
wait for an approval) and never stands in Claude Code's way: whatever happens — the hub
down, slow or misconfigured, a bug here — it exits 0 with nothing on stdout, unless it
was asked for an approval decision (then it denies, saying why). Events go first to a
file outbox (one per hub, shared by every session) and are sent from there, so one that
a hub did not take is sent by a later hook call; their ids are made from the session
and a counter saved with it, so an event made twice is stored once.

Per session, a state file (``mapping.Session``) is read and written under a lock: hook
calls that run at once (parallel tools) each take what the transcript gained once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import zlib
from typing import IO, Any, NamedTuple

from taskcast.client.outbox import Outbox
from taskcast.files import ensure_private_dir, ensure_private_file, write_private
from taskcast.ids import random_id
from taskcast.integrations.claude_code import mapping
from taskcast.integrations.claude_code.mapping import Event, Session

STATE_ENV = "TASKCAST_CLAUDE_CODE_DIR"  # default: ~/.taskcast/claude-code
SOURCE = "claude-code"
REQUEST_SECONDS = 0.5  # one HTTP request to the hub, at most
FLUSH_SECONDS = 1.5  # sending the outbox, at most, per hook call
APPROVAL_EVENTS = ("PreToolUse",)


DEFAULT_HUB = "ws://127.0.0.1:8765/ws"


class HookOptions(NamedTuple):
    """What ``install`` wrote on the hook's command line. (NamedTuples, not dataclasses,
    here: the hook's imports are its start-up time.)"""

    hubs: list[str]
    token_file: str | None = None
    approve: str = "off"  # "remote": PreToolUse of approve_tools asks through the hub
    approval_timeout: float = 600.0
    approve_tools: tuple[str, ...] = mapping.DEFAULT_APPROVE_TOOLS


class Flag(NamedTuple):
    """One option of the hook's command line, defined once: ``install`` (click) offers
    it and writes it into the settings; the hook reads it."""

    name: str
    help: str
    default: Any = None
    choices: tuple[str, ...] | None = None
    kind: type = str
    repeat: bool = False


FLAGS = (
    Flag(
        "--hub", "Hub websocket URL; repeat for the nodes of a cluster.", DEFAULT_HUB, repeat=True
    ),
    Flag(
        "--token-file",
        "A file holding the bearer token (read at every hook call; else TASKCAST_TOKEN).",
    ),
    Flag(
        "--approve",
        "remote: tools that change things wait for a decision made through the hub.",
        "off",
        ("remote", "off"),
    ),
    Flag(
        "--approval-timeout",
        "Seconds to wait for a decision; then the tool is denied.",
        600.0,
        kind=float,
    ),
    Flag(
        "--approve-tools",
        "Comma-separated Claude Code tools that ask (with --approve remote).",
        ",".join(mapping.DEFAULT_APPROVE_TOOLS),
    ),
)


def options_of(
    hubs: list[str],
    token_file: str | None,
    approve: str,
    approval_timeout: float,
    approve_tools: str,
) -> HookOptions:
    tools = tuple(tool.strip() for tool in approve_tools.split(",") if tool.strip())
    if not tools:
        raise ValueError("--approve-tools: name at least one tool, e.g. Write,Bash")
    if not 1 <= approval_timeout <= 86_400:
        raise ValueError("--approval-timeout: from 1 to 86400 seconds")
    return HookOptions(hubs or [DEFAULT_HUB], token_file, approve, approval_timeout, tools)


def main_from_args(argv: list[str]) -> None:
    """``taskcast claude-code hook [options]``, parsed without click (see cli/__init__)
    and, for the command line install writes, without argparse: both are imports a hook
    call would pay each time. Anything else (``--help``, a typo) goes to argparse."""
    values: dict[str, Any] = {}
    known = {flag.name: flag for flag in FLAGS}
    words = list(argv)
    while words:
        flag = known.get(words[0])
        if flag is None or len(words) < 2 or (flag.choices and words[1] not in flag.choices):
            _argparse(argv)  # exits with its message
            return
        try:
            value = flag.kind(words[1])
        except ValueError:
            _argparse(argv)
            return
        if flag.repeat:
            values.setdefault(flag.name, []).append(value)
        else:
            values[flag.name] = value
        del words[:2]
    try:
        options = options_of(
            values.get("--hub", []),
            values.get("--token-file"),
            values.get("--approve", "off"),
            values.get("--approval-timeout", 600.0),
            values.get("--approve-tools", known["--approve-tools"].default),
        )
    except ValueError as exc:
        sys.stderr.write(f"taskcast claude-code hook: {exc}\n")
        sys.exit(2)
    main(options)


def _argparse(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="taskcast claude-code hook",
        description="What Claude Code's hooks run: reads one hook event (JSON) from stdin.",
    )
    for flag in FLAGS:
        dest = flag.name.removeprefix("--").replace("-", "_")
        if flag.repeat:
            parser.add_argument(flag.name, dest=dest, action="append", help=flag.help)
        else:
            parser.add_argument(
                flag.name,
                dest=dest,
                default=flag.default,
                choices=flag.choices,
                type=flag.kind,
                help=flag.help,
            )
    parser.parse_args(argv)
    parser.error("unexpected arguments")


def state_dir() -> str:
    """Where sessions and the outbox live (``os.path``, not ``pathlib``: an import less)."""
    return os.environ.get(STATE_ENV) or os.path.join(
        os.path.expanduser("~"), ".taskcast", "claude-code"
    )


def run(options: HookOptions, stdin: str) -> str:
    """One hook call: its JSON in, what to print out ("" for nothing)."""
    try:
        hook = json.loads(stdin)
    except ValueError:
        return ""
    if not isinstance(hook, dict) or not isinstance(hook.get("session_id"), str):
        return ""
    hub = Hub(options)
    asks = (
        options.approve == "remote"
        and hook.get("hook_event_name") in APPROVAL_EVENTS
        and hook.get("tool_name") in options.approve_tools
    )
    try:
        answer = handle(hook, hub, options, asks)
    except Exception as exc:  # never break Claude Code
        log_problem(f"{hook.get('hook_event_name')}: {type(exc).__name__}: {exc}")
        answer = mapping.permission_answer(False, f"taskcast failed: {exc}") if asks else None
    finally:
        hub.close()
    return json.dumps(answer) if answer else ""


def handle(
    hook: dict[str, Any], hub: Hub, options: HookOptions, asks: bool
) -> dict[str, Any] | None:
    session_id = hook["session_id"]
    event = hook.get("hook_event_name")
    answer: dict[str, Any] | None = None
    request_id: str | None = None
    # The outbox first, then the session (every call takes them in this order): its
    # events go in, the state is saved, and the outbox is sent without opening it again.
    with OutboxFile(hub.urls) as outbox, SessionFile(session_id) as saved:
        session = saved.session
        session.model = session.model or os.environ.get("ANTHROPIC_MODEL") or None
        final = event in ("Stop", "SessionEnd")
        items = saved.transcript_items(hook, final)
        events: list[Event] = []
        if not session.started and event not in ("SessionStart", "UserPromptSubmit"):
            events.append(mapping.start_event(session, hook))  # a session resumed mid-way
        events += mapping.transcript_events(session, items)
        if event == "UserPromptSubmit":
            events += mapping.prompt_events(session, hook)
        elif event == "PostToolUse":
            events.append(mapping.tool_event(hook))
        elif event == "Stop":
            events += mapping.stop_final(session, items, hook)
        if event != "SessionStart" and session.started:
            commands = hub.commands(session_id, session.control_seq)
            events += mapping.apply_commands(session, commands)[0]
        if session.aborted is not None and event != "SessionEnd":
            reason = f"aborted through taskcast by {session.aborted['by']}"
            if session.aborted.get("reason"):
                reason += f": {session.aborted['reason']}"
            answer = mapping.stop_session(reason)
            if event == "PreToolUse":
                answer.update(mapping.permission_answer(False, reason))
        elif event == "Stop" and session.messages:
            text, steering = mapping.take_messages(session)
            events += steering
            answer = mapping.continue_with(text)
        elif asks:
            request_id = random_id()
            session.open_requests[request_id] = str(hook.get("tool_name"))
            events.append(mapping.approval_request(request_id, hook))
        if event == "SessionEnd":
            events += mapping.end_events(session, hook)
        saved.publish(events, outbox)
        sent = hub.flush(outbox)
    if request_id is None:
        return answer
    return ask(hook, hub, options, request_id, reachable=sent)


def ask(
    hook: dict[str, Any], hub: Hub, options: HookOptions, request_id: str, *, reachable: bool
) -> dict[str, Any]:
    """Wait for the decision on ``request_id`` (no lock held meanwhile), then answer."""
    session_id = hook["session_id"]
    commands: list[dict[str, Any]] = []
    if reachable:
        commands = hub.wait_for_decision(session_id, request_id, options.approval_timeout)
    with OutboxFile(hub.urls) as outbox, SessionFile(session_id) as saved:
        session = saved.session
        events, decided = mapping.apply_commands(session, commands, waiting_for=request_id)
        session.open_requests.pop(request_id, None)
        session.resolved = [*session.resolved, request_id][-mapping.MAX_APPLIED :]
        if decided is not None:
            approved, by, reason = decided.approved, decided.by, decided.reason
            told = f"{'approved' if approved else 'denied'} by {by} (taskcast)"
            if reason:
                told += f": {reason}"
        else:
            approved, by = False, "taskcast"
            if reachable:
                reason = "timeout"
                told = f"no decision within {options.approval_timeout:g} s (taskcast): denied"
            else:
                reason = "hub unreachable"
                told = (
                    f"taskcast could not reach the hub at {hub.where} to ask for approval: denied"
                )
        events.append(mapping.resolution(request_id, approved, by, reason))
        if not approved:
            events.append(mapping.denied_tool(hook, told))
        answer = mapping.permission_answer(approved, told)
        if session.aborted is not None:
            answer.update(
                mapping.stop_session(f"aborted through taskcast by {session.aborted['by']}")
            )
        saved.publish(events, outbox)
        hub.flush(outbox)
    return answer


# --- the session's file --------------------------------------------------------------


class SessionFile:
    """A session's saved state, locked while in use; events it makes go to the outbox."""

    def __init__(self, session_id: str) -> None:
        self.dir = ensure_private_dir(os.path.join(state_dir(), "sessions"))
        self.path = os.path.join(self.dir, f"{_safe(session_id)}.json")
        self.session_id = session_id
        self._lock: IO[bytes] | None = None
        self.session = Session(session_id)

    def __enter__(self) -> SessionFile:
        self._lock = open(ensure_private_file(self.path + ".lock"), "wb")
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError, ValueError), open(self.path) as saved:
            self.session = Session.from_json(json.load(saved))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._lock is not None
        self._lock.close()  # releases the lock

    def transcript_items(self, hook: dict[str, Any], final: bool) -> list[Any]:
        path = hook.get("transcript_path")
        if not isinstance(path, str):
            return []
        try:
            with open(path, "rb") as transcript:
                transcript.seek(self.session.offset)
                data = transcript.read()
        except OSError:
            return []
        items, consumed = mapping.read_transcript(data, 0, final)
        self.session.offset += consumed
        return items

    def publish(self, events: list[Event], outbox: Outbox) -> None:
        """Into the outbox, then the state saved: should this process die in between, the
        next call makes the same events with the same ids again."""
        if events:
            now = time.time_ns() // 1_000_000
            frames = [
                (
                    self.session.event_id(),
                    {"taskId": self.session_id, **payload, "timestamp": now},
                    kind,
                )
                for kind, payload in events
            ]
            for event_id, payload, kind in frames:
                frame = {"type": str(kind), "id": event_id, "payload": payload, "source": SOURCE}
                outbox.add(event_id, json.dumps(frame, ensure_ascii=False).encode())
        write_private(self.path, json.dumps(self.session.to_json()).encode())


class OutboxFile:
    """The outbox every session shares (one file per hub), locked while in use."""

    def __init__(self, hubs: list[str]) -> None:
        # zlib's crc, not hashlib: hashlib's import starts OpenSSL (3 ms of a hook call).
        key = f"{zlib.crc32(','.join(hubs).encode()):08x}"
        self.path = os.path.join(ensure_private_dir(state_dir()), f"outbox-{key}.log")
        self._lock: IO[bytes] | None = None
        self.outbox: Outbox | None = None

    def __enter__(self) -> Outbox:
        self._lock = open(ensure_private_file(self.path + ".lock"), "wb")
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)
        self.outbox = Outbox(1_000_000, self.path)
        return self.outbox

    def __exit__(self, *exc: object) -> None:
        if self.outbox is not None:
            self.outbox.close()
        assert self._lock is not None
        self._lock.close()


# --- the hub, over plain HTTP -----------------------------------------------------------


class Hub:
    """The hub's HTTP API, one kept-alive connection, failing over to the next ``--hub``
    when one cannot be reached. Plain HTTP is spoken over a socket here (``HttpLink``):
    ``http.client`` (with the ``email`` and ``ssl`` it imports) was a third of a hook
    call's start-up; ``https://`` hubs go through ``http.client``."""

    def __init__(self, options: HookOptions) -> None:
        self.options = options
        self.urls = [_http_base(url) for url in options.hubs]
        self._index = 0
        self._link: HttpLink | HttpsLink | None = None

    @property
    def where(self) -> str:
        return ", ".join(self.urls)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _token(self) -> str | None:
        if self.options.token_file:
            with contextlib.suppress(OSError), open(self.options.token_file) as held:
                return held.read().strip() or None
        return os.environ.get("TASKCAST_TOKEN") or None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """One request; (status, decoded body). ``OSError`` when no hub answers."""
        headers = {"Content-Type": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        last: Exception | None = None
        for _ in range(len(self.urls)):
            try:
                link = self._connection()
                status, data = link.request(method, path, body, headers)
            except Exception as exc:  # OSError, or http.client's errors for https
                last = exc
                self.close()
                self._index = (self._index + 1) % len(self.urls)
                continue
            if not link.reusable:  # the hub said Connection: close
                self.close()
            try:
                return status, json.loads(data) if data else None
            except ValueError:
                return status, None
        raise OSError(str(last) or "no hub")

    def _connection(self) -> HttpLink | HttpsLink:
        if self._link is None:
            scheme, host, port = _split(self.urls[self._index])
            self._link = HttpLink(host, port) if scheme == "http" else HttpsLink(host, port)
        return self._link

    def flush(self, outbox: Outbox) -> bool:
        """Send the outbox in order, for at most FLUSH_SECONDS; True when it is empty.
        An event the hub refuses for good is dropped (and logged); on anything else the
        rest waits for a later hook call."""
        deadline = time.monotonic() + FLUSH_SECONDS
        for frame in outbox.frames():
            if time.monotonic() > deadline:
                return False
            event_id = json.loads(frame)["id"]
            try:
                status, answer = self.request("POST", "/api/events", frame)
            except OSError as exc:
                log_problem(f"hub {self.where} unreachable: {exc}")
                return False
            if status == 200:
                outbox.ack([event_id])
            elif status in (400, 403, 413):
                log_problem(f"hub refused event {event_id} for good ({status}): {answer}")
                outbox.ack([event_id])
            else:
                log_problem(f"hub answered {status} for event {event_id}: {answer}")
                return False
        return len(outbox) == 0

    def commands(self, session_id: str, since: int) -> list[dict[str, Any]]:
        """The task's commands after ``since`` (none when the hub cannot say)."""
        path = f"/api/events?channel=control.{session_id}&since={since}&limit=1000"
        try:
            status, answer = self.request("GET", path)
        except OSError:
            return []
        if status != 200 or not isinstance(answer, list):
            return []
        return [frame for frame in answer if isinstance(frame, dict)]

    def wait_for_decision(
        self, session_id: str, request_id: str, timeout: float
    ) -> list[dict[str, Any]]:
        """The commands that arrive until one decides ``request_id`` (or aborts), for at
        most ``timeout`` seconds — followed live over a websocket, resumed by seq."""
        import asyncio

        from taskcast.client.subscriber import subscribe

        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            async for frame in subscribe(
                self.options.hubs, f"control.{session_id}", 0, token=self._token()
            ):
                seen.append(frame)
                payload = frame.get("payload") or {}
                if payload.get("action") == "abort" or payload.get("requestId") == request_id:
                    return

        async def bounded() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout or None):
                    await follow()

        asyncio.run(bounded())
        return seen


class HttpLink:
    """HTTP/1.1 to a taskcast hub over one kept-alive socket: a request with a
    ``Content-Length`` body, an answer with ``Content-Length`` (aiohttp's) or chunked."""

    def __init__(self, host: str, port: int) -> None:
        # The host as bytes: getaddrinfo then needs no idna codec (an import less).
        address = (host.encode(), port)  # bytes work; typeshed says str
        self.sock = socket.create_connection(address, timeout=REQUEST_SECONDS)  # type: ignore[arg-type]
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{host}:{port}"
        self.buffer = b""
        self.reusable = True

    def close(self) -> None:
        self.sock.close()

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Length: {len(body or b'')}",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        head = self._until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise OSError(f"not an HTTP answer: {status_line[:80]!r}")
        fields = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                data += self._exactly(size)
                self._exactly(2)
            self._until(b"\r\n")
        else:
            data = self._exactly(int(fields.get("content-length", "0")))
        self.reusable = fields.get("connection", "").lower() != "close"
        return int(parts[1]), data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("the hub closed the connection")
        self.buffer += chunk

    def _until(self, marker: bytes) -> bytes:
        while (at := self.buffer.find(marker)) < 0:
            if len(self.buffer) > 1 << 20:
                raise OSError("answer head too large")
            self._fill()
        found, self.buffer = self.buffer[:at], self.buffer[at + len(marker) :]
        return found

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found


class HttpsLink:
    """A hub behind TLS: ``http.client`` (TLS needs ``ssl`` whatever speaks it)."""

    def __init__(self, host: str, port: int) -> None:
        import http.client

        self.conn = http.client.HTTPSConnection(host, port, timeout=REQUEST_SECONDS)
        self.reusable = True

    def close(self) -> None:
        self.conn.close()

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=headers)
        reply = self.conn.getresponse()
        return reply.status, reply.read()


def _split(url: str) -> tuple[str, str, int]:
    """``http://host:port`` → (scheme, host, port)."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if netloc.startswith("["):
        host, _, port = netloc[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    return scheme, host, int(port) if port else (443 if scheme == "https" else 80)


def _http_base(url: str) -> str:
    base = url.removesuffix("/ws").rstrip("/")
    return "http" + base[2:] if base.startswith("ws") else base


def _safe(session_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in session_id)[:200]


def log_problem(text: str) -> None:
    """A line in the adapter's log: a hook's stdout and stderr belong to Claude Code."""
    with contextlib.suppress(OSError):
        path = os.path.join(ensure_private_dir(state_dir()), "hook.log")
        with open(ensure_private_file(path), "a") as out:
            out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def main(options: HookOptions) -> None:
    out = run(options, sys.stdin.read())
    if out:
        sys.stdout.write(out + "\n")
