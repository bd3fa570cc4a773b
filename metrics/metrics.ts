// Prometheus metrics with an injected Registry (never the global one).
// Datapath counters live in per-CPU BPF maps and are summed in collect() at
// scrape time, prom-client's default-metrics pattern.
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from "prom-client";
import { M } from "./names";
import { type DatapathStats } from "../agent/bpf/stats";
import { type PeerCounters } from "../agent/bpf/codec";
import { formatIp, type Ip4 } from "../agent/net/ip";

/** Where scrape-time datapath numbers come from (pinned maps in production). */
export interface DatapathSource {
  stats(): DatapathStats;
  peers(): Map<Ip4, PeerCounters>;
  entries(): number;
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
  read: (set: (labels: Record<string, string>, v: bigint) => void) => void,
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
    const peers = perScrape<Map<Ip4, PeerCounters>>(() => safe((s) => s.peers()));

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
    const peerCounter = (name: string, help: string, pick: (c: PeerCounters) => bigint) =>
      readCounter(reg, name, help, ["peer"], (set) => {
        for (const [ip, c] of peers() ?? []) set({ peer: formatIp(ip) }, pick(c));
      });
    peerCounter(
      M.peerTxPackets,
      "Packets sent to a peer node (by its public IP).",
      (c) => c.txPackets,
    );
    peerCounter(M.peerTxBytes, "Bytes sent to a peer node (by its public IP).", (c) => c.txBytes);
    peerCounter(
      M.peerRxPackets,
      "Packets received from a peer node (by its public IP).",
      (c) => c.rxPackets,
    );
    peerCounter(
      M.peerRxBytes,
      "Bytes received from a peer node (by its public IP).",
      (c) => c.rxBytes,
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
