// The closed sets are generated from Python's (scripts/gen_ts_vocabulary.py): the ones a
// running hub serves the dashboard are exactly the ones this package exports.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, test } from "node:test";

import * as vocabulary from "../src/vocabulary.js";
import { Hub, PYTHON, REPO } from "./helpers.js";

const hubs: Hub[] = [];
after(async () => {
  for (const hub of hubs) await hub.stop();
});

test("vocabulary.ts is what the generator renders from the Python enums", () => {
  const check = spawnSync(PYTHON, [join(REPO, "scripts", "gen_ts_vocabulary.py"), "--check"], { cwd: REPO, encoding: "utf8" });
  assert.equal(check.status, 0, check.stderr);
});

test("the sets a hub serves are the ones exported here", async () => {
  const hub = await Hub.start();
  hubs.push(hub);
  const served = (await (await fetch(`${hub.http}/dashboard/constants.json`)).json()) as Record<string, Record<string, string>>;
  assert.deepEqual(served.eventTypes, { ...vocabulary.EventType });
  assert.deepEqual(served.taskStatuses, { ...vocabulary.TaskStatus });
  assert.deepEqual(served.errorCodes, { ...vocabulary.ErrorCode });
  assert.deepEqual(served.commandActions, { ...vocabulary.CommandAction });
  assert.deepEqual(served.requestKinds, { ...vocabulary.RequestKind });
  assert.deepEqual(served.rejections, { ...vocabulary.Rejection });
  assert.deepEqual(served.remoteEvents, { ...vocabulary.RemoteEvent });
  assert.deepEqual(served.finalStatuses, { ...vocabulary.FINAL_STATUSES });
});
