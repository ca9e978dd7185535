/**
 * ``HubClient``: the hub's HTTP API — act on tasks (approve, deny, reply, say, abort),
 * read them (pending requests, summaries, events, the rebuilt history). Given several
 * hub URLs (a cluster) it asks the next when one cannot be reached; an answer, even an
 * error, counts. Errors are typed: ``HubError`` carries the hub's error code.
 */
import { hubUrls, httpBase } from "./backoff.js";
import { HistoryBuilder } from "./history.js";
import { currentToken } from "./socket.js";
import { CommandAction as Actions, ErrorCode, RequestKind } from "./vocabulary.js";
/** The hub answered with an error (its status, and the error body's ``code``). */
export class HubError extends Error {
    status;
    code;
    body;
    name = "HubError";
    constructor(status, code, message, body = {}) {
        super(`hub answered ${status} (${code}): ${message}`);
        this.status = status;
        this.code = code;
        this.body = body;
    }
    get forbidden() {
        return this.code === ErrorCode.FORBIDDEN;
    }
    get unauthorized() {
        return this.code === ErrorCode.UNAUTHORIZED || this.status === 401;
    }
}
/** No hub URL answered (down, unreachable, refused the connection). */
export class HubUnreachable extends Error {
    name = "HubUnreachable";
}
/** ``approve``/``deny``/``reply`` without a request id, for a task that has not exactly
 * one open request of that kind. */
export class NoSingleRequest extends Error {
    taskId;
    requestIds;
    name = "NoSingleRequest";
    constructor(taskId, requestIds) {
        super(`task ${taskId} has ${requestIds.length} open requests of that kind (${requestIds.join(", ") || "none"}); name the requestId`);
        this.taskId = taskId;
        this.requestIds = requestIds;
    }
}
const KNOWN_CODES = new Set(Object.values(ErrorCode));
const PAGE = 10_000;
export class HubClient {
    urls;
    token;
    timeoutMs;
    fetcher;
    constructor(urls, options = {}) {
        this.urls = hubUrls(urls).map(httpBase);
        this.token = options.tokenProvider ?? options.token ?? null;
        this.timeoutMs = options.timeoutMs ?? 30_000;
        this.fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
    }
    // --- acting on tasks ------------------------------------------------------------------
    async approve(taskId, requestId, options = {}) {
        const id = requestId ?? (await this.theOpen(taskId, RequestKind.APPROVAL));
        return this.command(taskId, Actions.APPROVE, { requestId: id, reason: options.reason });
    }
    async deny(taskId, requestId, options = {}) {
        const id = requestId ?? (await this.theOpen(taskId, RequestKind.APPROVAL));
        return this.command(taskId, Actions.DENY, { requestId: id, reason: options.reason });
    }
    async reply(taskId, text, options = {}) {
        const id = options.requestId ?? (await this.theOpen(taskId, RequestKind.QUESTION));
        return this.command(taskId, Actions.REPLY, { requestId: id, text });
    }
    /** Steer: ``text`` joins the task's conversation before its next model request. */
    say(taskId, text) {
        return this.command(taskId, Actions.MESSAGE, { text });
    }
    abort(taskId, options = {}) {
        return this.command(taskId, Actions.ABORT, { reason: options.reason });
    }
    /** Any command (``POST /api/tasks/{taskId}/commands``); ``id`` makes it idempotent. */
    async command(taskId, action, fields = {}) {
        const body = { action };
        for (const [key, value] of Object.entries(fields))
            if (value !== undefined && value !== "")
                body[key] = value;
        return (await this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/commands`, body));
    }
    /** Publish one event over HTTP; resolves with its ack once it is durable. */
    async publish(event) {
        return (await this.request("POST", "/api/events", event));
    }
    // --- reading ---------------------------------------------------------------------------
    /** Open approval requests and questions across the tasks this token may read. */
    async pending(options = {}) {
        const query = options.taskId ? `?taskId=${encodeURIComponent(options.taskId)}` : "";
        return (await this.request("GET", `/api/pending${query}`));
    }
    async tasks(options = {}) {
        return (await this.request("GET", `/api/tasks${queryString(options)}`));
    }
    async task(taskId, options = {}) {
        const answer = (await this.request("GET", `/api/tasks/${encodeURIComponent(taskId)}${queryString(options)}`));
        return { ...answer, logId: answer.logId ?? null };
    }
    /** One page of the audit query (``GET /api/events``). */
    async events(query = {}) {
        const { body, headers } = await this.send("GET", `/api/events${queryString(query)}`);
        return {
            events: body,
            nextSince: Number(headers.get("X-Taskcast-Next-Since") ?? 0),
            logId: headers.get("X-Taskcast-Log-Id"),
        };
    }
    /** The task's conversation, rebuilt from its ``history_appended`` events. */
    async history(taskId) {
        const builder = new HistoryBuilder();
        let since = 0;
        for (;;) {
            const page = await this.events({ channel: `tasks.${taskId}`, type: "history_appended", since, limit: PAGE });
            for (const event of page.events)
                builder.add(event.payload, event.seq);
            if (page.events.length < PAGE)
                break;
            since = page.nextSince;
        }
        return builder.messages;
    }
    /** ``GET /healthz``: ``status`` and ``logId`` (details with an admin or metrics token). */
    async health() {
        return (await this.request("GET", "/healthz"));
    }
    // --- inside ------------------------------------------------------------------------------
    async theOpen(taskId, kind) {
        const ids = (await this.pending({ taskId })).filter((r) => r.kind === kind).map((r) => r.requestId);
        if (ids.length !== 1)
            throw new NoSingleRequest(taskId, ids);
        return ids[0];
    }
    async request(method, path, body) {
        return (await this.send(method, path, body)).body;
    }
    async send(method, path, body) {
        const token = await currentToken(this.token);
        const headers = {};
        if (token)
            headers.Authorization = `Bearer ${token}`;
        if (body !== undefined)
            headers["Content-Type"] = "application/json";
        let lastError = null;
        for (const base of this.urls) {
            let reply;
            try {
                reply = await this.fetcher(base + path, {
                    method,
                    headers,
                    body: body === undefined ? undefined : JSON.stringify(body),
                    signal: AbortSignal.timeout(this.timeoutMs),
                });
            }
            catch (error) {
                lastError = error;
                continue; // the next node
            }
            const text = await reply.text();
            let parsed = null;
            try {
                parsed = text ? JSON.parse(text) : null;
            }
            catch {
                parsed = text;
            }
            if (!reply.ok) {
                const errorBody = parsed !== null && typeof parsed === "object" ? parsed : {};
                const code = typeof errorBody.code === "string" && KNOWN_CODES.has(errorBody.code) ? errorBody.code : "unknown";
                const message = typeof errorBody.message === "string" ? errorBody.message : reply.statusText;
                throw new HubError(reply.status, code, message, errorBody);
            }
            return { body: parsed, headers: reply.headers };
        }
        throw new HubUnreachable(`cannot reach the hub at ${this.urls.join(", ")}: ${String(lastError)}`);
    }
}
function queryString(query) {
    const pairs = Object.entries(query).filter(([, value]) => value !== undefined && value !== "");
    if (pairs.length === 0)
        return "";
    return "?" + pairs.map(([key, value]) => `${key}=${encodeURIComponent(String(value))}`).join("&");
}
