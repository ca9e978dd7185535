/**
 * ``subscribe``: every event of a channel pattern, as an async iterator, in seq order.
 *
 * After any disconnect — a network drop, a hub restart, a slow-consumer close (4008) —
 * it reconnects with backoff (moving through several hub URLs in turn) and subscribes
 * again from the last seq it yielded; it drops any seq it already yielded, so the caller
 * sees each event once, in order. It honours the log identity the hub reports (see
 * ``ResumePoint``). It ends when ``signal`` aborts (or the loop breaks), and throws only a
 * ``LogMismatch`` of a ``strict`` subscription.
 */
import { DEFAULT_BACKOFF, HubRotation, backoffDelay } from "./backoff.js";
import { isEvent, readFrame } from "./frames.js";
import { ResumePoint } from "./resume.js";
import { currentToken, defaultWebSocket } from "./socket.js";
// Reading stops (``ws``: paused) while this many events wait for the caller.
const HIGH_WATER = 10_000;
const LOW_WATER = 1_000;
export async function* subscribe(urls, pattern, options = {}) {
    const point = options.since instanceof ResumePoint ? options.since : new ResumePoint(options.since ?? null);
    point.strict = point.strict || options.strict === true;
    const hubs = new HubRotation(urls);
    const token = options.tokenProvider ?? options.token ?? null;
    const factory = options.webSocket ?? null;
    const backoff = options.backoff ?? DEFAULT_BACKOFF;
    const signal = options.signal;
    const queue = [];
    let failure = null;
    let wake = null;
    let socket = null;
    let paused = false;
    let attempt = 0;
    let retryTimer = null;
    let ended = false;
    let wantsBacklog = point.last === null && (options.backlog ?? 0) > 0;
    const status = (state, detail) => {
        try {
            options.onStatus?.(state, detail);
        }
        catch {
            // the caller's callback must not break the subscription
        }
    };
    const poke = () => {
        const resume = wake;
        wake = null;
        resume?.();
    };
    const connect = async () => {
        if (ended)
            return;
        status(attempt === 0 ? "connecting" : "reconnecting");
        let ws;
        try {
            ws = (factory ?? defaultWebSocket())(hubs.current, await currentToken(token));
        }
        catch (error) {
            status("reconnecting", String(error));
            retry();
            return;
        }
        if (ended) {
            ws.onerror = () => { }; // ws emits an error for a close before its handshake: not thrown
            ws.close(1000);
            return;
        }
        socket = ws;
        ws.onopen = () => ws.send(point.request(pattern));
        ws.onmessage = (event) => {
            const frame = readFrame(event.data);
            if (frame === null)
                return;
            if (frame.type === "subscribed" && frame.channel === pattern) {
                attempt = 0;
                if (wantsBacklog && typeof frame.head === "number") {
                    // Now that the head is known: the backlog before it, then live.
                    wantsBacklog = false;
                    point.fit(typeof frame.logId === "string" ? frame.logId : null, null);
                    point.last = Math.max(0, frame.head - (options.backlog ?? 0));
                    point.restarting = true;
                    ws.send(point.request(pattern));
                    return;
                }
                const verdict = point.subscribed(frame);
                if (verdict === "refuse") {
                    failure = point.mismatch();
                    ws.close(1000);
                    poke();
                    return;
                }
                if (verdict === "restart") {
                    ws.send(point.request(pattern));
                }
                else {
                    try {
                        options.onSubscribed?.(frame);
                    }
                    catch {
                        // the caller's callback must not break the subscription
                    }
                }
                status("subscribed", point.problem ?? undefined);
                return;
            }
            if (!isEvent(frame) || !point.accept(frame.seq))
                return;
            queue.push(frame);
            if (queue.length >= HIGH_WATER && ws.pause !== undefined && !paused) {
                paused = true;
                ws.pause();
            }
            poke();
        };
        ws.onerror = () => { };
        ws.onclose = (event) => {
            if (ws !== socket)
                return;
            socket = null;
            paused = false;
            if (ended)
                return;
            status("reconnecting", event.code ? `closed ${event.code}` : "connection lost");
            retry();
        };
    };
    const retry = () => {
        if (ended || failure !== null)
            return;
        hubs.next();
        const delay = backoffDelay(attempt, backoff);
        attempt += 1;
        retryTimer = setTimeout(() => {
            retryTimer = null;
            void connect();
        }, delay);
    };
    const abort = () => poke();
    signal?.addEventListener("abort", abort);
    try {
        void connect();
        while (true) {
            if (signal?.aborted)
                return;
            const next = queue.shift();
            if (next !== undefined) {
                const reading = socket; // (set by the callbacks above)
                if (paused && queue.length <= LOW_WATER && reading?.resume !== undefined) {
                    paused = false;
                    reading.resume();
                }
                yield next;
                continue;
            }
            if (failure !== null)
                throw failure;
            await new Promise((resolve) => {
                wake = resolve;
            });
        }
    }
    finally {
        ended = true;
        signal?.removeEventListener("abort", abort);
        if (retryTimer !== null)
            clearTimeout(retryTimer);
        const open = socket;
        socket = null;
        if (open !== null) {
            open.onclose = open.onmessage = null;
            try {
                open.close(1000);
            }
            catch {
                // already closed
            }
        }
        status("closed");
    }
}
