// The pure parts, without a hub: the same decisions as the Python client's.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import {
  CommandAction,
  HistoryBuilder,
  HistoryGap,
  Outbox,
  RemoteControl,
  ResumePoint,
  backoffDelay,
  commandOf,
  httpBase,
  matches,
  randomId,
  readFrame,
  responseMessage,
  wsUrl,
} from "../src/index.js";
import { PYTHON, REPO, tempDir } from "./helpers.js";

test("ids are 44 hex digits, a time prefix then 128 random bits", () => {
  const ids = new Set(Array.from({ length: 1000 }, randomId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, /^[0-9a-f]{44}$/);
});

test("backoff grows to its cap with full jitter", () => {
  assert.equal(backoffDelay(0, { baseMs: 100, capMs: 5000 }, () => 0), 50);
  assert.equal(backoffDelay(0, { baseMs: 100, capMs: 5000 }, () => 1), 100);
  assert.equal(backoffDelay(20, { baseMs: 100, capMs: 5000 }, () => 1), 5000);
  for (let attempt = 0; attempt < 40; attempt++) {
    const delay = backoffDelay(attempt);
    assert.ok(delay >= 50 && delay <= 5000, String(delay));
  }
});

test("urls and patterns", () => {
  assert.equal(httpBase("ws://127.0.0.1:8765/ws"), "http://127.0.0.1:8765");
  assert.equal(httpBase("wss://hub.example/ws"), "https://hub.example");
  assert.equal(wsUrl("https://hub.example"), "wss://hub.example/ws");
  assert.ok(matches("tasks.>", "tasks.a.b") && matches("tasks.*", "tasks.a"));
  assert.ok(!matches("tasks.*", "tasks.a.b") && !matches("tasks.>", "tasks"));
});

test("a resume point fits itself to the log it meets, as the Python one does", () => {
  const point = new ResumePoint(19, "log-a");
  assert.equal(point.subscribed({ logId: "log-a", head: 25 }), "continue");
  assert.equal(point.subscribed({ logId: "log-b", head: 3 }), "restart");
  assert.deepEqual([point.last, point.logId], [0, "log-b"]);
  assert.match(point.problem ?? "", /log-b.*log-a/);
  assert.equal(point.accept(1), false); // the old request's events are not of this log
  assert.equal(point.subscribed({ logId: "log-b", head: 3 }), "continue");
  assert.ok(point.accept(1) && !point.accept(1));
  const behind = new ResumePoint(19, "log-b");
  assert.equal(behind.subscribed({ logId: "log-b", head: 5, ahead: true }), "continue");
  assert.equal(behind.last, 5);
  const strict = new ResumePoint(19, "log-a", true);
  assert.equal(strict.subscribed({ logId: "log-b", head: 3 }), "refuse");
  assert.equal(strict.mismatch().found, "log-b");
  assert.deepEqual(ResumePoint.from(JSON.parse(JSON.stringify(new ResumePoint(4, "l")))), new ResumePoint(4, "l"));
});

test("garbage from the hub is not a frame, and never throws", () => {
  for (const junk of ["", "{", "[]", "null", "42", '"text"', new Uint8Array([0xff, 0xfe]), undefined, {}]) {
    assert.equal(readFrame(junk), null);
  }
  assert.deepEqual(readFrame('{"type":"ack","id":"a","seq":1}'), { type: "ack", id: "a", seq: 1 });
});

test("history is rebuilt from messages and chunks; a gap is an error", () => {
  const builder = new HistoryBuilder();
  builder.add({ index: 0, message: { role: "user", content: "hi" } }, 1);
  const big = JSON.stringify({ role: "tool", content: "x".repeat(10) });
  builder.add({ index: 1, chunk: 1, chunks: 2, data: big.slice(8) }, 3);
  assert.equal(builder.messages.length, 1);
  builder.add({ index: 1, chunk: 0, chunks: 2, data: big.slice(0, 8) }, 2);
  assert.deepEqual(builder.messages[1], JSON.parse(big));
  assert.equal(builder.add({ index: 0, message: { role: "user" } }), null); // a repeat
  assert.throws(() => builder.add({ index: 5, message: {} }), HistoryGap);
  assert.equal(builder.lastSeq, 3);
});

test("remote control: first decision wins, each command once", () => {
  const control = new RemoteControl();
  control.open("r1", "approval", { tool: "write" });
  const command = (id: string, action: CommandAction, seq: number) =>
    commandOf({ type: "task_command", id, seq, channel: "control.t", publisher: "alice", payload: { taskId: "t", action, requestId: "r1" } })!;
  const first = control.apply(command("c1", CommandAction.APPROVE, 5))!;
  assert.equal(first.eventType, "approval_resolved");
  assert.equal(first.approved, true);
  assert.equal(control.apply(command("c1", CommandAction.APPROVE, 5)), null);
  const late = control.apply(command("c2", CommandAction.DENY, 6))!;
  assert.deepEqual([late.eventType, late.payload.reason], ["command_rejected", "already_resolved"]);
  assert.equal(control.lastSeq, 6);
  assert.equal(commandOf({ type: "task_command", id: "x", seq: 1, channel: "c", payload: { action: "explode" } }), null);
});

test("the seed's message is the text, else the rendered tool calls, never empty", () => {
  assert.equal(responseMessage("hello"), "hello");
  assert.equal(responseMessage(" ", [{ name: "write_to_file", arguments: { path: "a.txt", n: 2 } }]), 'write_to_file(path="a.txt", n=2)');
  assert.equal(responseMessage(""), "(empty response)");
});

test("a file outbox reads the Python outbox's journal, and Python reads this one", () => {
  const dir = tempDir("outbox");
  const fromPython = join(dir, "python.log");
  const script = [
    "import sys",
    "from taskcast.client.outbox import Outbox",
    "box = Outbox(100, sys.argv[1])",
    "box.add('a', b'{\"id\":\"a\",\"type\":\"x\",\"payload\":{}}')",
    "box.add('b', b'{\"id\":\"b\",\"type\":\"x\",\"payload\":{}}')",
    "box.ack(['a'])",
    "box.close()",
  ].join("\n");
  const wrote = spawnSync(PYTHON, ["-c", script, fromPython], { cwd: REPO, encoding: "utf8" });
  assert.equal(wrote.status, 0, wrote.stderr);
  writeFileSync(fromPython, readFileSync(fromPython, "utf8") + '+{"id":"c","type":"x"'); // cut short by a crash
  const outbox = new Outbox(100, fromPython);
  assert.deepEqual(outbox.ids(), ["b"]);
  outbox.add("d", '{"id":"d","type":"y","payload":{}}');
  outbox.ack(["b"]);
  outbox.add("e", '{"id":"e","type":"y","payload":{}}');
  outbox.close();
  const read = spawnSync(PYTHON, ["-c", "import sys\nfrom taskcast.client.outbox import load_journal\nfrom pathlib import Path\nprint(','.join(load_journal(Path(sys.argv[1]))[0]))", fromPython], { cwd: REPO, encoding: "utf8" });
  assert.equal(read.stdout.trim(), "d,e");
});

test("a full outbox drops by its policy", () => {
  const oldest = new Outbox(2);
  oldest.add("1", "{}");
  oldest.add("2", "{}");
  assert.equal(oldest.add("3", "{}"), "1");
  assert.deepEqual(oldest.ids(), ["2", "3"]);
  const newest = new Outbox(2, null, "drop-newest");
  newest.add("1", "{}");
  newest.add("2", "{}");
  assert.equal(newest.add("3", "{}"), "3");
  assert.deepEqual(newest.ids(), ["1", "2"]);
});
