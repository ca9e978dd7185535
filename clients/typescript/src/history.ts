/**
 * A task's conversation history, rebuilt from its ``history_appended`` events (pure) —
 * the same folding as the Python ``taskcast/task/history.py``: messages by ``index``, a
 * large message in ``chunk``/``chunks`` parts of its JSON text, repeats ignored, a
 * missing index an error.
 */

export class HistoryGap extends Error {
  override readonly name = "HistoryGap";
}

export type HistoryMessage = Record<string, unknown>;

export class HistoryBuilder {
  readonly messages: HistoryMessage[] = [];
  lastSeq = 0;
  private parts = new Map<number, (string | null)[]>();

  /** Take one payload; returns the message it completed, if any. */
  add(payload: Record<string, unknown>, seq = 0): HistoryMessage | null {
    this.lastSeq = Math.max(this.lastSeq, seq);
    const index = payload.index;
    if (!Number.isInteger(index) || (index as number) < this.messages.length) return null;
    if ((index as number) > this.messages.length) {
      throw new HistoryGap(`message ${this.messages.length} is missing (got ${String(index)})`);
    }
    let message: unknown;
    if ("message" in payload) {
      message = payload.message;
    } else {
      const { chunks, chunk, data } = payload;
      if (!Number.isInteger(chunks) || !Number.isInteger(chunk) || typeof data !== "string") {
        throw new HistoryGap(`message ${String(index)}: a malformed chunk`);
      }
      let parts = this.parts.get(index as number);
      if (parts === undefined) {
        parts = new Array<string | null>(chunks as number).fill(null);
        this.parts.set(index as number, parts);
      }
      parts[chunk as number] = data;
      if (parts.some((part) => part === null)) return null;
      message = JSON.parse(parts.join(""));
      this.parts.delete(index as number);
    }
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      throw new HistoryGap(`message ${String(index)} is not an object`);
    }
    this.messages.push(message as HistoryMessage);
    return message as HistoryMessage;
  }
}

/** The history in a task's delivered events (seq order). */
export function rebuildHistory(
  events: Iterable<{ type: string; payload: unknown; seq?: number }>,
): HistoryBuilder {
  const builder = new HistoryBuilder();
  for (const event of events) {
    if (event.type === "history_appended" && event.payload !== null && typeof event.payload === "object") {
      builder.add(event.payload as Record<string, unknown>, event.seq ?? 0);
    }
  }
  return builder;
}
