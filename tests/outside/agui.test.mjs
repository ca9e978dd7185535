// The official AG-UI client (@ag-ui/client HttpAgent, pinned in package-lock.json) against
// taskcast's AG-UI door, for tasks a real `taskcast run` executes against the fake model
// server: every event passes @ag-ui/core's schemas and the client's own verifier, the
// messages it assembles equal the task's rebuilt history, and interrupts answered through
// the client (approve; deny on another task) let the task go on, the decision in the log.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

import { HttpAgent, buildResumeArray } from "@ag-ui/client";
import { EventSchemas } from "@ag-ui/core/schemas";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..", "..");
const PYTHON = process.env.TASKCAST_PYTHON ?? join(REPO, ".venv", "bin", "python");
const children = [];
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
});

// The client leaks an unhandled rejection when a stream is cut (a known @ag-ui/client
// 1.0.0 behaviour); none of these tests cut one, so any is a failure.
const unhandled = [];
process.on("unhandledRejection", (error) => unhandled.push(error));

/** Start a process and resolve with the first stdout line that `ready` accepts. */
function startProcess(args, ready, options = {}) {
  const dir = mkdtempSync(join(tmpdir(), "taskcast-agui-"));
  const child = spawn(PYTHON, args, {
    cwd: REPO,
    stdio: ["ignore", "pipe", openSync(join(dir, "stderr.log"), "a")],
    env: { ...process.env, PYTHONUNBUFFERED: "1", ...options.env },
  });
  children.push(child);
  return new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`${args.join(" ")} did not start (${dir})`)), 30_000);
    child.once("exit", (code) => fail(new Error(`${args.join(" ")} exited ${code} (${dir})`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const found = ready(line);
      if (found) {
        clearTimeout(timer);
        done({ child, value: found, dir });
      }
    });
  });
}

async function hub() {
  const dir = mkdtempSync(join(tmpdir(), "taskcast-agui-hub-"));
  const { value } = await startProcess(
    ["-m", "taskcast", "hub", "--port", "0", "--store", `sqlite:${join(dir, "events.db")}`],
    (line) => line.startsWith("taskcast hub listening on ") && line.split(" ").pop(),
  );
  return { ws: value, http: value.replace(/^ws/, "http").replace(/\/ws$/, "") };
}

async function fakeModel(replies) {
  const dir = mkdtempSync(join(tmpdir(), "taskcast-agui-llm-"));
  const script = join(dir, "replies.json");
  writeFileSync(script, JSON.stringify(replies));
  const { value } = await startProcess(["-m", "tests.fake_llm", script], (line) => line.startsWith("http") && line);
  return value;
}

/** `taskcast run` with remote approval: the agent the AG-UI client looks at. */
function runTask(server, model, taskId, prompt) {
  const work = mkdtempSync(join(tmpdir(), "taskcast-agui-work-"));
  const child = spawn(
    PYTHON,
    ["-m", "taskcast", "run", prompt, "--provider", "openai", "--model", "gpt-test", "--base-url", `${model}/v1`,
      "--api-key", "k", "--no-stream", "--hub", server.ws, "--approve", "remote", "--task-id", taskId,
      "--cwd", work, "--history-dir", join(work, ".h")],
    { cwd: REPO, stdio: "ignore", env: process.env },
  );
  children.push(child);
  const exited = new Promise((done) => child.once("exit", (code) => done(code)));
  return { work, exited };
}

async function until(check, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

async function pending(server, taskId) {
  const reply = await fetch(`${server.http}/api/pending?taskId=${taskId}`);
  return (await reply.json()).length > 0;
}

async function log(server, taskId) {
  return (await fetch(`${server.http}/api/events?channel=tasks.${taskId}&since=0&limit=10000`)).json();
}

/** The task's history as AG-UI messages (what HttpAgent must end up with). */
async function historyAsAgui(server, taskId) {
  const events = (await log(server, taskId)).filter((e) => e.type === "history_appended");
  return events.map((e, index) => {
    const m = e.payload.message;
    const id = `h${index}`;
    if (m.role === "tool") return { id, role: "tool", content: m.content, toolCallId: m.tool_call_id };
    if (m.role === "assistant") {
      const shaped = { id, role: "assistant" };
      if (m.content) shaped.content = m.content;
      if (m.tool_calls?.length) {
        shaped.toolCalls = m.tool_calls.map((c) => ({
          id: c.id, type: "function", function: { name: c.name, arguments: JSON.stringify(c.arguments) },
        }));
      }
      return shaped;
    }
    return { id, role: m.role, content: m.content };
  });
}

/** One run of the official client, every event checked against @ag-ui/core's schemas;
 * the client's own warnings (unknown fields stripped, events dropped) are failures. */
async function run(agent, params = {}) {
  const seen = [];
  const warnings = [];
  const warn = console.warn;
  console.warn = (...args) => warnings.push(args.map(String).join(" "));
  try {
    await agent.runAgent(params, {
      onEvent: ({ event }) => {
        const checked = EventSchemas.safeParse(event);
        assert.ok(checked.success, `${event.type}: ${JSON.stringify(checked.error?.issues)}`);
        seen.push(event);
      },
      onRunErrorEvent: ({ event }) => assert.fail(`RUN_ERROR: ${event.message}`),
    });
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(warnings, []);
  return seen;
}

const WRITE = { id: "c1", name: "write_to_file", arguments: { path: "a.txt", content: "A" } };
const DONE = { id: "c2", name: "attempt_completion", arguments: { result: "wrote a.txt" } };

test("HttpAgent follows a task, answers its approval, and ends with the task's history", async () => {
  const server = await hub();
  const model = await fakeModel([
    { text: "I will write a.txt.", tool_calls: [WRITE] },
    { text: "", tool_calls: [DONE] },
  ]);
  const task = runTask(server, model, "agui-approve", "write a.txt");
  await until(() => pending(server, "agui-approve"), "the approval request");
  const agent = new HttpAgent({ url: `${server.http}/ag-ui/tasks/agui-approve`, threadId: "agui-approve" });
  const first = await run(agent);
  assert.equal(first[0].type, "RUN_STARTED");
  assert.equal(first.at(-1).type, "RUN_FINISHED");
  assert.equal(first.at(-1).outcome.type, "interrupt");
  const [interrupt] = agent.pendingInterrupts;
  assert.equal(interrupt.reason, "tool_call");
  assert.equal(interrupt.toolCallId, "c1");
  assert.equal(interrupt.responseSchema.required[0], "approved");
  // The conversation so far, from the snapshot: the prompt, the response asking for the tool.
  assert.deepEqual(agent.messages.map((m) => m.role), ["user", "assistant"]);
  assert.equal(agent.messages[1].toolCalls[0].id, "c1");

  const resume = buildResumeArray(agent.pendingInterrupts, {
    [interrupt.id]: { status: "resolved", payload: { approved: true } },
  });
  const second = await run(agent, { resume });
  assert.equal(second.at(-1).type, "RUN_FINISHED");
  assert.equal(second.at(-1).outcome.type, "success");
  const result = second.find((e) => e.type === "TOOL_CALL_RESULT" && e.toolCallId === "c1");
  assert.ok(result, "the approved tool's result, against the original call");
  assert.ok(!second.some((e) => e.type === "TOOL_CALL_START" && e.toolCallId === "c1"), "not streamed again");
  assert.equal(await task.exited, 0);
  assert.deepEqual(agent.messages, await historyAsAgui(server, "agui-approve"));
  assert.deepEqual(agent.pendingInterrupts, []);
  const resolved = (await log(server, "agui-approve")).filter((e) => e.type === "approval_resolved");
  assert.deepEqual(resolved.map((e) => [e.payload.decision, e.payload.by]), [["approve", "anonymous"]]);
  assert.deepEqual(unhandled, []);
});

test("a denial through the client reaches the task, and a new user message steers it", async () => {
  const server = await hub();
  const model = await fakeModel([
    { text: "", tool_calls: [WRITE] },
    { text: "", tool_calls: [DONE] },
  ]);
  const task = runTask(server, model, "agui-deny", "write a.txt");
  await until(() => pending(server, "agui-deny"), "the approval request");
  const agent = new HttpAgent({ url: `${server.http}/ag-ui/tasks/agui-deny`, threadId: "agui-deny" });
  await run(agent);
  const [interrupt] = agent.pendingInterrupts;
  agent.addMessage({ id: "user-typed-1", role: "user", content: "do not write files here" });
  const resume = buildResumeArray(agent.pendingInterrupts, {
    [interrupt.id]: { status: "resolved", payload: { approved: false, reason: "not in this folder" } },
  });
  const second = await run(agent, { resume });
  assert.equal(second.at(-1).outcome.type, "success");
  assert.equal(await task.exited, 3, "`taskcast run` exits 3: completed, a tool call denied");
  const events = await log(server, "agui-deny");
  const resolved = events.filter((e) => e.type === "approval_resolved");
  assert.deepEqual(resolved.map((e) => [e.payload.decision, e.payload.reason]), [["deny", "not in this folder"]]);
  const tool = events.find((e) => e.type === "tool_executed" && e.payload.tool === "write_to_file");
  assert.equal(tool.payload.approved, false);
  const said = events.filter((e) => e.type === "user_message");
  assert.deepEqual(said.map((e) => e.payload.text), ["do not write files here"]);
  assert.deepEqual(agent.messages, await historyAsAgui(server, "agui-deny"));
  // The client sends every message again on every run: the same message is not sent twice.
  await run(agent);
  const again = (await log(server, "agui-deny")).filter((e) => e.type === "user_message");
  assert.equal(again.length, 1);
});

test("the documented HttpAgent example runs as it is written (docs/ag-ui.md)", async () => {
  const server = await hub();
  const model = await fakeModel([{ text: "Hello from the task.", tool_calls: [DONE] }]);
  const task = runTask(server, model, "agui-example", "say hello");
  assert.equal(await task.exited, 0);
  const { value } = await new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(HERE, "example-httpagent.mjs"), server.http, "agui-example"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(child);
    let out = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.once("exit", (code) => (code === 0 ? done({ value: out }) : fail(new Error(`example exited ${code}`))));
  });
  // The page shows the file as it is (from its first import on).
  const example = readFileSync(join(HERE, "example-httpagent.mjs"), "utf8");
  const docs = readFileSync(join(REPO, "docs", "ag-ui.md"), "utf8");
  assert.ok(docs.includes(example.slice(example.indexOf("import "))), "docs/ag-ui.md shows the example");
  assert.match(value, /assistant: Hello from the task\./);
  assert.match(value, /finished: success/);
});
