// The restart storm of `make bench-control`: N agents' control planes (the
// agent's own EtcdStore, LeaseManager, Reconciler, EventQueue and WatchLoop,
// composed as agent.ts composes them, over an in-memory map instead of the
// BPF maps) against one etcd holding 5,000 leases, all restarting at once as
// a DaemonSet rollout restarts them. A few worker processes hold the planes
// (STORM_WORKERS), so N = 500 does not share one event loop.
//
//   first start (cold), a cold restart (each lists every lease), a warm
//   restart (each reads its own lease and watches from its saved revision)
//
// Each phase reports the time until the last plane is ready, etcd's CPU
// seconds and bytes sent per plane (etcd's own counters), and checks that
// every plane holds the lease it held before, no two hold the same, etcd has
// exactly the leases it should, and every plane's map equals etcd's leases.
import { fork, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { Etcd3 } from "../agent/control/etcd3";
import { type HostEntry } from "../agent/bpf/codec";
import { type SubnetEntry, type SubnetMapLike } from "../agent/bpf/subnet-map";
import { parseNetworkConfig } from "../agent/control/config";
import { EventQueue } from "../agent/control/event-queue";
import { EtcdStore, type LeaseEvent, type ListResult } from "../agent/control/etcd-store";
import {
  configKey,
  encodeLeaseAttrs,
  leaseKey,
  subnetId,
  type Lease,
  type LeaseChange,
} from "../agent/control/lease";
import { LeaseManager } from "../agent/control/lease-manager";
import { Reconciler } from "../agent/control/reconciler";
import { WatchLoop } from "../agent/control/watch-loop";
import { createLogger } from "../agent/log";
import { backoffMs } from "../agent/backoff";
import { Cidr, parseIp, type Ip4 } from "../agent/net/ip";
import { F_LOCAL } from "../agent/bpf/codec";

const LEASES = 5000;
/** How long after the last plane is ready every map must equal etcd. */
const CONVERGE_MS = 60_000;
const MAC = "0e:00:00:00:00:01";
/** Plane i's PublicIP: 100.64.0.0 + i (foreign leases use 172.16/12). */
const planeIp = (i: number) => (0x64400000 + i) >>> 0;

// --- worker ---------------------------------------------------------------

/** subnet -> PublicIP only: 500 planes x 5,000 entries must fit. */
class MemMap implements SubnetMapLike {
  readonly m = new Map<number, Ip4>();
  writes = 0;
  upsert(subnet: Cidr, host: HostEntry): void {
    this.m.set(subnetId(subnet), host.remoteIp);
    this.writes++;
  }
  upsertMany(entries: SubnetEntry[]): void {
    for (const e of entries) this.upsert(e.subnet, e.host);
  }
  delete(subnet: Cidr): boolean {
    this.writes++;
    return this.m.delete(subnetId(subnet));
  }
  list(): SubnetEntry[] {
    return [...this.m].map(([id, ip]) => ({
      subnet: Cidr.of(Math.floor(id / 64), id % 64),
      host: { remoteIp: ip, vtepMac: MAC, flags: 0 },
    }));
  }
  /** Order-independent digest of (subnet, host) pairs. */
  digest(): number {
    let d = 0;
    for (const [id, ip] of this.m) d = (d + ((id * 2654435761 + ip) % 4294967296)) % 4294967296;
    return d;
  }
}

interface Saved {
  subnet: string;
  resumeRevision: string;
}

class Plane {
  readonly map = new MemMap();
  private store: EtcdStore | undefined;
  private loop: WatchLoop | undefined;
  private events: EventQueue<{ gen: number; e: LeaseEvent }> | undefined;
  private held: Awaited<ReturnType<LeaseManager["acquire"]>> | undefined;
  private stopping = false;
  private resume = "0";
  private appliedThrough = 0n;
  private chain: Promise<unknown> = Promise.resolve();
  /** etcd calls retried (deadlines under the storm). */
  retries = 0;

  constructor(
    readonly i: number,
    private readonly endpoint: string,
    private readonly prefix: string,
  ) {}

  private serialize(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  async start(saved: Saved | undefined): Promise<void> {
    this.stopping = false;
    const log = createLogger("error", () => {});
    const store = (this.store = new EtcdStore({ endpoints: [this.endpoint], prefix: this.prefix }));
    // As the agent's retryEtcd: a call that fails (a 5 s deadline while 500
    // planes list at once) is retried with backoff, never fatal.
    const retry = async <T>(_what: string, fn: () => Promise<T>): Promise<T> => {
      for (let a = 0; ; a++) {
        try {
          return await fn();
        } catch (e) {
          if (this.stopping) throw e;
          this.retries++;
          await new Promise((res) => setTimeout(res, backoffMs(a)));
        }
      }
    };
    const cfg = parseNetworkConfig(
      await retry("get config", () => store.getConfig()),
      configKey(this.prefix),
    );
    const publicIp = planeIp(this.i);
    const own = { remoteIp: publicIp, vtepMac: MAC, flags: F_LOCAL };
    const r = new Reconciler(this.map, log);
    const events = (this.events = new EventQueue<{ gen: number; e: LeaseEvent }>(
      (batch) => this.serialize(async () => this.apply(r, batch)),
      () => {},
    ));
    const onListing = (l: ListResult) => {
      r.fullSync(l.leases);
      this.resume = (BigInt(l.revision) + 1n).toString();
      this.appliedThrough = 0n;
    };
    const loop = (this.loop = new WatchLoop({
      store,
      log,
      onListing,
      onEvent: (e, gen) => events.push({ gen, e }),
      serialize: (fn) => this.serialize(fn),
      retry,
      stopping: () => this.stopping,
      connection: () => {},
    }));
    let listing: ListResult | undefined;
    let from: Lease[] = [];
    if (saved) {
      const subnet = Cidr.parse(saved.subnet);
      const mine = await retry("get own lease", () => store.get(subnet));
      if (mine && mine.attrs.publicIp === publicIp) from = [mine];
      else saved = undefined;
    }
    if (!saved) from = (listing = await retry("list", () => store.list())).leases;
    const lm = new LeaseManager(store, log, {
      config: () => cfg,
      attrs: () => ({ publicIp, backendType: "vxlan", vni: 1, vtepMac: MAC }),
      ttl: 3600,
      onLost: () => {},
      stopping: () => this.stopping,
      relist: async () => (listing = await retry("list", () => store.list())),
    });
    this.held = await lm.acquire(from, saved ? Cidr.parse(saved.subnet) : undefined);
    r.setOwn(this.held.lease.subnet, own);
    if (saved && !listing) {
      this.map.upsert(this.held.lease.subnet, own);
      r.resume();
      const fromRev = BigInt(saved.resumeRevision) - 2n;
      this.appliedThrough = fromRev + 1n;
      await loop.watchFrom(fromRev.toString());
    } else {
      listing ??= await retry("list", () => store.list()); // the saved state did not hold
      onListing(listing);
      await loop.watchFrom(listing.revision);
    }
  }

  private apply(r: Reconciler, batch: { gen: number; e: LeaseEvent }[]): void {
    const changes: LeaseChange[] = [];
    let rev: string | undefined;
    for (const { gen, e } of batch) {
      if (gen !== this.loop?.gen) continue;
      rev = e.type === "put" ? e.lease.modRevision : e.revision;
      if (BigInt(rev) <= this.appliedThrough) continue;
      if (e.type === "put") changes.push({ type: "put", lease: e.lease });
      else if (e.type === "delete") changes.push({ type: "delete", subnet: e.subnet });
    }
    if (changes.length) r.applyChanges(changes);
    if (rev) this.resume = (BigInt(rev) + 1n).toString();
  }

  async stop(): Promise<Saved> {
    this.stopping = true;
    this.events?.close();
    await this.loop?.close();
    this.held?.keepalive?.release(); // as the agent: the lease outlives the restart
    await this.store?.close();
    return { subnet: this.held?.lease.subnet.toString() ?? "", resumeRevision: this.resume };
  }

  report() {
    return {
      i: this.i,
      subnet: this.held?.lease.subnet.toString() ?? "",
      size: this.map.m.size,
      digest: this.map.digest(),
      writes: this.map.writes,
      retries: this.retries,
    };
  }
}

type Cmd =
  | { cmd: "start"; saved?: Record<number, Saved> }
  | { cmd: "stop" }
  | { cmd: "report" }
  | { cmd: "exit" };

function worker(endpoint: string, prefix: string, first: number, count: number): void {
  const planes = Array.from({ length: count }, (_, k) => new Plane(first + k, endpoint, prefix));
  const send = (m: unknown) => process.send?.(m);
  process.on("message", (m: Cmd) => {
    void (async () => {
      if (m.cmd === "start") {
        const t0 = performance.now();
        const ready: number[] = [];
        await Promise.all(
          planes.map(async (p) => {
            await p.start(m.saved?.[p.i]);
            ready.push(performance.now() - t0);
          }),
        );
        send({ cmd: "started", lastReadyMs: Math.max(...ready) });
      } else if (m.cmd === "stop") {
        const saved: Record<number, Saved> = {};
        for (const p of planes) saved[p.i] = await p.stop();
        send({ cmd: "stopped", saved });
      } else if (m.cmd === "report") {
        send({ cmd: "report", planes: planes.map((p) => p.report()) });
      } else {
        process.exit(0);
      }
    })().catch((e: unknown) => {
      send({ cmd: "error", error: (e as Error).stack ?? String(e) });
    });
  });
  send({ cmd: "hello" });
}

// --- parent ---------------------------------------------------------------

export interface StormPhase {
  phase: "first start" | "cold restart" | "warm restart";
  lastReadySeconds: number;
  /** Until every plane's map held every lease in etcd (each plane's own too). */
  convergedSeconds: number;
  etcdCpuSeconds: number;
  /** CPU seconds of the worker processes that hold the planes (the same 2 CPUs as etcd). */
  planesCpuSeconds: number;
  etcdBytesSentPerAgent: number;
  mapWritesPerAgent: number;
  /** etcd calls that failed (deadline) and were retried, all planes. */
  retries: number;
}

export interface StormResult {
  n: number;
  leases: number;
  phases: StormPhase[];
}

function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in USER_HZ
}

async function sentBytes(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(
    /^etcd_network_client_grpc_sent_bytes_total(?:\{[^}]*\})? (\S+)$/gm,
  ))
    sum += Number(m[1]);
  return sum;
}

class Workers {
  private readonly procs: ChildProcess[] = [];
  private readonly waiting = new Map<
    ChildProcess,
    { resolve: (m: unknown) => void; reject: (e: Error) => void }
  >();

  constructor(endpoint: string, prefix: string, n: number, workers: number) {
    const per = Math.ceil(n / workers);
    for (let first = 0; first < n; first += per) {
      const p = fork(
        __filename,
        ["worker", endpoint, prefix, String(first), String(Math.min(per, n - first))],
        {
          stdio: ["ignore", "inherit", "inherit", "ipc"],
        },
      );
      p.on("message", (m: { cmd: string; error?: string }) => {
        // A worker's failure fails the storm (and its cleanup runs), not the process.
        const w = this.waiting.get(p);
        this.waiting.delete(p);
        if (m.cmd === "error") w?.reject(new Error(`storm worker: ${m.error}`));
        else w?.resolve(m);
      });
      this.procs.push(p);
    }
  }

  /** Sends cmd to every worker; resolves with their answers. */
  all<T>(cmd: (i: number) => Cmd): Promise<T[]> {
    return Promise.all(
      this.procs.map(
        (p, i) =>
          new Promise<T>((resolve, reject) => {
            this.waiting.set(p, { resolve: resolve as (m: unknown) => void, reject });
            p.send(cmd(i));
          }),
      ),
    );
  }

  async ready(): Promise<void> {
    await this.all(() => ({ cmd: "report" }));
  }

  /** CPU seconds the workers have used so far. */
  cpuSeconds(): number {
    return this.procs.reduce((a, p) => a + (p.pid ? cpuSeconds(p.pid) : 0), 0);
  }

  exit(): void {
    for (const p of this.procs) if (p.exitCode === null) p.kill("SIGTERM");
  }
}

/** One storm of n planes on a fresh prefix; throws if a plane loses, duplicates or misses a lease. */
export async function restartStorm(
  endpoint: string,
  etcdPid: number,
  n: number,
  log: (s: string) => void,
): Promise<StormResult> {
  const prefix = `/storm/n${n}`;
  const client = new Etcd3({ hosts: endpoint });
  const workers = Number(process.env.STORM_WORKERS ?? 4);
  try {
    // 8,192 /24s: 5,000 - n foreign leases and the n planes' own.
    await client
      .put(configKey(prefix))
      .value(
        JSON.stringify({ Network: "10.0.0.0/8", SubnetMin: "10.0.0.0", SubnetMax: "10.31.255.0" }),
      );
    const foreign = client.lease(3600, { autoKeepAlive: false });
    const id = await foreign.grant();
    for (let s = 0; s < LEASES - n; s += 1000) {
      const ops = [];
      for (let i = s; i < Math.min(LEASES - n, s + 1000); i++) {
        const subnet = Cidr.of((0x0a000000 + i * 256) >>> 0, 24);
        const value = encodeLeaseAttrs({
          publicIp: (0xac100000 + i) >>> 0,
          backendType: "vxlan",
          vni: 1,
          vtepMac: MAC,
        });
        ops.push(client.put(leaseKey(prefix, subnet)).value(value).lease(id));
      }
      await client
        .if(configKey(prefix), "Version", ">", 0)
        .then(...ops)
        .commit();
    }
    const w = new Workers(endpoint, prefix, n, Math.min(workers, n));
    try {
      await w.ready();
      const phases: StormPhase[] = [];
      let saved: Record<number, Saved> | undefined;
      let before: Map<number, string> | undefined;
      let writesBefore = 0;
      let retriesBefore = 0;
      for (const phase of ["first start", "cold restart", "warm restart"] as const) {
        if (phase !== "first start") {
          const stopped = await w.all<{ saved: Record<number, Saved> }>(() => ({ cmd: "stop" }));
          saved = Object.assign({}, ...stopped.map((s) => s.saved)) as Record<number, Saved>;
        }
        const cpu0 = cpuSeconds(etcdPid);
        const planesCpu0 = w.cpuSeconds();
        const bytes0 = await sentBytes(endpoint);
        const t0 = performance.now();
        const started = await w.all<{ lastReadyMs: number }>(() =>
          phase === "warm restart" ? { cmd: "start", saved } : { cmd: "start" },
        );
        const lastReadySeconds = (performance.now() - t0) / 1000;
        const slowest = Math.max(...started.map((s) => s.lastReadyMs)) / 1000;
        const kvs = (await client.getAll().prefix(`${prefix}/subnets/`).strings()) as Record<
          string,
          string
        >;
        const leases = Object.entries(kvs).map(([k, v]) => ({
          subnet: Cidr.parse(k.slice(k.lastIndexOf("/") + 1).replace("-", "/")),
          ip: parseIp((JSON.parse(v) as { PublicIP: string }).PublicIP),
        }));
        if (leases.length !== LEASES)
          throw new Error(`${phase}: etcd holds ${leases.length} leases, want ${LEASES}`);
        const bySubnet = new Map(leases.map((l) => [l.subnet.toString(), l.ip]));
        const total = leases.reduce(
          (d, l) => (d + ((subnetId(l.subnet) * 2654435761 + l.ip) % 4294967296)) % 4294967296,
          0,
        );
        // The last planes' own leases reach every other plane's watch after
        // they are ready: wait until every map equals etcd (or CONVERGE_MS).
        const report = async () =>
          (
            await w.all<{ planes: ReturnType<Plane["report"]>[] }>(() => ({ cmd: "report" }))
          ).flatMap((r) => r.planes);
        let reports = await report();
        const behind = () => reports.filter((p) => p.size !== LEASES || p.digest !== total).length;
        while (behind() && performance.now() - t0 < lastReadySeconds * 1000 + CONVERGE_MS) {
          await new Promise((r) => setTimeout(r, 250));
          reports = await report();
        }
        const convergedSeconds = (performance.now() - t0) / 1000;
        await new Promise((r) => setTimeout(r, 1000)); // settled: nothing more arrives
        reports = await report();
        const etcdCpuSeconds = cpuSeconds(etcdPid) - cpu0;
        const planesCpuSeconds = w.cpuSeconds() - planesCpu0;
        const bytes = (await sentBytes(endpoint)) - bytes0;
        // Every plane: its lease (the same as before), none shared, its map = etcd.
        const subnets = new Set<string>();
        for (const p of reports) {
          if (subnets.has(p.subnet))
            throw new Error(`${phase}: subnet ${p.subnet} held by two planes`);
          subnets.add(p.subnet);
          if (bySubnet.get(p.subnet) !== planeIp(p.i))
            throw new Error(`${phase}: plane ${p.i}'s lease ${p.subnet} is not in etcd as its own`);
          if (before && before.get(p.i) !== p.subnet)
            throw new Error(`${phase}: plane ${p.i} moved from ${before.get(p.i)} to ${p.subnet}`);
          // The map holds every lease, our own as LOCAL (same digest term).
          if (p.size !== LEASES || p.digest !== total)
            throw new Error(
              `${phase}: plane ${p.i}'s map (${p.size} entries) is not etcd's ${LEASES} leases`,
            );
        }
        before = new Map(reports.map((p) => [p.i, p.subnet]));
        const allRetries = reports.reduce((a, p) => a + p.retries, 0);
        const retries = allRetries - retriesBefore;
        retriesBefore = allRetries;
        const allWrites = reports.reduce((a, p) => a + p.writes, 0);
        const writes = allWrites - writesBefore;
        writesBefore = allWrites;
        const row: StormPhase = {
          phase,
          lastReadySeconds,
          convergedSeconds,
          etcdCpuSeconds,
          planesCpuSeconds,
          etcdBytesSentPerAgent: bytes / n,
          mapWritesPerAgent: writes / n,
          retries,
        };
        phases.push(row);
        log(
          `  storm N=${n} ${phase}: last ready ${lastReadySeconds.toFixed(2)} s (slowest worker ${slowest.toFixed(2)} s), all converged ${convergedSeconds.toFixed(2)} s, ` +
            `etcd CPU ${etcdCpuSeconds.toFixed(2)} s, planes' CPU ${planesCpuSeconds.toFixed(2)} s, ${(bytes / n / 1024).toFixed(1)} KiB sent per agent, ${retries} etcd calls retried, all ${n} converged`,
        );
      }
      await w.all(() => ({ cmd: "stop" }));
      await foreign.revoke();
      return { n, leases: LEASES, phases };
    } finally {
      w.exit();
    }
  } finally {
    await client.delete().prefix(`${prefix}/`);
    client.close();
  }
}

if (process.argv[2] === "worker") {
  const [, , , endpoint, prefix, first, count] = process.argv;
  worker(endpoint as string, prefix as string, Number(first), Number(count));
}
