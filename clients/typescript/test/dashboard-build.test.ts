// The dashboard runs this SDK's browser build, which the hub serves from the Python
// package (src/taskcast/dashboard/sdk/, committed): it must be this source, built.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { REPO, tempDir } from "./helpers.js";

test("the dashboard's copy of the SDK is a fresh build of src/ (npm run build:dashboard)", () => {
  const out = tempDir("sdk-build");
  const here = join(REPO, "clients", "typescript");
  const built = spawnSync(join(here, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json", "--declaration", "false", "--outDir", out], {
    cwd: here,
    encoding: "utf8",
  });
  assert.equal(built.status, 0, built.stdout + built.stderr);
  const served = join(REPO, "src", "taskcast", "dashboard", "sdk");
  const files = readdirSync(out).sort();
  assert.deepEqual(readdirSync(served).sort(), files, "run npm run build:dashboard in clients/typescript");
  for (const file of files) {
    assert.equal(readFileSync(join(served, file), "utf8"), readFileSync(join(out, file), "utf8"), `${file} is stale: npm run build:dashboard`);
  }
});
