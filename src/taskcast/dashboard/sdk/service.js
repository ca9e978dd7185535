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
import { DEFAULT_BACKOFF, HubRotation, backoffDelay } from "./backoff.js";
import { controlChannel, matches } from "./channels.js";
import { Emitter } from "./emitter.js";
import { isEvent, readFrame } from "./frames.js";
import { randomId } from "./ids.js";
import { Outbox } from "./outbox.js";
import { LogMismatch, ResumePoint } from "./resume.js";
import { OPEN, currentToken, defaultWebSocket } from "./socket.js";
import { COMMAND_TYPE, ErrorCode } from "./vocabulary.js";
/** An error the service reports on its ``error`` event (it never throws them). */
export class TaskcastError extends Error {
    code;
    eventId;
    name = "TaskcastError";
    constructor(message, 
    /** The hub's error code, or the client's own: ``bad_frame``, ``outbox_full``,
     * ``invalid_message``, ``log_mismatch``, ``connection``. */
    code, 
    /** The event the error is about, when there is one. */
    eventId) {
        super(message);
        this.code = code;
        this.eventId = eventId;
    }
}
// Errors after which sending the same event again can never succeed.
const PERMANENT_ERRORS = new Set([
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
const RETRY_ERRORS = new Set([
    ErrorCode.STORE_UNAVAILABLE,
    ErrorCode.SHUTTING_DOWN,
    ErrorCode.RATE_LIMITED,
]);
const HEARTBEAT_MS = 20_000; // a ping when quiet; nothing for two of these: reconnect
export class CommunicationService extends Emitter {
    /** Who this publisher is: the ``source`` of its events. */
    senderId;
    hubs;
    token;
    outbox;
    backoff;
    factory;
    follows = new Map();
    waiters = new Set();
    socket = null;
    state = "closed";
    stopped = true; // disconnect() was called, or connect() never was
    attempt = 0;
    retryTimer = null;
    heartbeat = null;
    lastHeard = 0;
    unsent = []; // sent since the last write pass (writeSoon)
    constructor(urls, options = {}) {
        super();
        this.hubs = new HubRotation(urls);
        this.senderId = options.source ?? `ts-${randomId().slice(-12)}`;
        this.token = options.tokenProvider ?? options.token ?? null;
        this.backoff = options.backoff ?? DEFAULT_BACKOFF;
        const file = typeof options.outbox === "object" ? options.outbox.file : null;
        this.outbox = new Outbox(options.maxOutbox ?? 100_000, file, options.onOutboxFull ?? "drop-oldest");
        this.factory = options.webSocket ?? null;
        if (!this.listenerCount("error"))
            this.on("error", () => { }); // errors never crash the caller
        if (options.connect !== false)
            this.connect();
    }
    /** True while the socket to a hub is open. */
    get ready() {
        return this.state === "open";
    }
    get status() {
        return this.state;
    }
    /** The hub node used now, and all of them. */
    get url() {
        return this.hubs.current;
    }
    get urls() {
        return this.hubs.urls;
    }
    /** Events not acknowledged by the hub yet. */
    get pending() {
        return this.outbox.size;
    }
    // --- publishing ---------------------------------------------------------------------
    /**
     * Queue an event and return its id at once: ``sendMessage(type, payload)`` as ValorIDE
     * calls it, or ``sendMessage({ type, payload, id?, channel? })``. Never throws; an
     * event that cannot be encoded is reported on ``error`` and gets the id "".
     */
    sendMessage(typeOrEvent, payload) {
        try {
            const event = typeof typeOrEvent === "string"
                ? { type: typeOrEvent, payload: (payload ?? {}) }
                : typeOrEvent;
            if (event === null || typeof event !== "object" || typeof event.type !== "string") {
                throw new TaskcastError("an event needs a string type", "invalid_message");
            }
            const id = typeof event.id === "string" && event.id ? event.id : randomId();
            const frame = { type: event.type, payload: event.payload ?? {}, id };
            if (event.channel !== undefined)
                frame.channel = event.channel;
            frame.source = event.source ?? this.senderId;
            const data = JSON.stringify(frame);
            const dropped = this.outbox.add(id, data);
            if (dropped !== null) {
                this.emit("error", new TaskcastError(`outbox full (${this.outbox.maxEvents} events): dropped ${dropped}`, "outbox_full", dropped));
                this.settle([dropped]);
                if (dropped === id)
                    return id;
            }
            if (this.state === "open")
                this.writeSoon(data);
            return id;
        }
        catch (error) {
            const problem = error instanceof TaskcastError ? error : new TaskcastError(`cannot send this event: ${String(error)}`, "invalid_message");
            this.emit("error", problem);
            return "";
        }
    }
    /** A command to a running task (approve, deny, reply, abort, message) as a
     * ``task_command`` on ``control.<taskId>``; returns its id. On a hub with auth, the
     * token needs the ``control`` claim (else the ``error`` event says ``forbidden``). */
    command(taskId, action, fields = {}) {
        const payload = { taskId, action };
        for (const [key, value] of Object.entries(fields))
            if (value)
                payload[key] = value;
        return this.sendMessage({ type: COMMAND_TYPE, payload, channel: controlChannel(taskId) });
    }
    /** Resolves true once every event sent so far is acknowledged, false after
     * ``timeoutMs`` (default: wait as long as it takes). Never rejects. */
    flush(timeoutMs) {
        const ids = new Set(this.outbox.ids());
        if (ids.size === 0)
            return Promise.resolve(true);
        return new Promise((resolve) => {
            const waiter = { ids, resolve, timer: null };
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
    connect() {
        if (!this.stopped)
            return;
        this.stopped = false;
        this.attempt = 0;
        void this.open();
    }
    /** Close the connection and stop reconnecting; what is unacknowledged stays in the
     * outbox (and its file) for the next ``connect()``. Synchronous. */
    disconnect() {
        this.stopped = true;
        if (this.retryTimer !== null)
            clearTimeout(this.retryTimer);
        this.retryTimer = null;
        this.stopHeartbeat();
        const socket = this.socket;
        this.socket = null;
        if (socket !== null) {
            socket.onclose = socket.onmessage = socket.onopen = null;
            // ``ws`` emits an error for a close before its handshake is done; with no
            // listener an EventEmitter throws it, out of reach of the caller: swallow it.
            socket.onerror = () => { };
            try {
                socket.close(1000);
            }
            catch {
                // already closing
            }
        }
        this.setStatus("closed");
    }
    /** Flush (up to ``timeoutMs``, default 5 s), then disconnect; resolves whether
     * everything was acknowledged. */
    async close(timeoutMs = 5000) {
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
    follow(pattern, since, options = {}) {
        const point = since instanceof ResumePoint ? since : new ResumePoint(since ?? null);
        point.strict = point.strict || options.strict === true;
        this.follows.set(pattern, point);
        if (this.state === "open")
            this.write(point.request(pattern));
    }
    unfollow(pattern) {
        if (this.follows.delete(pattern) && this.state === "open") {
            this.write(JSON.stringify({ type: "unsubscribe", channel: pattern }));
        }
    }
    /** Where the follow of ``pattern`` stands (a copy: save it, resume from it). */
    followPoint(pattern) {
        const point = this.follows.get(pattern);
        return point === undefined ? null : new ResumePoint(point.last, point.logId);
    }
    // --- inside ------------------------------------------------------------------------------
    async open() {
        if (this.stopped)
            return;
        this.setStatus(this.attempt === 0 ? "connecting" : "reconnecting");
        let socket;
        try {
            const token = await currentToken(this.token);
            if (this.stopped)
                return;
            socket = (this.factory ?? defaultWebSocket())(this.hubs.current, token);
        }
        catch (error) {
            this.emit("error", error instanceof Error ? error : new TaskcastError(String(error), "connection"));
            this.retry();
            return;
        }
        this.socket = socket;
        socket.onopen = () => this.opened(socket);
        socket.onmessage = (event) => this.received(socket, event.data);
        socket.onerror = () => { }; // a close always follows
        socket.onclose = () => this.closed(socket);
    }
    opened(socket) {
        if (socket !== this.socket)
            return;
        this.attempt = 0;
        this.lastHeard = Date.now();
        this.setStatus("open");
        this.unsent = []; // every one of them is in the outbox, written below
        for (const [pattern, point] of this.follows)
            this.write(point.request(pattern));
        for (const frame of this.outbox.frames())
            this.write(frame); // everything unacknowledged, in order
        this.startHeartbeat(socket);
    }
    closed(socket) {
        if (socket !== this.socket)
            return;
        this.socket = null;
        this.stopHeartbeat();
        if (this.stopped) {
            this.setStatus("closed");
            return;
        }
        this.retry();
    }
    retry() {
        if (this.stopped)
            return;
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
    reconnect(socket) {
        try {
            socket.close(4000, "reconnecting");
        }
        catch {
            this.closed(socket);
        }
    }
    /** Write after the caller's current step: a burst of events (api_action, llm_usage,
     * tool_executed) goes out together, and ``sendMessage`` itself never frames or masks. */
    writeSoon(data) {
        this.unsent.push(data);
        if (this.unsent.length === 1)
            queueMicrotask(() => this.writeUnsent());
    }
    writeUnsent() {
        const frames = this.unsent;
        this.unsent = [];
        if (this.state !== "open")
            return; // in the outbox: all of it goes when a socket opens
        for (const frame of frames)
            this.write(frame);
    }
    write(data) {
        const socket = this.socket;
        if (socket === null || socket.readyState !== OPEN)
            return;
        try {
            socket.send(data);
        }
        catch {
            // the close that follows resends it
        }
    }
    received(socket, data) {
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
                    this.emit("ack", frame);
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
        if (!isEvent(frame))
            return;
        let fresh = false;
        for (const [pattern, point] of this.follows) {
            if (matches(pattern, frame.channel) && point.accept(frame.seq))
                fresh = true;
        }
        if (fresh)
            this.emit("message", frame);
    }
    hubError(socket, frame) {
        const code = String(frame.code ?? "unknown");
        const id = typeof frame.id === "string" ? frame.id : undefined;
        const error = new TaskcastError(`hub: ${code}: ${String(frame.message ?? "")}`, code, id);
        if (id !== undefined && PERMANENT_ERRORS.has(code) && this.outbox.has(id)) {
            this.outbox.ack([id]); // sending it again could never succeed
            this.settle([id]);
        }
        else if (RETRY_ERRORS.has(code)) {
            this.reconnect(socket); // and send everything unacknowledged again, in order
        }
        this.emit("error", error);
    }
    followed(frame) {
        const pattern = String(frame.channel);
        const point = this.follows.get(pattern);
        if (point === undefined)
            return;
        const verdict = point.subscribed(frame);
        if (verdict === "restart") {
            this.write(point.request(pattern));
            this.emit("logChanged", { pattern, logId: point.logId, message: point.problem ?? "" });
        }
        else if (verdict === "refuse") {
            this.follows.delete(pattern);
            this.write(JSON.stringify({ type: "unsubscribe", channel: pattern }));
            this.emit("error", new LogMismatch(point.problem ?? "log mismatch", point.logId, point.found));
        }
        else if (point.problem !== null) {
            this.emit("error", new TaskcastError(`following ${pattern}: ${point.problem}`, "log_mismatch"));
        }
    }
    /** ``ids`` left the outbox (acknowledged, or dropped): resolve the flush waiters that
     * waited for them last. */
    settle(ids) {
        for (const waiter of this.waiters) {
            for (const id of ids)
                waiter.ids.delete(id);
            if (waiter.ids.size === 0) {
                this.waiters.delete(waiter);
                if (waiter.timer !== null)
                    clearTimeout(waiter.timer);
                waiter.resolve(true);
            }
        }
    }
    startHeartbeat(socket) {
        this.stopHeartbeat();
        const timer = setInterval(() => {
            if (Date.now() - this.lastHeard > 2 * HEARTBEAT_MS)
                this.reconnect(socket);
            else
                this.write(JSON.stringify({ type: "ping" }));
        }, HEARTBEAT_MS);
        timer.unref?.();
        this.heartbeat = timer;
    }
    stopHeartbeat() {
        if (this.heartbeat !== null)
            clearInterval(this.heartbeat);
        this.heartbeat = null;
    }
    setStatus(status) {
        if (status === this.state)
            return;
        this.state = status;
        this.emit("status", status);
    }
}
