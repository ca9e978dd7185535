"""The ``taskcast`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from taskcast import __version__
from taskcast.auth import DEFAULT_MAX_TOKEN_TTL, AuthError, TokenVerifier, create_token
from taskcast.channels import InvalidChannel, validate_pattern
from taskcast.client import CommunicationService, subscribe
from taskcast.client.failover import hub_urls
from taskcast.client.hub_http import HubError, http_base, hub_request
from taskcast.commands import command_fields
from taskcast.console import (
    TRANSCRIPT_EVENTS,
    event_line,
    printable,
    transcript_line,
    worth_showing,
)
from taskcast.demo_run import DEMO_SCRIPT
from taskcast.frames import encode
from taskcast.hub.config import DEFAULT_HOST, DEFAULT_PORT, HubConfig
from taskcast.store import DEFAULT_STORE, NatsOptions, NatsUnavailable, Retention, StoreLocked
from taskcast.task import ApprovalPolicy, ScriptedProvider, Task, ToolCall
from taskcast.task.approval import MODES
from taskcast.task.events import summarize_arguments
from taskcast.task.handoff import TaskLeaseHeld
from taskcast.task.history import HISTORY_EVENT, HistoryBuilder
from taskcast.task.providers import Provider
from taskcast.task.task import DEFAULT_HISTORY_DIR, HISTORY_FILE
from taskcast.vocabulary import FINAL_STATUSES

DEFAULTS = HubConfig()  # the one home of the hub's defaults


def _setup_logging(verbose: bool) -> None:
    """Rich, coloured logs on a terminal; plain timestamped lines in files and pipes."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


@click.group()
@click.version_option(__version__, prog_name="taskcast")
def main() -> None:
    """taskcast: live, durable notifications of your AI agents' API actions."""


def _hs256_secret(secret_file: Path | None) -> str | None:
    return secret_file.read_text().strip() if secret_file else os.environ.get("TASKCAST_SECRET")


def _verifier(
    secret_file: Path | None,
    public_key_file: Path | None,
    algorithm: str | None,
    max_ttl: int | None = DEFAULT_MAX_TOKEN_TTL,
) -> TokenVerifier | None:
    """HS256 with TASKCAST_SECRET or --secret-file; RS256/ES256 with --public-key-file."""
    if public_key_file is not None:
        return TokenVerifier(public_key_file.read_bytes(), algorithm or "RS256", None, max_ttl)
    secret = _hs256_secret(secret_file)
    if secret:
        return TokenVerifier(secret, algorithm or "HS256", None, max_ttl)
    return None


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help="0 picks a free port."
)
@click.option(
    "--store",
    "store_url",
    default=DEFAULT_STORE,
    show_default=True,
    help="Event log: sqlite:PATH, memory, or nats://HOST:PORT[,nats://HOST2:PORT2…] "
    "(cluster mode: hub nodes share one JetStream stream).",
)
@click.option(
    "--nats-stream",
    default=DEFAULTS.nats.stream,
    show_default=True,
    help="JetStream stream of the log (subjects <name in lower case>.<channel>).",
)
@click.option(
    "--nats-replicas",
    type=click.IntRange(1, 5),
    default=DEFAULTS.nats.replicas,
    show_default=True,
    help="Copies of the stream (3 on a 3-server cluster: an ack means a quorum has it).",
)
@click.option(
    "--nats-duplicate-window",
    default="24h",
    show_default=True,
    help="How long a resent event id is recognised across nodes (30m, 12h, 1d, seconds).",
)
@click.option(
    "--nats-credentials",
    type=click.Path(exists=True, dir_okay=False),
    help="NATS .creds file (JWT + NKey) for a secured NATS.",
)
@click.option("--nats-tls", is_flag=True, help="Connect to NATS over TLS (system CAs).")
@click.option("--retain-events", type=int, default=None, help="Keep at most this many events.")
@click.option("--retain-seconds", type=float, default=None, help="Drop events older than this.")
@click.option("--fsync/--no-fsync", default=False, help="fsync every commit (survive power loss).")
@click.option("--max-frame-bytes", type=int, default=DEFAULTS.max_frame_bytes, show_default=True)
@click.option(
    "--max-subscriber-buffer",
    type=int,
    default=DEFAULTS.max_subscriber_buffer,
    show_default=True,
    help="Bytes queued for one client before it is closed as a slow consumer (4008).",
)
@click.option(
    "--trim-interval",
    type=float,
    default=DEFAULTS.trim_interval_seconds,
    show_default=True,
    help="Seconds between retention passes.",
)
@click.option(
    "--secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="HS256 secret (else the TASKCAST_SECRET environment variable).",
)
@click.option(
    "--public-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key for RS256/ES256 tokens.",
)
@click.option("--algorithm", type=click.Choice(["HS256", "RS256", "ES256"]))
@click.option("--insecure", is_flag=True, help="Allow binding beyond loopback without auth.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="Browser Origin allowed besides the hub's own (repeat).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Host name the hub answers to besides IP literals and localhost (repeat).",
)
@click.option(
    "--max-token-ttl",
    default="30d",
    show_default=True,
    help="Refuse tokens that live longer (30m, 12h, 7d, seconds; 0: no maximum).",
)
@click.option(
    "--publish-rate",
    type=float,
    default=DEFAULTS.publish_rate,
    show_default=True,
    help="Events/s one connection may publish (0: no limit).",
)
@click.option("--publish-burst", type=float, default=DEFAULTS.publish_burst, show_default=True)
@click.option("--max-connections", type=int, default=DEFAULTS.max_connections, show_default=True)
@click.option(
    "--max-connections-per-ip",
    type=int,
    default=DEFAULTS.max_connections_per_ip,
    show_default=True,
    help="Websocket and SSE connections from one address (0: no limit).",
)
@click.option(
    "--max-concurrent-replays",
    type=click.IntRange(min=1),
    default=DEFAULTS.max_concurrent_replays,
    show_default=True,
    help="Replay page reads in flight hub-wide.",
)
@click.option(
    "--max-subscriptions", type=int, default=DEFAULTS.max_subscriptions, show_default=True
)
@click.option(
    "--idle-timeout",
    type=float,
    default=DEFAULTS.idle_timeout_seconds,
    show_default=True,
    help="Seconds without a frame (not even a pong) before a connection is closed (0: no limit).",
)
@click.option(
    "--handshake-timeout", type=float, default=DEFAULTS.handshake_timeout_seconds, show_default=True
)
@click.option(
    "--close-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULTS.close_timeout_seconds,
    show_default=True,
    help="Seconds a close (a slow consumer's 4008, shutdown) waits for the client to read "
    "what it was sent and answer; then the socket is dropped with what it still holds.",
)
@click.option(
    "--allow-private-webhooks",
    is_flag=True,
    help="With auth on, allow webhooks to loopback and private addresses.",
)
@click.option(
    "--webhook-give-up",
    default="24h",
    show_default=True,
    help="Mark a webhook failed after failing this long (30m, 12h, 1d, seconds).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Hub processes sharing the port (SO_REUSEPORT), one per core or per ~15,000 "
    "connections; needs --store nats://… (the log they all share).",
)
@click.option("--reuse-port", is_flag=True, hidden=True)  # set on each worker by --workers
@click.option("-v", "--verbose", is_flag=True)
def hub(
    host: str,
    port: int,
    store_url: str,
    nats_stream: str,
    nats_replicas: int,
    nats_duplicate_window: str,
    nats_credentials: str | None,
    nats_tls: bool,
    retain_events: int | None,
    retain_seconds: float | None,
    fsync: bool,
    max_frame_bytes: int,
    max_subscriber_buffer: int,
    trim_interval: float,
    secret_file: Path | None,
    public_key_file: Path | None,
    algorithm: str | None,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    allowed_origins: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    max_token_ttl: str,
    publish_rate: float,
    publish_burst: float,
    max_connections: int,
    max_connections_per_ip: int,
    max_concurrent_replays: int,
    max_subscriptions: int,
    idle_timeout: float,
    handshake_timeout: float,
    close_timeout: float,
    allow_private_webhooks: bool,
    webhook_give_up: str,
    workers: int,
    reuse_port: bool,
    verbose: bool,
) -> None:
    """Run the hub: websocket /ws, the HTTP API and the dashboard on one port."""
    from taskcast.hub.server import TooFewFiles, UnsafeBind, announce, serve

    _setup_logging(verbose)
    if workers > 1:
        if not store_url.startswith(("nats://", "tls://")):
            raise click.UsageError(
                "--workers needs a log every worker shares: --store nats://… "
                "(SQLite has one writer; see docs/architecture.md)"
            )
        from taskcast.hub.workers import Supervisor, WorkerFailed

        try:
            options = sys.argv[sys.argv.index("hub") + 1 :]  # this command's own options
            supervisor = Supervisor(["hub", *options], workers, host, port)
            sys.exit(supervisor.run(announce))
        except (OSError, WorkerFailed) as exc:
            raise click.ClickException(str(exc)) from exc
    ttl_limit = _parse_ttl(max_token_ttl)
    try:
        verifier = _verifier(secret_file, public_key_file, algorithm, ttl_limit or None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    config = HubConfig(
        host=host,
        port=port,
        reuse_port=reuse_port,
        store=store_url,
        retention=Retention(max_events=retain_events, max_age_seconds=retain_seconds),
        fsync=fsync,
        nats=NatsOptions(
            stream=nats_stream,
            replicas=nats_replicas,
            duplicate_window_seconds=float(_parse_ttl(nats_duplicate_window)),
            credentials=nats_credentials,
            tls=nats_tls,
        ),
        max_frame_bytes=max_frame_bytes,
        max_subscriber_buffer=max_subscriber_buffer,
        trim_interval_seconds=trim_interval,
        verifier=verifier,
        insecure=insecure,
        tls_cert=tls_cert,
        tls_key=tls_key,
        allowed_origins=allowed_origins,
        allowed_hosts=tuple(host.lower() for host in allowed_hosts),
        publish_rate=publish_rate,
        publish_burst=publish_burst,
        max_connections=max_connections,
        max_connections_per_ip=max_connections_per_ip,
        max_concurrent_replays=max_concurrent_replays,
        max_subscriptions=max_subscriptions,
        idle_timeout_seconds=idle_timeout,
        handshake_timeout_seconds=handshake_timeout,
        close_timeout_seconds=close_timeout,
        allow_private_webhooks=allow_private_webhooks,
        webhook_give_up_seconds=float(_parse_ttl(webhook_give_up)),
    )
    try:
        asyncio.run(serve(config, ready=announce))
    except (OSError, UnsafeBind, TooFewFiles, StoreLocked, NatsUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def token() -> None:
    """Create and inspect access tokens (JWTs)."""


def _parse_ttl(ttl: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if ttl[-1] in units:
            return int(float(ttl[:-1]) * units[ttl[-1]])
        return int(ttl)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{ttl!r}: use seconds or a number with s, m, h or d") from None


@token.command("create")
@click.option("--publish", multiple=True, help="Channel pattern it may publish to (repeat).")
@click.option("--subscribe", multiple=True, help="Channel pattern it may subscribe to (repeat).")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 30m, 12h, 7d, seconds.")
@click.option("--admin", is_flag=True, help="May do everything.")
@click.option("--metrics", is_flag=True, help="May read /metrics and the detailed /healthz.")
@click.option(
    "--control",
    multiple=True,
    help="Channel pattern it may send task commands to, e.g. 'control.>' (repeat).",
)
@click.option("--sub", "subject", default="taskcast-client", show_default=True, help="Who.")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--private-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM private key for RS256/ES256.",
)
@click.option("--algorithm", type=click.Choice(["HS256", "RS256", "ES256"]))
def token_create(
    publish: tuple[str, ...],
    subscribe: tuple[str, ...],
    ttl: str,
    admin: bool,
    metrics: bool,
    control: tuple[str, ...],
    subject: str,
    secret_file: Path | None,
    private_key_file: Path | None,
    algorithm: str | None,
) -> None:
    """Print a signed token (HS256 with TASKCAST_SECRET unless a key file is given)."""
    if private_key_file is not None:
        key: str | bytes = private_key_file.read_bytes()
        algorithm = algorithm or "RS256"
    else:
        secret = _hs256_secret(secret_file)
        if not secret:
            raise click.UsageError(
                "set TASKCAST_SECRET, or pass --secret-file or --private-key-file"
            )
        key, algorithm = secret, algorithm or "HS256"
    lifetime = _parse_ttl(ttl)
    if lifetime > DEFAULT_MAX_TOKEN_TTL:
        click.echo(
            f"warning: hubs refuse tokens that live longer than --max-token-ttl "
            f"(default {DEFAULT_MAX_TOKEN_TTL // 86400}d) unless started with a higher one",
            err=True,
        )
    try:
        click.echo(
            create_token(
                key,
                subject=subject,
                publish=list(publish),
                subscribe=list(subscribe),
                ttl_seconds=lifetime,
                admin=admin,
                metrics=metrics,
                control=list(control),
                algorithm=algorithm,
            )
        )
    except (InvalidChannel, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@token.command("inspect")
@click.argument("value")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--algorithm", type=click.Choice(["HS256", "RS256", "ES256"]))
def token_inspect(
    value: str, secret_file: Path | None, public_key_file: Path | None, algorithm: str | None
) -> None:
    """Show a token's claims, and whether it verifies with the configured key."""
    import jwt

    try:
        header = jwt.get_unverified_header(value)
        claims = jwt.decode(value, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise click.ClickException(f"not a token: {type(exc).__name__}") from exc
    click.echo(json.dumps({"header": header, "claims": claims}, indent=2))
    verifier = _verifier(secret_file, public_key_file, algorithm)
    if verifier is None:
        click.echo("signature not checked (no secret or public key given)")
        return
    try:
        principal = verifier.verify(value)
    except AuthError as exc:
        raise click.ClickException(f"does not verify: {exc}") from exc
    click.echo(f"valid for {principal.subject}")


# --- the agent side ---------------------------------------------------------

DEFAULT_HUB_URL = f"ws://{DEFAULT_HOST}:{DEFAULT_PORT}/ws"


def make_provider(
    provider: str,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    script: Path | None,
    stream: bool = True,
) -> Provider:
    if provider == "scripted":
        if script is None:
            click.echo(
                "note: --provider scripted replays the demo script, not your prompt "
                "(pass --script FILE for your own turns)",
                err=True,
            )
        scripted = ScriptedProvider.from_file(script or DEMO_SCRIPT)
        if model:
            scripted.model = model
        return scripted
    if not model:
        raise click.UsageError(f"--model is required with --provider {provider}")
    key_variable = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}[provider]
    if not api_key and not base_url and not os.environ.get(key_variable):
        # Fail now, naming what is missing (a local server with --base-url may need none).
        raise click.UsageError(
            f"--provider {provider} needs an API key: set {key_variable} (or TASKCAST_API_KEY, "
            "--api-key), or point --base-url at a local server"
        )
    if provider == "openai":
        from taskcast.task.providers.openai_chat import OpenAIChatProvider

        return OpenAIChatProvider(model, api_key=api_key, base_url=base_url, stream=stream)
    from taskcast.task.providers.anthropic_messages import AnthropicProvider

    return AnthropicProvider(model, api_key=api_key, base_url=base_url, stream=stream)


class ConsoleTee:
    """Shows each event on the terminal as the Task emits it, and passes it on."""

    nonblocking = True

    def __init__(self, console: Console, forward: CommunicationService | None) -> None:
        self.console = console
        self.forward = forward

    def send_message(self, message: dict[str, Any]) -> None:
        if worth_showing(message):
            self.console.print(event_line(message))
        if self.forward is not None:
            self.forward.send_message(message)

    def __getattr__(self, name: str) -> Any:
        """Following the control channel (on, off, follow, unfollow) goes to the hub."""
        if self.forward is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.forward, name)


def terminal_confirm(console: Console) -> Callable[[ToolCall], Awaitable[bool]]:
    async def confirm(call: ToolCall) -> bool:
        if not sys.stdin.isatty():
            return False
        question = printable(f"Allow {call.name}({summarize_arguments(call.arguments)})?")
        return await asyncio.to_thread(click.confirm, question, default=False)

    return confirm


def terminal_ask() -> Callable[[str], Awaitable[str | None]]:
    async def ask(question: str) -> str | None:
        if not sys.stdin.isatty():
            return None
        answer: str = await asyncio.to_thread(click.prompt, printable(question))
        return answer

    return ask


@main.command()
@click.argument("prompt")
@click.option(
    "--provider",
    type=click.Choice(["scripted", "openai", "anthropic"]),
    default="scripted",
    show_default=True,
)
@click.option("--model", help="Model name (required for openai and anthropic).")
@click.option(
    "--base-url",
    help="API base URL. OpenAI-compatible: the URL ending in /v1 (Ollama: "
    "http://localhost:11434/v1). Anthropic: with or without /v1.",
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Stream responses (--no-stream for servers or proxies that cannot).",
)
@click.option("--api-key", envvar="TASKCAST_API_KEY", help="Else OPENAI_API_KEY/ANTHROPIC_API_KEY.")
@click.option("--script", type=click.Path(exists=True, path_type=Path), help="Scripted turns.")
@click.option(
    "--hub",
    multiple=True,
    envvar="TASKCAST_HUB",
    callback=lambda ctx, param, value: _joined_hubs(value),
    help="Hub to publish to, e.g. ws://127.0.0.1:8765/ws; repeat for the nodes of a cluster "
    "(tried in turn when one fails).",
)
@click.option("--token", envvar="TASKCAST_TOKEN", help="Bearer token for the hub.")
@click.option(
    "--cwd",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Working directory the tools are confined to (must exist unless --mkdir).",
)
@click.option("--mkdir", is_flag=True, help="Create --cwd when it does not exist.")
@click.option(
    "--approve",
    type=click.Choice(list(MODES)),
    default="read-only",
    show_default=True,
    help="remote: ask through the hub (taskcast approve/deny, the dashboard); needs --hub.",
)
@click.option(
    "--approval-timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait for a remote decision, then deny (0: wait forever).",
)
@click.option("--task-id", help="Task id; with --resume, the task to continue.")
@click.option(
    "--resume",
    "resume",
    default=None,
    is_flag=False,
    flag_value="",
    metavar="TASK_ID",
    help="Continue a task: rebuilt from the hub's log with --hub (another machine may have "
    "run it), else from the saved history. PROMPT '-' adds no new message.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=1, max=3600),
    default=30.0,
    show_default=True,
    help="Seconds the hub keeps this run's lease without a heartbeat (one runner per task).",
)
@click.option("--history-dir", type=click.Path(path_type=Path), default=DEFAULT_HISTORY_DIR)
@click.option("--outbox", type=click.Path(path_type=Path), help="File outbox (survives a crash).")
@click.option("--max-turns", type=int, default=50, show_default=True)
@click.option(
    "--redact",
    "redact_patterns",
    multiple=True,
    help="Extra regex whose matches are hidden in emitted events (repeat).",
)
@click.option(
    "--command-env",
    "command_env",
    multiple=True,
    help="Environment variable that execute_command may see besides the minimal set (repeat).",
)
def run(
    prompt: str,
    provider: str,
    model: str | None,
    base_url: str | None,
    stream: bool,
    api_key: str | None,
    script: Path | None,
    hub: str | None,
    token: str | None,
    cwd: Path,
    approve: str,
    approval_timeout: float,
    task_id: str | None,
    resume: str | None,
    lease_ttl: float,
    history_dir: Path,
    outbox: Path | None,
    max_turns: int,
    redact_patterns: tuple[str, ...],
    command_env: tuple[str, ...],
    mkdir: bool,
) -> None:
    """Run an agent task; with --hub, publish its events live."""
    console = Console(stderr=False)
    if approve == "remote" and not hub:
        raise click.UsageError("--approve remote needs --hub (the hub approvers answer through)")
    api = make_provider(provider, model, base_url, api_key, script, stream)
    service = CommunicationService(hub, token=token, outbox_path=outbox) if hub else None
    if not cwd.is_dir():
        if not mkdir:
            raise click.UsageError(f"--cwd {cwd} does not exist (pass --mkdir to create it)")
        cwd.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "communication_service": ConsoleTee(console, service),
        "cwd": cwd,
        # In remote mode a terminal answer counts too, but only when there is a terminal
        # (without one, "no terminal" must not pass for a denial).
        "approval": ApprovalPolicy(
            approve,
            terminal_confirm(console) if approve != "remote" or sys.stdin.isatty() else None,
        ),
        "approval_timeout": approval_timeout,
        "history_dir": history_dir,
        "ask": terminal_ask(),
        "max_turns": max_turns,
        "redact_patterns": redact_patterns,
        "command_env": command_env,
    }
    options["lease_seconds"] = lease_ttl
    resuming = resume is not None
    if resuming:
        task_id = resume or task_id
        if not task_id:
            raise click.UsageError("--resume needs a TASK_ID (or --task-id)")
        task = _resumed_task(task_id, api, hub, token, options)
    else:
        task = Task(api, task_id=task_id, **options)
    try:
        result = task.run_sync(None if resuming and prompt == "-" else prompt)
    except TaskLeaseHeld as exc:
        if service is not None:
            service.close(timeout=0)
        raise click.ClickException(str(exc)) from exc
    style = {"completed": "green", "failed": "red"}.get(result.status, "yellow")
    if result.status == "completed" and result.denied:
        style = "yellow"
    console.print(
        f"[bold {style}]{result.status}[/] task {result.task_id} in {result.turns} turns, "
        f"{result.usage.input_tokens} tokens in / {result.usage.output_tokens} out"
    )
    if result.denied:
        console.print(
            f"[bold yellow]{len(result.denied)} tool call(s) were denied and did not run: "
            f"{', '.join(sorted(set(result.denied)))}[/] (see --approve)"
        )
    if result.result or result.error:
        console.print(printable(result.result or result.error), markup=False)
    if service is not None:
        if service.close(timeout=10):
            console.print(f"[dim]all events acknowledged by {hub}[/]")
        else:
            where = f"kept in {outbox}" if outbox else "lost with this process"
            console.print(f"[yellow]{service.pending} events not acknowledged ({where})[/]")
    # 0: completed with every tool call run; 3: completed, but tool calls were denied;
    # 1: failed or aborted.
    sys.exit(1 if result.status != "completed" else 3 if result.denied else 0)


def _joined_hubs(values: tuple[str, ...]) -> str | None:
    """``--hub`` given several times: one comma-separated list (the client's HubUrls)."""
    return ",".join(values) if values else None


# Several --hub: the nodes of a cluster, tried in turn (the client fails over).
_hub_option = click.option(
    "--hub",
    multiple=True,
    envvar="TASKCAST_HUB",
    default=[DEFAULT_HUB_URL],
    show_default=True,
    callback=lambda ctx, param, value: _joined_hubs(value),
    help="Hub websocket URL; repeat for the nodes of a cluster.",
)

_connect_timeout_option = click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Give up (exit 1) if the hub was never reached in this many seconds (0: never).",
)


def _resumed_task(
    task_id: str, api: Provider, hub: str | None, token: str | None, options: dict[str, Any]
) -> Task:
    """The task to continue: from the hub's log when there is a hub, else from disk."""
    if hub:
        try:
            return asyncio.run(
                Task.from_hub(task_id, hub=hub, provider=api, token=token, **options)
            )
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
        except HubError as exc:
            raise click.ClickException(f"cannot read task {task_id} from the hub: {exc}") from exc
    saved = Path(options["history_dir"]) / task_id / HISTORY_FILE
    if not saved.exists() and not saved.with_suffix(".json").exists():
        raise click.ClickException(
            f"no saved history for task {task_id} (looked for {saved}); "
            "pass --hub to rebuild it from the hub's log"
        )
    return Task.resume(task_id, api, **options)


@main.command()
@click.argument("task_id")
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN")
@click.option("--json", "as_json", is_flag=True, help="Print the rebuilt history when it ends.")
@_connect_timeout_option
def follow(
    task_id: str, hub: str, token: str | None, as_json: bool, connect_timeout: float
) -> None:
    """Show a task live as a readable transcript (replayed from its start), until it ends."""
    console = Console(highlight=False)
    builder = HistoryBuilder()

    def show(frame: dict[str, Any]) -> bool:
        if frame.get("type") == HISTORY_EVENT:
            message = builder.add(frame.get("payload") or {}, frame["seq"])
            if message is not None and not as_json:
                console.print(transcript_line(message), markup=False)
        elif not as_json and frame.get("type") in TRANSCRIPT_EVENTS:
            console.print(event_line(frame, console.width))
        return frame.get("type") in FINAL_STATUSES

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch_hub(hub, f"tasks.{task_id}", 0, token, connect_timeout, show))
    if as_json:
        click.echo(json.dumps(builder.messages, ensure_ascii=False, indent=1))


@main.command()
@click.argument("pattern", default="tasks.>")
@click.option("--since", type=int, help="Replay stored events after this seq first.")
@click.option("--json", "as_json", is_flag=True, help="Print NDJSON (one event per line).")
@click.option("--count", type=int, help="Exit after this many events.")
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN")
@_connect_timeout_option
def listen(
    pattern: str,
    since: int | None,
    as_json: bool,
    count: int | None,
    hub: str,
    token: str | None,
    connect_timeout: float,
) -> None:
    """Tail events live (resumes by itself after disconnects)."""
    try:
        validate_pattern(pattern)
    except InvalidChannel as exc:
        raise click.BadParameter(str(exc)) from None
    console = Console(highlight=False)
    seen = 0

    def show(frame: dict[str, Any]) -> bool:
        nonlocal seen
        if as_json:
            sys.stdout.write(encode(frame).decode() + "\n")
            sys.stdout.flush()
        elif worth_showing(frame):
            console.print(event_line(frame, console.width))
        seen += 1
        return count is not None and seen >= count

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch_hub(hub, pattern, since, token, connect_timeout, show))


async def watch_hub(
    hub: str,
    pattern: str,
    since: int | None,
    token: str | None,
    connect_timeout: float,
    handle: Callable[[dict[str, Any]], bool],
) -> None:
    """Feed each event of ``pattern`` to ``handle`` until it returns True (see
    ``stay_connected`` for what it says while the hub cannot be reached)."""

    async def feed(status: Callable[[str, str | None], None]) -> None:
        async for frame in subscribe(hub, pattern, since, token=token, on_status=status):
            if handle(frame):
                return

    await stay_connected(hub, connect_timeout, feed)


async def stay_connected(
    hub: str,
    connect_timeout: float,
    run: Callable[[Callable[[str, str | None], None]], Coroutine[Any, Any, None]],
) -> None:
    """Run a subscriber (``run(on_status)``). Says on stderr when the hub cannot be
    reached (once per new error; it is retried), and gives up with an error when it was
    never reached within ``connect_timeout`` seconds (0: never)."""
    reached = False
    last_error: str | None = None

    def status(state: str, error: str | None) -> None:
        nonlocal reached, last_error
        if state == "subscribed":
            reached = True
            if last_error is not None:
                click.echo(f"connected to {hub}", err=True)
            last_error = None
        elif error != last_error:
            click.echo(f"cannot reach the hub at {hub}: {error}; retrying", err=True)
            last_error = error

    follower = asyncio.create_task(run(status))
    if connect_timeout:
        done, _ = await asyncio.wait({follower}, timeout=connect_timeout)
        if not done and not reached:
            follower.cancel()
            raise click.ClickException(
                f"no connection to {hub} within {connect_timeout:g} s ({last_error})"
            )
    await follower


@main.command()
@click.option("--keep", is_flag=True, help="Keep the hub running after the task.")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@click.option("--store", "store_url", default=DEFAULT_STORE, show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
def demo(keep: bool, open_browser: bool, store_url: str, port: int) -> None:
    """Start a hub, run a scripted agent task against it, and watch its events arrive."""
    from taskcast.demo_run import run_demo

    sys.exit(asyncio.run(run_demo(store_url, port, keep=keep, open_browser=open_browser)))


@main.command()
@click.option("--channel", default="tasks.>", show_default=True, help="Pattern of the tasks.")
@click.option(
    "--endpoint",
    required=True,
    help="OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318 (/v1/traces is added).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    help="HTTP header for the endpoint, KEY=VALUE (repeat; e.g. an API key).",
)
@click.option(
    "--cursor-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".taskcast/otel-cursor.json"),
    show_default=True,
    help="Where the last exported seq is kept (resume point after a restart).",
)
@click.option("--since", type=int, default=0, show_default=True, help="First run: start after.")
@click.option("--service-name", default="taskcast", show_default=True)
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN")
@_connect_timeout_option
@click.option("-v", "--verbose", is_flag=True)
def otel(
    channel: str,
    endpoint: str,
    headers: tuple[str, ...],
    cursor_file: Path,
    since: int,
    service_name: str,
    hub: str,
    token: str | None,
    connect_timeout: float,
    verbose: bool,
) -> None:
    """Send every task to OpenTelemetry as a trace (needs taskcast[otel])."""
    try:
        from taskcast.integrations.otel import Cursor, follow_into, otlp_http_exporter
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    _setup_logging(verbose)
    try:
        validate_pattern(channel)
    except InvalidChannel as exc:
        raise click.BadParameter(str(exc)) from None
    if any("=" not in header for header in headers):
        raise click.BadParameter("--header takes KEY=VALUE")
    pairs = dict(header.split("=", 1) for header in headers)
    exporter = otlp_http_exporter(endpoint, pairs)
    click.echo(f"following {channel} on {hub}, exporting to {endpoint}", err=True)

    async def export(status: Callable[[str, str | None], None]) -> None:
        await follow_into(
            exporter,
            hub,
            channel,
            Cursor(cursor_file),
            since=since,
            token=token,
            service_name=service_name,
            on_status=status,
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(stay_connected(hub, connect_timeout, export))


# --- remote orchestration (docs/orchestration.md) ------------------------------------


def _call_hub(
    hub: str, token: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """One HTTP request to the hub's API; a clear error for anything but 2xx."""
    import aiohttp

    try:
        return asyncio.run(hub_request(hub, token, method, path, body))
    except HubError as exc:
        raise click.ClickException(str(exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        where = ", ".join(http_base(url) for url in hub_urls(hub))
        raise click.ClickException(f"cannot reach the hub at {where}: {exc}") from exc


def _the_pending(hub: str, token: str | None, task_id: str, kind: str) -> str:
    """The one open request of ``kind`` for a task (an error if none or several)."""
    pending = _call_hub(hub, token, "GET", f"/api/pending?taskId={task_id}")
    ids = [request["requestId"] for request in pending if request.get("kind") == kind]
    if len(ids) != 1:
        what = "approval request" if kind == "approval" else "question"
        found = ", ".join(ids) if ids else "none"
        raise click.ClickException(
            f"task {task_id} has {len(ids)} open {what}s ({found}); name the REQUEST_ID"
        )
    return str(ids[0])


def _send_command(
    hub: str,
    token: str | None,
    task_id: str,
    action: str,
    *,
    request_id: str | None = None,
    text: str | None = None,
    reason: str | None = None,
) -> None:
    body = command_fields(action, request_id, text, reason)
    ack = _call_hub(hub, token, "POST", f"/api/tasks/{task_id}/commands", body)
    click.echo(f"{action} sent to task {task_id} (seq {ack.get('seq')})")


_token_option = click.option("--token", envvar="TASKCAST_TOKEN", help="Needs the control claim.")


@main.command()
@click.argument("task_id")
@click.argument("request_id", required=False)
@_hub_option
@_token_option
def approve(task_id: str, request_id: str | None, hub: str, token: str | None) -> None:
    """Approve a task's pending tool call (the only one, when REQUEST_ID is not given)."""
    request_id = request_id or _the_pending(hub, token, task_id, "approval")
    _send_command(hub, token, task_id, "approve", request_id=request_id)


@main.command()
@click.argument("task_id")
@click.argument("request_id", required=False)
@click.option("--reason", help="Told to the model and recorded in the log.")
@_hub_option
@_token_option
def deny(
    task_id: str, request_id: str | None, reason: str | None, hub: str, token: str | None
) -> None:
    """Deny a task's pending tool call (the only one, when REQUEST_ID is not given)."""
    request_id = request_id or _the_pending(hub, token, task_id, "approval")
    _send_command(hub, token, task_id, "deny", request_id=request_id, reason=reason)


@main.command()
@click.argument("task_id")
@click.argument("text")
@click.option("--request-id", help="The question to answer (default: the only open one).")
@_hub_option
@_token_option
def reply(task_id: str, text: str, request_id: str | None, hub: str, token: str | None) -> None:
    """Answer a task's pending question."""
    request_id = request_id or _the_pending(hub, token, task_id, "question")
    _send_command(hub, token, task_id, "reply", request_id=request_id, text=text)


@main.command()
@click.argument("task_id")
@click.option("--reason", help="Recorded with task_aborted.")
@_hub_option
@_token_option
def abort(task_id: str, reason: str | None, hub: str, token: str | None) -> None:
    """Abort a running task (within a second, also mid-request or mid-command)."""
    _send_command(hub, token, task_id, "abort", reason=reason)


@main.command()
@click.argument("task_id")
@click.argument("text")
@_hub_option
@_token_option
def say(task_id: str, text: str, hub: str, token: str | None) -> None:
    """Steer a running task: TEXT joins its conversation before its next LLM request."""
    _send_command(hub, token, task_id, "message", text=text)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN")
def pending(as_json: bool, hub: str, token: str | None) -> None:
    """List open approval requests and questions across all tasks."""
    found = _call_hub(hub, token, "GET", "/api/pending")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("nothing is waiting for you")
        return
    console = Console(highlight=False)
    for request in found:
        what = request.get("summary") or request.get("question") or ""
        head = request.get("tool") or "question"
        console.print(
            printable(f"{request['taskId']}  {request['requestId']}  {head}: {what}"),
            markup=False,
        )


@main.group()
def webhook() -> None:
    """Register, list and remove webhooks (admin token when the hub has auth)."""


@webhook.command("add")
@click.argument("url")
@click.option("--channel", default="tasks.>", show_default=True, help="Channel pattern.")
@click.option("--type", "types", multiple=True, help="Only these event types (repeat).")
@click.option("--since", type=int, help="Deliver events after this seq (default: from now).")
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN", help="An admin token.")
def webhook_add(
    url: str, channel: str, types: tuple[str, ...], since: int | None, hub: str, token: str | None
) -> None:
    """Register URL; prints its id and signing secret (whsec_…, shown once)."""
    body: dict[str, Any] = {"url": url, "channel": channel, "types": list(types)}
    if since is not None:
        body["since"] = since
    created = _call_hub(hub, token, "POST", "/api/webhooks", body)
    click.echo(f"webhook {created['id']} → {created['url']} ({created['channel']})")
    click.echo(f"signing secret: {created['secret']}")


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True)
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN", help="An admin token.")
def webhook_list(as_json: bool, hub: str, token: str | None) -> None:
    """Each webhook with its state, cursor (last delivered seq), lag and last error."""
    found = _call_hub(hub, token, "GET", "/api/webhooks")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for hook in found:
        error = f"  last error: {hook['lastError']}" if hook.get("lastError") else ""
        click.echo(
            printable(
                f"{hook['id']}  {hook['state']:<7} cursor {hook['cursor']} lag {hook['lag']}  "
                f"{hook['url']} ({hook['channel']}){error}"
            )
        )
    if not found:
        click.echo("no webhooks")


@webhook.command("remove")
@click.argument("webhook_id")
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN", help="An admin token.")
def webhook_remove(webhook_id: str, hub: str, token: str | None) -> None:
    """Stop and forget a webhook (its events stay in the log)."""
    _call_hub(hub, token, "DELETE", f"/api/webhooks/{webhook_id}")
    click.echo(f"removed {webhook_id}")


@webhook.command("enable")
@click.argument("webhook_id")
@_hub_option
@click.option("--token", envvar="TASKCAST_TOKEN", help="An admin token.")
def webhook_enable(webhook_id: str, hub: str, token: str | None) -> None:
    """Re-enable a failed webhook: delivery resumes from its cursor."""
    hook = _call_hub(hub, token, "POST", f"/api/webhooks/{webhook_id}/enable")
    click.echo(f"{hook['id']} is {hook['state']} from seq {hook['cursor']}")
