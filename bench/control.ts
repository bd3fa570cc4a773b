// `make bench-control`: the control plane against a real etcd.
//
//   - N = 1,000 / 5,000 / 65,536 leases (a /8 network cut into /24s):
//     start an agent, time until its map holds all of them; RSS, sampled
//     for BENCH_STEADY_S (60) after convergence at 5,000 and 65,536;
//     /metrics series and scrape time.
//   - at 65,536: `overlayctl map dump -o json`; put -> map entry latency
//     while a child process changes 1,000 leases a second (BENCH_PROBE_S);
//     a warm restart (pins and state file present, leases unchanged: map
//     writes counted) and the same restart without the state file.
//   - at 5,000: lease churn for BENCH_CHURN_S (default 120; the issue asks
//     for 1,800) at BENCH_SOAK_RATE changes/s, RSS at 1 minute vs the end.
//   - restart storms of BENCH_STORM (50,200,500) control planes (storm.ts).
//   - host-gw: 5,000 peer routes (each its own gateway) programmed by one
//     syncRoutes (agent/net/routes.ts).
//   - BENCH_NODE_ARGS: node flags for the agents (e.g. --heap-prof).
//
// Runs itself inside a network namespace it creates (etcd, agent and this
// process share its loopback and a veth underlay) and removes it after.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Etcd3 } from "../agent/control/etcd3";
import { BpfMap } from "../agent/bpf/map";
import { decodeHostEntry, encodeSubnetKey } from "../agent/bpf/codec";
import { encodeLeaseAttrs, leaseKey } from "../agent/control/lease";
import { Cidr } from "../agent/net/ip";
import { ROUTE_PROTO, syncRoutes } from "../agent/net/routes";
import { EtcdServer } from "../test/lib/etcd";
import { markdownTable, median, percentile, writeResults } from "./report";
import { restartStorm, type StormResult } from "./storm";

const ROOT = join(__dirname, "..", "..");
const OVERLAYD = join(ROOT, "bin", "overlayd");
const OVERLAYCTL = join(ROOT, "bin", "overlayctl");
/** Extra node flags for the agents, e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p". */
const NODE_ARGS = [
  // As deploy/Dockerfile and deploy/systemd start it: a 1 MB young generation
  // keeps the start-up burst from leaving ~40 MB of RSS behind.
  "--max-semi-space-size=1",
  ...(process.env.BENCH_NODE_ARGS ?? "").split(" ").filter(Boolean),
];

function sh(argv: string[]): string {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

// --- outer: make the namespace, run the inner part in it, clean up --------
function outer(): void {
  const id = randomBytes(3).toString("hex");
  const ns = `ovlb${id}`;
  const run = `/run/overlayd-bench-${id}`;
  mkdirSync(join(run, "bpffs"), { recursive: true });
  let status: number;
  try {
    sh(["mount", "-t", "bpf", "bpf", join(run, "bpffs")]);
    sh(["ip", "netns", "add", ns]);
    const inNs = (a: string[]) => sh(["ip", "netns", "exec", ns, ...a]);
    inNs(["ip", "link", "set", "lo", "up"]);
    inNs(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
    inNs(["ip", "addr", "add", "172.31.0.1/24", "dev", "eth0"]);
    inNs(["ip", "link", "set", "eth0", "up"]);
    inNs(["ip", "link", "set", "eth1", "up"]);
    const r = spawnSync("ip", ["netns", "exec", ns, "node", __filename, "inner", run], {
      stdio: "inherit",
    });
    status = r.status ?? 1;
  } finally {
    spawnSync("ip", ["netns", "del", ns]);
    spawnSync("umount", [join(run, "bpffs")]);
    rmSync(run, { recursive: true, force: true });
  }
  process.exit(status);
}

// --- inner ----------------------------------------------------------------
interface Agent {
  proc: ChildProcess;
  log: string;
}

function startAgent(prefix: string, pinPath: string, subnetFile: string, stateFile: string): Agent {
  const a: Agent = {
    proc: spawn(
      "node",
      [
        ...NODE_ARGS,
        OVERLAYD,
        "--etcd-endpoints",
        "http://127.0.0.1:23790",
        "--etcd-prefix",
        prefix,
        "--iface",
        "eth0",
        "--pin-path",
        pinPath,
        "--subnet-file",
        subnetFile,
        "--healthz-addr",
        `127.0.0.1:${HEALTHZ_PORT}`,
        "--metrics-addr",
        `127.0.0.1:${METRICS_PORT}`,
        "--state-file",
        stateFile,
        "--overlay-iface",
        "ovlb0",
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    ),
    log: "",
  };
  a.proc.stderr?.on("data", (d) => (a.log += d));
  return a;
}

async function stopAgent(a: Agent): Promise<void> {
  if (a.proc.exitCode !== null) return;
  await new Promise((r) => {
    a.proc.once("exit", r);
    a.proc.kill("SIGTERM"); // graceful: lets --cpu-prof write its profile
    setTimeout(() => a.proc.kill("SIGKILL"), 8000).unref();
  });
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** N-1 remote leases (the agent takes the N-th) under a fresh prefix. */
async function writeLeases(client: Etcd3, prefix: string, n: number): Promise<void> {
  await client.put(`${prefix}/config`).value(
    JSON.stringify({
      Network: "10.0.0.0/8",
      SubnetMin: "10.0.0.0",
      SubnetMax: `10.${(n - 1) >> 8}.${(n - 1) & 255}.0`,
    }),
  );
  const lease = client.lease(3600, { autoKeepAlive: false });
  const id = await lease.grant();
  const batch = 1000;
  for (let start = 0; start < n - 1; start += batch) {
    const ops = [];
    for (let i = start; i < Math.min(n - 1, start + batch); i++) {
      const subnet = Cidr.of((0x0a000000 + i * 256) >>> 0, 24);
      const value = encodeLeaseAttrs({
        publicIp: (0xac100000 + i) >>> 0,
        backendType: "vxlan",
        vni: 1,
        vtepMac: "0e:00:00:00:00:01",
      });
      ops.push(client.put(leaseKey(prefix, subnet)).value(value).lease(id));
    }
    await client
      .if(`${prefix}/config`, "Version", ">", 0)
      .then(...ops)
      .commit();
  }
}

/**
 * Counters for every peer, as the data path makes them with each peer's
 * first packet (it makes none for a peer without traffic): the scrape, the
 * dump and the warm restart are then measured with every peer counted, the
 * most there can be. Returns the entries written.
 */
function countEveryPeer(pinPath: string): number {
  const peers = BpfMap.openPinned(pinPath, "ovl_peers");
  const stats = BpfMap.openPinned(pinPath, "ovl_peer_stats");
  try {
    const keys: Buffer[] = [];
    peers.forEach((k, ko) => keys.push(Buffer.from(k.subarray(ko, ko + 4))));
    const vals = Buffer.alloc(keys.length * stats.valueBufSize);
    for (let i = 0; i < keys.length; i++) {
      const at = i * stats.valueBufSize; // cpu 0: 1 packet of 1,450 bytes each way
      vals.writeUInt32LE(1, at);
      vals.writeUInt32LE(1450, at + 8);
      vals.writeUInt32LE(1, at + 16);
      vals.writeUInt32LE(1450, at + 24);
    }
    stats.updateMany(Buffer.concat(keys), vals, keys.length);
    return keys.length;
  } finally {
    peers.close();
    stats.close();
  }
}

async function syncedAt(
  pinPath: string,
  n: number,
  t0: number,
  timeoutMs: number,
): Promise<number> {
  // Polled every 5 ms on the 2 CPUs the agent and etcd use, so the poll
  // must cost next to nothing: a few single-key lookups in the LPM trie (the
  // first, the last and evenly spaced leases of writeLeases) until all are
  // there, and only then a count of ovl_peers (one entry per remote lease),
  // read through the batch buffers without a copy per entry.
  const sentinels = [
    0,
    n - 2,
    ...Array.from({ length: 14 }, (_, k) => Math.floor(((k + 1) * (n - 1)) / 15)),
  ].map((i) => encodeSubnetKey(Cidr.of((0x0a000000 + i * 256) >>> 0, 24)));
  let subnets: BpfMap | undefined;
  let peers: BpfMap | undefined;
  try {
    for (;;) {
      try {
        subnets ??= BpfMap.openPinned(pinPath, "ovl_subnets");
        peers ??= BpfMap.openPinned(pinPath, "ovl_peers");
      } catch {
        /* not pinned yet */
      }
      if (subnets && peers && sentinels.every((k) => subnets?.lookup(k))) {
        let count = 0;
        peers.forEach(() => count++);
        if (count >= n - 1) return (performance.now() - t0) / 1000;
      }
      if (performance.now() - t0 > timeoutMs)
        throw new Error(`map did not reach ${n} entries in ${timeoutMs} ms`);
      await sleep(5);
    }
  } finally {
    subnets?.close();
    peers?.close();
  }
}

/**
 * host-gw's start-up: one syncRoutes of n peer routes into an empty table,
 * each via its own gateway as in a cluster (the kernel keeps one fib_info
 * per gateway). Run before etcd starts, so nothing else competes.
 */
function hostGwRoutes(n: number): { routes: number; seconds: number } {
  sh(["ip", "addr", "add", "172.30.0.1/16", "dev", "eth0"]); // room for n gateways
  try {
    const desired = Array.from({ length: n }, (_, i) => ({
      dst: Cidr.of((0x64400000 + i * 256) >>> 0, 24), // 100.64.0.0/24 + i
      via: (0xac1e0100 + i) >>> 0, // 172.30.1.0 + i
      dev: "eth0",
    }));
    const t0 = performance.now();
    const r = syncRoutes(desired, { proto: ROUTE_PROTO });
    const seconds = (performance.now() - t0) / 1000;
    if (r.added !== n || r.failed.length) {
      const why = r.failed.map((f) => `${f.command}: ${f.error}`).join("; ");
      throw new Error(`host-gw routes: ${r.added} of ${n} added${why ? `; ${why}` : ""}`);
    }
    process.stderr.write(
      `  host-gw routes: ${formatN(n)} peer routes programmed in ${seconds.toFixed(3)} s (target < 1 s)\n`,
    );
    return { routes: n, seconds };
  } finally {
    syncRoutes([], { proto: ROUTE_PROTO });
    sh(["ip", "addr", "del", "172.30.0.1/16", "dev", "eth0"]);
  }
}

const env = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
/** RSS sampling after convergence (the issue: 60 s). */
const STEADY_S = env("BENCH_STEADY_S", 60);
/** The churn soak at 5,000 leases (the issue asks for 1,800 s; the default keeps a run short). */
const CHURN_S = env("BENCH_CHURN_S", 120);
const SOAK_RATE = env("BENCH_SOAK_RATE", 100);
/** Put -> map probes under 1,000 lease changes per second, at 65,536. */
const PROBE_S = env("BENCH_PROBE_S", 15);
const STORM = (process.env.BENCH_STORM ?? "50,200,500").split(",").filter(Boolean).map(Number);
const METRICS_PORT = 9674;
const HEALTHZ_PORT = 9673;

/** GET on loopback inside the namespace: status, body and time. */
async function get(
  path: string,
  port: number,
): Promise<{ status: number; body: string; ms: number }> {
  const t = performance.now();
  try {
    const r = await fetch(`http://127.0.0.1:${port}${path}`);
    const body = await r.text();
    return { status: r.status, body, ms: performance.now() - t };
  } catch {
    return { status: 0, body: "", ms: performance.now() - t };
  }
}

async function scrape(): Promise<{ series: number; ms: number; body: string }> {
  const times: number[] = [];
  let body = "";
  for (let i = 0; i < 5; i++) {
    const r = await get("/metrics", METRICS_PORT);
    if (r.status !== 200) throw new Error(`/metrics: ${r.status}`);
    times.push(r.ms);
    body = r.body;
  }
  const series = body.split("\n").filter((l) => l && !l.startsWith("#")).length;
  return { series, ms: median(times), body };
}

async function untilReady(a: Agent, t0: number, timeoutMs = 60000): Promise<number> {
  // Not polled while the agent starts: every /readyz answered is work on
  // the agent's event loop, in the start-up being timed (a GET every 5 ms
  // took tens of ms from it). Its `ready` line first, then /readyz until 200.
  await new Promise<void>((resolve) => {
    const seen = () => /msg=ready /.test(a.log) || a.proc.exitCode !== null;
    if (seen()) return resolve();
    const done = () => {
      clearTimeout(timer);
      a.proc.stderr?.off("data", check);
      a.proc.off("exit", done);
      resolve();
    };
    const check = () => seen() && done();
    const timer = setTimeout(done, timeoutMs);
    a.proc.stderr?.on("data", check);
    a.proc.once("exit", done);
  });
  for (;;) {
    if ((await get("/readyz", HEALTHZ_PORT)).status === 200) return (performance.now() - t0) / 1000;
    if (a.proc.exitCode !== null) throw new Error(`agent exited: ${a.log.slice(-2000)}`);
    if (performance.now() - t0 > timeoutMs) throw new Error("agent not ready");
    await sleep(5);
  }
}

/** RSS every second for `seconds`: the samples' max and last. */
async function steadyRss(pid: number, seconds: number): Promise<{ maxMb: number; lastMb: number }> {
  let maxMb = 0;
  let lastMb = 0;
  for (let i = 0; i < seconds; i++) {
    await sleep(1000);
    lastMb = rssMb(pid);
    maxMb = Math.max(maxMb, lastMb);
  }
  return { maxMb, lastMb };
}

const leaseValue = (ip: number) =>
  encodeLeaseAttrs({
    publicIp: ip >>> 0,
    backendType: "vxlan",
    vni: 1,
    vtepMac: "0e:00:00:00:00:01",
  });

/** Leases kept out of the churn, for the put -> map probes (the map is full at 65,536: probes rewrite leases, not add). */
const PROBE_LEASES = 2000;

/**
 * The churn: a child process rewriting the first n-1-PROBE_LEASES remote
 * leases round robin, each change its own put RPC, or with `txn` each 10 ms
 * tick's changes in one transaction (the same changes and watch events,
 * a tenth of the requests for etcd).
 */
function churn(
  prefix: string,
  n: number,
  rate: number,
  seconds: number,
  txn = false,
): ChildProcess {
  return spawn(
    "node",
    [__filename, "churn", prefix, String(n), String(rate), String(seconds), txn ? "txn" : "rpc"],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
}

async function churnChild(
  prefix: string,
  n: number,
  rate: number,
  seconds: number,
  txn: boolean,
): Promise<void> {
  const client = new Etcd3({ hosts: "http://127.0.0.1:23790" });
  const lease = client.lease(3600, { autoKeepAlive: false });
  const id = await lease.grant();
  const tickMs = 10;
  const perTick = Math.max(1, Math.round((rate * tickMs) / 1000));
  const end = performance.now() + seconds * 1000;
  let i = 0;
  let round = 0;
  for (let next = performance.now(); performance.now() < end; next += tickMs) {
    const ops = [];
    for (let k = 0; k < perTick; k++, i = (i + 1) % (n - 1 - PROBE_LEASES)) {
      if (i === 0) round++;
      const subnet = Cidr.of((0x0a000000 + i * 256) >>> 0, 24);
      // Alternate between two PublicIPs: every change is a map write.
      ops.push(
        client
          .put(leaseKey(prefix, subnet))
          .value(leaseValue(0xac100000 + i + (round % 2) * 0x100000))
          .lease(id),
      );
    }
    if (txn)
      await client
        .if(`${prefix}/config`, "Version", ">", 0)
        .then(...ops)
        .commit();
    else await Promise.all(ops.map((o) => o.exec()));
    const wait = next + tickMs - performance.now();
    if (wait > 0) await sleep(wait);
  }
  client.close();
}

async function inner(run: string): Promise<void> {
  const hostGw = hostGwRoutes(5000);
  const etcd = await new EtcdServer({
    clientPort: 23790,
    peerPort: 23800,
    extraArgs: ["--max-txn-ops", "10000", "--quota-backend-bytes", String(4 << 30)],
  }).start();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const results: Record<string, unknown> = {
    when: new Date().toISOString(),
    kernel: sh(["uname", "-r"]).trim(),
    knobs: {
      BENCH_STEADY_S: STEADY_S,
      BENCH_CHURN_S: CHURN_S,
      BENCH_SOAK_RATE: SOAK_RATE,
      BENCH_PROBE_S: PROBE_S,
    },
    hostGwRoutes: hostGw,
  };
  interface Size {
    n: number;
    writeSeconds: number;
    startToSyncedSeconds: number;
    /** At 65,536: this and two more first starts, each from nothing. */
    firstStartsSeconds?: number[];
    rssMb: number;
    /** Peers given counters before the scrape, dump and warm restart. */
    countedPeers?: number;
    steady?: { maxMb: number; lastMb: number; seconds: number };
    metrics?: { series: number; scrapeMs: number };
    phases?: Record<string, number>;
    liveHeapMb?: number;
  }
  const sizes: Size[] = [];
  try {
    const only = (process.env.BENCH_SIZES ?? "").split(",").filter(Boolean).map(Number);
    for (const n of only.length ? only : [1000, 5000, 65536]) {
      const prefix = `/bench/n${n}`;
      const tw = performance.now();
      await writeLeases(client, prefix, n);
      const writeSeconds = (performance.now() - tw) / 1000;
      const pin = join(run, "bpffs", `n${n}`);
      const state = join(run, `n${n}.state`);
      const start = () => startAgent(prefix, pin, join(run, `n${n}.env`), state);
      const t0 = performance.now();
      let a = start();
      try {
        const s = await syncedAt(pin, n, t0, 120000);
        await sleep(4000); // past the agent's post-start collections
        for (const re of [/msg=ready (.*)/, /msg="memory after start" (.*)/]) {
          const m = re.exec(a.log)?.[1];
          if (m) log(`  agent: ${m}`);
        }
        const kv = (re: RegExp) => logFields(re.exec(a.log)?.[1]);
        const size: Size = {
          n,
          writeSeconds,
          startToSyncedSeconds: s,
          rssMb: rssMb(a.proc.pid as number),
          phases: kv(/msg=ready (.*)/),
          liveHeapMb: kv(/msg="memory after start" (.*)/).heapMb,
        };
        sizes.push(size);
        log(
          `  N=${n}: written in ${writeSeconds.toFixed(2)} s, agent synced ${s.toFixed(3)} s after start, RSS ${size.rssMb.toFixed(1)} MB`,
        );
        const tc = performance.now();
        size.countedPeers = countEveryPeer(pin);
        log(
          `  N=${n}: counters made for all ${size.countedPeers} peers (as their first packets would) in ${((performance.now() - tc) / 1000).toFixed(2)} s`,
        );
        if (n >= 5000) {
          const st = await steadyRss(a.proc.pid as number, STEADY_S);
          size.steady = { ...st, seconds: STEADY_S };
          log(
            `  N=${n}: RSS over ${STEADY_S} s after convergence: max ${st.maxMb.toFixed(1)} MB, last ${st.lastMb.toFixed(1)} MB`,
          );
          const m = await scrape();
          size.metrics = { series: m.series, scrapeMs: m.ms };
          log(`  N=${n}: /metrics ${m.series} series, scrape ${m.ms.toFixed(1)} ms (median of 5)`);
        }
        if (n === 65536) {
          const td = performance.now();
          const out = spawnSync(
            "node",
            [OVERLAYCTL, "map", "dump", "-o", "json", "--pin-path", pin],
            {
              encoding: "utf8",
              maxBuffer: 1 << 28,
            },
          );
          const dumpSeconds = (performance.now() - td) / 1000;
          if (out.status !== 0) throw new Error(out.stderr);
          const rows = JSON.parse(out.stdout).length;
          results.dump = { entries: rows, seconds: dumpSeconds };
          log(`  overlayctl map dump -o json: ${rows} rows in ${dumpSeconds.toFixed(3)} s`);

          results.putToMap = await putToMap(client, prefix, pin, n, false);
          results.putToMapTxn = await putToMap(client, prefix, pin, n, true);
          // Warm restart: pins and state present, leases unchanged.
          await stopAgent(a);
          const tw0 = performance.now();
          a = start();
          const warmReady = await untilReady(a, tw0);
          await sleep(1000); // replayed events applied
          const warmLine = /msg=ready (.*)/.exec(a.log)?.[1] ?? "";
          log(`  agent (warm restart): ${warmLine}`);
          const writes = Number(
            /^overlay_map_writes_total (\d+)$/m.exec((await scrape()).body)?.[1],
          );
          // The same without the state file: a full listing, diffed against the pinned map.
          await stopAgent(a);
          rmSync(state, { force: true });
          const tc0 = performance.now();
          a = start();
          const coldReady = await untilReady(a, tc0);
          await sleep(1000);
          const coldWrites = Number(
            /^overlay_map_writes_total (\d+)$/m.exec((await scrape()).body)?.[1],
          );
          results.restart = {
            warm: {
              readySeconds: warmReady,
              mapWrites: writes,
              warm: /start=warm/.test(warmLine),
              phases: logFields(warmLine),
            },
            coldWithPins: { readySeconds: coldReady, mapWrites: coldWrites },
          };
          log(
            `  restart at 65,536: warm ready in ${warmReady.toFixed(3)} s with ${writes} map writes (${/start=warm/.test(warmLine) ? "warm" : "NOT warm"}); ` +
              `without the state file ${coldReady.toFixed(3)} s, ${coldWrites} writes`,
          );
          // Two more first starts from nothing (no pins, device, state), for
          // a median: one start on these 2 shared CPUs varies by +-15 %.
          const firsts = [s];
          for (let k = 0; k < 2; k++) {
            await stopAgent(a);
            cleanup(pin);
            rmSync(state, { force: true });
            const tf = performance.now();
            a = start();
            firsts.push(await syncedAt(pin, n, tf, 120000));
            await untilReady(a, tf);
          }
          size.firstStartsSeconds = firsts;
          log(`  first starts at 65,536: ${firsts.map((x) => x.toFixed(3)).join(", ")} s`);
        }
        if (n === 5000) results.soak = await soak(prefix, n, a);
      } catch (e) {
        log(`agent log:\n${a.log.slice(-3000)}`);
        throw e;
      } finally {
        await stopAgent(a);
      }
      cleanup(pin);
      await client.delete().prefix(prefix);
    }
    const storms: StormResult[] = [];
    for (const n of STORM)
      storms.push(await restartStorm(etcd.endpoint, etcd.pid as number, n, log));
    results.storm = storms;
  } finally {
    client.close();
    await etcd.stop();
  }
  results.sizes = sizes;
  report(results, sizes);
}

/**
 * put -> entry in the map, while a child process changes 1,000 leases a
 * second (as separate puts, or with `txn` as 100 transactions of 10). Also
 * when etcd answered each put: most of a slow put -> map is etcd's own
 * commit on these 2 shared CPUs, and map - ack is what the agent adds.
 */
async function putToMap(client: Etcd3, prefix: string, pin: string, n: number, txn: boolean) {
  const subnets = BpfMap.openPinned(pin, "ovl_subnets");
  const ch = churn(prefix, n, 1000, PROBE_S + 2, txn);
  const lat: number[] = [];
  const acks: number[] = [];
  try {
    await sleep(1000); // churn running
    const end = performance.now() + PROBE_S * 1000;
    for (let i = 0; performance.now() < end; i++) {
      // A lease the churn leaves alone moves to a host never seen before.
      const subnet = Cidr.of((0x0a000000 + (n - 2 - (i % PROBE_LEASES)) * 256) >>> 0, 24);
      const key = encodeSubnetKey(subnet);
      // never a PublicIP the lease had (a second run starts half-way up)
      const ip = (0xac1e0000 + (txn ? 0x8000 : 0) + i) >>> 0;
      const tp = performance.now();
      let ack = NaN;
      const put = client
        .put(leaseKey(prefix, subnet))
        .value(leaseValue(ip))
        .then(() => (ack = performance.now() - tp));
      const arrived = () => {
        const v = subnets.lookup(key);
        return v !== undefined && decodeHostEntry(v).remoteIp === ip;
      };
      // The watch event may come before etcd's answer to the put.
      while (!arrived()) {
        if (performance.now() - tp > 5000) throw new Error(`put ${subnet} never reached the map`);
        await sleep(1);
      }
      lat.push(performance.now() - tp);
      await put;
      acks.push(ack);
      await sleep(20);
    }
  } finally {
    subnets.close();
    await new Promise((r) => (ch.exitCode !== null ? r(null) : ch.once("exit", r)));
  }
  const agent = lat.map((l, i) => l - (acks[i] as number)).sort((x, y) => x - y);
  lat.sort((x, y) => x - y);
  acks.sort((x, y) => x - y);
  const r = {
    leases: n,
    changesPerSecond: 1000,
    churn: txn ? "100 txns of 10 puts a second" : "1,000 put requests a second",
    samples: lat.length,
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
    maxMs: lat[lat.length - 1],
    ackP50Ms: percentile(acks, 50),
    ackP99Ms: percentile(acks, 99),
    afterAckP99Ms: percentile(agent, 99),
  };
  process.stderr.write(
    `  put -> map at ${formatN(n)} under ${r.churn}: p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms, max ${r.maxMs?.toFixed(2)} ms (${r.samples} puts); ` +
      `etcd's answer to the put p50 ${r.ackP50Ms.toFixed(2)} ms, p99 ${r.ackP99Ms.toFixed(2)} ms; map - answer p99 ${r.afterAckP99Ms.toFixed(2)} ms\n`,
  );
  return r;
}

/** Lease churn at 5,000 for CHURN_S: RSS at 1 minute (or half-way) and at the end. */
async function soak(prefix: string, n: number, a: Agent) {
  const ch = churn(prefix, n, SOAK_RATE, CHURN_S);
  const mark = Math.min(60, CHURN_S / 2);
  // RSS every second; the JS heap in use (prom-client's default gauges)
  // every 10 s beside it, which tells a leak of objects from the heap and
  // allocator pages growing around a flat one.
  const samples: { s: number; rssMb: number; heapMb?: number; externalMb?: number }[] = [];
  const t0 = performance.now();
  const gauge = (body: string, name: string) => {
    const m = new RegExp(`^${name} (\\S+)$`, "m").exec(body);
    return m ? Number(m[1]) / 1048576 : undefined;
  };
  for (let i = 1; ch.exitCode === null; i++) {
    await sleep(1000);
    const sample: (typeof samples)[number] = {
      s: Math.round((performance.now() - t0) / 1000),
      rssMb: rssMb(a.proc.pid as number),
    };
    if (i % 10 === 0) {
      const body = (await get("/metrics", METRICS_PORT)).body;
      const heapMb = gauge(body, "nodejs_heap_size_used_bytes");
      const externalMb = gauge(body, "nodejs_external_memory_bytes");
      if (heapMb !== undefined) sample.heapMb = heapMb;
      if (externalMb !== undefined) sample.externalMb = externalMb;
    }
    samples.push(sample);
  }
  const at = (s: number, list = samples) =>
    list.reduce((b, x) => (Math.abs(x.s - s) < Math.abs(b.s - s) ? x : b));
  const first = at(mark);
  const last = samples[samples.length - 1] as (typeof samples)[number];
  const heaps = samples.filter((x) => x.heapMb !== undefined);
  const heapFirst = heaps.length ? at(mark, heaps) : undefined;
  const heapLast = heaps[heaps.length - 1];
  // RSS every minute, for the report's line.
  const perMinute = samples.filter((x) => x.s % 60 === 0).map((x) => Math.round(x.rssMb * 10) / 10);
  const r = {
    seconds: CHURN_S,
    changesPerSecond: SOAK_RATE,
    markSeconds: first.s,
    rssAtMarkMb: first.rssMb,
    rssAtEndMb: last.rssMb,
    growth: last.rssMb / first.rssMb - 1,
    heapAtMarkMb: heapFirst?.heapMb,
    heapAtEndMb: heapLast?.heapMb,
    externalAtMarkMb: heapFirst?.externalMb,
    externalAtEndMb: heapLast?.externalMb,
    rssPerMinuteMb: perMinute,
  };
  process.stderr.write(
    `  churn soak at ${formatN(n)}: ${CHURN_S} s at ${SOAK_RATE} changes/s: RSS ${first.rssMb.toFixed(1)} MB at ${first.s} s, ${last.rssMb.toFixed(1)} MB at ${last.s} s (${(r.growth * 100).toFixed(1)}%); ` +
      `JS heap in use ${heapFirst?.heapMb?.toFixed(1) ?? "-"} MB at ${heapFirst?.s ?? "-"} s, ${heapLast?.heapMb?.toFixed(1) ?? "-"} MB at ${heapLast?.s ?? "-"} s; ` +
      `external ${heapFirst?.externalMb?.toFixed(1) ?? "-"} -> ${heapLast?.externalMb?.toFixed(1) ?? "-"} MB; RSS per minute ${perMinute.join(" ")}\n`,
  );
  return r;
}

function report(
  results: Record<string, unknown>,
  sizes: {
    n: number;
    writeSeconds: number;
    startToSyncedSeconds: number;
    /** At 65,536: this and two more first starts, each from nothing. */
    firstStartsSeconds?: number[];
    rssMb: number;
    steady?: { maxMb: number; lastMb: number; seconds: number };
    metrics?: { series: number; scrapeMs: number };
    phases?: Record<string, number>;
    liveHeapMb?: number;
  }[],
): void {
  // The floor: an idle node with the agent's modules loaded and collected.
  const floor = spawnSync(
    "node",
    [
      "--expose-gc",
      "-e",
      // etcd3 as the agent loads it (agent/control/etcd3.ts: the build's codecs).
      `require(${JSON.stringify(join(ROOT, "dist", "agent", "control", "etcd3.js"))}); for (const m of ["prom-client","koffi","yargs"]) require(require.resolve(m, {paths:[${JSON.stringify(ROOT)}]})); gc(); setTimeout(() => { gc(); process.stdout.write(String(process.memoryUsage().rss)); }, 2000);`,
    ],
    { encoding: "utf8" },
  );
  const floorMb = Number(floor.stdout) / 1048576;
  results.nodeFloorRssMb = floorMb;
  const big = sizes.find((s) => s.n === 65536);
  const mid = sizes.find((s) => s.n === 5000);
  interface PutToMap {
    p99Ms: number;
    ackP99Ms: number;
    afterAckP99Ms: number;
    churn: string;
  }
  const p = results.putToMap as PutToMap | undefined;
  const pTxn = results.putToMapTxn as PutToMap | undefined;
  const dump = results.dump as { seconds: number } | undefined;
  const restart = results.restart as
    | {
        warm: {
          readySeconds: number;
          mapWrites: number;
          warm: boolean;
          phases?: Record<string, number>;
        };
      }
    | undefined;
  const soakR = results.soak as
    | {
        growth: number;
        seconds: number;
        markSeconds: number;
        changesPerSecond: number;
        rssAtMarkMb: number;
        rssAtEndMb: number;
        heapAtMarkMb?: number;
        heapAtEndMb?: number;
        externalAtMarkMb?: number;
        externalAtEndMb?: number;
        rssPerMinuteMb?: number[];
      }
    | undefined;
  const mb = (x: number | undefined) => (x === undefined ? "-" : `${x.toFixed(1)} MB`);
  // Each target is an upper bound; the row says it once, as a number, and
  // a missed one by how much, with `why` (what the profiles name) below it.
  const below = (
    what: string,
    value: number | undefined,
    limit: number,
    unit: string,
    orEqual = false,
    why?: string,
  ) => ({
    what,
    target: `${orEqual ? "<=" : "<"} ${limit} ${unit}`.trim(),
    value,
    limit,
    ok: value !== undefined && (orEqual ? value <= limit : value < limit),
    unit,
    why,
  });
  const ph = big?.phases ?? {};
  const firsts = big?.firstStartsSeconds;
  const targets = [
    below(
      `65,536 leases synced (agent start -> map complete${firsts ? `; median of ${firsts.length} first starts` : ""})`,
      firsts ? median(firsts) : big?.startToSyncedSeconds,
      1,
      "s",
      false,
      `${firsts ? `the starts took ${firsts.map((x) => x.toFixed(3)).join(", ")} s; ` : ""}` +
        `every phase of the first, from the agent's own clock (table below): node and its modules ${ph.bootMs ?? "-"} ms ` +
        "(node itself ~60 ms; etcd3 ~90 ms of the rest, most of it grpc-js, with its codecs from the build; " +
        "Node's own http2/tls/crypto ~50 ms); " +
        `the listing ${ph.listMs ?? "-"} ms after the overlay device is made (etcd spends ~200 ms of CPU reading and sending ` +
        "~12 MB on the same 2 CPUs, ~150 ms of it before the first pages arrive; decoding is ~100 ms, its garbage ~100 ms more " +
        "under the 1 MB young generation that keeps RSS down); the programs load beside the listing on a worker thread " +
        `(${ph.loadMs ?? "-"} ms: the per-peer counters are no longer preallocated), attaching them ${ph.datapathMs ?? "-"} ms; ` +
        `the reconcile ${ph.syncMs ?? "-"} ms (planning 65,535 entries in JS ~100 ms; the kernel's ~120 ms of BPF_MAP_UPDATE_BATCH, ` +
        "~90 of it the LPM trie, on worker threads side by side)",
    ),
    below(
      `agent RSS at 65,536 leases (max over ${big?.steady?.seconds ?? "-"} s after convergence)`,
      big?.steady?.maxMb,
      90,
      "MB",
      true,
      "an idle node with the agent's modules is the floor (line below the last table); on top: the " +
        "reconciler's 65,536 PublicIPs, the heap V8 keeps after the start-up burst, and glibc's arenas",
    ),
    below(
      `agent RSS at 5,000 leases (max over ${mid?.steady?.seconds ?? "-"} s after convergence)`,
      mid?.steady?.maxMb,
      75,
      "MB",
      true,
    ),
    below(
      "warm restart at 65,536: map writes",
      restart?.warm.warm ? restart.warm.mapWrites : undefined,
      0,
      "",
      true,
    ),
    below(
      "warm restart at 65,536: start -> ready",
      restart?.warm.readySeconds,
      0.5,
      "s",
      false,
      warmWhy(restart?.warm.phases ?? {}),
    ),
    below(
      "etcd put -> map entry, p99, 65,536 leases under 1,000 changes/s",
      p?.p99Ms,
      20,
      "ms",
      false,
      p &&
        `etcd itself answered the probe's put in ${p.ackP99Ms.toFixed(1)} ms at p99: 1,000 put requests a second ` +
          "keep it busy on the 2 CPUs it shares with the agent, the load generator and the probe; the map had the " +
          `entry ${p.afterAckP99Ms.toFixed(1)} ms after that answer at p99 (the row below: the same changes in a tenth of the requests)`,
    ),
    below(
      "the same, the 1,000 changes/s as 100 txns of 10 puts (a tenth of etcd's requests)",
      pTxn?.p99Ms,
      20,
      "ms",
    ),
    below(
      "overlayctl map dump -o json at 65,536",
      dump?.seconds,
      0.5,
      "s",
      false,
      "node and yargs take ~150 ms before the command runs (etcd3 is no longer loaded for it); then the " +
        "batch lookups of the LPM trie and the per-CPU counters (~30-60 ms), decoding 65,536 entries and " +
        "writing 13 MB of JSON (~150 ms), and the garbage collector",
    ),
    below(
      `RSS growth under lease churn at 5,000 (${soakR?.seconds ?? "-"} s${soakR && soakR.seconds < 1800 ? "; the issue asks 1,800 s: BENCH_CHURN_S=1800" : ""}), end vs ${soakR?.markSeconds ?? "-"} s`,
      soakR ? soakR.growth * 100 : undefined,
      5,
      "%",
      true,
    ),
    below(
      "/metrics series at 65,536 peers (default --metrics-peers)",
      big?.metrics?.series,
      300,
      "",
    ),
    below(
      "/metrics scrape at 65,536 peers",
      big?.metrics?.scrapeMs,
      50,
      "ms",
      false,
      "measured with counters for every peer (the bench makes them, as each peer's first packet would): " +
        "the kernel's copy of 65,535 per-CPU peer counters (BPF_MAP_LOOKUP_BATCH) is nearly all of it: by hand on " +
        "pins holding 65,535 peers (2026-12-03), a full read took 46-73 ms whether asked for 1,024 or 65,536 " +
        "entries a call, and the scrape 61-97 ms (ranking and prom-client's text ~5 ms); ~35 ms on a quiet VM. " +
        "A map iterator summing the CPUs in the kernel cannot load here (no BPF tracing program type)",
    ),
    below(
      "host-gw routes: 5,000 peer routes programmed (one syncRoutes)",
      (results.hostGwRoutes as { seconds: number }).seconds,
      1,
      "s",
    ),
  ];
  results.targets = targets;
  const num = (t: (typeof targets)[number], v: number) =>
    `${v.toFixed(t.unit === "ms" || t.unit === "%" ? 2 : t.unit === "" ? 0 : 3)} ${t.unit}`.trim();
  const fmt = (t: (typeof targets)[number]) => (t.value === undefined ? "-" : num(t, t.value));
  const verdict = (t: (typeof targets)[number]) =>
    t.ok
      ? "met"
      : t.value === undefined
        ? "MISSED (not measured)"
        : `MISSED by ${num(t, t.value - t.limit)}`;
  const missed = targets.filter((t) => !t.ok && t.why);
  const storms = (results.storm as StormResult[] | undefined) ?? [];
  const md = [
    `### Control plane (${results.when}, kernel ${results.kernel})`,
    "",
    markdownTable(
      [
        "leases",
        "write to etcd",
        "agent start -> map complete",
        "RSS at +4 s",
        "RSS max / last over the steady window",
        "/metrics series",
        "scrape",
      ],
      sizes.map((s) => [
        formatN(s.n),
        `${s.writeSeconds.toFixed(2)} s`,
        s.firstStartsSeconds
          ? `${median(s.firstStartsSeconds).toFixed(3)} s (median of ${s.firstStartsSeconds.map((x) => x.toFixed(3)).join(", ")})`
          : `${s.startToSyncedSeconds.toFixed(3)} s`,
        `${s.rssMb.toFixed(1)} MB`,
        s.steady
          ? `${s.steady.maxMb.toFixed(1)} / ${s.steady.lastMb.toFixed(1)} MB (${s.steady.seconds} s)`
          : "-",
        s.metrics ? String(s.metrics.series) : "-",
        s.metrics ? `${s.metrics.scrapeMs.toFixed(1)} ms` : "-",
      ]),
    ),
    "",
    markdownTable(
      ["measure", "target", "measured", "verdict"],
      targets.map((t) => [t.what, t.target, fmt(t), verdict(t)]),
    ),
    "",
    ...(missed.length
      ? [
          "Where the time or memory of a missed target goes:",
          "",
          ...missed.map((t) => `- ${t.what}: ${t.why}`),
          "",
        ]
      : []),
    ...[p, pTxn]
      .filter((x): x is PutToMap => x !== undefined)
      .map(
        (x) =>
          `Put -> map under ${x.churn}: etcd answered the probe's put in ${x.ackP99Ms.toFixed(2)} ms at p99; ` +
          `the entry was in the map at most ${x.afterAckP99Ms.toFixed(2)} ms after the answer (p99).`,
      ),
    "",
    ...(soakR
      ? [
          `Lease churn at 5,000 leases, ${soakR.changesPerSecond} changes/s for ${soakR.seconds} s: ` +
            `RSS ${mb(soakR.rssAtMarkMb)} at ${soakR.markSeconds} s and ${mb(soakR.rssAtEndMb)} at the end; ` +
            `JS heap in use ${mb(soakR.heapAtMarkMb)} and ${mb(soakR.heapAtEndMb)}; ` +
            `external (Buffers) ${mb(soakR.externalAtMarkMb)} and ${mb(soakR.externalAtEndMb)}. ` +
            `RSS each minute (MB): ${(soakR.rssPerMinuteMb ?? []).join(", ") || "-"}.`,
          "",
        ]
      : []),
    ...(storms.length
      ? [
          "Restart storm: N control planes against one etcd holding 5,000 leases, all (re)starting at once;",
          "every phase checked: no lease lost, moved or shared, every plane's map equal to etcd.",
          "",
          markdownTable(
            [
              "N",
              "phase",
              "last ready",
              "all maps converged",
              "etcd CPU",
              "planes' CPU",
              "sent by etcd per agent",
              "map writes per agent",
              "etcd calls retried",
            ],
            storms.flatMap((st) =>
              st.phases.map((ph) => [
                String(st.n),
                ph.phase,
                `${ph.lastReadySeconds.toFixed(2)} s`,
                `${ph.convergedSeconds.toFixed(2)} s`,
                `${ph.etcdCpuSeconds.toFixed(2)} s`,
                `${ph.planesCpuSeconds.toFixed(2)} s`,
                `${(ph.etcdBytesSentPerAgent / 1024).toFixed(1)} KiB`,
                ph.mapWritesPerAgent.toFixed(0),
                String(ph.retries),
              ]),
            ),
          ),
          "",
        ]
      : []),
    ...(big?.phases
      ? [
          "Where the time goes at 65,536 leases, the first of the first starts (from the agent's own `ready` log line):",
          "",
          markdownTable(
            ["phase", "time"],
            [
              ["node, loading the modules, flags", `${big.phases.bootMs ?? "-"} ms`],
              [
                "config read, underlay, overlay device (the listing already asked for)",
                `${big.phases.setupMs ?? "-"} ms`,
              ],
              [
                "list 65,535 leases from etcd (paged, pipelined) and decode",
                `${big.phases.listMs} ms`,
              ],
              ["acquire own lease", `${big.phases.leaseMs} ms`],
              [
                `attach the BPF programs (loaded and pinned beside the listing, on a worker thread: ${big.phases.loadMs ?? "-"} ms)`,
                `${big.phases.datapathMs} ms`,
              ],
              [
                "reconcile: desired vs actual, batched map writes (two maps side by side)",
                `${big.phases.syncMs} ms`,
              ],
              [
                "agent start -> map complete (the bench's clock: it includes spawning node)",
                `${Math.round(big.startToSyncedSeconds * 1000)} ms`,
              ],
            ],
          ),
          "",
          `Live JS heap after start-up: ${big.liveHeapMb} MB. An idle node with the agent's modules`,
          `(etcd3/grpc-js, prom-client, koffi, yargs) already takes ${floorMb.toFixed(0)} MB RSS.`,
          "",
        ]
      : []),
  ].join("\n");
  writeResults("control", results, md);
  process.stdout.write(`\n${md}\n`);
  for (const t of targets)
    if (!t.ok)
      process.stderr.write(`target missed: ${t.what} = ${t.value} ${t.unit} (${t.target})\n`);
}

/** What a stopped agent left: pins, programs, the overlay device. */
function cleanup(pin: string): void {
  spawnSync(
    "node",
    [OVERLAYD, "--cleanup", "--pin-path", pin, "--iface", "eth0", "--overlay-iface", "ovlb0"],
    { stdio: "ignore" },
  );
}

/** The numeric fields (`key=123`) of one of the agent's log lines. */
function logFields(line: string | undefined): Record<string, number> {
  return Object.fromEntries(
    [...(line ?? "").matchAll(/(\w+)=(\d+)/g)].map((m) => [m[1], Number(m[2])]),
  ) as Record<string, number>;
}

/** Where a warm restart's time goes, from the agent's own `ready` line. */
function warmWhy(ph: Record<string, number>): string {
  const v = (k: string) => (ph[k] === undefined ? "-" : String(ph[k]));
  return (
    `from the agent's own clock: node and its modules ${v("bootMs")} ms before the agent's first line ` +
    `(node itself ~50-80 ms, then ~150 ms of loading with the code cache: etcd3/grpc-js with its codecs from the ` +
    `build, prom-client, yargs; ${v("codeCacheHits")} modules from the cache); config read (etcd's first call and ` +
    `its connection), underlay and overlay device ${v("setupMs")} ms; own lease read and adopted (a lease grant and a ` +
    `txn) ${v("leaseMs")} ms; programs loaded and attached ${v("datapathMs")} ms; maps opened, own entries checked, ` +
    `watch started ${v("syncMs")} ms; the rest is spawning node and the pod bridge's first look`
  );
}

function formatN(n: number): string {
  return n.toLocaleString("en-US");
}

if (process.argv[2] === "churn") {
  const [, , , prefix, n, rate, seconds, mode] = process.argv;
  churnChild(prefix as string, Number(n), Number(rate), Number(seconds), mode === "txn").then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`churn failed: ${String(e)}\n`);
      process.exit(1);
    },
  );
} else if (process.argv[2] === "inner") {
  inner(process.argv[3] as string).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench-control failed: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
} else {
  outer();
}
