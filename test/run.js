#!/usr/bin/env node
// Runs the test tiers (compiled to dist/test/<tier>) with mocha and ends with
// the one line CI reads: "N passed, N failed".
//   node test/run.js [unit] [bpf] [e2e] [image]   (default: all, in order)
"use strict";
const { Mocha } = require("mocha");
const { readdirSync, statSync } = require("node:fs");
const { join } = require("node:path");

const TIERS = ["unit", "bpf", "e2e", "image"];
const tiers = process.argv.slice(2).length ? process.argv.slice(2) : TIERS;
for (const t of tiers) {
  if (!TIERS.includes(t)) {
    console.error(`unknown tier ${t}; tiers are ${TIERS.join(", ")}`);
    process.exit(2);
  }
}

function files(dir) {
  let out = [];
  let entries = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries.sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out = out.concat(files(p));
    else if (e.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const mocha = new Mocha({ reporter: "spec", timeout: 120000, slow: 5000 });
let count = 0;
for (const t of tiers) {
  for (const f of files(join(__dirname, "..", "dist", "test", t))) {
    mocha.addFile(f);
    count++;
  }
}
if (count === 0) {
  console.error("no test files found: run `make build` first");
  console.log("0 passed, 1 failed");
  process.exit(1);
}

const runner = mocha.run();
runner.on("end", () => {
  const s = runner.stats;
  console.log(
    `\n${s.passes} passed, ${s.failures} failed${s.pending ? `, ${s.pending} skipped` : ""}`,
  );
});
runner.on("end", () => {
  process.exitCode = runner.stats.failures ? 1 : 0;
  // Leftover handles (a child that ignored SIGTERM) must not hang CI.
  setTimeout(() => process.exit(process.exitCode), 2000).unref();
});
