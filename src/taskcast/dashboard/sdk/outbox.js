/**
 * The publisher's outbox: every event not yet acknowledged by the hub, in order.
 *
 * In memory by default; with ``{ file }`` (Node only) also a journal — append-only lines,
 * ``+<frame>`` when an event is added and ``-<json id>`` when it is acknowledged, each
 * written to the OS before ``sendMessage`` returns — so a process killed with -9 finds
 * its unacknowledged events on restart. The same format as the Python client's file
 * outbox: either can read the other's.
 */
import { nodeBuiltin } from "./node.js";
export class Outbox {
    maxEvents;
    policy;
    path;
    dropped = 0;
    events = new Map();
    fs = null;
    fd = null;
    journalLines = 0;
    constructor(maxEvents = 100_000, path = null, policy = "drop-oldest") {
        this.maxEvents = maxEvents;
        this.policy = policy;
        this.path = path;
        if (path !== null) {
            this.fs = nodeBuiltin("node:fs");
            if (this.fs === null)
                throw new TypeError("taskcast: a file outbox needs Node (≥ 20.16)");
            this.events = loadJournal(this.fs, path);
            this.rewriteJournal();
        }
    }
    get size() {
        return this.events.size;
    }
    has(id) {
        return this.events.has(id);
    }
    /** Keep ``frame`` until acknowledged; returns the id dropped to stay bounded (the new
     * one itself under ``drop-newest``), or null. */
    add(id, frame) {
        let dropped = null;
        if (!this.events.has(id) && this.events.size >= this.maxEvents) {
            if (this.policy === "drop-newest") {
                this.dropped += 1;
                return id;
            }
            dropped = this.events.keys().next().value;
            this.events.delete(dropped);
            this.dropped += 1;
        }
        this.events.set(id, frame);
        if (this.fd !== null && this.fs !== null) {
            const record = (dropped !== null ? `-${JSON.stringify(dropped)}\n` : "") + `+${frame}\n`;
            this.fs.writeSync(this.fd, record);
            this.journalLines += 1;
        }
        return dropped;
    }
    /** Forget acknowledged events; returns how many were waiting. */
    ack(ids) {
        const removed = ids.filter((id) => this.events.delete(id));
        if (this.fd !== null && this.fs !== null && removed.length > 0) {
            this.fs.writeSync(this.fd, removed.map((id) => `-${JSON.stringify(id)}\n`).join(""));
            this.journalLines += removed.length;
            if (this.journalLines > 10_000 && this.journalLines > 4 * this.events.size)
                this.rewriteJournal();
        }
        return removed.length;
    }
    frames() {
        return [...this.events.values()];
    }
    ids() {
        return [...this.events.keys()];
    }
    close() {
        if (this.fd !== null && this.fs !== null) {
            this.fs.closeSync(this.fd);
            this.fd = null;
        }
    }
    /** Compact the journal to the waiting events only (written whole, then renamed over). */
    rewriteJournal() {
        const fs = this.fs;
        const path = this.path;
        if (fs === null || path === null)
            return;
        if (this.fd !== null)
            fs.closeSync(this.fd);
        const pathModule = nodeBuiltin("node:path");
        if (pathModule !== null)
            fs.mkdirSync(pathModule.dirname(path), { recursive: true, mode: 0o700 });
        const temporary = `${path}.tmp`;
        const fd = fs.openSync(temporary, "w", 0o600);
        fs.writeSync(fd, [...this.events.values()].map((frame) => `+${frame}\n`).join(""));
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        fs.renameSync(temporary, path);
        this.fd = fs.openSync(path, "a", 0o600);
        this.journalLines = this.events.size;
    }
}
function loadJournal(fs, path) {
    const events = new Map();
    let text;
    try {
        text = fs.readFileSync(path, "utf8");
    }
    catch {
        return events;
    }
    const lines = text.split("\n");
    lines.pop(); // the part after the last newline: a write cut short, never sent whole
    for (const line of lines) {
        try {
            if (line.startsWith("+")) {
                const frame = line.slice(1);
                const id = JSON.parse(frame).id;
                if (typeof id === "string")
                    events.set(id, frame);
            }
            else if (line.startsWith("-")) {
                events.delete(JSON.parse(line.slice(1)));
            }
        }
        catch {
            // an unreadable line: skipped, as the Python outbox does
        }
    }
    return events;
}
