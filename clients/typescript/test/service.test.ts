// CommunicationService against real hub processes: seed-exact api_action, exactly once
// across a hub's kill -9, queued while the hub is away, tokens refreshed, hostile hubs.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocketServer } from "ws";

import { CommunicationService, type ConnectionStatus, HubClient, HubError, TaskcastError } from "../src/index.js";
import { Hub, RawSubscriber, SECRET, freePort, readLog, silentServer, sleep, token, waitFor } from "./helpers.js";

const hubs: Hub[] = [];
const services: CommunicationService[] = [];
after(async () => {
  for (const service of services) service.disconnect();
  for (const hub of hubs) await hub.stop();
});

async function hub(options: ConstructorParameters<typeof Hub>[0] = {}): Promise<Hub> {
  const started = await Hub.start(options);
  hubs.push(started);
  return started;
}

function service(...args: ConstructorParameters<typeof CommunicationService>): CommunicationService {
  const made = new CommunicationService(...args);
  services.push(made);
  return made;
}

test("sendMessage(type, payload) delivers the seed frame exactly as sent", async () => {
  const server = await hub();
  const listener = await RawSubscriber.open(server, "tasks.>");
  const statuses: ConnectionStatus[] = [];
  const svc = service(server.url, { connect: false }); // as ValorIDE does: then connect()
  assert.equal(svc.status, "closed");
  svc.on("status", (status) => statuses.push(status));
  svc.connect();
  const payload = { taskId: "seed-1", message: "I read the file.", timestamp: Date.now() };
  const id = svc.sendMessage("api_action", payload);
  assert.match(id, /^[0-9a-f]{44}$/);
  const other = svc.sendMessage({ type: "note", payload: { n: 1 }, id: "my-own-id", channel: "events.custom" });
  assert.equal(other, "my-own-id");
  assert.equal(await svc.flush(10_000), true);
  await waitFor(() => listener.events.length === 1, 10_000, "the delivery");
  const [delivered] = listener.events;
  assert.equal(delivered!.type, "api_action");
  assert.deepEqual(delivered!.payload, payload); // the three keys, untouched
  assert.equal(delivered!.channel, "tasks.seed-1");
  assert.equal(delivered!.id, id);
  assert.equal(delivered!.source, svc.senderId);
  const log = await readLog(server);
  assert.deepEqual(log.map((e) => e.id), [id, "my-own-id"]);
  assert.equal(log[1]!.channel, "events.custom");
  assert.ok(svc.ready);
  assert.equal(await svc.close(), true);
  assert.equal(svc.ready, false);
  assert.deepEqual(statuses, ["connecting", "open", "closed"]);
  listener.close();
});

test("sendMessage never throws and never rejects, whatever it is given", async () => {
  const server = await hub();
  const svc = service(server.url);
  const errors: Error[] = [];
  svc.on("error", (error) => errors.push(error));
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  assert.equal(svc.sendMessage("api_action", circular), "");
  assert.equal(svc.sendMessage(undefined as unknown as string), "");
  assert.equal(svc.sendMessage({ type: 7 } as unknown as { type: string; payload: {} }), "");
  // A bad event the hub refuses is dropped from the outbox (it can never succeed).
  const refused = svc.sendMessage("api_action", { taskId: "t", message: 5, timestamp: "soon" });
  assert.equal(await svc.flush(10_000), true);
  await waitFor(() => errors.some((e) => e instanceof TaskcastError && e.code === "invalid_event" && e.eventId === refused));
  assert.ok(errors.filter((e) => e instanceof TaskcastError && e.code === "invalid_message").length >= 3);
  assert.equal(svc.pending, 0);
  assert.equal((await readLog(server)).length, 0);
});

test("events queue while no hub answers and arrive once it does", async () => {
  const port = await freePort();
  const svc = service(`ws://127.0.0.1:${port}/ws`, { backoff: { baseMs: 50, capMs: 200 } });
  for (let i = 0; i < 20; i++) svc.sendMessage("api_action", { taskId: "late", message: `m${i}`, timestamp: Date.now() });
  assert.equal(svc.ready, false);
  assert.equal(await svc.flush(300), false); // nobody to acknowledge yet
  assert.equal(svc.pending, 20);
  const server = await hub({ port });
  assert.equal(await svc.flush(20_000), true);
  const log = await readLog(server);
  assert.deepEqual(log.map((e) => e.payload.message), Array.from({ length: 20 }, (_, i) => `m${i}`));
});

test("every event is stored exactly once, in order, across a kill -9 of the hub", async () => {
  const server = await hub();
  const svc = service(server.url, { backoff: { baseMs: 50, capMs: 300 } });
  const sent: string[] = [];
  for (let i = 0; i < 600; i++) {
    sent.push(svc.sendMessage("api_action", { taskId: "crash", message: `m${i}`, timestamp: Date.now() }));
    if (i === 200) {
      await server.kill9();
      for (let j = 0; j < 5; j++) await sleep(5); // still sending while it is down
    }
    if (i === 400) await server.restart();
    if (i % 50 === 0) await sleep(1);
  }
  assert.equal(await svc.flush(30_000), true);
  const log = await readLog(server, "tasks.crash");
  assert.deepEqual(log.map((e) => e.id), sent); // none lost, none twice, in order
});

test("a token provider is asked again at each reconnect: an expired token is replaced", async () => {
  const server = await hub({ env: { TASKCAST_SECRET: SECRET } });
  let calls = 0;
  const svc = service(server.url, {
    backoff: { baseMs: 50, capMs: 200 },
    tokenProvider: async () => {
      calls += 1;
      // The first token expires in 2 s: the hub closes the connection (4401) then.
      return token({ publish: ["tasks.>"], ttlSeconds: calls === 1 ? 2 : 3600 });
    },
  });
  svc.sendMessage("api_action", { taskId: "tok", message: "before", timestamp: Date.now() });
  assert.equal(await svc.flush(10_000), true);
  await waitFor(() => calls >= 2, 15_000, "a reconnect with a fresh token");
  svc.sendMessage("api_action", { taskId: "tok", message: "after", timestamp: Date.now() });
  assert.equal(await svc.flush(10_000), true);
  const admin = { Authorization: `Bearer ${token({ admin: true })}` };
  assert.deepEqual((await readLog(server, "tasks.tok", admin)).map((e) => e.payload.message), ["before", "after"]);
  // Without any token the hub refuses the upgrade; the service keeps trying, never throws.
  const anonymous = service(server.url, { backoff: { baseMs: 50, capMs: 100 } });
  anonymous.sendMessage("api_action", { taskId: "tok", message: "no", timestamp: Date.now() });
  assert.equal(await anonymous.flush(500), false);
  anonymous.disconnect();
});

test("commands need the control claim, over the websocket and over HTTP", async () => {
  const server = await hub({ env: { TASKCAST_SECRET: SECRET } });
  const agentToken = token({ sub: "agent", publish: ["tasks.>"], subscribe: ["tasks.>"] });
  const svc = service(server.url, { token: agentToken });
  const errors: TaskcastError[] = [];
  svc.on("error", (error) => errors.push(error as TaskcastError));
  const id = svc.command("t-cmd", "abort", { reason: "no" });
  await waitFor(() => errors.some((e) => e.code === "forbidden" && e.eventId === id), 10_000, "forbidden");
  const denied = new HubClient(server.url, { token: agentToken });
  await assert.rejects(denied.abort("t-cmd"), (error: unknown) => error instanceof HubError && error.forbidden && error.status === 403);
  const operator = new HubClient(server.url, { token: token({ sub: "alice", subscribe: ["tasks.>"], control: ["control.>"] }) });
  const ack = await operator.say("t-cmd", "hello");
  assert.ok(ack.seq > 0);
  const controller = service(server.url, { token: token({ sub: "bob", control: ["control.>"] }) });
  controller.command("t-cmd", "message", { text: "hi from ts" });
  assert.equal(await controller.flush(10_000), true);
  const log = await readLog(server, "control.t-cmd", { Authorization: `Bearer ${token({ admin: true })}` });
  assert.deepEqual(
    log.map((e) => [e.publisher, e.payload.action, e.payload.text]),
    [["alice", "message", "hello"], ["bob", "message", "hi from ts"]],
  );
});

test("disconnect() while the websocket handshake is under way throws nothing", async () => {
  // A server that takes the TCP connection and never answers the upgrade: the socket
  // stays CONNECTING, and ws emits an error when it is closed then.
  const silent = await silentServer();
  const svc = service(silent.url, { connect: false });
  const errors: Error[] = [];
  svc.on("error", (error) => errors.push(error));
  svc.connect();
  await waitFor(() => silent.held.length === 1, 10_000, "the TCP connection");
  svc.disconnect();
  for (let i = 0; i < 3; i++) await new Promise((next) => setImmediate(next)); // ws's error tick
  assert.equal(svc.status, "closed");
  await silent.close();
});

test("an event the hub's log can never take (too_large) is dropped, not resent for ever", async () => {
  // A hub on a NATS stream with a max_msg_size answers such an event too_large and acks the
  // rest: the client must drop it (as it drops invalid events) and keep its connection.
  const port = await freePort();
  const received: { id: string; connection: number }[] = [];
  let connections = 0;
  const limited = new WebSocketServer({ host: "127.0.0.1", port });
  limited.on("connection", (socket) => {
    const connection = ++connections;
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { type: string; id?: string; payload?: { message?: string } };
      if (frame.type !== "api_action" || frame.id === undefined) return;
      received.push({ id: frame.id, connection });
      const tooLarge = frame.payload?.message === "big";
      socket.send(JSON.stringify(tooLarge
        ? { type: "error", code: "too_large", message: "event too large for the log", id: frame.id }
        : { type: "ack", id: frame.id, seq: received.length }));
    });
  });
  const svc = service(`ws://127.0.0.1:${port}/ws`, { backoff: { baseMs: 20, capMs: 50 } });
  const errors: Error[] = [];
  svc.on("error", (error) => errors.push(error));
  const big = svc.sendMessage("api_action", { taskId: "t", message: "big", timestamp: 1 });
  const small = svc.sendMessage("api_action", { taskId: "t", message: "small", timestamp: 2 });
  assert.equal(await svc.flush(10_000), true);
  assert.equal(svc.pending, 0);
  assert.ok(errors.some((e) => e instanceof TaskcastError && e.code === "too_large" && e.eventId === big));
  assert.deepEqual(received, [{ id: big, connection: 1 }, { id: small, connection: 1 }]); // sent once each
  svc.disconnect();
  await new Promise((done) => limited.close(done));
});

test("a hostile hub — garbage frames, no acks, closes — never throws into the caller", async () => {
  const port = await freePort();
  const garbage = new WebSocketServer({ host: "127.0.0.1", port });
  let connections = 0;
  garbage.on("connection", (socket) => {
    connections += 1;
    socket.send("not json at all");
    socket.send("[1,2,3]");
    socket.send(Buffer.from([0xff, 0x00, 0xfe]));
    socket.send(JSON.stringify({ type: "ack" })); // no id
    socket.send(JSON.stringify({ type: "ack", id: { not: "a string" }, seq: "x" }));
    socket.send(JSON.stringify({ type: "error", code: "store_unavailable" })); // → reconnect
    socket.send(JSON.stringify({ type: "api_action", seq: "NaN", channel: null }));
    socket.on("message", () => {}); // reads, never acknowledges
  });
  const svc = service(`ws://127.0.0.1:${port}/ws`, { backoff: { baseMs: 20, capMs: 50 } });
  const errors: Error[] = [];
  svc.on("error", (error) => errors.push(error));
  svc.on("message", () => assert.fail("nothing here is an event of a followed channel"));
  svc.follow("tasks.>", 0);
  for (let i = 0; i < 50; i++) svc.sendMessage("api_action", { taskId: "h", message: `m${i}`, timestamp: Date.now() });
  assert.equal(await svc.flush(1500), false); // never acknowledged: kept
  assert.equal(svc.pending, 50);
  await waitFor(() => connections >= 2, 10_000, "a reconnect after store_unavailable");
  assert.ok(errors.some((e) => e instanceof TaskcastError && e.code === "bad_frame"));
  svc.disconnect();
  await new Promise((done) => garbage.close(done));
});
