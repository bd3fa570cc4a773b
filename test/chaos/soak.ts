// The chaos soak (issue 18): a cluster of real agents on a 3-member etcd in
// namespaces this run creates, 10 ms pings between every ordered pair of pods
// and a rate-limited iperf3 flow between every pair, while the seeded
// schedule of test/chaos/plan.ts injects one fault after another. The
// network is dual-stack: of each pair's two pings one goes over IPv4, the
// other over IPv6, and flows alternate families, so both data paths and
// both halves of every map are under the same faults. After
// every fault it waits until every node's pinned map equals the leases in
// etcd, every node holds its one lease (the same subnet as at the start),
// every agent is ready and every flow moves bytes again, and it samples
// agent RSS and etcd's key count. `make chaos` (test/chaos/run.ts) and
// test/e2e/chaos.test.ts run it.
import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { decodeIp, decodePeer, F_LOCAL } from "../../agent/bpf/codec";
import { type MapName } from "../../agent/bpf/abi.generated";
import { BpfMap } from "../../agent/bpf/map";
import { decodeIp6, decodePeer6 } from "../../agent/bpf/codec6";
import { SubnetHostMap, SubnetHostMap6 } from "../../agent/bpf/subnet-map";
import { encodeLeaseAttrs, leaseKey, parseLeaseKeyParts } from "../../agent/control/lease";
import { Cidr, formatIp } from "../../agent/net/ip";
import { formatIp6 } from "../../agent/net/ip6";
import { Rng } from "../fuzz/gen";
import { Cluster, PREFIX } from "../lib/cluster";
import { type EtcdServer } from "../lib/etcd";
import {
  dropMismatches,
  eth0Mac,
  expectedDrops,
  HOSTILE_CASES,
  requireScapy,
  rxDrops,
  sendHostile,
} from "../lib/hostile";
import { median } from "../../bench/report";
import { inNs, sh, shStatus, sleep, waitFor } from "../lib/sh";
import { IperfFlow, ping, PingStream } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";
import {
  initialDecap,
  INVALID_CONFIGS,
  judge,
  pauses,
  Schedule,
  VALID_CONFIGS,
  windowOf,
  type ChaosEvent,
  type Decap,
  type EventRecord,
  type Verdict,
  type FlapAllowance,
} from "./plan";

export interface SoakOptions {
  seconds: number;
  seed: number;
  nodes?: number;
  /** iperf3 -b per flow (2 CPUs: keep the machine unsaturated). */
  bitrate?: string;
  churn?: number;
  floodPerCase?: number;
  log?: (line: string) => void;
  /** What a link flap may cost (plan.ts); STRICT_FLAP unless given. */
  flap?: FlapAllowance;
}

/** Agent RSS bound (MB): a start with 1,000 leases is well under this. */
export const RSS_LIMIT_MB = 300;
/** Time every invariant has to hold again after a fault. */
export const CONVERGE_MS = 30000;
/** Time a flow has to move bytes again after convergence. */
export const FLOW_MS = 15000;
const PING_MS = 10;
/** A request sent this close to the pingers' stop may have had no time to
 *  be answered: not counted. */
const LAST_REPLY_MS = 200;
/** How long after a flap's link-up the neighbour tables are read. */
const FLAP_LOOK_MS = 300;

/** The agent's neighbour-keeper lines of a log excerpt, joined. */
function neighLogLines(log: string): string {
  return log
    .split("\n")
    .filter((l) => /neighbour|underlay link/.test(l))
    .map((l) => l.slice(0, 300))
    .join(" | ");
}

export interface SoakResult {
  seed: number;
  seconds: number;
  nodes: number;
  /** Each node's --decap at the start (decap-switch events change them). */
  decapAtStart?: Decap[];
  etcdMembers: number;
  bitrate: string;
  pingIntervalMs: number;
  /** The interval the pingers kept, median (ms). */
  pingAchievedMs: number;
  cpus: number;
  /** 1-minute load average when the faults began and when they ended: other
   *  work on the machine lengthens outages and pauses. */
  loadStart: number;
  loadEnd: number;
  pingers: number;
  pingsSent: number;
  pingsLost: number;
  /** Of those lost, the ones answered by an ICMP error (Destination Host
   *  Unreachable) rather than not at all (absent in reports before it). */
  pingsUnreachable?: number;
  flows: number;
  flowsBroken: number;
  maxAgentRssMb: number;
  maxEtcdKeys: number;
  /** etcd leases (TTLs), at most, after a fault: one per node. */
  maxEtcdLeases: number;
  /** Keys etcd holds between faults: one lease per node and the config. */
  steadyEtcdKeys: number;
  /** Every pause of every flow: when (s into the run), how long, in which
   *  event's window (-1: between events). */
  pauses: { flow: string; atS: number; ms: number; event: number }[];
  events: (Omit<EventRecord, "start" | "done" | "converged" | "ready" | "end"> & {
    atS: number;
    actionMs: number;
    convergenceMs: number;
    readyMs: number;
    detail?: Record<string, number | string>;
  })[];
  verdict: Verdict;
}

interface Lease {
  key: string;
  subnet: string;
  publicIp: string;
  vtepMac: string;
  /** The IPv6 half: subnet, PublicIPv6, BackendV6Data.VtepMAC. */
  v6?: { subnet: string; publicIp: string; vtepMac: string };
}

export class Soak {
  readonly c = new Cluster();
  private readonly nodes: NodeInfo[] = [];
  private outsider!: NodeInfo;
  private readonly subnets = new Map<number, string>();
  /** Each node's IPv6 subnet at the start (it must keep it too). */
  private readonly subnets6 = new Map<number, string>();
  /** The decap mechanism each node's agent runs (and must report). */
  private readonly decap: Decap[] = [];
  private readonly pingers: { pair: { from: number; to: number }; p: PingStream }[] = [];
  private readonly flows: IperfFlow[] = [];
  private config = VALID_CONFIGS[0] as string;
  private maxRss = 0;
  private maxKeys = 0;
  private maxLeases = 0;
  private readonly log: (line: string) => void;
  private readonly n: number;

  constructor(private readonly o: SoakOptions) {
    this.log = o.log ?? (() => {});
    this.n = o.nodes ?? 4;
  }

  /** A member that runs (etcdctl against it). */
  private etcd(): EtcdServer {
    const m = this.c.members.find((x) => x.running);
    if (!m) throw new Error("no etcd member is running");
    return m;
  }

  async run(): Promise<SoakResult> {
    const o = this.o;
    requireScapy();
    for (let i = 0; i < this.n; i++) this.decap.push(initialDecap(i));
    const decapAtStart = [...this.decap];
    await this.c.start(this.n, {
      etcdMembers: 3,
      config: this.config,
      ipv6: true,
      nodeFlags: (index) => ["--decap", this.decap[index - 1] as Decap],
    });
    this.nodes.push(...this.c.nodes);
    this.outsider = this.c.topo.addNode(9); // on the underlay, holds no lease
    for (const [i, n] of this.nodes.entries()) this.subnets.set(i, this.c.agent(n).subnet());
    for (const l of this.leases().leases) {
      const i = this.nodes.findIndex((n) => n.underlayIp === l.publicIp);
      if (i >= 0 && l.v6) this.subnets6.set(i, l.v6.subnet);
    }
    if (this.subnets6.size !== this.n) throw new Error("not every node has an IPv6 subnet");
    this.log(
      `chaos: seed ${o.seed}, ${o.seconds} s, ${this.n} nodes (decap ${this.decap.join(" ")}), ` +
        `3 etcd members, subnets ${[...this.subnets.values()].join(" ")} ${[...this.subnets6.values()].join(" ")}`,
    );
    // A pod's address in a family: i -> j over IPv6 when i > j, so each
    // pair's two pings are one of each.
    const dst = (j: number, v6: boolean) => {
      const p = this.c.pod(this.node(j));
      return v6 ? (p.ip6 as string) : p.ip;
    };
    // Every pod reaches every other in both families before the streams
    // start: a new IPv6 address (pod, gateway) is tentative until its
    // duplicate address detection is done, and packets from it go nowhere.
    for (let i = 0; i < this.n; i++)
      for (let j = 0; j < this.n; j++) {
        if (i === j) continue;
        const from = this.c.pod(this.node(i)).ns;
        for (const v6 of [false, true]) {
          const to = dst(j, v6);
          await waitFor(`${from} -> ${to}`, () => ping(from, to, { count: 1 }), 15000);
        }
      }
    const bitrate = o.bitrate ?? "50M";
    for (let i = 0; i < this.n; i++)
      for (let j = 0; j < this.n; j++) {
        if (i === j) continue;
        const p = new PingStream(this.c.pod(this.node(i)).ns, dst(j, i > j), PING_MS);
        this.pingers.push({ pair: { from: i, to: j }, p: p.start() });
      }
    for (let i = 0; i < this.n; i++)
      for (let j = i + 1; j < this.n; j++) {
        // Alternate directions so every node sends and receives.
        const [a, b] = (i + j) % 2 ? [j, i] : [i, j];
        const to = this.c.pod(this.node(b));
        const f = new IperfFlow(
          this.c.pod(this.node(a)),
          { ns: to.ns, ip: dst(b, this.flows.length % 2 === 1) },
          o.seconds + 600,
          bitrate,
        );
        this.flows.push(await f.start());
      }
    await sleep(1500);
    const baseline = await this.settle(performance.timeOrigin + performance.now());
    if (baseline.length)
      throw new Error(`the cluster is not healthy before any fault: ${baseline.join("; ")}`);

    const records: EventRecord[] = [];
    const details: (Record<string, number | string> | undefined)[] = [];
    const schedule = new Schedule(o.seed, {
      nodes: this.n,
      members: 3,
      churn: o.churn,
      floodPerCase: o.floodPerCase,
    });
    const t0 = Date.now();
    const loadStart = loadavg()[0] as number;
    while (Date.now() - t0 < o.seconds * 1000) {
      const ev = schedule.next();
      const rec: EventRecord = newRecord(ev);
      const detail: Record<string, number | string> = {};
      try {
        await this.inject(ev, rec, detail);
      } catch (e) {
        rec.failures.push(`injecting it failed: ${(e as Error).message}`);
        rec.done = rec.done || now();
      }
      rec.failures.push(...(await this.settle(rec.done, rec)));
      rec.end = now();
      records.push(rec);
      details.push(Object.keys(detail).length ? detail : undefined);
      this.log(
        `  ${((rec.start - t0) / 1000).toFixed(1).padStart(6)} s  ${describeEvent(ev).padEnd(44)} ` +
          `maps ${Math.round(rec.converged - rec.done)} ms, ready ${Math.round(rec.ready - rec.done)} ms` +
          (rec.failures.length ? `  FAILED: ${rec.failures.join("; ")}` : ""),
      );
      await sleep(ev.gapMs);
    }
    // A member still down comes back; then the final check.
    const down = schedule.memberDown;
    if (down !== undefined) {
      const ev: ChaosEvent = { type: "etcd-restart", member: down, gapMs: 0 };
      const rec: EventRecord = newRecord(ev);
      await this.inject(ev, rec, {});
      rec.failures.push(...(await this.settle(rec.done, rec)));
      rec.end = now();
      records.push(rec);
      details.push(undefined);
    }
    const loadEnd = loadavg()[0] as number;
    await sleep(2500); // the last pings' replies, a steady stretch at the end
    const final = await this.settle(now());
    for (const f of this.flows)
      if (f.broken) final.push(`flow ${f.from.ns} -> ${f.to.ip} broken: ${f.output.slice(-300)}`);
    await Promise.all(this.pingers.map((x) => x.p.stop()));
    for (const x of this.pingers)
      if (x.p.exitCode !== 0 && x.p.exitCode !== 1 && x.p.exitCode !== 130)
        final.push(`ping ${x.p.ns} -> ${x.p.dst} exited ${x.p.exitCode}`);

    const flowPauses = this.flows.map((f) => pauses(f.intervals));
    // Allowances in pings follow the interval ping really kept.
    const achieved = median(this.pingers.map((x) => x.p.achievedMs));
    const verdict = judge(
      records,
      this.pingers.map((x) => ({ pair: x.pair, lost: x.p.lost(LAST_REPLY_MS) })),
      flowPauses,
      achieved,
      o.flap,
    );
    verdict.failures.push(...final.map((f) => `final check: ${f}`));
    return {
      seed: o.seed,
      seconds: o.seconds,
      nodes: this.n,
      decapAtStart,
      etcdMembers: 3,
      bitrate,
      pingIntervalMs: PING_MS,
      pingAchievedMs: Math.round(achieved * 100) / 100,
      cpus: cpus().length,
      loadStart: Math.round(loadStart * 10) / 10,
      loadEnd: Math.round(loadEnd * 10) / 10,
      pingers: this.pingers.length,
      pingsSent: this.pingers.reduce((a, x) => a + x.p.sent, 0),
      pingsLost: this.pingers.reduce((a, x) => a + x.p.lost(LAST_REPLY_MS).length, 0),
      pingsUnreachable: this.pingers.reduce((a, x) => a + x.p.errors, 0),
      flows: this.flows.length,
      flowsBroken: this.flows.filter((f) => f.broken).length,
      maxAgentRssMb: Math.round(this.maxRss),
      maxEtcdKeys: this.maxKeys,
      maxEtcdLeases: this.maxLeases,
      steadyEtcdKeys: this.n + 1,
      pauses: flowPauses.flatMap((ps, i) =>
        ps.map((p) => ({
          flow: `${(this.flows[i] as IperfFlow).from.ns} -> ${(this.flows[i] as IperfFlow).to.ip}`,
          atS: Math.round((p.at - t0) / 100) / 10,
          ms: p.ms,
          event: windowOf(records, p.at),
        })),
      ),
      events: records.map((r, i) => ({
        ev: r.ev,
        failures: r.failures,
        atS: Math.round((r.start - t0) / 100) / 10,
        actionMs: Math.round(r.done - r.start),
        convergenceMs: Math.round(r.converged - r.done),
        readyMs: Math.round(r.ready - r.done),
        ...(details[i] ? { detail: details[i] } : {}),
      })),
      verdict,
    };
  }

  async stop(): Promise<void> {
    for (const f of this.flows) f.kill();
    await Promise.all(this.pingers.map((x) => x.p.stop()));
    await this.c.stop();
  }

  /** The node's eth0 and its switch port both have operstate up. */
  private operUp(n: NodeInfo): boolean {
    const state = (ns: string, dev: string) =>
      shStatus(inNs(ns, ["cat", `/sys/class/net/${dev}/operstate`])).stdout.trim();
    return state(n.ns, "eth0") === "up" && state(this.c.topo.switchNs, `n${n.index}`) === "up";
  }

  /** Each node's underlay neighbour entries for the other nodes, one line. */
  private neighView(flapped: NodeInfo): string {
    return this.nodes
      .map((m) => {
        const t = shStatus(inNs(m.ns, ["ip", "-4", "neigh", "show", "dev", "eth0"])).stdout;
        const peers = t
          .split("\n")
          .filter((l) => l.trim() && (m === flapped || l.startsWith(`${flapped.underlayIp} `)))
          .map((l) => l.replace(/ lladdr \S+/, "").trim());
        return `${m.ns.slice(-2)}: ${peers.join(", ") || "none"}`;
      })
      .join("; ");
  }

  private node(i: number): NodeInfo {
    return this.nodes[i] as NodeInfo;
  }

  // --- faults ---------------------------------------------------------------
  private async inject(
    ev: ChaosEvent,
    rec: EventRecord,
    detail: Record<string, number | string>,
  ): Promise<void> {
    const c = this.c;
    const node = ev.node !== undefined ? this.node(ev.node) : undefined;
    switch (ev.type) {
      case "agent-sigkill":
      case "agent-sigterm": {
        const n = node as NodeInfo;
        const t = now();
        const code = await c.agent(n).stop(ev.signal);
        detail.stopMs = Math.round(now() - t);
        if (ev.signal === "SIGTERM" && code !== 143)
          rec.failures.push(`SIGTERM: agent exited ${code}, not 143`);
        const a = c.startAgent(n);
        await a.waitReady(60000);
        rec.done = now();
        return;
      }
      case "decap-switch": {
        // What an operator does to change a node's mechanism: restart its
        // agent with another --decap. The pinned programs keep forwarding
        // while it is down; the new one replaces the underlay's hook.
        const n = node as NodeInfo;
        const i = ev.node as number;
        const to: Decap = this.decap[i] === "xdp" ? "tc" : "xdp";
        ev.decap = to;
        detail.from = this.decap[i] as Decap;
        const code = await c.agent(n).stop("SIGTERM");
        if (code !== 143) rec.failures.push(`SIGTERM: agent exited ${code}, not 143`);
        this.decap[i] = to;
        c.nodeFlags.set(n.index, ["--decap", to]);
        const a = c.startAgent(n);
        await a.waitReady(60000);
        rec.done = now();
        return;
      }
      case "etcd-kill":
        await (c.members[ev.member as number] as EtcdServer).kill(ev.signal);
        rec.done = now();
        return;
      case "etcd-restart":
        await (c.members[ev.member as number] as EtcdServer).start();
        rec.done = now();
        return;
      case "link-flap": {
        const n = node as NodeInfo;
        const t = now();
        sh(inNs(n.ns, ["ip", "link", "set", "eth0", "down"]));
        detail.downCmdMs = Math.round(now() - t);
        await sleep(ev.flapMs as number);
        const logFrom = c.agent(n).logs.length;
        const u = now();
        sh(inNs(n.ns, ["ip", "link", "set", "eth0", "up"]));
        const upped = now();
        detail.upCmdMs = Math.round(upped - u);
        // The link is back when the kernel says so at both ends: operstate
        // up is set by linkwatch, which also activates the device's queue
        // and brings the switch's bridge port to forwarding. On a loaded
        // machine that work can lag the command by hundreds of ms.
        await waitFor(
          `node ${n.index}'s underlay link operational again`,
          () => this.operUp(n),
          10000,
          5,
        );
        rec.done = now();
        detail.operUpMs = Math.round(rec.done - upped);
        rec.heldMs = Math.round(rec.done - t);
        // What the neighbour tables hold soon after: the report keeps it so
        // that an overrun can be read afterwards (which side had no entry).
        await sleep(FLAP_LOOK_MS);
        detail.neighAfter = this.neighView(n);
        detail.agentLog = neighLogLines(c.agent(n).logs.slice(logFrom));
        return;
      }
      case "lease-delete": {
        const s = this.subnets.get(ev.node as number) as string;
        const own = this.leases().leases.find((l) => l.subnet === s);
        this.etcd().ctl(["del", own?.key ?? leaseKey(PREFIX, Cidr.parse(s))]);
        rec.done = now();
        return;
      }
      case "config-valid":
        this.config = VALID_CONFIGS[ev.variant as number] as string;
        this.etcd().put(`${PREFIX}/config`, this.config);
        rec.done = now();
        return;
      case "config-invalid": {
        const bad = INVALID_CONFIGS[ev.variant as number] as (typeof INVALID_CONFIGS)[number];
        if (bad.text === undefined) this.etcd().ctl(["del", `${PREFIX}/config`]);
        else this.etcd().put(`${PREFIX}/config`, bad.text);
        const t = now();
        const said = await this.poll(10000, () => {
          const wrong: string[] = [];
          for (const n of this.nodes) {
            const r = c.agent(n).http("/readyz");
            const msg = r.status === 503 ? String(JSON.parse(r.body).checks?.config) : "";
            if (!bad.says.test(msg)) wrong.push(`node ${n.index}: ${r.status} ${msg}`);
          }
          return wrong;
        });
        if (said.length) rec.failures.push(`not reported as ${bad.says}: ${said.join("; ")}`);
        detail.reportedMs = Math.round(now() - t);
        this.etcd().put(`${PREFIX}/config`, this.config);
        rec.done = now();
        return;
      }
      case "lease-churn": {
        const leases = this.churnLeases(ev);
        const t = now();
        this.txn(leases.map((l) => `put ${l.key} ${JSON.stringify(l.value)}`));
        detail.putMs = Math.round(now() - t);
        const up = await this.poll(CONVERGE_MS, () => this.mapProblems());
        detail.upMs = Math.round(now() - t);
        if (up.length) rec.failures.push(`1,000 leases never reached the maps: ${up.join("; ")}`);
        this.sampleRss();
        const t2 = now();
        this.txn(leases.map((l) => `del ${l.key}`));
        detail.delMs = Math.round(now() - t2);
        rec.done = now();
        return;
      }
      case "hostile-flood": {
        const n = node as NodeInfo;
        const from = this.node(ev.from as number);
        const before = rxDrops(n.pinPath);
        const to = { mac: eth0Mac(n.ns), ip: n.underlayIp };
        const podIp = c.pod(n).ip;
        const count = ev.count as number;
        const sent = sendHostile({
          ns: from.ns,
          to,
          src: from.underlayIp,
          peerSubnet: this.subnets.get(ev.from as number) as string,
          podIp,
          count,
          cases: Object.keys(HOSTILE_CASES),
        });
        Object.assign(
          sent,
          sendHostile({
            ns: this.outsider.ns,
            to,
            src: this.outsider.underlayIp,
            peerSubnet: this.subnets.get(ev.from as number) as string,
            podIp,
            count,
            cases: ["unknown_source"],
          }),
        );
        detail.frames = Object.values(sent).reduce((a, b) => a + b, 0);
        rec.failures.push(...dropMismatches(before, rxDrops(n.pinPath), expectedDrops(sent)));
        rec.done = now();
        return;
      }
    }
  }

  /** 1,000 leases on free /24s, from addresses no node has. */
  private churnLeases(ev: ChaosEvent): { key: string; value: string }[] {
    const rng = new Rng(ev.seed as number);
    const taken = new Set(this.subnets.values());
    const out: { key: string; value: string }[] = [];
    const chosen = new Set<string>();
    while (out.length < (ev.count as number)) {
      // 10.0.1.0 .. 10.15.254.0: inside SOAK_CONFIG's Network.
      const s = Cidr.of((0x0a000000 + rng.range(1, 4094) * 256) >>> 0, 24);
      const str = s.toString();
      if (taken.has(str) || chosen.has(str)) continue;
      chosen.add(str);
      const i = out.length;
      out.push({
        key: leaseKey(PREFIX, s),
        value: encodeLeaseAttrs({
          publicIp: (0xc6120000 + i + 1) >>> 0, // 198.18.0.0/15, benchmark addresses
          backendType: "vxlan",
          vni: 1,
          vtepMac: rng.mac(),
        }),
      });
    }
    return out;
  }

  /** etcdctl txn in chunks within etcd's default --max-txn-ops (128). */
  private txn(ops: string[]): void {
    for (let i = 0; i < ops.length; i += 100)
      this.etcd().ctl(["txn"], `\n${ops.slice(i, i + 100).join("\n")}\n\n\n`);
  }

  // --- invariants -----------------------------------------------------------
  /** Leases in etcd, and what is wrong with them (a node without its one
   *  lease, a lease on another subnet than the node started with). */
  private leases(): { leases: Lease[]; problems: string[] } {
    const leases: Lease[] = [];
    const problems: string[] = [];
    for (const [k, v] of this.etcd().list(`${PREFIX}/subnets/`)) {
      const parts = parseLeaseKeyParts(PREFIX, k);
      if (!parts) {
        problems.push(`lease key ${k} is not a lease key`);
        continue;
      }
      try {
        const j = JSON.parse(v.value);
        leases.push({
          key: k,
          subnet: parts.subnet.toString(),
          publicIp: j.PublicIP,
          vtepMac: String(j.BackendData?.VtepMAC ?? ""),
          ...(parts.subnet6
            ? {
                v6: {
                  subnet: parts.subnet6.toString(),
                  publicIp: String(j.PublicIPv6),
                  vtepMac: String(j.BackendV6Data?.VtepMAC ?? ""),
                },
              }
            : {}),
        });
      } catch {
        problems.push(`lease ${k} is not JSON`);
      }
    }
    for (const [i, n] of this.nodes.entries()) {
      const own = leases.filter((l) => l.publicIp === n.underlayIp);
      if (own.length !== 1)
        problems.push(`node ${i} holds ${own.length} leases (${own.map((l) => l.subnet)})`);
      else if (own[0]?.subnet !== this.subnets.get(i))
        problems.push(`node ${i} moved from ${this.subnets.get(i)} to ${own[0]?.subnet}`);
      else if (this.subnets6.size && own[0]?.v6?.subnet !== this.subnets6.get(i))
        problems.push(`node ${i} moved from ${this.subnets6.get(i)} to ${own[0]?.v6?.subnet}`);
    }
    return { leases, problems };
  }

  /** Every node's pinned maps against the leases in etcd: the IPv4 maps
   * against every lease, the IPv6 maps against the dual-stack leases' IPv6
   * halves (v4-only ones, the churn's, have none). */
  private mapProblems(): string[] {
    const { leases, problems } = this.leases();
    if (problems.length) return problems;
    for (const [i, n] of this.nodes.entries()) {
      for (const f of FAMILIES) {
        const halves = leases.flatMap((l) => {
          const h = f.half(l);
          return h ? [{ ...h, own: l.publicIp === n.underlayIp }] : [];
        });
        const want = new Set(
          halves.map((h) => `${h.subnet} ${h.publicIp} ${h.vtepMac}${h.own ? " local" : ""}`),
        );
        problems.push(...differ(`node ${i} ovl_subnets${f.suffix}`, want, f.entries(n.pinPath)));
        // Decap's source check: every remote lease's host -> its subnet, and
        // no host that holds no lease.
        const peers = new Set(halves.filter((h) => !h.own).map((h) => `${h.publicIp} ${h.subnet}`));
        const pinned = (m: string) => readPinned(n.pinPath, `${m}${f.suffix}` as MapName);
        problems.push(
          ...differ(
            `node ${i} ovl_peers${f.suffix}`,
            peers,
            new Set(pinned("ovl_peers").map(([k, v]) => `${f.host(k)} ${f.peer(v)}`)),
          ),
        );
        // Counters are made by traffic: only for hosts that hold a lease.
        const hosts = new Set([...peers].map((p) => p.split(" ")[0] as string));
        const counted = new Set(pinned("ovl_peer_stats").map(([k]) => f.host(k)));
        problems.push(
          ...differ(
            `node ${i} ovl_peer_stats${f.suffix} (hosts with a lease)`,
            new Set([...counted].filter((h) => hosts.has(h))),
            counted,
          ),
        );
      }
    }
    return problems;
  }

  private readyProblems(): string[] {
    const out: string[] = [];
    for (const [i, n] of this.nodes.entries()) {
      const a = this.c.agent(n);
      if (!a.running) out.push(`node ${i}: agent exited ${a.exitCode}: ${a.logs.slice(-500)}`);
      else {
        const r = a.http("/readyz");
        if (r.status !== 200) out.push(`node ${i}: /readyz ${r.status} ${r.body.slice(0, 300)}`);
        else {
          const decap = JSON.parse(r.body).info?.decap;
          if (decap !== this.decap[i])
            out.push(`node ${i}: decap ${decap}, started with --decap ${this.decap[i]}`);
        }
      }
    }
    return out;
  }

  private async poll(ms: number, fn: () => string[]): Promise<string[]> {
    const end = now() + ms;
    let last: string[];
    for (;;) {
      try {
        last = fn();
      } catch (e) {
        last = [(e as Error).message];
      }
      if (!last.length || now() > end) return last;
      await sleep(25);
    }
  }

  /**
   * After a fault: maps equal etcd and every lease in place (the time of
   * that is the convergence), every agent ready, every flow moving bytes
   * again, agents' RSS and etcd's key count within bounds.
   */
  private async settle(since: number, rec?: EventRecord): Promise<string[]> {
    const failures: string[] = [];
    const maps = await this.poll(CONVERGE_MS, () => this.mapProblems());
    if (rec) rec.converged = now();
    failures.push(...maps);
    failures.push(...(await this.poll(CONVERGE_MS, () => this.readyProblems())));
    if (rec) rec.ready = now();
    // Bytes after `since` on every flow; a broken one never will.
    const after = Math.max(since, now() - 200);
    const flows = await this.poll(FLOW_MS, () =>
      this.flows.flatMap((f) =>
        f.broken
          ? [`flow ${f.from.ns} -> ${f.to.ip} broken: ${f.output.slice(-300)}`]
          : f.bytesSince(after) > 0
            ? []
            : [`flow ${f.from.ns} -> ${f.to.ip} moved no byte for ${FLOW_MS} ms`],
      ),
    );
    failures.push(...flows);
    for (const x of this.pingers)
      if (!x.p.running) failures.push(`ping ${x.p.ns} -> ${x.p.dst} exited ${x.p.exitCode}`);
    failures.push(...this.sampleRss());
    const keys = Number(
      JSON.parse(
        this.etcd().ctl(["get", "", "--prefix", "--keys-only", "--limit", "1", "-w", "json"]),
      ).count ?? 0,
    );
    this.maxKeys = Math.max(this.maxKeys, keys);
    if (keys !== this.n + 1) failures.push(`etcd holds ${keys} keys, not ${this.n + 1}`);
    // One etcd lease per node: a restart or a re-acquired lease that left
    // its old one behind would pile them up for a TTL (a day by default).
    const held = this.etcd().leaseCount();
    this.maxLeases = Math.max(this.maxLeases, held);
    if (held !== this.n) failures.push(`etcd holds ${held} etcd leases, not ${this.n}`);
    return failures;
  }

  private sampleRss(): string[] {
    const out: string[] = [];
    for (const [i, n] of this.nodes.entries()) {
      const pid = this.c.agent(n).pid;
      if (pid === undefined || !this.c.agent(n).running) continue;
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      const mb = m ? Number(m[1]) / 1024 : 0;
      this.maxRss = Math.max(this.maxRss, mb);
      if (mb > RSS_LIMIT_MB)
        out.push(`node ${i}: agent RSS ${mb.toFixed(0)} MB > ${RSS_LIMIT_MB} MB`);
    }
    return out;
  }
}

/** One address family's maps, as the soak checks them against etcd. */
interface MapFamily {
  /** "" for ovl_subnets, ovl_peers, ovl_peer_stats; "6" for their IPv6 twins. */
  suffix: "" | "6";
  /** What a lease says of this family's half, if it has one. */
  half(l: Lease): { subnet: string; publicIp: string; vtepMac: string } | undefined;
  /** The subnet map's entries as "subnet host mac[ local]". */
  entries(pinPath: string): Set<string>;
  /** A peer map key (a host address) and value (its subnet) as text. */
  host(k: Buffer): string;
  peer(v: Buffer): string;
}

/** A subnet map's entries as "subnet host mac[ local]" (closed after). */
function entryTexts<A>(
  m: {
    list(): { subnet: object; host: { remoteIp: A; vtepMac: string; flags: number } }[];
    close(): void;
  },
  fmt: (ip: A) => string,
): Set<string> {
  try {
    return new Set(
      m
        .list()
        .map(
          (e) =>
            `${e.subnet} ${fmt(e.host.remoteIp)} ${e.host.vtepMac}${e.host.flags & F_LOCAL ? " local" : ""}`,
        ),
    );
  } finally {
    m.close();
  }
}

const FAMILIES: MapFamily[] = [
  {
    suffix: "",
    half: (l) => l,
    entries: (p) => entryTexts(SubnetHostMap.openPinned(p), formatIp),
    host: (k) => formatIp(decodeIp(k)),
    peer: (v) => String(decodePeer(v)),
  },
  {
    suffix: "6",
    half: (l) => l.v6,
    entries: (p) => entryTexts(SubnetHostMap6.openPinned(p), formatIp6),
    host: (k) => formatIp6(decodeIp6(k)),
    peer: (v) => String(decodePeer6(v)),
  },
];

/** "what: N missing (…), N extra (…)" when two sets differ. */
function differ(what: string, want: Set<string>, got: Set<string>): string[] {
  const missing = [...want].filter((x) => !got.has(x));
  const extra = [...got].filter((x) => !want.has(x));
  if (!missing.length && !extra.length) return [];
  return [
    `${what}: ${missing.length} missing (${missing.slice(0, 3).join(", ")}), ` +
      `${extra.length} extra (${extra.slice(0, 3).join(", ")})`,
  ];
}

function readPinned(pinPath: string, name: MapName): [Buffer, Buffer][] {
  const m = BpfMap.openPinned(pinPath, name);
  try {
    return m.entries();
  } finally {
    m.close();
  }
}

function newRecord(ev: ChaosEvent): EventRecord {
  return { ev, start: now(), done: 0, converged: 0, ready: 0, end: 0, failures: [] };
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

export function describeEvent(ev: ChaosEvent): string {
  const parts: string[] = [ev.type];
  if (ev.node !== undefined) parts.push(`node ${ev.node}`);
  if (ev.from !== undefined) parts.push(`from node ${ev.from}`);
  if (ev.member !== undefined) parts.push(`member ${ev.member}`);
  if (ev.signal && ev.type.startsWith("etcd")) parts.push(ev.signal);
  if (ev.decap) parts.push(`to ${ev.decap}`);
  if (ev.flapMs !== undefined) parts.push(`${ev.flapMs} ms`);
  if (ev.variant !== undefined) parts.push(`variant ${ev.variant}`);
  if (ev.count !== undefined) parts.push(`x${ev.count}`);
  return parts.join(" ");
}

/** Runs a soak and tears down what it made, whatever happens. */
export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const s = new Soak(o);
  try {
    return await s.run();
  } finally {
    await s.stop();
  }
}
