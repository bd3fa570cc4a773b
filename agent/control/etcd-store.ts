// The etcd side of the control plane: config, leases, watch. The ONLY agent
// module that uses etcd3 (through ./etcd3, with the build's codecs).
// Everything it returns is decoded through lease.ts.
import { readFileSync } from "node:fs";
import {
  Etcd3,
  GRPCDeadlineExceededError,
  type ICallable,
  type IKeyValue,
  type IOptions,
  type IRangeRequest,
  type IRangeResponse,
  type Lease as EtcdLease,
  type Watcher,
} from "./etcd3";
import { OverlayError } from "../errors";
import {
  configKey,
  decodeLeaseAttrs,
  encodeLeaseAttrs,
  isReservation,
  keyOf,
  leaseKey,
  parseLeaseKey,
  parseLeaseKeyParts,
  subnetsPrefix,
  type Lease,
  type LeaseAttrs,
} from "./lease";
import { leaseAttrsFromBytes, leaseKeyFromBytes } from "./lease-bytes";
import { readRangeResponse } from "./range-codec";
import { type Cidr } from "../net/ip";
import { type Cidr6 } from "../net/ip6";

export interface EtcdOptions {
  endpoints: string[];
  prefix: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  username?: string;
  password?: string;
  /** Per-call deadline, so a dead etcd fails calls instead of hanging. */
  callTimeoutMs?: number;
  /**
   * Deadline of each page of a listing (default LIST_TIMEOUT_MS). Longer
   * than a call's: when every node of a cluster lists at once (a
   * DaemonSet rollout), etcd answers every listing, late, and a listing
   * given up at 5 s is asked for again in full: 500 planes restarting
   * against 5,000 leases retried 2,127 times, and etcd sent each 4.7 MB
   * instead of 0.9 MB.
   */
  listTimeoutMs?: number;
}

/** A listing page's deadline, by default. */
export const LIST_TIMEOUT_MS = 30_000;

/** The end of the key range of every key that starts with `prefix`. */
function rangeEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1] = (end[end.length - 1] as number) + 1;
  return end;
}

/** Keys per page when listing leases (~190 bytes each in etcd's answer). */
export const LIST_PAGE = 5000;

/**
 * Ranges a big listing is read as at once (setListSplits): etcd answers
 * each on its own goroutine, so the pages of several are prepared while
 * this process decodes, or is busy loading the data path.
 */
export const LIST_STREAMS = 4;

export class EtcdError extends OverlayError {
  constructor(op: string, cause: unknown) {
    super(`etcd ${op}: ${cause instanceof Error ? cause.message : String(cause)}`, true);
  }
}

function readPem(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new OverlayError(`${flag} ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/** Builds etcd3 client options from our flags; no I/O but reading PEM files. */
export function clientOptions(o: EtcdOptions): IOptions {
  const opts: IOptions = {
    hosts: o.endpoints,
    dialTimeout: 3000,
    defaultCallOptions: (ctx) =>
      ctx.isStream ? {} : { deadline: Date.now() + (o.callTimeoutMs ?? 5000) },
  };
  if (o.caFile || o.certFile || o.keyFile) {
    if (!o.caFile) throw new OverlayError("--etcd-cafile is required with client certificates");
    opts.credentials = {
      rootCertificate: readPem(o.caFile, "--etcd-cafile"),
      ...(o.keyFile ? { privateKey: readPem(o.keyFile, "--etcd-keyfile") } : {}),
      ...(o.certFile ? { certChain: readPem(o.certFile, "--etcd-certfile") } : {}),
    };
  }
  if (o.username) opts.auth = { username: o.username, password: o.password ?? "" };
  return opts;
}

export type LeaseEvent =
  | { type: "put"; lease: Lease }
  /** subnet6: the IPv6 half of the deleted key (a dual-stack lease's). */
  | { type: "delete"; subnet: Cidr; subnet6?: Cidr6; revision: string }
  | { type: "config"; text: string | undefined; revision: string }
  /** A lease value that does not decode: logged, the data path untouched. */
  | { type: "bad"; key: string; error: string; revision: string };

export interface WatchHandle {
  close(): Promise<void>;
  lastRevision(): string;
}

export interface ListResult {
  leases: Lease[];
  /** Revision of the listing: watch from revision + 1. */
  revision: string;
  /** Keys whose value could not be decoded (logged, not programmed). */
  bad: { key: string; error: string }[];
}

/** A lease we hold, with its keepalive (none for a reservation). */
export interface HeldLease {
  lease: Lease;
  keepalive?: EtcdLease;
}

/**
 * etcd3's client, plus RangeResponses as bytes. etcd3 decodes every response
 * through protobufjs into objects (a Buffer per key and value, int64s as
 * strings through Long); for a listing of 65,536 leases that, and the
 * garbage, was most of a cold start. rawRange() makes the same call on
 * etcd3's own connection pool (its hosts, TLS, auth token and circuit
 * breakers) with a deserializer that keeps the bytes, and range-codec.ts
 * reads them in place. It returns undefined where etcd3's client is not
 * shaped as this expects (another etcd3 version): then kv.range it is.
 */
class Client extends Etcd3 {
  rawRange(req: IRangeRequest, timeoutMs: number): Promise<Buffer> | undefined {
    const pool: ICallable<unknown> = this.pool;
    if (typeof pool?.withConnection !== "function") return undefined;
    return pool.withConnection("KV", ({ client, metadata }) => {
      const service = (client.constructor as { service?: Record<string, RpcDef> }).service;
      const def = service?.Range;
      if (!def?.path || typeof def.requestSerialize !== "function")
        throw new RawUnsupported("etcd3's KV client has no Range definition");
      return new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest<IRangeRequest, Buffer>(
          def.path,
          def.requestSerialize,
          (b: Buffer) => b,
          req,
          metadata,
          { deadline: Date.now() + timeoutMs },
          (err, res) => (err || !res ? reject(err ?? new Error("no response")) : resolve(res)),
        ),
      );
    });
  }
}

interface RpcDef {
  path: string;
  requestSerialize: (req: IRangeRequest) => Buffer;
}

class RawUnsupported extends Error {}

/** How listings were read (tests check that the byte path is the one taken). */
export interface ListStats {
  /** Pages read from the response bytes (range-codec.ts). */
  rawPages: number;
  /** Pages decoded by etcd3 (its client lacks the byte path, or that call failed). */
  decodedPages: number;
  /** Keys whose key and value took the fast decode (lease-bytes.ts). */
  fastKeys: number;
}

export class EtcdStore {
  private readonly client: Client;
  readonly listStats: ListStats = { rawPages: 0, decodedPages: 0, fastKeys: 0 };
  /** Cleared when etcd3's client turns out not to have the byte path. */
  private raw = true;

  constructor(readonly opts: EtcdOptions) {
    this.client = new Client(clientOptions(opts));
  }

  get prefix(): string {
    return this.opts.prefix;
  }

  async close(): Promise<void> {
    this.client.close();
  }

  async getConfig(): Promise<string | undefined> {
    try {
      return (await this.client.get(configKey(this.prefix)).string()) ?? undefined;
    } catch (e) {
      throw new EtcdError(`get ${configKey(this.prefix)}`, e);
    }
  }

  async putConfig(text: string): Promise<void> {
    try {
      await this.client.put(configKey(this.prefix)).value(text);
    } catch (e) {
      throw new EtcdError(`put ${configKey(this.prefix)}`, e);
    }
  }

  private decode(key: string, value: string, leaseId: string, modRevision: string): Lease {
    const parts = parseLeaseKeyParts(this.prefix, key);
    if (!parts) {
      throw new OverlayError(
        `${key}: not a lease key (want …/subnets/a.b.c.d-len or a.b.c.d-len&ipv6-len)`,
      );
    }
    return { ...parts, attrs: decodeLeaseAttrs(value, key), leaseId, modRevision };
  }

  /** Every key of a v4 subnet: "…/10.5.1.0-24" and any "…/10.5.1.0-24&<v6>". */
  private async keysOf(subnet: Cidr): Promise<{ key: string; kv: IKeyValue }[]> {
    const base = leaseKey(this.prefix, subnet);
    let res;
    try {
      res = await this.client.kv.range({ key: Buffer.from(base), range_end: rangeEnd(base) });
    } catch (e) {
      throw new EtcdError(`get ${base}`, e);
    }
    return res.kvs
      .map((kv) => ({ key: kv.key.toString(), kv }))
      .filter(({ key }) => parseLeaseKey(this.prefix, key)?.equals(subnet));
  }

  /**
   * Cuts for listings (listSplits() in lease.ts): key texts after
   * "…/subnets/" where a listing is split into ranges read side by side.
   */
  setListSplits(cuts: string[]): void {
    this.splits = [...cuts].sort();
  }

  private splits: string[] = [];

  /**
   * Every lease, as one consistent snapshot: pages of LIST_PAGE keys, all
   * read at one revision. One unpaged range of 65,536 leases is ~12 MB,
   * past gRPC's default 4 MB message limit. With cuts (setListSplits) the
   * key range is read as that many ranges at once, each page by page; the
   * leases come in key order either way. Each page is read from its bytes
   * (Client.rawRange), or decoded by etcd3 if that fails.
   */
  async list(): Promise<ListResult> {
    const what = subnetsPrefix(this.prefix);
    const prefix = Buffer.from(what);
    const bounds = [prefix, ...this.splits.map((c) => Buffer.from(what + c)), rangeEnd(what)];
    const parts = bounds.slice(1).map(() => ({ leases: [], revision: "0", bad: [] }) as ListResult);
    const page = (i: number, key: Buffer, revision: string | undefined) =>
      this.page(
        {
          key,
          range_end: bounds[i + 1] as Buffer,
          limit: LIST_PAGE,
          ...(revision ? { revision } : {}),
        },
        prefix,
        parts[i] as ListResult,
      ).catch((e: unknown) => {
        throw new EtcdError(`list ${what}`, e);
      });
    // The first page of every range at once. They are one snapshot if they
    // have one revision; a write between them makes it two, and those read
    // later are read again at the earliest one.
    const first = await Promise.all(parts.map((_, i) => page(i, bounds[i] as Buffer, undefined)));
    const revision = first.reduce(
      (r, p) => (BigInt(p.revision) < BigInt(r) ? p.revision : r),
      (first[0] as { revision: string }).revision,
    );
    await Promise.all(
      first.map(async (res, i) => {
        if (res.revision !== revision) res = await page(i, bounds[i] as Buffer, revision);
        for (;;) {
          // Ask for the next page before decoding this one: etcd prepares it
          // while we decode.
          const next =
            res.more && res.lastKey
              ? page(i, Buffer.concat([res.lastKey, Buffer.from([0])]), revision)
              : undefined;
          next?.catch(() => undefined); // awaited below; not unhandled meanwhile
          res.decode();
          if (!next) return;
          res = await next;
        }
      }),
    );
    if (parts.length === 1) return { ...(parts[0] as ListResult), revision };
    return {
      leases: parts.flatMap((p) => p.leases),
      revision,
      bad: parts.flatMap((p) => p.bad),
    };
  }

  /**
   * One page of a listing: its revision, whether more follow, its last key,
   * and decode(), which adds its leases to `out`.
   */
  private async page(
    req: IRangeRequest,
    prefix: Buffer,
    out: ListResult,
  ): Promise<{ revision: string; more: boolean; lastKey?: Buffer; decode: () => void }> {
    const timeoutMs = this.opts.listTimeoutMs ?? LIST_TIMEOUT_MS;
    const bytes = await this.rawPage(req, timeoutMs);
    if (bytes) {
      this.listStats.rawPages++;
      // The walk is cheap; decoding the leases is the work: done in decode().
      const r = readRangeResponse(bytes, () => undefined);
      return {
        revision: r.revision,
        more: r.more,
        ...(r.kvs ? { lastKey: Buffer.from(bytes.subarray(r.lastKeyStart, r.lastKeyEnd)) } : {}),
        decode: () => this.decodeRaw(bytes, prefix, out),
      };
    }
    const res: IRangeResponse = await this.client.kv.range(req, {
      deadline: Date.now() + timeoutMs,
    });
    this.listStats.decodedPages++;
    const last = res.kvs[res.kvs.length - 1];
    return {
      revision: String(res.header.revision),
      more: res.more,
      ...(last ? { lastKey: last.key } : {}),
      decode: () => {
        for (const kv of res.kvs) {
          this.decodeInto(
            out,
            kv.key.toString(),
            kv.value.toString(),
            String(kv.lease),
            String(kv.mod_revision),
          );
        }
      },
    };
  }

  /** The page's bytes; undefined to have etcd3 decode it instead. */
  private async rawPage(req: IRangeRequest, timeoutMs: number): Promise<Buffer | undefined> {
    if (!this.raw) return undefined;
    try {
      const p = this.client.rawRange(req, timeoutMs);
      if (!p) this.raw = false;
      return await p;
    } catch (e) {
      if (e instanceof RawUnsupported) this.raw = false;
      // A deadline would only pass again; anything else (an auth token
      // that expired, which etcd3 renews) gets one more try through etcd3.
      if (e instanceof GRPCDeadlineExceededError) throw e;
      return undefined;
    }
  }

  private decodeRaw(bytes: Buffer, prefix: Buffer, out: ListResult): void {
    readRangeResponse(bytes, (kv) => {
      const subnet = leaseKeyFromBytes(bytes, kv.keyStart, kv.keyEnd, prefix);
      const attrs = subnet && leaseAttrsFromBytes(bytes, kv.valueStart, kv.valueEnd);
      if (subnet && attrs) {
        this.listStats.fastKeys++;
        out.leases.push({ subnet, attrs, leaseId: kv.lease, modRevision: kv.modRevision });
        return;
      }
      this.decodeInto(
        out,
        bytes.toString("utf8", kv.keyStart, kv.keyEnd),
        bytes.toString("utf8", kv.valueStart, kv.valueEnd),
        kv.lease,
        kv.modRevision,
      );
    });
  }

  private decodeInto(
    out: ListResult,
    key: string,
    value: string,
    leaseId: string,
    modRevision: string,
  ): void {
    try {
      out.leases.push(this.decode(key, value, leaseId, modRevision));
    } catch (e) {
      out.bad.push({ key, error: (e as Error).message });
    }
  }

  /**
   * Creates the lease only if nobody holds the key (a transaction on
   * create_revision == 0), bound to a fresh etcd lease with keepalive.
   * Returns undefined when someone else won the race.
   */
  async create(
    subnet: Cidr,
    attrs: LeaseAttrs,
    ttlSeconds: number,
    onLost: (err: Error) => void,
    subnet6?: Cidr6,
  ): Promise<HeldLease | undefined> {
    const key = leaseKey(this.prefix, subnet, subnet6);
    const ka = this.client.lease(ttlSeconds, { autoKeepAlive: true });
    let id: string;
    try {
      id = await ka.grant();
    } catch (e) {
      ka.release();
      throw new EtcdError(`grant lease for ${key}`, e);
    }
    // No key of this v4 subnet at all: neither "…-24" nor any "…-24&<v6>"
    // (a compare over the key range, so a dual-stack create cannot take a
    // subnet an older node holds under its v4-only key, or the reverse).
    const base = leaseKey(this.prefix, subnet);
    let res;
    try {
      res = await this.client.kv.txn({
        compare: [
          {
            key: Buffer.from(base),
            range_end: rangeEnd(base),
            target: "Create",
            result: "Equal",
            create_revision: 0,
          },
        ],
        success: [
          {
            request_put: {
              key: Buffer.from(key),
              value: Buffer.from(encodeLeaseAttrs(attrs)),
              lease: id,
            },
          },
        ],
        failure: [],
      });
    } catch (e) {
      await ka.revoke().catch(() => undefined);
      throw new EtcdError(`create ${key}`, e);
    }
    if (!res.succeeded) {
      await ka.revoke().catch(() => undefined);
      return undefined;
    }
    ka.on("lost", onLost);
    const modRevision = String(res.header.revision);
    return {
      lease: { subnet, ...(subnet6 ? { subnet6 } : {}), attrs, leaseId: id, modRevision },
      keepalive: ka,
    };
  }

  /**
   * Takes over a lease that already carries our PublicIP (a restart) or a
   * reservation made for us: rewrites it with our attributes if it is still
   * the version we saw. A reservation keeps no etcd lease (never expires).
   */
  async adopt(
    existing: Lease,
    attrs: LeaseAttrs,
    ttlSeconds: number,
    reservation: boolean,
    onLost: (err: Error) => void,
    subnet6?: Cidr6,
  ): Promise<HeldLease | undefined> {
    // `subnet6` is the IPv6 half the lease has afterwards: when it differs
    // from the existing key's (a v4-only lease in a network now dual-stack,
    // or the reverse), the lease moves to its new key in the same
    // transaction: the old key deleted first, so a watcher sees the delete
    // and then the put.
    const old = keyOf(this.prefix, existing);
    const key = leaseKey(this.prefix, existing.subnet, subnet6);
    const value = encodeLeaseAttrs(attrs);
    let ka: EtcdLease | undefined;
    let put = this.client.put(key).value(value);
    if (!reservation) {
      ka = this.client.lease(ttlSeconds, { autoKeepAlive: true });
      try {
        put = put.lease(await ka.grant());
      } catch (e) {
        ka.release();
        throw new EtcdError(`grant lease for ${key}`, e);
      }
    }
    let res;
    try {
      let txn = this.client.if(old, "Mod", "==", existing.modRevision);
      if (old !== key) txn = txn.and(key, "Create", "==", 0);
      res = await (
        old !== key ? txn.then(this.client.delete().key(old), put) : txn.then(put)
      ).commit();
    } catch (e) {
      await ka?.revoke().catch(() => undefined);
      throw new EtcdError(`adopt ${key}`, e);
    }
    if (!res.succeeded) {
      await ka?.revoke().catch(() => undefined);
      return undefined;
    }
    ka?.on("lost", onLost);
    const leaseId = ka ? String(await ka.grant()) : "0";
    // The key is bound to the new lease now: the previous run's holds
    // nothing. A failure here costs only that lease's TTL.
    if (existing.leaseId !== leaseId) await this.revoke(existing.leaseId).catch(() => undefined);
    return {
      lease: {
        subnet: existing.subnet,
        ...(subnet6 ? { subnet6 } : {}),
        attrs,
        leaseId,
        modRevision: String(res.header.revision),
      },
      keepalive: ka,
    };
  }

  /** The lease of a v4 subnet, under its v4-only or its dual-stack key. */
  async get(subnet: Cidr): Promise<Lease | undefined> {
    const found = (await this.keysOf(subnet))[0];
    if (!found) return undefined;
    const { key, kv } = found;
    return this.decode(key, kv.value.toString(), String(kv.lease), String(kv.mod_revision));
  }

  /**
   * A reservation: a lease key with no etcd lease, so it never expires. It
   * replaces whatever key the subnet had (in one transaction).
   */
  async reserve(subnet: Cidr, attrs: LeaseAttrs, subnet6?: Cidr6): Promise<void> {
    const key = leaseKey(this.prefix, subnet, subnet6);
    const others = (await this.keysOf(subnet)).filter((k) => k.key !== key);
    try {
      await this.client.kv.txn({
        compare: [],
        success: [
          ...others.map((o) => ({ request_delete_range: { key: o.kv.key } })),
          { request_put: { key: Buffer.from(key), value: Buffer.from(encodeLeaseAttrs(attrs)) } },
        ],
        failure: [],
      });
    } catch (e) {
      throw new EtcdError(`put ${key}`, e);
    }
  }

  /** Deletes the subnet's lease, whichever key (v4-only or dual-stack) it has. */
  async remove(subnet: Cidr): Promise<boolean> {
    let deleted = 0;
    for (const { key } of await this.keysOf(subnet)) {
      try {
        const r = await this.client.delete().key(key).exec();
        deleted += Number(r.deleted);
      } catch (e) {
        throw new EtcdError(`delete ${key}`, e);
      }
    }
    return deleted > 0;
  }

  /**
   * Revokes an etcd lease this node no longer uses: the one a previous run
   * held, once adopt() has bound the key to a fresh one, or the one of a
   * lease that was deleted or lost. Left alone it would live out its TTL
   * (a day by default) holding nothing, one more per restart. A lease that
   * is already gone is not an error.
   */
  async revoke(leaseId: string): Promise<void> {
    if (isReservation({ leaseId })) return;
    try {
      await this.client.leaseClient.leaseRevoke({ ID: leaseId });
    } catch (e) {
      if (/not found/i.test(String((e as Error).message))) return;
      throw new EtcdError(`revoke lease ${leaseId}`, e);
    }
  }

  /** Remaining TTL of an etcd lease, in seconds (-1 if expired). */
  async ttl(leaseId: string): Promise<number> {
    try {
      const r = await this.client.leaseClient.leaseTimeToLive({ ID: leaseId });
      return Number(r.TTL);
    } catch (e) {
      throw new EtcdError(`lease ttl ${leaseId}`, e);
    }
  }

  /**
   * Watches leases and the config from `fromRevision`. A compacted revision
   * (or any cancel) calls onGap(); onState() reports disconnects and
   * reconnects, after which the caller re-lists too: the etcd3 client may
   * resume past events it never delivered.
   */
  async watch(
    fromRevision: string,
    onEvent: (e: LeaseEvent) => void,
    onGap: (reason: string) => void,
    onState: (connected: boolean, why?: string) => void,
  ): Promise<WatchHandle> {
    const root = this.prefix.replace(/\/+$/, "");
    let watcher: Watcher;
    try {
      watcher = await this.client.watch().prefix(`${root}/`).startRevision(fromRevision).create();
    } catch (e) {
      throw new EtcdError(`watch ${root}/`, e);
    }
    const cfgKey = configKey(this.prefix);
    const subnets = Buffer.from(subnetsPrefix(this.prefix));
    // Our own resume point: etcd3's lastRevision() jumps to the header
    // revision as soon as the watch is created, before catch-up events.
    let resume = fromRevision;
    watcher.on("data", (res) => {
      if (res.compact_revision && String(res.compact_revision) !== "0") {
        onGap(`compacted at revision ${res.compact_revision}`);
        return;
      }
      for (const ev of res.events) {
        const key = ev.kv.key.toString();
        const rev = String(ev.kv.mod_revision);
        resume = (BigInt(rev) + 1n).toString();
        if (key === cfgKey) {
          onEvent({
            type: "config",
            text: ev.type === "Delete" ? undefined : ev.kv.value.toString(),
            revision: rev,
          });
          continue;
        }
        // The usual key and value straight from their bytes (lease-bytes.ts);
        // a dual-stack key through the general parser.
        const fast = leaseKeyFromBytes(ev.kv.key, 0, ev.kv.key.length, subnets);
        const parts = fast ? { subnet: fast } : parseLeaseKeyParts(this.prefix, key);
        if (!parts) continue;
        const subnet = parts.subnet;
        if (ev.type === "Delete") {
          onEvent({ type: "delete", ...parts, revision: rev });
        } else {
          const attrs = fast && leaseAttrsFromBytes(ev.kv.value, 0, ev.kv.value.length);
          if (attrs) {
            onEvent({
              type: "put",
              lease: { subnet, attrs, leaseId: String(ev.kv.lease), modRevision: rev },
            });
            continue;
          }
          try {
            onEvent({
              type: "put",
              lease: this.decode(key, ev.kv.value.toString(), String(ev.kv.lease), rev),
            });
          } catch (e) {
            onEvent({ type: "bad", key, error: (e as Error).message, revision: rev });
          }
        }
      }
    });
    // etcd3 reports a watch cancelled for compaction with an empty reason;
    // ask etcd whether the revision we resume from is still there.
    watcher.on("error", (err) => {
      const from = resume;
      this.client
        .get(cfgKey)
        .revision(from)
        .exec()
        .then(
          () => onGap(`watch canceled: ${err.message}`),
          (e: Error) =>
            onGap(
              /compacted/.test(e.message)
                ? `compacted past revision ${from}`
                : `watch canceled: ${err.message}`,
            ),
        );
    });
    watcher.on("disconnected", (err) => onState(false, err.message));
    watcher.on("connected", () => onState(true));
    return {
      close: async () => {
        // cancel() waits for the server to confirm; a stream that just
        // dropped never does, and the caller must not wait for ever.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          watcher.cancel().catch(() => undefined),
          new Promise((r) => (timer = setTimeout(r, 2000))),
        ]);
        clearTimeout(timer);
        watcher.removeAllListeners();
      },
      lastRevision: () => resume,
    };
  }
}
