/**
 * ``CommunicationService``: what an agent uses to publish its events to a taskcast hub —
 * a drop-in for the service ValorIDE's ``Task`` calls after every API response.
 *
 * ``sendMessage`` is synchronous, never throws and never returns a rejected promise: it
 * encodes the event, keeps it in the outbox and writes it if the socket is open. Every
 * event stays in the outbox until the hub acknowledges it (durably stored), and is sent
 * again, in order, after each reconnect; its 128-bit random id makes the hub store it
 * once however often it arrives. The service reconnects by itself (exponential backoff,
 * full jitter), moving through several hub URLs (the nodes of a cluster) in turn.
 */

import { DEFAULT_BACKOFF, type Backoff, HubRotation, backoffDelay } from "./backoff.js";
import { controlChannel, matches } from "./channels.js";
import { Emitter } from "./emitter.js";
import { type AckFrame, type OutgoingEvent, type TaskcastEvent, isEvent, readFrame } from "./frames.js";
import { randomId } from "./ids.js";
import { Outbox, type OutboxFullPolicy } from "./outbox.js";
import { LogMismatch, ResumePoint } from "./resume.js";
import { OPEN, type TokenSource, type WebSocketFactory, type WebSocketLike, currentToken, defaultWebSocket } from "./socket.js";
import { COMMAND_TYPE, type CommandAction, ErrorCode } from "./vocabulary.js";

export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "closed";

/** An error the service reports on its ``error`` event (it never throws them). */
export class TaskcastError extends Error {
  override readonly name = "TaskcastError";
  constructor(
    message: string,
    /** The hub's error code, or the client's own: ``bad_frame``, ``outbox_full``,
     * ``invalid_message``, ``log_mismatch``, ``connection``. */
    readonly code: string,
    /** The event the error is about, when there is one. */
    readonly eventId?: string,
  ) {
    super(message);
  }
}

export interface LogChange {
  pattern: string;
  logId: string | null;
  message: string;
}

export interface ServiceEvents {
  [name: string]: unknown;
  status: ConnectionStatus;
  ack: AckFrame;
  error: Error;
  /** Events of the channels the service follows (``follow``). */
  message: TaskcastEvent;
  /** A followed pattern met another log and is followed again from its beginning. */
  logChanged: LogChange;
}

export interface CommunicationServiceOptions {
  /** A bearer token for the hub. */
  token?: string;
  /** Called before every (re)connection for the current token (it may refresh one). */
  tokenProvider?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Who publishes (``source`` of every event); default a random ``senderId``. */
  source?: string;
  /** ``"memory"`` (the default), or ``{ file }`` in Node: a journal that survives kill -9. */
  outbox?: "memory" | { file: string };
  /** Events kept unacknowledged at most (default 100,000). */
  maxOutbox?: number;
  /** What a full outbox does with a new event (see ``OutboxFullPolicy``). */
  onOutboxFull?: OutboxFullPolicy;
  /** Connect at once (default true); else on ``connect()``. */
  connect?: boolean;
  /** Reconnect delays (default 100 ms doubling to 5 s, full jitter). */
  backoff?: Backoff;
  /** The WebSocket to use (default: ``ws`` in Node when installed, else the global one). */
  webSocket?: WebSocketFactory;
}

// Errors after which sending the same event again can never succeed.
const PERMANENT_ERRORS: ReadonlySet<string> = new Set([
  ErrorCode.BAD_JSON,
  ErrorCode.INVALID_FRAME,
  ErrorCode.INVALID_TYPE,
  ErrorCode.RESERVED_TYPE,
  ErrorCode.INVALID_PAYLOAD,
  ErrorCode.INVALID_EVENT,
  ErrorCode.INVALID_CHANNEL,
  ErrorCode.FORBIDDEN,
  ErrorCode.TOO_LARGE, // bigger than the log takes (a NATS stream's max_msg_size)
]);
// Errors after which the connection is dropped and everything unacknowledged sent again.
const RETRY_ERRORS: ReadonlySet<string> = new Set([
  ErrorCode.STORE_UNAVAILABLE,
  ErrorCode.SHUTTING_DOWN,
  ErrorCode.RATE_LIMITED,
]);
const HEARTBEAT_MS = 20_000; // a ping when quiet; nothing for two of these: reconnect

interface FlushWaiter {
  ids: Set<string>;
  resolve: (done: boolean) => void;
  timer: ReturnType<typeof setTimeout> | null;
}

export class CommunicationService extends Emitter<ServiceEvents> {
  /** Who this publisher is: the ``source`` of its events. */
  readonly senderId: string;
  private readonly hubs: HubRotation;
  private readonly token: TokenSource;
  private readonly outbox: Outbox;
  private readonly backoff: Backoff;
  private readonly factory: WebSocketFactory | null;
  private readonly follows = new Map<string, ResumePoint>();
  private readonly waiters = new Set<FlushWaiter>();
  private socket: WebSocketLike | null = null;
  private state: ConnectionStatus = "closed";
  private stopped = true; // disconnect() was called, or connect() never was
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private lastHeard = 0;
  private unsent: string[] = []; // sent since the last write pass (writeSoon)

  constructor(urls: string | readonly string[], options: CommunicationServiceOptions = {}) {
    super();
    this.hubs = new HubRotation(urls);
    this.senderId = options.source ?? `ts-${randomId().slice(-12)}`;
    this.token = options.tokenProvider ?? options.token ?? null;
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
    const file = typeof options.outbox === "object" ? options.outbox.file : null;
    this.outbox = new Outbox(options.maxOutbox ?? 100_000, file, options.onOutboxFull ?? "drop-oldest");
    this.factory = options.webSocket ?? null;
    if (!this.listenerCount("error")) this.on("error", () => {}); // errors never crash the caller
    if (options.connect !== false) this.connect();
  }

  /** True while the socket to a hub is open. */
  get ready(): boolean {
    return this.state === "open";
  }

  get status(): ConnectionStatus {
    return this.state;
  }

  /** The hub node used now, and all of them. */
  get url(): string {
    return this.hubs.current;
  }

  get urls(): readonly string[] {
    return this.hubs.urls;
  }

  /** Events not acknowledged by the hub yet. */
  get pending(): number {
    return this.outbox.size;
  }

  // --- publishing ---------------------------------------------------------------------

  /**
   * Queue an event and return its id at once: ``sendMessage(type, payload)`` as ValorIDE
   * calls it, or ``sendMessage({ type, payload, id?, channel? })``. Never throws; an
   * event that cannot be encoded is reported on ``error`` and gets the id "".
   */
  sendMessage(typeOrEvent: string | OutgoingEvent, payload?: unknown): string {
    try {
      const event: OutgoingEvent =
        typeof typeOrEvent === "string"
          ? { type: typeOrEvent, payload: (payload ?? {}) as Record<string, unknown> }
          : typeOrEvent;
      if (event === null || typeof event !== "object" || typeof event.type !== "string") {
        throw new TaskcastError("an event needs a string type", "invalid_message");
      }
      const id = typeof event.id === "string" && event.id ? event.id : randomId();
      const frame: Record<string, unknown> = { type: event.type, payload: event.payload ?? {}, id };
      if (event.channel !== undefined) frame.channel = event.channel;
      frame.source = event.source ?? this.senderId;
      const data = JSON.stringify(frame);
      const dropped = this.outbox.add(id, data);
      if (dropped !== null) {
        this.emit(
          "error",
          new TaskcastError(`outbox full (${this.outbox.maxEvents} events): dropped ${dropped}`, "outbox_full", dropped),
        );
        this.settle([dropped]);
        if (dropped === id) return id;
      }
      if (this.state === "open") this.writeSoon(data);
      return id;
    } catch (error) {
      const problem = error instanceof TaskcastError ? error : new TaskcastError(`cannot send this event: ${String(error)}`, "invalid_message");
      this.emit("error", problem);
      return "";
    }
  }

  /** A command to a running task (approve, deny, reply, abort, message) as a
   * ``task_command`` on ``control.<taskId>``; returns its id. On a hub with auth, the
   * token needs the ``control`` claim (else the ``error`` event says ``forbidden``). */
  command(
    taskId: string,
    action: CommandAction,
    fields: { requestId?: string; text?: string; reason?: string } = {},
  ): string {
    const payload: Record<string, unknown> = { taskId, action };
    for (const [key, value] of Object.entries(fields)) if (value) payload[key] = value;
    return this.sendMessage({ type: COMMAND_TYPE, payload, channel: controlChannel(taskId) });
  }

  /** Resolves true once every event sent so far is acknowledged, false after
   * ``timeoutMs`` (default: wait as long as it takes). Never rejects. */
  flush(timeoutMs?: number): Promise<boolean> {
    const ids = new Set(this.outbox.ids());
    if (ids.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: FlushWaiter = { ids, resolve, timer: null };
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          this.waiters.delete(waiter);
          resolve(false);
        }, timeoutMs);
      }
      this.waiters.add(waiter);
    });
  }

  // --- the connection -------------------------------------------------------------------

  /** Start connecting (and keep reconnecting) unless already doing so. Synchronous. */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    void this.open();
  }

  /** Close the connection and stop reconnecting; what is unacknowledged stays in the
   * outbox (and its file) for the next ``connect()``. Synchronous. */
  disconnect(): void {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopHeartbeat();
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) {
      socket.onclose = socket.onmessage = socket.onopen = null;
      // ``ws`` emits an error for a close before its handshake is done; with no
      // listener an EventEmitter throws it, out of reach of the caller: swallow it.
      socket.onerror = () => {};
      try {
        socket.close(1000);
      } catch {
        // already closing
      }
    }
    this.setStatus("closed");
  }

  /** Flush (up to ``timeoutMs``, default 5 s), then disconnect; resolves whether
   * everything was acknowledged. */
  async close(timeoutMs = 5000): Promise<boolean> {
    const flushed = await this.flush(timeoutMs);
    this.disconnect();
    this.outbox.close();
    return flushed;
  }

  // --- following channels -------------------------------------------------------------

  /** Subscribe this connection to ``pattern``: its events go to ``message`` listeners,
   * resumed without gaps or repeats across reconnects. ``since`` may be a seq or a
   * ``ResumePoint`` (seq and log id); on another log the follow starts from that log's
   * beginning (a ``logChanged`` event says so), or — ``strict`` — stops (``error``
   * with a ``LogMismatch``). */
  follow(pattern: string, since?: number | ResumePoint | null, options: { strict?: boolean } = {}): void {
    const point = since instanceof ResumePoint ? since : new ResumePoint(since ?? null);
    point.strict = point.strict || options.strict === true;
    this.follows.set(pattern, point);
    if (this.state === "open") this.write(point.request(pattern));
  }

  unfollow(pattern: string): void {
    if (this.follows.delete(pattern) && this.state === "open") {
      this.write(JSON.stringify({ type: "unsubscribe", channel: pattern }));
    }
  }

  /** Where the follow of ``pattern`` stands (a copy: save it, resume from it). */
  followPoint(pattern: string): ResumePoint | null {
    const point = this.follows.get(pattern);
    return point === undefined ? null : new ResumePoint(point.last, point.logId);
  }

  // --- inside ------------------------------------------------------------------------------

  private async open(): Promise<void> {
    if (this.stopped) return;
    this.setStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    let socket: WebSocketLike;
    try {
      const token = await currentToken(this.token);
      if (this.stopped) return;
      socket = (this.factory ?? defaultWebSocket())(this.hubs.current, token);
    } catch (error) {
      this.emit("error", error instanceof Error ? error : new TaskcastError(String(error), "connection"));
      this.retry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => this.opened(socket);
    socket.onmessage = (event) => this.received(socket, event.data);
    socket.onerror = () => {}; // a close always follows
    socket.onclose = () => this.closed(socket);
  }

  private opened(socket: WebSocketLike): void {
    if (socket !== this.socket) return;
    this.attempt = 0;
    this.lastHeard = Date.now();
    this.setStatus("open");
    this.unsent = []; // every one of them is in the outbox, written below
    for (const [pattern, point] of this.follows) this.write(point.request(pattern));
    for (const frame of this.outbox.frames()) this.write(frame); // everything unacknowledged, in order
    this.startHeartbeat(socket);
  }

  private closed(socket: WebSocketLike): void {
    if (socket !== this.socket) return;
    this.socket = null;
    this.stopHeartbeat();
    if (this.stopped) {
      this.setStatus("closed");
      return;
    }
    this.retry();
  }

  private retry(): void {
    if (this.stopped) return;
    this.setStatus("reconnecting");
    this.hubs.next(); // on to the next node (the same one when there is one)
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.open();
    }, delay);
  }

  /** Drop this connection; the close brings a reconnect and a resend. */
  private reconnect(socket: WebSocketLike): void {
    try {
      socket.close(4000, "reconnecting");
    } catch {
      this.closed(socket);
    }
  }

  /** Write after the caller's current step: a burst of events (api_action, llm_usage,
   * tool_executed) goes out together, and ``sendMessage`` itself never frames or masks. */
  private writeSoon(data: string): void {
    this.unsent.push(data);
    if (this.unsent.length === 1) queueMicrotask(() => this.writeUnsent());
  }

  private writeUnsent(): void {
    const frames = this.unsent;
    this.unsent = [];
    if (this.state !== "open") return; // in the outbox: all of it goes when a socket opens
    for (const frame of frames) this.write(frame);
  }

  private write(data: string): void {
    const socket = this.socket;
    if (socket === null || socket.readyState !== OPEN) return;
    try {
      socket.send(data);
    } catch {
      // the close that follows resends it
    }
  }

  private received(socket: WebSocketLike, data: unknown): void {
    this.lastHeard = Date.now();
    const frame = readFrame(data);
    if (frame === null) {
      this.emit("error", new TaskcastError("the hub sent a frame that is not a JSON object", "bad_frame"));
      return;
    }
    switch (frame.type) {
      case "ack":
        if (typeof frame.id === "string") {
          this.outbox.ack([frame.id]);
          this.emit("ack", frame as unknown as AckFrame);
          this.settle([frame.id]);
        }
        return;
      case "error":
        this.hubError(socket, frame);
        return;
      case "subscribed":
        this.followed(frame);
        return;
      case "pong":
        return;
    }
    if (!isEvent(frame)) return;
    let fresh = false;
    for (const [pattern, point] of this.follows) {
      if (matches(pattern, frame.channel) && point.accept(frame.seq)) fresh = true;
    }
    if (fresh) this.emit("message", frame);
  }

  private hubError(socket: WebSocketLike, frame: Record<string, unknown>): void {
    const code = String(frame.code ?? "unknown");
    const id = typeof frame.id === "string" ? frame.id : undefined;
    const error = new TaskcastError(`hub: ${code}: ${String(frame.message ?? "")}`, code, id);
    if (id !== undefined && PERMANENT_ERRORS.has(code) && this.outbox.has(id)) {
      this.outbox.ack([id]); // sending it again could never succeed
      this.settle([id]);
    } else if (RETRY_ERRORS.has(code)) {
      this.reconnect(socket); // and send everything unacknowledged again, in order
    }
    this.emit("error", error);
  }

  private followed(frame: Record<string, unknown>): void {
    const pattern = String(frame.channel);
    const point = this.follows.get(pattern);
    if (point === undefined) return;
    const verdict = point.subscribed(frame);
    if (verdict === "restart") {
      this.write(point.request(pattern));
      this.emit("logChanged", { pattern, logId: point.logId, message: point.problem ?? "" });
    } else if (verdict === "refuse") {
      this.follows.delete(pattern);
      this.write(JSON.stringify({ type: "unsubscribe", channel: pattern }));
      this.emit("error", new LogMismatch(point.problem ?? "log mismatch", point.logId, point.found));
    } else if (point.problem !== null) {
      this.emit("error", new TaskcastError(`following ${pattern}: ${point.problem}`, "log_mismatch"));
    }
  }

  /** ``ids`` left the outbox (acknowledged, or dropped): resolve the flush waiters that
   * waited for them last. */
  private settle(ids: readonly string[]): void {
    for (const waiter of this.waiters) {
      for (const id of ids) waiter.ids.delete(id);
      if (waiter.ids.size === 0) {
        this.waiters.delete(waiter);
        if (waiter.timer !== null) clearTimeout(waiter.timer);
        waiter.resolve(true);
      }
    }
  }

  private startHeartbeat(socket: WebSocketLike): void {
    this.stopHeartbeat();
    const timer = setInterval(() => {
      if (Date.now() - this.lastHeard > 2 * HEARTBEAT_MS) this.reconnect(socket);
      else this.write(JSON.stringify({ type: "ping" }));
    }, HEARTBEAT_MS);
    (timer as { unref?: () => void }).unref?.();
    this.heartbeat = timer;
  }

  private stopHeartbeat(): void {
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  private setStatus(status: ConnectionStatus): void {
    if (status === this.state) return;
    this.state = status;
    this.emit("status", status);
  }
}
