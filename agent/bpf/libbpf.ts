// The system libbpf (libbpf.so.1) through koffi. This is the ONLY module that
// imports koffi; everything above it sees plain functions that take Buffers
// and numbers and throw BpfError on failure.
//
// libbpf >= 1.0 returns -errno from int-returning calls and NULL (with errno
// set) from pointer-returning ones; check() and checkPtr() turn both into
// BpfError {op, errno, object}.
import { constants as osConstants } from "node:os";
import koffi, { type LibraryHandle } from "koffi";
import { BpfError } from "../errors";

let lib: LibraryHandle | undefined;
let libcLib: LibraryHandle | undefined;
function libc(): LibraryHandle {
  return (libcLib ??= koffi.load("libc.so.6"));
}
let trim: ((pad: number) => unknown) | null | undefined;
/**
 * glibc's malloc_trim(0): returns the free pages inside malloc's arenas to
 * the kernel. Node's threads each get an arena, and freed memory stays in
 * them (RSS) until trimmed. False without glibc.
 */
export function mallocTrim(): boolean {
  if (trim === undefined) {
    try {
      trim = libc().func("int malloc_trim(size_t pad)") as (pad: number) => unknown;
    } catch {
      trim = null;
    }
  }
  if (!trim) return false;
  trim(0);
  return true;
}

function load(): LibraryHandle {
  if (!lib) {
    try {
      lib = koffi.load("libbpf.so.1");
    } catch (e) {
      throw new BpfError("load libbpf.so.1", 2, "libbpf", `is libbpf1 installed? (${String(e)})`);
    }
    installPrint(lib);
  }
  return lib;
}

// libbpf's own messages (verifier logs, kernel extack text) go through one
// sink instead of straight to stderr: the agent routes them to its logger.
// Calls that probe for something that may be absent run quiet(), so an
// expected "no such qdisc" is not reported as a problem.
export type LibbpfLevel = "warn" | "info" | "debug";
/** msg is one message without its trailing newline. */
export type LibbpfSink = (level: LibbpfLevel, msg: string) => void;
const LEVELS: LibbpfLevel[] = ["warn", "info", "debug"]; // enum libbpf_print_level
/** libbpf's default: warnings and info to stderr, debug dropped. */
const stderrSink: LibbpfSink = (level, msg) => {
  if (level !== "debug") process.stderr.write(`${msg}\n`);
};
let sink: LibbpfSink = stderrSink;
let quietDepth = 0;
let printCb: unknown; // kept referenced: libbpf holds the pointer
const PrintFn = koffi.proto("int overlayd_libbpf_print(int level, const char *fmt, void *ap)");

function installPrint(l: LibraryHandle): void {
  const vsnprintf = libc().func(
    "int vsnprintf(void *buf, size_t n, const char *fmt, void *ap)",
  ) as (...a: unknown[]) => number;
  const buf = Buffer.alloc(4096);
  printCb = koffi.register((level: number, fmt: string, ap: unknown) => {
    if (quietDepth > 0) return 0;
    const n = vsnprintf(buf, buf.length, fmt, ap);
    if (n < 0) return 0;
    const text = buf.subarray(0, Math.min(n, buf.length - 1)).toString("utf8");
    sink(LEVELS[level] ?? "debug", text.trimEnd());
    return 0;
  }, koffi.pointer(PrintFn));
  l.func("void *libbpf_set_print(overlayd_libbpf_print *fn)")(printCb);
}

const SampleFn = koffi.proto("int overlayd_ring_sample(void *ctx, void *data, size_t size)");

/** A BPF ring buffer being read (libbpf's ring_buffer). */
export interface RingReader {
  /** Hands every record waiting now to the callback; returns how many. */
  consume(): number;
  free(): void;
}

/** Where libbpf's messages go from now on (default: stderr, as libbpf does). */
export function setLibbpfSink(s: LibbpfSink | undefined): void {
  sink = s ?? stderrSink;
}

/** Runs fn with libbpf's messages dropped: for probes whose failure is an answer. */
function quiet<T>(fn: () => T): T {
  quietDepth++;
  try {
    return fn();
  } finally {
    quietDepth--;
  }
}

// Struct layouts from <bpf/libbpf.h> and <bpf/bpf.h> (libbpf 1.1). Each
// starts with `size_t sz`, libbpf's forward/backward compatibility field.
const TcHook = koffi.struct("bpf_tc_hook", {
  sz: "size_t",
  ifindex: "int",
  attach_point: "int",
  parent: "uint32_t",
  _pad: "uint32_t",
});
const TcOpts = koffi.struct("bpf_tc_opts", {
  sz: "size_t",
  prog_fd: "int",
  flags: "uint32_t",
  prog_id: "uint32_t",
  handle: "uint32_t",
  priority: "uint32_t",
  _pad: "uint32_t",
});
const TestRunOpts = koffi.struct("bpf_test_run_opts", {
  sz: "size_t",
  data_in: "void *",
  data_out: "void *",
  data_size_in: "uint32_t",
  data_size_out: "uint32_t",
  ctx_in: "void *",
  ctx_out: "void *",
  ctx_size_in: "uint32_t",
  ctx_size_out: "uint32_t",
  retval: "uint32_t",
  repeat: "int",
  duration: "uint32_t",
  flags: "uint32_t",
  cpu: "uint32_t",
  batch_size: "uint32_t",
});
const BatchOpts = koffi.struct("bpf_map_batch_opts", {
  sz: "size_t",
  elem_flags: "uint64_t",
  flags: "uint64_t",
});

type Fn = (...args: unknown[]) => unknown;
const fns = new Map<string, Fn>();
function fn(proto: string): Fn {
  let f = fns.get(proto);
  if (!f) {
    f = load().func(proto) as Fn;
    fns.set(proto, f);
  }
  return f;
}

/**
 * A call on one of koffi's worker threads; resolves with its return value.
 * The arguments (Buffers) stay referenced meanwhile.
 */
function callAsyncRet(proto: string, args: unknown[]): Promise<number> {
  const f = fn(proto) as Fn & { async: (...a: unknown[]) => void };
  return new Promise((resolve, reject) =>
    f.async(...args, (err: unknown, ret: unknown) =>
      err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(Number(ret)),
    ),
  );
}

/** callAsyncRet(), resolving once check() found no error in what it returned. */
async function callAsync(
  proto: string,
  args: unknown[],
  op: string,
  object: string,
): Promise<void> {
  check(await callAsyncRet(proto, args), op, object);
}

const LOOKUP_BATCH =
  "int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, void *count, const bpf_map_batch_opts *opts)";
const UPDATE_BATCH =
  "int bpf_map_update_batch(int fd, const void *keys, const void *values, void *count, const bpf_map_batch_opts *opts)";

/** The in/out element count of a batch call. */
function batchCount(count: number): Buffer {
  const cnt = Buffer.alloc(4);
  cnt.writeUInt32LE(count);
  return cnt;
}

/** What a BPF_MAP_LOOKUP_BATCH call copied, and whether the map is exhausted (ENOENT). */
function lookupBatchResult(r: number, cnt: Buffer, name: string): { count: number; done: boolean } {
  const n = cnt.readUInt32LE();
  if (r === -2) return { count: n, done: true }; // ENOENT: last batch
  check(r, "map lookup batch", name);
  return { count: n, done: false };
}

function check(ret: unknown, op: string, object: string): number {
  const n = Number(ret);
  if (n < 0) throw new BpfError(op, -n, object);
  return n;
}

function checkPtr(ret: unknown, op: string, object: string): unknown {
  if (ret === null || ret === undefined) throw new BpfError(op, koffi.errno() || 22, object);
  return ret;
}

// The verifier gives up with EAGAIN as soon as a signal is pending
// (do_check() tests signal_pending() at every instruction), and libbpf
// retries a program load only 5 times. V8's CPU profiler (node --cpu-prof)
// sends the main thread SIGPROF every millisecond, and one verification of
// ovl_decap_tc takes longer: every attempt fails, and so does the start.
// The load runs with SIGPROF blocked in this thread; a sample that falls
// within it is delivered right after, and counts for the JS frame that
// called the load. Other signals still interrupt (libbpf retries).
let sigprof: { set: Buffer; mask: (...a: unknown[]) => unknown } | null | undefined;
function withSigprofBlocked<T>(f: () => T): T {
  if (sigprof === undefined) {
    try {
      const c = libc();
      const set = Buffer.alloc(128); // glibc's sigset_t
      c.func("int sigemptyset(void *set)")(set);
      c.func("int sigaddset(void *set, int signum)")(set, osConstants.signals.SIGPROF);
      sigprof = {
        set,
        mask: c.func("int pthread_sigmask(int how, const void *set, void *oldset)"),
      };
    } catch {
      sigprof = null; // no glibc: load as before
    }
  }
  const SIG_BLOCK = 0;
  const SIG_SETMASK = 2;
  const old = Buffer.alloc(128);
  if (!sigprof || Number(sigprof.mask(SIG_BLOCK, sigprof.set, old)) !== 0) return f();
  try {
    return f();
  } finally {
    sigprof.mask(SIG_SETMASK, old, null);
  }
}

/** Opaque libbpf object handles. */
export type BpfObjectHandle = { readonly __brand: "bpf_object" } & object;
export type BpfMapHandle = { readonly __brand: "bpf_map" } & object;
export type BpfProgHandle = { readonly __brand: "bpf_program" } & object;

export const BPF_TC_INGRESS = 1;
export const BPF_TC_EGRESS = 2;
export const BPF_TC_F_REPLACE = 1;
export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1;
export const XDP_FLAGS_SKB_MODE = 2;
export const XDP_FLAGS_DRV_MODE = 4;
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

export const libbpf = {
  version(): string {
    const major = fn("uint32_t libbpf_major_version(void)")();
    const minor = fn("uint32_t libbpf_minor_version(void)")();
    return `${major}.${minor}`;
  },

  /**
   * Reads the ring buffer map `fd`: each record is copied into a Buffer for
   * onRecord, from inside consume() (libbpf calls back synchronously).
   */
  ringReader(fd: number, onRecord: (data: Buffer) => void, what: string): RingReader {
    const cb = koffi.register((_ctx: unknown, data: unknown, size: number | bigint) => {
      const n = Number(size);
      onRecord(Buffer.from(koffi.decode(data, koffi.array("uint8_t", n)) as number[]));
      return 0;
    }, koffi.pointer(SampleFn));
    const rb = checkPtr(
      fn("void *ring_buffer__new(int map_fd, overlayd_ring_sample *cb, void *ctx, void *opts)")(
        fd,
        cb,
        null,
        null,
      ),
      "ring buffer",
      what,
    );
    let freed = false;
    return {
      consume: () => check(fn("int ring_buffer__consume(void *rb)")(rb), "ring consume", what),
      free: () => {
        if (freed) return;
        freed = true;
        fn("void ring_buffer__free(void *rb)")(rb);
        koffi.unregister(cb);
      },
    };
  },

  numPossibleCpus(): number {
    return check(fn("int libbpf_num_possible_cpus(void)")(), "num_possible_cpus", "libbpf");
  },

  // --- objects -----------------------------------------------------------
  openObject(path: string): BpfObjectHandle {
    return checkPtr(
      fn("void *bpf_object__open_file(const char *path, const void *opts)")(path, null),
      "open",
      path,
    ) as BpfObjectHandle;
  },
  loadObject(obj: BpfObjectHandle, name: string): void {
    check(
      withSigprofBlocked(() => fn("int bpf_object__load(void *obj)")(obj)),
      "load",
      name,
    );
  },
  /**
   * bpf_object__load on one of koffi's worker threads: the main thread goes
   * on meanwhile (V8's SIGPROF goes to the main thread only, so no signal
   * interrupts the verifier here). libbpf's log callback runs on the main
   * thread, queued by koffi, when its event loop next turns.
   */
  loadObjectAsync(obj: BpfObjectHandle, name: string): Promise<void> {
    return callAsync("int bpf_object__load(void *obj)", [obj], "load", name);
  },
  closeObject(obj: BpfObjectHandle): void {
    fn("void bpf_object__close(void *obj)")(obj);
  },
  findMap(obj: BpfObjectHandle, name: string): BpfMapHandle {
    return checkPtr(
      fn("void *bpf_object__find_map_by_name(const void *obj, const char *name)")(obj, name),
      "find map",
      name,
    ) as BpfMapHandle;
  },
  findProgram(obj: BpfObjectHandle, name: string): BpfProgHandle {
    return checkPtr(
      fn("void *bpf_object__find_program_by_name(const void *obj, const char *name)")(obj, name),
      "find program",
      name,
    ) as BpfProgHandle;
  },
  setPinPath(map: BpfMapHandle, path: string, name: string): void {
    check(fn("int bpf_map__set_pin_path(void *map, const char *path)")(map, path), "set pin", name);
  },
  setInitialValue(map: BpfMapHandle, data: Buffer, name: string): void {
    check(
      fn("int bpf_map__set_initial_value(void *map, const void *data, size_t size)")(
        map,
        data,
        data.length,
      ),
      "set initial value",
      name,
    );
  },
  mapFd(map: BpfMapHandle, name: string): number {
    return check(fn("int bpf_map__fd(const void *map)")(map), "map fd", name);
  },
  programFd(prog: BpfProgHandle, name: string): number {
    return check(fn("int bpf_program__fd(const void *prog)")(prog), "program fd", name);
  },
  setAutoload(prog: BpfProgHandle, autoload: boolean, name: string): void {
    check(
      fn("int bpf_program__set_autoload(void *prog, bool autoload)")(prog, autoload),
      "set autoload",
      name,
    );
  },

  // --- fds, pins, info --------------------------------------------------
  objGet(path: string): number {
    return check(fn("int bpf_obj_get(const char *path)")(path), "open pinned", path);
  },
  objPin(fd: number, path: string): void {
    check(fn("int bpf_obj_pin(int fd, const char *path)")(fd, path), "pin", path);
  },
  /** Fills `info` (struct bpf_map_info / bpf_prog_info) for fd. */
  objInfo(fd: number, info: Buffer, what: string): void {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(info.length);
    check(
      fn("int bpf_obj_get_info_by_fd(int fd, void *info, void *len)")(fd, info, len),
      "get info",
      what,
    );
  },
  progFdById(id: number): number {
    return check(fn("int bpf_prog_get_fd_by_id(uint32_t id)")(id), "prog by id", String(id));
  },
  close(fd: number): void {
    if (fd >= 0) fn("int close(int fd)")(fd);
  },

  // --- map elements -----------------------------------------------------
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number, name: string): void {
    check(
      fn("int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)")(
        fd,
        key,
        value,
        flags,
      ),
      "map update",
      name,
    );
  },
  /** Returns false when the key is absent. */
  mapLookup(fd: number, key: Buffer, value: Buffer, name: string): boolean {
    const r = Number(
      fn("int bpf_map_lookup_elem(int fd, const void *key, void *value)")(fd, key, value),
    );
    if (r === -2) return false;
    check(r, "map lookup", name);
    return true;
  },
  /** Returns false when the key was absent. */
  mapDelete(fd: number, key: Buffer, name: string): boolean {
    const r = Number(fn("int bpf_map_delete_elem(int fd, const void *key)")(fd, key));
    if (r === -2) return false;
    check(r, "map delete", name);
    return true;
  },
  /** Writes the key after `key` (or the first, when key is null) into next. */
  mapNextKey(fd: number, key: Buffer | null, next: Buffer, name: string): boolean {
    const r = Number(
      fn("int bpf_map_get_next_key(int fd, const void *key, void *next_key)")(fd, key, next),
    );
    if (r === -2) return false;
    check(r, "map next key", name);
    return true;
  },
  /**
   * One BPF_MAP_LOOKUP_BATCH step. Returns the number of elements copied and
   * whether the map is exhausted. Throws BpfError with errno EINVAL/ENOTSUP
   * on map types without batch support (callers fall back to next_key).
   */
  mapLookupBatch(
    fd: number,
    inBatch: Buffer | null,
    outBatch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: number,
    name: string,
  ): { count: number; done: boolean } {
    const cnt = batchCount(count);
    const r = Number(
      fn(LOOKUP_BATCH)(fd, inBatch, outBatch, keys, values, cnt, { sz: koffi.sizeof(BatchOpts) }),
    );
    return lookupBatchResult(r, cnt, name);
  },
  /** mapLookupBatch on one of koffi's worker threads (the caller holds the buffers). */
  async mapLookupBatchAsync(
    fd: number,
    inBatch: Buffer | null,
    outBatch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: number,
    name: string,
  ): Promise<{ count: number; done: boolean }> {
    const cnt = batchCount(count);
    const opts = { sz: koffi.sizeof(BatchOpts) };
    const r = await callAsyncRet(LOOKUP_BATCH, [fd, inBatch, outBatch, keys, values, cnt, opts]);
    return lookupBatchResult(r, cnt, name);
  },
  /** mapUpdateBatch on one of koffi's worker threads (the buffers must stay alive: the caller holds them). */
  mapUpdateBatchAsync(
    fd: number,
    keys: Buffer,
    values: Buffer,
    count: number,
    name: string,
  ): Promise<void> {
    const cnt = batchCount(count);
    return callAsync(
      UPDATE_BATCH,
      [fd, keys, values, cnt, { sz: koffi.sizeof(BatchOpts) }],
      "map update batch",
      name,
    );
  },
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, name: string): void {
    const cnt = batchCount(count);
    check(
      fn(UPDATE_BATCH)(fd, keys, values, cnt, { sz: koffi.sizeof(BatchOpts) }),
      "map update batch",
      name,
    );
  },

  // --- attach -----------------------------------------------------------
  tcHookCreate(ifindex: number, attachPoint: number, what: string): void {
    // Quiet: an existing clsact (every attach after the first) makes the
    // kernel say "Exclusivity flag on, cannot modify", which is no warning.
    const r = quiet(() =>
      Number(
        fn("int bpf_tc_hook_create(bpf_tc_hook *hook)")({
          sz: koffi.sizeof(TcHook),
          ifindex,
          attach_point: attachPoint,
          parent: 0,
        }),
      ),
    );
    if (r === -17) return; // EEXIST: clsact already there
    check(r, "tc hook create", what);
  },
  tcAttach(
    ifindex: number,
    attachPoint: number,
    progFd: number,
    handle: number,
    priority: number,
    what: string,
  ): void {
    check(
      fn("int bpf_tc_attach(const bpf_tc_hook *hook, bpf_tc_opts *opts)")(
        { sz: koffi.sizeof(TcHook), ifindex, attach_point: attachPoint, parent: 0 },
        {
          sz: koffi.sizeof(TcOpts),
          prog_fd: progFd,
          flags: BPF_TC_F_REPLACE,
          prog_id: 0,
          handle,
          priority,
        },
      ),
      "tc attach",
      what,
    );
  },
  /** Program id attached at handle/priority, or 0 when none. */
  tcQuery(ifindex: number, attachPoint: number, handle: number, priority: number): number {
    const opts = {
      sz: koffi.sizeof(TcOpts),
      prog_fd: 0,
      flags: 0,
      prog_id: 0,
      handle,
      priority,
      _pad: 0,
    };
    // Without a clsact qdisc the kernel says so through extack: not an error here.
    const r = quiet(() =>
      Number(
        fn("int bpf_tc_query(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)")(
          { sz: koffi.sizeof(TcHook), ifindex, attach_point: attachPoint, parent: 0 },
          opts,
        ),
      ),
    );
    return r === 0 ? opts.prog_id : 0;
  },
  /** Removes our filter; false when there was none (or no clsact at all). */
  tcDetach(
    ifindex: number,
    attachPoint: number,
    handle: number,
    priority: number,
    what: string,
  ): boolean {
    // Without a clsact qdisc the kernel answers EINVAL, not ENOENT: ask first.
    if (!libbpf.tcQuery(ifindex, attachPoint, handle, priority)) return false;
    const r = Number(
      fn("int bpf_tc_detach(const bpf_tc_hook *hook, const bpf_tc_opts *opts)")(
        { sz: koffi.sizeof(TcHook), ifindex, attach_point: attachPoint, parent: 0 },
        { sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, handle, priority },
      ),
    );
    if (r === -2 || r === -19) return false; // ENOENT / ENODEV: gone meanwhile
    check(r, "tc detach", what);
    return true;
  },
  xdpAttach(ifindex: number, progFd: number, flags: number, what: string): void {
    check(
      fn("int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const void *opts)")(
        ifindex,
        progFd,
        flags,
        null,
      ),
      "xdp attach",
      what,
    );
  },
  xdpDetach(ifindex: number, flags: number, what: string): void {
    check(
      fn("int bpf_xdp_detach(int ifindex, uint32_t flags, const void *opts)")(ifindex, flags, null),
      "xdp detach",
      what,
    );
  },
  xdpQueryId(ifindex: number, flags: number): number {
    const id = Buffer.alloc(4);
    const r = Number(
      fn("int bpf_xdp_query_id(int ifindex, int flags, void *prog_id)")(ifindex, flags, id),
    );
    return r === 0 ? id.readUInt32LE() : 0;
  },

  // --- BPF_PROG_RUN -----------------------------------------------------
  testRun(
    progFd: number,
    dataIn: Buffer,
    ctxIn: Buffer | null,
    what: string,
    repeat = 1,
  ): { retval: number; data: Buffer; ctx: Buffer | null; durationNs: number } {
    const dataOut = Buffer.alloc(dataIn.length + 512);
    const ctxOut = ctxIn ? Buffer.alloc(ctxIn.length) : null;
    const opts = {
      sz: koffi.sizeof(TestRunOpts),
      data_in: dataIn,
      data_out: dataOut,
      data_size_in: dataIn.length,
      data_size_out: dataOut.length,
      ctx_in: ctxIn,
      ctx_out: ctxOut,
      ctx_size_in: ctxIn ? ctxIn.length : 0,
      ctx_size_out: ctxOut ? ctxOut.length : 0,
      retval: 0,
      repeat,
      duration: 0,
      flags: 0,
      cpu: 0,
      batch_size: 0,
    };
    check(
      fn("int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)")(progFd, opts),
      "test run",
      what,
    );
    return {
      retval: opts.retval,
      data: dataOut.subarray(0, opts.data_size_out),
      ctx: ctxOut ? ctxOut.subarray(0, opts.ctx_size_out) : null,
      /** The kernel's mean time per run over `repeat` runs. */
      durationNs: opts.duration,
    };
  },
};

export type LibBpf = typeof libbpf;
