import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// The hook is process-wide, so each case runs in a child node that enables
// the cache, requires a module and prints what the cache did.
const HOOK = join(__dirname, "..", "..", "agent", "compile-cache.js");

function runChild(
  cacheDir: string,
  entry: string,
  beforeFlush = "",
): { out: unknown; stats: Record<string, number> } {
  const script = `
    const c = require(${JSON.stringify(HOOK)});
    if (!c.enableCompileCache(${JSON.stringify(cacheDir)})) throw new Error("not enabled");
    const out = require(${JSON.stringify(entry)});
    const stats = c.compileCacheStats();
    ${beforeFlush};
    c.flushCompileCache();
    const after = c.compileCacheStats();
    process.stdout.write(JSON.stringify({ out, stats: { ...stats, written: after.written, stale: after.stale } }));
  `;
  const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { out: unknown; stats: Record<string, number> };
}

describe("compile cache (agent/compile-cache.ts)", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "ovl-cc-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("writes an entry per module on the first run and compiles from it on the next", () => {
    const mod = join(dir, "mod.js");
    const dep = join(dir, "dep.js");
    writeFileSync(dep, "module.exports = (x) => x * 2;\n");
    writeFileSync(
      mod,
      `const dep = require("./dep");
       module.exports = {
         v: dep(21),
         resolved: require.resolve("./dep") === ${JSON.stringify(dep)},
         file: __filename === ${JSON.stringify(mod)},
         main: require.main === undefined,
         cached: Object.keys(require.cache).includes(${JSON.stringify(dep)}),
       };\n`,
    );
    const cache = join(dir, "cache");
    const first = runChild(cache, mod);
    assert.deepEqual(first.out, { v: 42, resolved: true, file: true, main: true, cached: true });
    assert.equal(first.stats.hits, 0);
    assert.equal(first.stats.misses, 2);
    assert.equal(first.stats.written, 2);
    const second = runChild(cache, mod);
    assert.deepEqual(second.out, first.out);
    assert.equal(second.stats.hits, 2);
    assert.equal(second.stats.misses, 0);
    assert.equal(second.stats.written, 0);
  });

  // Found measuring issue 16: the agent exposes gc() at run time
  // (--expose-gc) before it flushed, every entry carried that flag's hash,
  // and every later start refused them all (0 hits of 317).
  it("agent-code-cache-never-hit: a flag set at run time before the flush writes nothing that the next run refuses", () => {
    const mod = join(dir, "mod.js");
    writeFileSync(mod, "module.exports = 7;\n");
    const cache = join(dir, "cache");
    const first = runChild(cache, mod, `require("node:v8").setFlagsFromString("--expose-gc")`);
    assert.equal(first.stats.written, 0, "nothing written under changed flags");
    assert.equal(first.stats.stale, 1);
    const second = runChild(cache, mod);
    assert.equal(second.stats.rejected, 0, "no entry refused");
    assert.equal(second.stats.misses, 1);
    assert.equal(second.stats.written, 1);
    assert.equal(runChild(cache, mod).stats.hits, 1);
  });

  it("a module with a dynamic import() is left to Node's loader, and its import works", () => {
    const mod = join(dir, "dyn.js");
    writeFileSync(join(dir, "later.js"), "module.exports = { v: 7 };\n");
    writeFileSync(
      mod,
      `module.exports = import(${JSON.stringify(join(dir, "later.js"))}).then((m) => m.default.v);\n`,
    );
    const script = `
      const c = require(${JSON.stringify(HOOK)});
      c.enableCompileCache(${JSON.stringify(join(dir, "cache"))});
      require(${JSON.stringify(mod)}).then((v) => process.stdout.write(JSON.stringify({ v, stats: c.compileCacheStats() })));
    `;
    const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { v: number; stats: { hits: number; misses: number } };
    assert.equal(out.v, 7);
    // later.js (plain CommonJS, imported) goes through the cache; dyn.js does not.
    assert.equal(out.stats.misses + out.stats.hits, 1);
  });

  it("never runs stale code: an edit of the same length is a miss, not a hit", () => {
    const mod = join(dir, "same-length.js");
    writeFileSync(mod, "module.exports = 'aaaa';\n");
    const cache = join(dir, "cache");
    assert.equal(runChild(cache, mod).out, "aaaa");
    writeFileSync(mod, "module.exports = 'bbbb';\n"); // V8 alone would accept the old entry
    const r = runChild(cache, mod);
    assert.equal(r.out, "bbbb");
    assert.equal(r.stats.hits, 0);
    assert.equal(r.stats.misses, 1);
  });

  it("a corrupt entry is refused by V8 and replaced, and the module still runs", () => {
    const mod = join(dir, "m.js");
    writeFileSync(mod, "module.exports = [1, 2, 3].map((x) => x + 1);\n");
    const cache = join(dir, "cache");
    runChild(cache, mod);
    const [versioned] = readdirSync(cache);
    const entries = readdirSync(join(cache, versioned as string));
    assert.equal(entries.length, 1);
    writeFileSync(join(cache, versioned as string, entries[0] as string), "not a code cache");
    const r = runChild(cache, mod);
    assert.deepEqual(r.out, [2, 3, 4]);
    assert.equal(r.stats.rejected, 1);
    assert.equal(r.stats.written, 1);
    assert.equal(runChild(cache, mod).stats.hits, 1);
  });

  it("a cache directory that cannot be made leaves Node's own loader alone", () => {
    const file = join(dir, "a-file");
    writeFileSync(file, "");
    const script = `
      const c = require(${JSON.stringify(HOOK)});
      process.stdout.write(String(c.enableCompileCache(${JSON.stringify(join(file, "sub"))})));
    `;
    const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "false");
  });
});
