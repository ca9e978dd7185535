/**
 * A task's conversation history, rebuilt from its ``history_appended`` events (pure) —
 * the same folding as the Python ``taskcast/task/history.py``: messages by ``index``, a
 * large message in ``chunk``/``chunks`` parts of its JSON text, repeats ignored, a
 * missing index an error.
 */
export class HistoryGap extends Error {
    name = "HistoryGap";
}
export class HistoryBuilder {
    messages = [];
    lastSeq = 0;
    parts = new Map();
    /** Take one payload; returns the message it completed, if any. */
    add(payload, seq = 0) {
        this.lastSeq = Math.max(this.lastSeq, seq);
        const index = payload.index;
        if (!Number.isInteger(index) || index < this.messages.length)
            return null;
        if (index > this.messages.length) {
            throw new HistoryGap(`message ${this.messages.length} is missing (got ${String(index)})`);
        }
        let message;
        if ("message" in payload) {
            message = payload.message;
        }
        else {
            const { chunks, chunk, data } = payload;
            if (!Number.isInteger(chunks) || !Number.isInteger(chunk) || typeof data !== "string") {
                throw new HistoryGap(`message ${String(index)}: a malformed chunk`);
            }
            let parts = this.parts.get(index);
            if (parts === undefined) {
                parts = new Array(chunks).fill(null);
                this.parts.set(index, parts);
            }
            parts[chunk] = data;
            if (parts.some((part) => part === null))
                return null;
            message = JSON.parse(parts.join(""));
            this.parts.delete(index);
        }
        if (message === null || typeof message !== "object" || Array.isArray(message)) {
            throw new HistoryGap(`message ${String(index)} is not an object`);
        }
        this.messages.push(message);
        return message;
    }
}
/** The history in a task's delivered events (seq order). */
export function rebuildHistory(events) {
    const builder = new HistoryBuilder();
    for (const event of events) {
        if (event.type === "history_appended" && event.payload !== null && typeof event.payload === "object") {
            builder.add(event.payload, event.seq ?? 0);
        }
    }
    return builder;
}
