/** Reconnect delays (pure): exponential backoff with full jitter, so a hub restart is
 * not met by every client at the same instant. */

export interface Backoff {
  /** Milliseconds of the first retry's ceiling. */
  baseMs: number;
  /** The ceiling never grows past this. */
  capMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 100, capMs: 5000 };

/** The delay before retry number ``attempt`` (0 = the first): uniform in
 * [base/2, min(cap, base·2^attempt)]. ``random`` is injectable for tests. */
export function backoffDelay(
  attempt: number,
  backoff: Backoff = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.min(attempt, 30));
  const floor = Math.min(backoff.baseMs / 2, ceiling);
  return floor + random() * (ceiling - floor);
}

/** The hub nodes a client may use (a cluster), tried in turn after each failure. */
export class HubRotation {
  readonly urls: readonly string[];
  private index = 0;

  constructor(urls: string | readonly string[]) {
    this.urls = hubUrls(urls);
  }

  get current(): string {
    return this.urls[this.index] as string;
  }

  next(): string {
    this.index = (this.index + 1) % this.urls.length;
    return this.current;
  }
}

/** Every URL named, in order (a comma-separated string counts as several). */
export function hubUrls(urls: string | readonly string[]): string[] {
  const names = typeof urls === "string" ? [urls] : [...urls];
  const found = names.flatMap((name) => name.split(",")).map((u) => u.trim()).filter(Boolean);
  if (found.length === 0) throw new TypeError("taskcast: no hub URL given");
  return found;
}

/** ``ws://host:port/ws`` → ``http://host:port`` (``wss`` → ``https``); an HTTP URL stays. */
export function httpBase(url: string): string {
  let base = url.replace(/\/+$/, "");
  if (base.endsWith("/ws")) base = base.slice(0, -3);
  if (base.startsWith("ws")) base = "http" + base.slice(2);
  return base;
}

/** ``http://host:port`` → ``ws://host:port/ws``; a websocket URL stays. */
export function wsUrl(url: string): string {
  if (url.startsWith("ws")) return url;
  return url.replace(/^http/, "ws").replace(/\/+$/, "") + "/ws";
}
