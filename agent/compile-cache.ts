// A V8 code cache for the CommonJS modules a process loads (the agent's,
// overlayctl's, and their dependencies'). Node 20 compiles every module
// from source on each start; about a quarter of the agent's ~220 ms of
// module loading is that compilation (etcd3/grpc-js, protobufjs,
// prom-client, yargs). Node 22's module.enableCompileCache() does the same;
// this is for the Node 20 the project runs on.
//
// Entries are keyed by a hash of the module's source, never by its path or
// length alone (V8's own check of cached data only compares lengths), so an
// edited file can never run stale code. Anything that goes wrong (an
// unreadable or unwritable directory, a rejected entry) falls back to
// Node's own compile: the cache only ever costs a miss.
//
// Must be enabled before the modules it should cover are required:
// bin/overlayd and bin/overlayctl enable it first thing.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import Module from "node:module";
import { dirname, join } from "node:path";
import v8 from "node:v8";
import vm from "node:vm";

/** Where the cache lives unless OVERLAYD_COMPILE_CACHE says otherwise ("" turns it off). */
export const DEFAULT_CACHE_DIR = join(__dirname, "..", "..", "build", "compile-cache");

export interface CompileCacheStats {
  /** Modules compiled from a cache entry. */
  hits: number;
  /** Modules with no entry yet. */
  misses: number;
  /** Entries V8 refused (another V8 build or flags): compiled afresh. */
  rejected: number;
  /** Entries written by the last flush. */
  written: number;
  /** Entries not written: V8's flags changed since the cache was enabled. */
  stale: number;
}

interface Pending {
  file: string;
  script: vm.Script;
}

type Compile = (this: CjsModule, content: string, filename: string) => unknown;
interface CjsModule {
  require(id: string): unknown;
  exports: unknown;
  _compile: Compile;
}
const M = Module as unknown as {
  prototype: CjsModule;
  wrap(code: string): string;
  _resolveFilename(request: string, parent: unknown, isMain: boolean, options?: unknown): string;
  _resolveLookupPaths(request: string, parent: unknown): string[] | null;
  _extensions: unknown;
  _cache: unknown;
};

interface State {
  dir: string;
  /** V8's version tag when enabled: it names dir, and an entry made under
   * other flags is refused by every later process. */
  tag: number;
  pending: Pending[];
  stats: CompileCacheStats;
}
let state: State | undefined;

/**
 * Compiles the CommonJS modules required from now on through a code cache
 * in `dir` (one directory per V8 version tag). Returns false, changing nothing,
 * when the directory cannot be made.
 */
export function enableCompileCache(
  dir = process.env.OVERLAYD_COMPILE_CACHE ?? DEFAULT_CACHE_DIR,
): boolean {
  if (state || dir === "") return state !== undefined;
  // V8 refuses an entry made under another V8 version, other V8 flags (the
  // agent runs with --max-semi-space-size=1, overlayctl without) or CPU
  // features; its version tag names exactly that: one directory each.
  const tag = v8.cachedDataVersionTag();
  const versioned = join(dir, `${process.version}-${tag.toString(16)}`);
  try {
    mkdirSync(versioned, { recursive: true });
  } catch {
    return false;
  }
  const s: State = {
    dir: versioned,
    tag,
    pending: [],
    stats: { hits: 0, misses: 0, rejected: 0, written: 0, stale: 0 },
  };
  state = s;
  const original = M.prototype._compile;
  M.prototype._compile = function (this: CjsModule, content: string, filename: string) {
    // Only plain scripts go through the cache. To Node as usual: a file
    // starting with a shebang, one that the wrapper would not parse (the
    // catch below), and one with a dynamic import(), which a vm.Script of
    // Node 20 cannot resolve through the main context's loader (overlayctl
    // loads etcd3 that way).
    if (content.startsWith("#!") || content.includes("import(")) {
      return original.call(this, content, filename);
    }
    const file = join(
      s.dir,
      createHash("sha1").update(filename).update("\0").update(content).digest("hex"),
    );
    let cachedData: Buffer | undefined;
    try {
      cachedData = readFileSync(file);
    } catch {
      /* no entry */
    }
    let script: vm.Script;
    try {
      script = new vm.Script(M.wrap(content), { filename, ...(cachedData ? { cachedData } : {}) });
    } catch {
      return original.call(this, content, filename);
    }
    if (!cachedData) s.stats.misses++;
    else if (script.cachedDataRejected) s.stats.rejected++;
    else s.stats.hits++;
    if (!cachedData || script.cachedDataRejected) s.pending.push({ file, script });
    const fn = script.runInThisContext({ displayErrors: true }) as (...args: unknown[]) => unknown;
    return fn.call(this.exports, this.exports, requireFor(this), this, filename, dirname(filename));
  };
  return true;
}

/** The `require` a module gets from Node's own loader, for `mod`. */
function requireFor(mod: CjsModule): NodeJS.Require {
  const require = ((id: string) => mod.require(id)) as NodeJS.Require;
  const resolve = ((request: string, options?: { paths?: string[] }) =>
    M._resolveFilename(request, mod, false, options)) as NodeJS.RequireResolve;
  resolve.paths = (request: string) => M._resolveLookupPaths(request, mod);
  require.resolve = resolve;
  require.main = process.mainModule;
  require.extensions = M._extensions as NodeJS.RequireExtensions;
  require.cache = M._cache as NodeJS.Dict<NodeModule>;
  return require;
}

/**
 * Writes an entry for every module compiled without one. Call it once the
 * process has done its start-up work: an entry holds the code of every
 * function run so far, not only the module's top level.
 */
export function flushCompileCache(): number {
  if (!state) return 0;
  const pending = state.pending;
  state.pending = [];
  let written = 0;
  // A flag set at run time (the agent's --expose-gc) changes the hash V8
  // stamps on new entries: the next process, started without it, would
  // refuse every one of them. Write nothing rather than poison the cache.
  if (v8.cachedDataVersionTag() !== state.tag) {
    state.stats.stale += pending.length;
    state.stats.written = 0;
    return 0;
  }
  for (const p of pending) {
    try {
      const tmp = `${p.file}.${process.pid}.tmp`;
      writeFileSync(tmp, p.script.createCachedData());
      renameSync(tmp, p.file); // readers see a whole entry or none
      written++;
    } catch {
      /* a read-only cache: nothing to do */
    }
  }
  state.stats.written = written;
  return written;
}

export function compileCacheStats(): CompileCacheStats | undefined {
  return state ? { ...state.stats } : undefined;
}
