/**
 * Where a subscription stands, for resuming it (pure) — the same decisions as the
 * Python client's ``taskcast.client.resume``.
 *
 * A seq means something only in the log that numbered it, so a resume point is
 * ``(logId, seq)``. When the hub answers with another log's id (a fresh hub, a log file
 * replaced, another cluster's stream), or says the seq lies beyond its head (the log was
 * restored from an earlier copy), the point never resumes silently: by default it says
 * so (``problem``) and starts over — the new log's beginning, the head of a log that is
 * behind — and a strict one refuses (``LogMismatch``).
 */

export class LogMismatch extends Error {
  override readonly name = "LogMismatch";
  constructor(
    message: string,
    readonly expected: string | null,
    readonly found: string | null,
  ) {
    super(message);
  }
}

export type Resumption = "continue" | "restart" | "refuse";

/** What a resume point saves (``toJSON``) and is made from again (``ResumePoint.from``). */
export interface SavedPoint {
  logId: string | null;
  seq: number | null;
}

export class ResumePoint {
  /** The last seq seen (null: live only, not started yet). */
  last: number | null;
  /** The log ``last`` belongs to (null: not known yet). */
  logId: string | null;
  strict: boolean;
  /** What the last ``subscribed`` answer said was wrong, if anything. */
  problem: string | null = null;
  /** The log id the last ``subscribed`` named. */
  found: string | null = null;
  /** Subscribed again from a new log's beginning: what the old request still brings
   * until its answer is not of this point. */
  restarting = false;

  constructor(last: number | null = null, logId: string | null = null, strict = false) {
    this.last = last;
    this.logId = logId;
    this.strict = strict;
  }

  static from(saved: Partial<SavedPoint> | null | undefined, strict = false): ResumePoint {
    const seq = typeof saved?.seq === "number" ? saved.seq : null;
    const logId = typeof saved?.logId === "string" ? saved.logId : null;
    return new ResumePoint(seq, logId, strict);
  }

  toJSON(): SavedPoint {
    return { logId: this.logId, seq: this.last };
  }

  /** The subscribe frame that resumes right after what was seen. */
  request(pattern: string): string {
    const frame: Record<string, unknown> = { type: "subscribe", channel: pattern };
    if (this.last !== null) frame.since = this.last;
    return JSON.stringify(frame);
  }

  /** Take the hub's ``subscribed`` answer (see ``fit``). */
  subscribed(frame: Record<string, unknown>): Resumption {
    const found = typeof frame.logId === "string" && frame.logId ? frame.logId : null;
    const head = typeof frame.head === "number" ? frame.head : null;
    return this.fit(found, head, frame.ahead === true);
  }

  /** Fit the point to the log the hub serves: adopt its id and head (a live-only start),
   * and say whether to go on, start over, or refuse. */
  fit(found: string | null, head: number | null, ahead = false): Resumption {
    this.problem = null;
    this.restarting = false;
    this.found = found;
    if (this.logId !== null && found !== null && found !== this.logId) {
      this.problem = `the hub serves log ${found}, not log ${this.logId} that seq ${this.last} belongs to`;
      if (this.strict) return "refuse";
      this.problem += "; starting from the new log's beginning";
      this.last = 0;
      this.logId = found;
      this.restarting = true;
      return "restart";
    }
    if (found !== null) this.logId = found;
    if (ahead && head !== null) {
      this.problem = `log ${found} ends at seq ${head}, before seq ${this.last} seen on it (restored from an earlier copy?)`;
      if (this.strict) return "refuse";
      this.problem += `; going on from its head ${head}`;
      this.last = head;
      return "continue";
    }
    if (this.last === null && head !== null) this.last = head;
    return "continue";
  }

  /** True for an event not seen yet (and remember it); false for a repeat, or for what
   * still comes of a request made for another log. */
  accept(seq: number): boolean {
    if (this.restarting || (this.last !== null && seq <= this.last)) return false;
    this.last = seq;
    return true;
  }

  mismatch(): LogMismatch {
    return new LogMismatch(this.problem ?? "the resume point does not fit", this.logId, this.found);
  }
}
