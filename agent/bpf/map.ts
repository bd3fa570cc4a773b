// A BPF map by fd, checked against the generated ABI, with element, iteration
// and batch operations. Knows nothing of what the bytes mean (see codec.ts).
import { join } from "node:path";
import { AbiMismatchError, BpfError } from "../errors";
import { BPF_MAP_TYPE, MAPS, type MapName } from "./abi.generated";
import { BPF_ANY, libbpf } from "./libbpf";
import { percpuStride } from "./codec";

const PERCPU_TYPES: ReadonlySet<number> = new Set([
  BPF_MAP_TYPE.PERCPU_HASH,
  BPF_MAP_TYPE.PERCPU_ARRAY,
]);

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

/** struct bpf_map_info from <linux/bpf.h> (first fields only). */
export function mapInfo(fd: number, what: string): MapInfo {
  const b = Buffer.alloc(96);
  libbpf.objInfo(fd, b, what);
  const nameEnd = b.indexOf(0, 24);
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    keySize: b.readUInt32LE(8),
    valueSize: b.readUInt32LE(12),
    maxEntries: b.readUInt32LE(16),
    flags: b.readUInt32LE(20),
    name: b.toString("latin1", 24, nameEnd >= 24 && nameEnd < 40 ? nameEnd : 40),
  };
}

/** Compares a live map with the generated ABI (cilium's alignchecker). */
export function checkAbi(name: MapName, info: MapInfo, where: string): void {
  const want = MAPS[name];
  const diffs: string[] = [];
  if (info.type !== want.type) diffs.push(`type ${info.type} != ${want.type}`);
  if (info.keySize !== want.keySize) diffs.push(`key size ${info.keySize} != ${want.keySize}`);
  if (info.valueSize !== want.valueSize) {
    diffs.push(`value size ${info.valueSize} != ${want.valueSize}`);
  }
  if (info.maxEntries !== want.maxEntries) {
    diffs.push(`max entries ${info.maxEntries} != ${want.maxEntries}`);
  }
  if (diffs.length) {
    throw new AbiMismatchError(
      `map ${name} at ${where} does not match this overlayd's ABI (${diffs.join(", ")}); ` +
        `it was made by another version: remove it (overlayd --cleanup) and restart`,
    );
  }
}

/** The errors of a map type without BPF_MAP_UPDATE_BATCH. */
function batchUnsupported(e: unknown): boolean {
  return e instanceof BpfError && ["EINVAL", "ENOTSUP", "EOPNOTSUPP"].includes(e.code);
}

/** Entries per BPF_MAP_UPDATE_BATCH call. */
const BATCH = 8192;

let cpus: number | undefined;
export function possibleCpus(): number {
  cpus ??= libbpf.numPossibleCpus();
  return cpus;
}

export class BpfMap {
  readonly keySize: number;
  readonly valueSize: number;
  /** Size of the buffer a lookup fills: per-CPU maps return one value per CPU. */
  readonly valueBufSize: number;
  readonly percpu: boolean;
  private batchSupported: boolean | undefined;
  private updateBatchSupported: boolean | undefined;

  constructor(
    readonly name: MapName,
    readonly fd: number,
  ) {
    const def = MAPS[name];
    this.keySize = def.keySize;
    this.valueSize = def.valueSize;
    this.percpu = PERCPU_TYPES.has(def.type);
    this.valueBufSize = this.percpu ? percpuStride(def.valueSize) * possibleCpus() : def.valueSize;
  }

  /** Opens <pinPath>/<name> and checks it against the ABI. */
  static openPinned(pinPath: string, name: MapName): BpfMap {
    const path = join(pinPath, name);
    const fd = libbpf.objGet(path);
    try {
      checkAbi(name, mapInfo(fd, name), path);
    } catch (e) {
      libbpf.close(fd);
      throw e;
    }
    return new BpfMap(name, fd);
  }

  close(): void {
    libbpf.close(this.fd);
  }

  lookup(key: Buffer): Buffer | undefined {
    const v = Buffer.alloc(this.valueBufSize);
    return libbpf.mapLookup(this.fd, key, v, this.name) ? v : undefined;
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    libbpf.mapUpdate(this.fd, key, value, flags, this.name);
  }

  delete(key: Buffer): boolean {
    return libbpf.mapDelete(this.fd, key, this.name);
  }

  /**
   * Writes many entries: BPF_MAP_UPDATE_BATCH in chunks where the map type
   * has it, else one update per entry. keys/values are concatenated.
   */
  updateMany(keys: Buffer, values: Buffer, count: number): void {
    if (this.updateBatchSupported !== false) {
      try {
        for (let i = 0; i < count; i += BATCH) {
          const n = Math.min(BATCH, count - i);
          libbpf.mapUpdateBatch(
            this.fd,
            keys.subarray(i * this.keySize, (i + n) * this.keySize),
            values.subarray(i * this.valueBufSize, (i + n) * this.valueBufSize),
            n,
            this.name,
          );
        }
        this.updateBatchSupported = true;
        return;
      } catch (e) {
        if (this.updateBatchSupported === true || !batchUnsupported(e)) throw e;
        this.updateBatchSupported = false; // probe failed on the first chunk: nothing written
      }
    }
    for (let i = 0; i < count; i++) {
      this.update(
        keys.subarray(i * this.keySize, (i + 1) * this.keySize),
        values.subarray(i * this.valueBufSize, (i + 1) * this.valueBufSize),
      );
    }
  }

  /**
   * updateMany() with each batch on a worker thread: several maps can be
   * written side by side (the kernel's work, not JavaScript's). Without
   * BPF_MAP_UPDATE_BATCH it is updateMany() itself.
   */
  async updateManyAsync(keys: Buffer, values: Buffer, count: number): Promise<void> {
    if (this.updateBatchSupported === undefined) this.probeUpdateBatch();
    if (!this.updateBatchSupported) return this.updateMany(keys, values, count);
    for (let i = 0; i < count; i += BATCH) {
      const n = Math.min(BATCH, count - i);
      await libbpf.mapUpdateBatchAsync(
        this.fd,
        keys.subarray(i * this.keySize, (i + n) * this.keySize),
        values.subarray(i * this.valueBufSize, (i + n) * this.valueBufSize),
        n,
        this.name,
      );
    }
  }

  /** Does the map type have BPF_MAP_UPDATE_BATCH? A batch of none says. */
  private probeUpdateBatch(): void {
    try {
      libbpf.mapUpdateBatch(this.fd, Buffer.alloc(0), Buffer.alloc(0), 0, this.name);
      this.updateBatchSupported = true;
    } catch (e) {
      if (!batchUnsupported(e)) throw e;
      this.updateBatchSupported = false;
    }
  }

  *keys(): Generator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      if (!libbpf.mapNextKey(this.fd, prev, next, this.name)) return;
      yield next;
      prev = next;
    }
  }

  /**
   * All entries. Uses BPF_MAP_LOOKUP_BATCH where the map type has it (hash
   * and array maps), else get_next_key + lookup (LPM tries have no batch
   * ops). An entry deleted between the two calls is skipped.
   */
  entries(): Array<[Buffer, Buffer]> {
    const out: Array<[Buffer, Buffer]> = [];
    this.forEach((keys, ko, values, vo) =>
      out.push([
        Buffer.from(keys.subarray(ko, ko + this.keySize)),
        Buffer.from(values.subarray(vo, vo + this.valueBufSize)),
      ]),
    );
    return out;
  }

  /**
   * Every entry handed to fn(keys, keyOffset, values, valueOffset), from
   * the batch buffers without a copy each (a scrape reads 65,536 per-CPU
   * peer counters). The buffers are reused: read them, do not keep them.
   */
  forEach(fn: (keys: Buffer, ko: number, values: Buffer, vo: number) => void): void {
    if (this.batchSupported !== false) {
      try {
        this.batches(fn);
        this.batchSupported = true;
        return;
      } catch (e) {
        if (!batchUnsupported(e)) throw e;
        this.batchSupported = false;
      }
    }
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) fn(k, 0, v, 0);
    }
  }

  /**
   * forEach() with the kernel's copy on a worker thread, in one batch the
   * size of the map: two maps are read side by side (overlayctl map dump
   * reads 65,536 subnets and as many per-CPU counters). Without batch
   * lookups it is forEach() itself.
   */
  async forEachAsync(
    fn: (keys: Buffer, ko: number, values: Buffer, vo: number) => void,
  ): Promise<void> {
    if (this.batchSupported === false) return this.forEach(fn);
    const max = MAPS[this.name].maxEntries;
    const keys = Buffer.allocUnsafe(this.keySize * max);
    const values = Buffer.allocUnsafe(this.valueBufSize * max);
    const outBatch = Buffer.alloc(this.tokenSize);
    let r: { count: number; done: boolean };
    try {
      r = await libbpf.mapLookupBatchAsync(this.fd, null, outBatch, keys, values, max, this.name);
      this.batchSupported = true;
    } catch (e) {
      if (!batchUnsupported(e)) throw e;
      this.batchSupported = false;
      return this.forEach(fn);
    }
    for (let i = 0; i < r.count; i++) fn(keys, i * this.keySize, values, i * this.valueBufSize);
    // Entries added while the kernel copied may not fit: read on from there.
    if (!r.done) this.batches(fn, outBatch);
  }

  /** Batch tokens are opaque; for hash maps the kernel uses a u32 bucket. */
  private get tokenSize(): number {
    return Math.max(this.keySize, 8);
  }

  private batches(
    fn: (keys: Buffer, ko: number, values: Buffer, vo: number) => void,
    from: Buffer | null = null,
  ): void {
    const chunk = 4096;
    const keys = Buffer.alloc(this.keySize * chunk);
    const values = Buffer.alloc(this.valueBufSize * chunk);
    let inBatch = from;
    for (;;) {
      const outBatch = Buffer.alloc(this.tokenSize);
      const r = libbpf.mapLookupBatch(this.fd, inBatch, outBatch, keys, values, chunk, this.name);
      for (let i = 0; i < r.count; i++) fn(keys, i * this.keySize, values, i * this.valueBufSize);
      if (r.done) return;
      inBatch = outBatch;
    }
  }
}
