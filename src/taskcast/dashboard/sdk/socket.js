/**
 * Which WebSocket to use: in Node, the ``ws`` package when it is installed (it sends the
 * token as an ``Authorization`` header and can pause reading); else the platform's
 * global ``WebSocket`` (browsers, Node ≥ 22), which cannot set headers — the token then
 * goes as the ``token`` query parameter, which the hub accepts too.
 */
import { inNode, nodeBuiltin } from "./node.js";
export const OPEN = 1;
let cached = null;
export function defaultWebSocket() {
    if (cached !== null)
        return cached;
    const ws = inNode() ? loadWs() : null;
    if (ws !== null) {
        cached = (url, token) => new ws(url, [], token ? { headers: { Authorization: `Bearer ${token}` } } : {});
        return cached;
    }
    const Native = globalThis.WebSocket;
    if (typeof Native !== "function") {
        throw new TypeError("taskcast: no WebSocket here — on Node 20, install the ws package (npm install ws)");
    }
    cached = (url, token) => new Native(token ? withToken(url, token) : url);
    return cached;
}
function loadWs() {
    const module = nodeBuiltin("node:module");
    if (module === null)
        return null;
    try {
        const require = module.createRequire(import.meta.url);
        const loaded = require("ws");
        return "WebSocket" in loaded ? loaded.WebSocket : loaded;
    }
    catch {
        return null;
    }
}
export function withToken(url, token) {
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}
export async function currentToken(token) {
    const value = typeof token === "function" ? await token() : token;
    return value || null;
}
