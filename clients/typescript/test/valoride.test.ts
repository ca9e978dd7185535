// ValorIDE's exact call shape, against a real hub: every api_action seed-exact, once, in
// order — with the hub killed -9 and restarted mid-task, and the agent's own Node process
// killed -9 and started again on its file outbox.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Hub, readLog, tempDir } from "./helpers.js";

const TASK = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "valoride-task.js");
const hubs: Hub[] = [];
after(async () => {
  for (const hub of hubs) await hub.stop();
});

/** Start the agent; ``onTurn(n)`` after it printed ``sent n``. Resolves with its exit. */
function runAgent(
  hub: Hub,
  stateDir: string,
  turns: number,
  onTurn: (turn: number, agent: ChildProcess) => Promise<void> | void,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; lines: string[] }> {
  const agent = spawn(process.execPath, [TASK, hub.url, "valoride-1", String(turns), stateDir], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines: string[] = [];
  createInterface({ input: agent.stdout! }).on("line", (line) => {
    lines.push(line);
    const sent = /^sent (\d+)$/.exec(line);
    if (sent) void onTurn(Number(sent[1]), agent);
  });
  return new Promise((done) => agent.once("exit", (code, signal) => done({ code, signal, lines })));
}

test("ValorIDE's Task call site: seed-exact, once, in order, across kill -9 of the hub and of the agent", async () => {
  const hub = await Hub.start();
  hubs.push(hub);
  const state = tempDir("valoride");
  const turns = 60;
  // First run: the hub dies at turn 15 and is back at turn 25; the agent is killed -9
  // right after its api_action of turn 40 left sendMessage (in the outbox file).
  const first = await runAgent(hub, state, turns, async (turn, agent) => {
    if (turn === 15) await hub.kill9();
    if (turn === 25) await hub.restart();
    if (turn === 40) agent.kill("SIGKILL");
  });
  assert.equal(first.signal, "SIGKILL");
  // Started again (as an IDE restart would): its history says where it was.
  const second = await runAgent(hub, state, turns, () => {});
  assert.equal(second.code, 0, second.lines.join("\n"));
  assert.equal(second.lines.at(-1), "flushed");
  assert.equal(second.lines[0], "sent 41");
  const actions = (await readLog(hub, "tasks.valoride-1")).filter((e) => e.type === "api_action");
  assert.deepEqual(
    actions.map((e) => e.payload.message),
    Array.from({ length: turns }, (_, i) => `response ${i + 1}: done step ${i + 1}`),
  );
  for (const action of actions) {
    assert.deepEqual(Object.keys(action.payload).sort(), ["message", "taskId", "timestamp"]);
    assert.equal(action.payload.taskId, "valoride-1");
    assert.equal(typeof action.payload.timestamp, "number");
  }
  assert.equal(new Set(actions.map((e) => e.id)).size, turns); // each once
});
