// subscribe(): an async iterator in seq order, resumed after any disconnect (a hub's
// kill -9 and restart), honouring the log identity, ending on abort; and failover between
// two hub nodes on one NATS JetStream stream, for publisher and subscriber alike.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { CommunicationService, LogMismatch, ResumePoint, type TaskcastEvent, subscribe } from "../src/index.js";
import { Hub, NatsServer, silentServer, sleep, waitFor } from "./helpers.js";

const hubs: Hub[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
  for (const hub of hubs) await hub.stop();
});

async function hub(options: ConstructorParameters<typeof Hub>[0] = {}): Promise<Hub> {
  const started = await Hub.start(options);
  hubs.push(started);
  return started;
}

async function publish(url: string | string[], task: string, count: number, from = 0): Promise<string[]> {
  const service = new CommunicationService(url, { backoff: { baseMs: 50, capMs: 300 } });
  const ids = Array.from({ length: count }, (_, i) =>
    service.sendMessage("api_action", { taskId: task, message: `m${from + i}`, timestamp: Date.now() }),
  );
  assert.equal(await service.close(30_000), true);
  return ids;
}

/** Collect events from an iterator in the background. */
function collect<P>(iterator: AsyncGenerator<TaskcastEvent<P>>): { events: TaskcastEvent<P>[]; done: Promise<unknown> } {
  const events: TaskcastEvent<P>[] = [];
  const done = (async () => {
    for await (const event of iterator) events.push(event);
  })();
  return { events, done };
}

test("a subscription aborted while its token is fetched closes its new socket without throwing", async () => {
  // The socket made once the token comes is closed at once, before its handshake: ws
  // emits an error for that, which must not escape as an uncaught exception.
  const silent = await silentServer();
  const controller = new AbortController();
  let release: () => void = () => {};
  const gate = new Promise<void>((open) => {
    release = open;
  });
  let asked = false;
  const tokenProvider = async (): Promise<string> => {
    asked = true;
    await gate;
    return "a-token";
  };
  const { events, done } = collect(
    subscribe(silent.url, "tasks.>", { tokenProvider, signal: controller.signal }),
  );
  await waitFor(() => asked, 10_000, "the token asked for");
  controller.abort();
  release();
  await done;
  for (let i = 0; i < 3; i++) await new Promise((next) => setImmediate(next)); // ws's error tick
  assert.equal(events.length, 0);
  await silent.close();
});

test("a subscriber replays, goes live, and resumes after the hub's kill -9 with no gap or repeat", async () => {
  const server = await hub();
  await publish(server.url, "s", 50);
  const controller = new AbortController();
  const point = new ResumePoint(0);
  const statuses: string[] = [];
  const { events, done } = collect(
    subscribe(server.url, "tasks.>", {
      since: point,
      signal: controller.signal,
      backoff: { baseMs: 50, capMs: 300 },
      onStatus: (status) => statuses.push(status),
    }),
  );
  await waitFor(() => events.length === 50, 20_000, "the replay");
  await publish(server.url, "s", 25, 50);
  await waitFor(() => events.length === 75, 20_000, "live events");
  await server.kill9();
  await sleep(200);
  await server.restart();
  await publish(server.url, "s", 25, 75);
  await waitFor(() => events.length === 100, 30_000, "events after the restart");
  assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 100 }, (_, i) => i + 1));
  assert.deepEqual(events.map((e) => e.payload.message), Array.from({ length: 100 }, (_, i) => `m${i}`));
  assert.equal(point.last, 100); // kept up to date: the caller may save it at any time
  assert.ok(point.logId?.startsWith("sqlite-"));
  assert.ok(statuses.includes("reconnecting") && statuses.filter((s) => s === "subscribed").length >= 2);
  controller.abort();
  await done; // ends on abort, without throwing
  assert.equal(statuses.at(-1), "closed");
});

test("a resume point of another log starts over on this one; strict refuses", async () => {
  const server = await hub();
  await publish(server.url, "l", 5);
  const stale = new ResumePoint(19, "sqlite-some-other-log");
  const statuses: Array<string | undefined> = [];
  const got: number[] = [];
  for await (const event of subscribe(server.url, "tasks.>", { since: stale, onStatus: (_, detail) => statuses.push(detail) })) {
    got.push(event.seq);
    if (got.length === 5) break; // ending the loop ends the subscription
  }
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.ok(statuses.some((detail) => detail?.includes("sqlite-some-other-log")));
  await assert.rejects(
    (async () => {
      for await (const _ of subscribe(server.url, "tasks.>", { since: new ResumePoint(19, "sqlite-x"), strict: true })) {
        assert.fail("nothing is yielded");
      }
    })(),
    (error: unknown) => error instanceof LogMismatch && error.expected === "sqlite-x",
  );
});

test("backlog: the last N events before the head, then live", async () => {
  const server = await hub();
  await publish(server.url, "b", 30);
  const controller = new AbortController();
  const { events, done } = collect(subscribe(server.url, "tasks.b", { backlog: 10, signal: controller.signal }));
  await waitFor(() => events.length === 10, 20_000, "the backlog");
  await publish(server.url, "b", 2, 30);
  await waitFor(() => events.length === 12, 20_000, "live events");
  assert.deepEqual(events.map((e) => e.seq), [21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]);
  controller.abort();
  await done;
});

test("publisher and subscriber fail over between two hub nodes on one NATS stream", async () => {
  const nats = await NatsServer.start();
  cleanups.push(() => nats.stop());
  const stream = `TS${process.pid}${Date.now() % 100000}`;
  const nodeA = await hub({ store: nats.url, args: ["--nats-stream", stream] });
  const nodeB = await hub({ store: nats.url, args: ["--nats-stream", stream] });
  const controller = new AbortController();
  const { events, done } = collect(
    subscribe([nodeA.url, nodeB.url], "tasks.>", { since: 0, signal: controller.signal, backoff: { baseMs: 50, capMs: 300 } }),
  );
  const service = new CommunicationService([nodeA.url, nodeB.url], { backoff: { baseMs: 50, capMs: 300 } });
  const sent: string[] = [];
  for (let i = 0; i < 300; i++) {
    sent.push(service.sendMessage("api_action", { taskId: "fo", message: `m${i}`, timestamp: Date.now() }));
    if (i === 100) await nodeA.kill9(); // both were on A: they move to B
    if (i % 20 === 0) await sleep(2);
  }
  assert.equal(await service.close(30_000), true);
  await waitFor(() => events.length === 300, 30_000, "every event on the surviving node");
  assert.deepEqual(events.map((e) => e.id), sent); // once each, in order
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  controller.abort();
  await done;
});
