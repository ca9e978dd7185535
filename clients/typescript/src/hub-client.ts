/**
 * ``HubClient``: the hub's HTTP API — act on tasks (approve, deny, reply, say, abort),
 * read them (pending requests, summaries, events, the rebuilt history). Given several
 * hub URLs (a cluster) it asks the next when one cannot be reached; an answer, even an
 * error, counts. Errors are typed: ``HubError`` carries the hub's error code.
 */

import { hubUrls, httpBase } from "./backoff.js";
import type { PendingRequest, TaskSummary, TaskcastEvent } from "./frames.js";
import { HistoryBuilder, type HistoryMessage } from "./history.js";
import { currentToken, type TokenSource } from "./socket.js";
import { type CommandAction, CommandAction as Actions, ErrorCode, RequestKind } from "./vocabulary.js";

/** The hub answered with an error (its status, and the error body's ``code``). */
export class HubError extends Error {
  override readonly name = "HubError";
  constructor(
    readonly status: number,
    readonly code: ErrorCode | "unknown",
    message: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(`hub answered ${status} (${code}): ${message}`);
  }

  get forbidden(): boolean {
    return this.code === ErrorCode.FORBIDDEN;
  }

  get unauthorized(): boolean {
    return this.code === ErrorCode.UNAUTHORIZED || this.status === 401;
  }
}

/** No hub URL answered (down, unreachable, refused the connection). */
export class HubUnreachable extends Error {
  override readonly name = "HubUnreachable";
}

/** ``approve``/``deny``/``reply`` without a request id, for a task that has not exactly
 * one open request of that kind. */
export class NoSingleRequest extends Error {
  override readonly name = "NoSingleRequest";
  constructor(
    readonly taskId: string,
    readonly requestIds: string[],
  ) {
    super(`task ${taskId} has ${requestIds.length} open requests of that kind (${requestIds.join(", ") || "none"}); name the requestId`);
  }
}

export interface CommandAck {
  id: string;
  seq: number;
  duplicate?: boolean;
}

export interface EventsQuery {
  channel?: string;
  since?: number;
  until?: number;
  type?: string;
  taskId?: string;
  limit?: number;
}

export interface EventsPage {
  events: TaskcastEvent[];
  /** ``since`` for the next page. */
  nextSince: number;
  /** The log these seqs belong to. */
  logId: string | null;
}

export interface HubClientOptions {
  token?: string;
  tokenProvider?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Per request (default 30 s). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));
const PAGE = 10_000;

export class HubClient {
  readonly urls: readonly string[];
  private readonly token: TokenSource;
  private readonly timeoutMs: number;
  private readonly fetcher: typeof fetch;

  constructor(urls: string | readonly string[], options: HubClientOptions = {}) {
    this.urls = hubUrls(urls).map(httpBase);
    this.token = options.tokenProvider ?? options.token ?? null;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  // --- acting on tasks ------------------------------------------------------------------

  async approve(taskId: string, requestId?: string, options: { reason?: string } = {}): Promise<CommandAck> {
    const id = requestId ?? (await this.theOpen(taskId, RequestKind.APPROVAL));
    return this.command(taskId, Actions.APPROVE, { requestId: id, reason: options.reason });
  }

  async deny(taskId: string, requestId?: string, options: { reason?: string } = {}): Promise<CommandAck> {
    const id = requestId ?? (await this.theOpen(taskId, RequestKind.APPROVAL));
    return this.command(taskId, Actions.DENY, { requestId: id, reason: options.reason });
  }

  async reply(taskId: string, text: string, options: { requestId?: string } = {}): Promise<CommandAck> {
    const id = options.requestId ?? (await this.theOpen(taskId, RequestKind.QUESTION));
    return this.command(taskId, Actions.REPLY, { requestId: id, text });
  }

  /** Steer: ``text`` joins the task's conversation before its next model request. */
  say(taskId: string, text: string): Promise<CommandAck> {
    return this.command(taskId, Actions.MESSAGE, { text });
  }

  abort(taskId: string, options: { reason?: string } = {}): Promise<CommandAck> {
    return this.command(taskId, Actions.ABORT, { reason: options.reason });
  }

  /** Any command (``POST /api/tasks/{taskId}/commands``); ``id`` makes it idempotent. */
  async command(
    taskId: string,
    action: CommandAction,
    fields: { requestId?: string; text?: string; reason?: string; id?: string } = {},
  ): Promise<CommandAck> {
    const body: Record<string, unknown> = { action };
    for (const [key, value] of Object.entries(fields)) if (value !== undefined && value !== "") body[key] = value;
    return (await this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/commands`, body)) as CommandAck;
  }

  /** Publish one event over HTTP; resolves with its ack once it is durable. */
  async publish(event: { type: string; payload: Record<string, unknown>; id?: string; channel?: string }): Promise<CommandAck> {
    return (await this.request("POST", "/api/events", event)) as CommandAck;
  }

  // --- reading ---------------------------------------------------------------------------

  /** Open approval requests and questions across the tasks this token may read. */
  async pending(options: { taskId?: string } = {}): Promise<PendingRequest[]> {
    const query = options.taskId ? `?taskId=${encodeURIComponent(options.taskId)}` : "";
    return (await this.request("GET", `/api/pending${query}`)) as PendingRequest[];
  }

  async tasks(options: { status?: string; limit?: number; before?: number } = {}): Promise<TaskSummary[]> {
    return (await this.request("GET", `/api/tasks${queryString(options)}`)) as TaskSummary[];
  }

  async task(taskId: string, options: { since?: number; limit?: number } = {}): Promise<{
    task: TaskSummary;
    events: TaskcastEvent[];
    nextSince: number;
    logId: string | null;
  }> {
    const answer = (await this.request("GET", `/api/tasks/${encodeURIComponent(taskId)}${queryString(options)}`)) as {
      task: TaskSummary;
      events: TaskcastEvent[];
      nextSince: number;
      logId?: string;
    };
    return { ...answer, logId: answer.logId ?? null };
  }

  /** One page of the audit query (``GET /api/events``). */
  async events(query: EventsQuery = {}): Promise<EventsPage> {
    const { body, headers } = await this.send("GET", `/api/events${queryString(query)}`);
    return {
      events: body as TaskcastEvent[],
      nextSince: Number(headers.get("X-Taskcast-Next-Since") ?? 0),
      logId: headers.get("X-Taskcast-Log-Id"),
    };
  }

  /** The task's conversation, rebuilt from its ``history_appended`` events. */
  async history(taskId: string): Promise<HistoryMessage[]> {
    const builder = new HistoryBuilder();
    let since = 0;
    for (;;) {
      const page = await this.events({ channel: `tasks.${taskId}`, type: "history_appended", since, limit: PAGE });
      for (const event of page.events) builder.add(event.payload, event.seq);
      if (page.events.length < PAGE) break;
      since = page.nextSince;
    }
    return builder.messages;
  }

  /** ``GET /healthz``: ``status`` and ``logId`` (details with an admin or metrics token). */
  async health(): Promise<{ status: string; logId?: string; head?: number; [field: string]: unknown }> {
    return (await this.request("GET", "/healthz")) as { status: string; logId?: string };
  }

  // --- inside ------------------------------------------------------------------------------

  private async theOpen(taskId: string, kind: RequestKind): Promise<string> {
    const ids = (await this.pending({ taskId })).filter((r) => r.kind === kind).map((r) => r.requestId);
    if (ids.length !== 1) throw new NoSingleRequest(taskId, ids);
    return ids[0] as string;
  }

  private async request(method: string, path: string, body?: unknown): Promise<unknown> {
    return (await this.send(method, path, body)).body;
  }

  private async send(method: string, path: string, body?: unknown): Promise<{ body: unknown; headers: Headers }> {
    const token = await currentToken(this.token);
    const headers: Record<string, string> = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let lastError: unknown = null;
    for (const base of this.urls) {
      let reply: Response;
      try {
        reply = await this.fetcher(base + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (error) {
        lastError = error;
        continue; // the next node
      }
      const text = await reply.text();
      let parsed: unknown = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
      if (!reply.ok) {
        const errorBody = parsed !== null && typeof parsed === "object" ? (parsed as Record<string, unknown>) : {};
        const code = typeof errorBody.code === "string" && KNOWN_CODES.has(errorBody.code) ? (errorBody.code as ErrorCode) : "unknown";
        const message = typeof errorBody.message === "string" ? errorBody.message : reply.statusText;
        throw new HubError(reply.status, code, message, errorBody);
      }
      return { body: parsed, headers: reply.headers };
    }
    throw new HubUnreachable(`cannot reach the hub at ${this.urls.join(", ")}: ${String(lastError)}`);
  }
}

function queryString(query: object): string {
  const pairs = Object.entries(query).filter(([, value]) => value !== undefined && value !== "");
  if (pairs.length === 0) return "";
  return "?" + pairs.map(([key, value]) => `${key}=${encodeURIComponent(String(value))}`).join("&");
}

