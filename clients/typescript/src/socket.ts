/**
 * Which WebSocket to use: in Node, the ``ws`` package when it is installed (it sends the
 * token as an ``Authorization`` header and can pause reading); else the platform's
 * global ``WebSocket`` (browsers, Node ≥ 22), which cannot set headers — the token then
 * goes as the ``token`` query parameter, which the hub accepts too.
 */

import { inNode, nodeBuiltin } from "./node.js";

/** The part of the WebSocket API this client uses (browser, Node 22, and ``ws`` alike). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  /** ``ws`` only: stop and start reading (back-pressure for a slow consumer). */
  pause?: () => void;
  resume?: () => void;
}

/** Open a websocket to ``url``, authenticated with ``token`` when given. */
export type WebSocketFactory = (url: string, token: string | null) => WebSocketLike;

export const OPEN = 1;

type WsConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: { headers?: Record<string, string>; maxPayload?: number },
) => WebSocketLike;

let cached: WebSocketFactory | null = null;

export function defaultWebSocket(): WebSocketFactory {
  if (cached !== null) return cached;
  const ws = inNode() ? loadWs() : null;
  if (ws !== null) {
    cached = (url, token) =>
      new ws(url, [], token ? { headers: { Authorization: `Bearer ${token}` } } : {});
    return cached;
  }
  const Native = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (typeof Native !== "function") {
    throw new TypeError(
      "taskcast: no WebSocket here — on Node 20, install the ws package (npm install ws)",
    );
  }
  cached = (url, token) => new Native(token ? withToken(url, token) : url);
  return cached;
}

function loadWs(): WsConstructor | null {
  const module = nodeBuiltin<typeof import("node:module")>("node:module");
  if (module === null) return null;
  try {
    const require = module.createRequire(import.meta.url);
    const loaded = require("ws") as WsConstructor | { WebSocket: WsConstructor };
    return "WebSocket" in loaded ? loaded.WebSocket : loaded;
  } catch {
    return null;
  }
}

export function withToken(url: string, token: string): string {
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

/** A bearer token, or a function giving the current one — called before every
 * (re)connection, so a hub that closes a connection at the token's expiry (4401) is met
 * with a fresh one. */
export type TokenSource = string | null | undefined | (() => string | null | undefined | Promise<string | null | undefined>);

export async function currentToken(token: TokenSource): Promise<string | null> {
  const value = typeof token === "function" ? await token() : token;
  return value || null;
}
