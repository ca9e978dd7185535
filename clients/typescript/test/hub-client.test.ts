// HubClient and TaskRecorder against a real hub: a TypeScript agent asks, people answer
// through the HTTP API; what it records reads like a Python Task's; errors are typed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, test } from "node:test";

import {
  CommunicationService,
  EventType,
  HubClient,
  HubError,
  HubUnreachable,
  NoSingleRequest,
  TaskRecorder,
  TaskStatus,
} from "../src/index.js";
import { Hub, PYTHON, REPO, freePort, readLog, tempDir, waitFor } from "./helpers.js";

const hubs: Hub[] = [];
const services: CommunicationService[] = [];
after(async () => {
  for (const service of services) await service.close(1_000); // a failed test leaves none open
  for (const hub of hubs) await hub.stop();
});

test("a TaskRecorder's approvals and questions are answered through HubClient", async () => {
  const hub = await Hub.start();
  hubs.push(hub);
  const service = new CommunicationService(hub.url);
  services.push(service);
  const aborted: string[] = [];
  const recorder = new TaskRecorder(service, "ts-agent", {
    provider: "openai",
    model: "gpt-x",
    onAbort: (by) => aborted.push(by),
  });
  const client = new HubClient(hub.url);
  recorder.start("write a file");
  recorder.apiAction("", [{ name: "write_to_file", arguments: { path: "a.txt", content: "A" } }]);
  recorder.usage({ inputTokens: 12, outputTokens: 5, latencyMs: 40, finishReason: "tool_calls" });
  const asking = recorder.requestApproval("write_to_file", { path: "a.txt", content: "A" });
  await waitFor(async () => (await client.pending({ taskId: "ts-agent" })).length === 1, 10_000, "the request");
  const [request] = await client.pending();
  assert.equal(request!.kind, "approval");
  assert.equal(request!.tool, "write_to_file");
  await client.approve("ts-agent"); // the only one: no request id needed
  assert.deepEqual(await asking, { approved: true, by: "anonymous", reason: null });
  // The recorder answers with approval_resolved after it wakes: wait until the hub has it.
  await waitFor(async () => (await client.pending({ taskId: "ts-agent" })).length === 0, 10_000, "the resolution");
  await assert.rejects(client.approve("ts-agent"), NoSingleRequest); // nothing waits now
  recorder.tool("write_to_file", { path: "a.txt" }, "wrote 1 byte", { durationMs: 3 });
  const denying = recorder.requestApproval("execute_command", { command: "rm -rf /" });
  await waitFor(async () => (await client.pending({ taskId: "ts-agent" })).length === 1, 10_000, "the second");
  await client.deny("ts-agent", undefined, { reason: "not that" });
  assert.deepEqual(await denying, { approved: false, by: "anonymous", reason: "not that" });
  const question = recorder.ask("Which file next?", { options: ["b.txt", "c.txt"] });
  await waitFor(async () => (await client.pending({ taskId: "ts-agent" })).length === 1, 10_000, "the question");
  await client.reply("ts-agent", "b.txt");
  assert.equal(await question, "b.txt");
  const timedOut = await recorder.requestApproval("slow_tool", {}, { timeoutMs: 200 });
  assert.deepEqual(timedOut, { approved: false, by: "taskcast", reason: "timeout" });
  await client.abort("ts-agent", { reason: "enough" });
  await waitFor(() => aborted.length === 1, 10_000, "the abort");
  recorder.apiAction("Done: a.txt written.");
  recorder.complete();
  assert.equal(await service.close(10_000), true);

  const summary = (await client.tasks()).find((t) => t.taskId === "ts-agent");
  assert.equal(summary?.status, TaskStatus.COMPLETED);
  assert.equal(summary?.apiActions, 2);
  assert.equal(summary?.inputTokens, 12);
  assert.equal(summary?.pending, 0);
  const { task, events, logId } = await client.task("ts-agent");
  assert.equal(task.result, "Done: a.txt written.");
  assert.ok(logId?.startsWith("sqlite-"));
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 4), [EventType.TASK_STARTED, EventType.API_ACTION, EventType.LLM_USAGE, EventType.APPROVAL_REQUESTED]);
  assert.ok(types.includes(EventType.APPROVAL_RESOLVED) && types.includes(EventType.QUESTION_ANSWERED));
  const seed = events.find((e) => e.type === EventType.API_ACTION)!;
  assert.deepEqual(Object.keys(seed.payload).sort(), ["message", "taskId", "timestamp"]);
  assert.equal(seed.payload.message, 'write_to_file(path="a.txt", content="A")');
  const resolved = events.filter((e) => e.type === EventType.APPROVAL_RESOLVED).map((e) => e.payload.decision);
  assert.deepEqual(resolved, ["approve", "deny", "deny"]);
  const page = await client.events({ channel: "tasks.ts-agent", type: EventType.LLM_USAGE });
  assert.equal(page.events.length, 1);
  assert.equal(page.logId, logId);
  // A command for the ended task: the hub itself answers it, task_ended.
  await client.say("ts-agent", "one more thing");
  await waitFor(async () => (await readLog(hub, "tasks.ts-agent")).some((e) => e.type === "command_rejected"), 10_000, "the rejection");
});

test("HubClient.history equals the Python rebuild of a Python Task's history", async () => {
  const hub = await Hub.start();
  hubs.push(hub);
  const work = tempDir("history");
  const run = spawnSync(
    PYTHON,
    ["-m", "taskcast", "run", "write hello and run it", "--approve", "auto", "--cwd", join(work, "w"), "--mkdir",
      "--history-dir", join(work, "h"), "--task-id", "py-task", "--hub", hub.url],
    { cwd: REPO, encoding: "utf8" },
  );
  assert.equal(run.status, 0, run.stderr);
  const python = spawnSync(PYTHON, ["-m", "taskcast", "history", "py-task", "--json", "--hub", hub.url], { cwd: REPO, encoding: "utf8" });
  assert.equal(python.status, 0, python.stderr);
  const client = new HubClient(hub.url);
  const history = await client.history("py-task");
  assert.deepEqual(history, python.stdout.trim().split("\n").map((line) => JSON.parse(line)));
  assert.equal(history[0]!.role, "user");
});

test("errors are typed: the hub's codes, and a hub that cannot be reached", async () => {
  const hub = await Hub.start();
  hubs.push(hub);
  const client = new HubClient(hub.url);
  await assert.rejects(client.task("nobody"), (error: unknown) => error instanceof HubError && error.status === 404 && error.code === "not_found");
  await assert.rejects(client.events({ since: -1 }), (error: unknown) => error instanceof HubError && error.code === "invalid_query");
  await assert.rejects(client.command("t", "reply", { requestId: "r" }), // a reply needs text
    (error: unknown) => error instanceof HubError && error.code === "invalid_event");
  const down = new HubClient(`http://127.0.0.1:${await freePort()}`, { timeoutMs: 2000 });
  await assert.rejects(down.tasks(), HubUnreachable);
  // Two nodes, the first down: the second answers.
  const failover = new HubClient([`ws://127.0.0.1:${await freePort()}/ws`, hub.url]);
  assert.equal((await failover.health()).status, "ok");
});
