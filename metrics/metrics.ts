// Prometheus metrics with an injected Registry (never the global one).
// Datapath counters live in per-CPU BPF maps and are summed in collect() at
// scrape time, prom-client's default-metrics pattern.
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from "prom-client";
import { M } from "./names";
import { type DatapathStats } from "../agent/bpf/stats";
import { type PeerCounters } from "../agent/bpf/codec";
import { type Ip4 } from "../agent/net/ip";
import { formatAddr, type Ip6 } from "../agent/net/ip6";
import { OverlayError } from "../agent/errors";

/** Where scrape-time datapath numbers come from (pinned maps in production). */
export interface DatapathSource {
  stats(): DatapathStats;
  peers(): Map<Ip4, PeerCounters>;
  /** Every peer's counters as Numbers, one at a time (what a scrape ranks;
   * preferred over peers() where given). */
  eachPeer?(fn: (ip: Ip4, c: Float64Array) => void): void;
  /** The IPv6 peers of a dual-stack network (by PublicIPv6), ranked with the
   * IPv4 ones. */
  eachPeer6?(fn: (ip: Ip6, c: Float64Array) => void): void;
  entries(): number;
  /** Subnet map writes so far. */
  writes?(): number;
}

/** The label value of the summed series of peers without their own. */
export const OTHER_PEERS = "other";
export const DEFAULT_METRICS_PEERS = 10;

/** --metrics-peers: a whole number, -1 for every peer. */
export function checkMetricsPeers(n: number): number {
  if (!Number.isInteger(n) || n < -1) {
    throw new OverlayError(
      `--metrics-peers: must be a whole number >= -1 (-1: every peer), got ${String(n)}`,
    );
  }
  return n;
}

/** A peer's counters as Numbers: tx packets, tx bytes, rx packets, rx bytes. */
export type PeerNumbers = [number, number, number, number];

/**
 * Pure: the n peers with the most bytes (sent + received) get their own
 * series, the rest are summed into one (undefined when n is -1, every peer
 * with its own). Ties go to the lower address, so the choice is stable.
 * Peers are added one at a time, so 65,536 of them never sit in one map.
 */
interface Ranked {
  ip: Ip4 | Ip6;
  score: number;
}

/** Does a peer with (ip, score) rank before b? More traffic first, then the lower IP. */
function beats(ip: Ip4 | Ip6, score: number, b: Ranked): boolean {
  return score > b.score || (score === b.score && ip < b.ip);
}

export class PeerRanking {
  /** Kept sorted, best first; n is small, the peers many. */
  private readonly best: { ip: Ip4 | Ip6; c: PeerNumbers; score: number }[] = [];
  private readonly rest: PeerNumbers = [0, 0, 0, 0];

  constructor(readonly n: number) {}

  add(ip: Ip4 | Ip6, c: ArrayLike<number>): void {
    const score = (c[1] as number) + (c[3] as number);
    const n = this.n;
    const best = this.best;
    // (no closure here: one per peer, 65,536 a scrape, was most of its garbage)
    if (n >= 0 && best.length === n && (n === 0 || !beats(ip, score, best[n - 1] as Ranked))) {
      this.sum(c);
      return;
    }
    let i = best.length;
    while (i > 0 && beats(ip, score, best[i - 1] as Ranked)) i--;
    best.splice(i, 0, {
      ip,
      c: [c[0] as number, c[1] as number, c[2] as number, c[3] as number],
      score,
    });
    if (n >= 0 && best.length > n) this.sum((best.pop() as (typeof best)[0]).c);
  }

  private sum(c: ArrayLike<number>): void {
    for (let k = 0; k < 4; k++) this.rest[k] = (this.rest[k] as number) + (c[k] as number);
  }

  result(): { top: [Ip4 | Ip6, PeerNumbers][]; other: PeerNumbers | undefined } {
    return {
      top: this.best.map((b) => [b.ip, b.c]),
      other: this.n < 0 ? undefined : [...this.rest],
    };
  }
}

/** PeerRanking over a map of counters (what a DatapathSource returns). */
export function topPeers(peers: Map<Ip4, PeerCounters>, n: number) {
  const r = new PeerRanking(n);
  for (const [ip, c] of peers) {
    r.add(ip, [Number(c.txPackets), Number(c.txBytes), Number(c.rxPackets), Number(c.rxBytes)]);
  }
  return r.result();
}

/** read() at most once per scrape: a scrape collects every metric in one
 *  synchronous pass, so the value is kept until the event loop turns. Any
 *  collector may come first; a lone get() reads afresh. */
function perScrape<T>(read: () => T | undefined): () => T | undefined {
  let value: T | undefined;
  let fresh = false;
  return () => {
    if (!fresh) {
      value = read();
      fresh = true;
      setImmediate(() => {
        fresh = false;
        value = undefined;
      });
    }
    return value;
  };
}

/** A counter whose value is read, not incremented: reset + set at scrape. */
function readCounter(
  reg: Registry,
  name: string,
  help: string,
  labelNames: string[],
  read: (set: (labels: Record<string, string>, v: bigint | number) => void) => void,
): Counter<string> {
  return new Counter({
    name,
    help,
    labelNames,
    registers: [reg],
    collect() {
      this.reset();
      read((labels, v) => this.inc(labels, Number(v)));
    },
  });
}

export class AgentMetrics {
  readonly mapSyncDuration: Histogram<string>;
  readonly mapSyncErrors: Counter<string>;
  readonly leaseRenewals: Counter<string>;
  readonly leaseAcquisitions: Counter<string>;
  readonly watchRestarts: Counter<string>;
  readonly configErrors: Counter<string>;
  readonly ready: Gauge<string>;
  readonly datapathInfo: Gauge<string>;
  readonly routeOverlap: Gauge<string>;
  private source: DatapathSource | undefined;

  constructor(
    readonly registry: Registry,
    info: { version: string; commit: string; abi: string; libbpf: string },
    opts: { peers?: number } = {},
  ) {
    const reg = registry;
    const src = () => this.source;
    const safe = <T>(fn: (s: DatapathSource) => T): T | undefined => {
      const s = src();
      if (!s) return undefined;
      try {
        return fn(s);
      } catch {
        return undefined; // maps not there (yet): no samples rather than a failed scrape
      }
    };
    const stats = perScrape<DatapathStats>(() => safe((s) => s.stats()));

    readCounter(
      reg,
      M.packets,
      "Packets encapsulated (tx), decapsulated (rx) and sent unencapsulated to a direct peer (direct) by the data path.",
      ["direction"],
      (set) => {
        for (const [dir, c] of stats()?.traffic ?? []) set({ direction: dir }, c.packets);
      },
    );
    readCounter(
      reg,
      M.bytes,
      "Bytes encapsulated (tx, outer), decapsulated (rx, outer) and sent to a direct peer (direct).",
      ["direction"],
      (set) => {
        for (const [dir, c] of stats()?.traffic ?? []) set({ direction: dir }, c.bytes);
      },
    );
    readCounter(
      reg,
      M.drops,
      "Packets dropped by the data path, by reason.",
      ["reason", "direction"],
      (set) => {
        for (const d of stats()?.drops ?? []) {
          if (d.reason !== "unspec") set({ reason: d.reason, direction: d.direction }, d.packets);
        }
      },
    );
    readCounter(
      reg,
      M.dropBytes,
      "Bytes dropped by the data path, by reason.",
      ["reason", "direction"],
      (set) => {
        for (const d of stats()?.drops ?? []) {
          if (d.reason !== "unspec") set({ reason: d.reason, direction: d.direction }, d.bytes);
        }
      },
    );
    readCounter(
      reg,
      M.eventsSuppressed,
      "Monitor events the data path did not emit: drop events over the per-CPU rate " +
        "limit or with the ring full, trace events with the ring full. The drops " +
        "themselves are always counted in overlay_drops_total.",
      ["type"],
      (set) => {
        const s = stats()?.suppressed;
        set({ type: "drop" }, s?.drop ?? 0n);
        set({ type: "trace" }, s?.trace ?? 0n);
      },
    );
    // One series per peer is one per node of the cluster on every node:
    // only the busiest `peerSeries` get theirs, the rest one sum.
    const peerSeries = opts.peers ?? DEFAULT_METRICS_PEERS;
    const top = perScrape(() =>
      safe((s) => {
        if (!s.eachPeer) return topPeers(s.peers(), peerSeries);
        const r = new PeerRanking(peerSeries);
        s.eachPeer((ip, c) => r.add(ip, c));
        s.eachPeer6?.((ip, c) => r.add(ip, c));
        return r.result();
      }),
    );
    const peerCounter = (name: string, help: string, k: number) =>
      readCounter(reg, name, help, ["peer"], (set) => {
        const t = top();
        if (!t) return;
        for (const [ip, c] of t.top) set({ peer: formatAddr(ip) }, c[k] as number);
        if (t.other) set({ peer: OTHER_PEERS }, t.other[k] as number);
      });
    peerCounter(M.peerTxPackets, "Packets sent to a peer node (by its public IP).", 0);
    peerCounter(M.peerTxBytes, "Bytes sent to a peer node (by its public IP).", 1);
    peerCounter(M.peerRxPackets, "Packets received from a peer node (by its public IP).", 2);
    peerCounter(M.peerRxBytes, "Bytes received from a peer node (by its public IP).", 3);
    readCounter(
      reg,
      M.mapWrites,
      "Subnet map entries written or deleted by this agent (a warm restart with unchanged leases writes none).",
      [],
      (set) => {
        const n = safe((s) => s.writes?.());
        if (n !== undefined) set({}, BigInt(n));
      },
    );
    new Gauge({
      name: M.mapEntries,
      help: "Entries in the subnet map (remote subnets plus our own).",
      registers: [reg],
      collect() {
        const n = safe((s) => s.entries());
        if (n !== undefined) this.set(n);
      },
    });

    this.mapSyncDuration = new Histogram({
      name: M.mapSyncDuration,
      help: "Time to apply a full or incremental sync of leases to the subnet map.",
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [reg],
    });
    this.mapSyncErrors = new Counter({
      name: M.mapSyncErrors,
      help: "Failed subnet map operations, by operation.",
      labelNames: ["op"],
      registers: [reg],
    });
    this.leaseRenewals = new Counter({
      name: M.leaseRenewals,
      help: "Successful keepalives of this node's etcd lease.",
      registers: [reg],
    });
    this.leaseAcquisitions = new Counter({
      name: M.leaseAcquisitions,
      help: "Attempts to acquire this node's subnet lease, by result.",
      labelNames: ["result"],
      registers: [reg],
    });
    this.watchRestarts = new Counter({
      name: M.watchRestarts,
      help: "Times the lease watch was re-established (re-list and reconcile), by reason.",
      labelNames: ["reason"],
      registers: [reg],
    });
    this.configErrors = new Counter({
      name: M.configErrors,
      help: "Network configurations read from etcd that failed validation.",
      registers: [reg],
    });
    this.ready = new Gauge({
      name: M.ready,
      help: "1 when the agent holds its lease, the data path is attached and the map is synced.",
      registers: [reg],
    });
    const build = new Gauge({
      name: M.buildInfo,
      help: "Build information; always 1.",
      labelNames: ["version", "commit", "abi", "libbpf"],
      registers: [reg],
    });
    build.set(info, 1);
    this.datapathInfo = new Gauge({
      name: M.datapathInfo,
      help: "The data path mechanism this node runs (decap hook, GRO socket, pod bridge); always 1.",
      labelNames: ["decap", "gro", "pod_bridge"],
      registers: [reg],
    });
    this.routeOverlap = new Gauge({
      name: M.routeOverlap,
      help:
        "A host route or address inside the cluster network that is not overlayd's (1 each): " +
        "packets for those pods may go elsewhere.",
      labelNames: ["kind", "prefix", "dev", "origin"],
      registers: [reg],
    });
    for (const l of ["acquired", "reused", "reserved", "race_lost", "network_full", "error"]) {
      this.leaseAcquisitions.inc({ result: l }, 0);
    }
    for (const op of ["upsert", "delete", "list"]) this.mapSyncErrors.inc({ op }, 0);
    // Every known reason from the start, so a dashboard panel or alert has a
    // series (at 0) before the first restart.
    for (const reason of ["compacted", "canceled", "reconnected"]) {
      this.watchRestarts.inc({ reason }, 0);
    }
    collectDefaultMetrics({ register: reg });
    // prom-client names these gauges *_total, which promtool (rightly)
    // rejects; the rest of the process metrics stay.
    for (const name of [
      "nodejs_active_handles_total",
      "nodejs_active_requests_total",
      "nodejs_active_resources_total",
    ]) {
      reg.removeSingleMetric(name);
    }
  }

  setSource(s: DatapathSource | undefined): void {
    this.source = s;
  }
}
