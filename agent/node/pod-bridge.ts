// The fast path for pods behind a plain bridge that overlayd's CNI plugin
// never saw (flannel's CNI, the bridge plugin run by anything else):
//
//   encap  ovl_encap_pod on the bridge device's TC ingress: every packet a
//          pod sends to its gateway enters the host there, so one attach
//          covers every pod behind the bridge without touching their veths;
//   decap  the pods found by agent/node/pods.ts written to ovl_endpoints, so
//          decap hands them their packets with bpf_redirect_peer, as it
//          does for registered pods.
//
// Both bypass the host's iptables FORWARD chain for pod-to-pod traffic, as
// the CNI fast path does; `--pod-bridge none` leaves bridged pods to the
// stack. Synced within a second of a link or neighbour change (`ip
// monitor`) and every 10 s; a pod not yet known simply takes the kernel
// path until it is.
import { spawn, type ChildProcess } from "node:child_process";
import { attachPodFromPin, detachPodEncap, podEncapAttached } from "../bpf/datapath";
import { EndpointMap } from "../bpf/endpoint-map";
import { type Endpoint } from "../bpf/codec";
import { type Logger } from "../log";
import { listFdb, listLinks, listNeighbours } from "../net/neigh";
import { formatIp, type Cidr, type Ip4 } from "../net/ip";
import { discoverEndpoints, findPodBridge, planEndpoints } from "./pods";

export interface PodBridgeSync {
  bridge?: string;
  endpoints: number;
  upserts: number;
  deletes: number;
}

export class PodBridge {
  private readonly owned = new Set<Ip4>();
  private attached: number | undefined;
  private monitor: ChildProcess | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pending: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastSync = 0;

  constructor(
    private readonly pinPath: string,
    private readonly subnet: () => Cidr | undefined,
    /** A bridge name, or undefined to find the one holding our subnet. */
    private readonly name: string | undefined,
    private readonly log: Logger,
  ) {}

  /** One pass: find the bridge, attach encap to it, sync the endpoints. */
  sync(): PodBridgeSync {
    const subnet = this.subnet();
    if (!subnet) return { endpoints: 0, upserts: 0, deletes: 0 };
    const links = listLinks();
    const bridge = findPodBridge(links, subnet, this.name);
    if (bridge && this.attached !== bridge.ifindex) {
      attachPodFromPin(this.pinPath, bridge.ifindex, bridge.name);
      this.attached = bridge.ifindex;
      this.log.info("pod bridge fast path attached", { bridge: bridge.name });
    }
    const discovered = bridge
      ? discoverEndpoints({
          bridge,
          subnet,
          links,
          neighbours: listNeighbours(bridge.name),
          fdb: listFdb(bridge.name),
        })
      : new Map<Ip4, Endpoint>();
    const map = EndpointMap.openPinned(this.pinPath);
    try {
      const actual = new Map(map.list().map((e) => [e.podIp, e.endpoint] as const));
      const plan = planEndpoints({
        discovered,
        actual,
        owned: this.owned,
        liveIfindexes: new Set(links.map((l) => l.ifindex)),
      });
      for (const ip of plan.deletes) {
        map.delete(ip);
        this.owned.delete(ip);
      }
      for (const [ip, ep] of plan.upserts) {
        map.upsert(ip, ep);
        this.owned.add(ip);
      }
      if (plan.upserts.length || plan.deletes.length) {
        this.log.debug("bridged pods synced", {
          bridge: bridge?.name,
          added: plan.upserts.map(([ip]) => formatIp(ip)).join(","),
          removed: plan.deletes.map(formatIp).join(","),
        });
      }
      return {
        bridge: bridge?.name,
        endpoints: discovered.size,
        upserts: plan.upserts.length,
        deletes: plan.deletes.length,
      };
    } finally {
      map.close();
    }
  }

  /** Syncs now, within a second of a link/neighbour change, and every 10 s. */
  start(): void {
    this.safeSync();
    this.timer = setInterval(() => this.safeSync(), 10000);
    this.timer.unref();
    this.spawnMonitor();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.pending) clearTimeout(this.pending);
    this.monitor?.kill();
  }

  private spawnMonitor(): void {
    const m = spawn("ip", ["monitor", "link", "neigh"], { stdio: ["ignore", "pipe", "ignore"] });
    this.monitor = m;
    m.stdout.on("data", () => {
      // Changes come in bursts (a pod's veth, its ARP), and neighbour state
      // changes never stop on a busy node: one sync per burst, at most one
      // a second (each lists links, neighbours and the FDB).
      if (this.pending) return;
      const wait = Math.max(50, this.lastSync + 1000 - Date.now());
      this.pending = setTimeout(() => {
        this.pending = undefined;
        this.safeSync();
      }, wait);
    });
    m.on("exit", () => {
      if (this.stopped) return;
      this.log.warn("ip monitor exited; bridged pods are synced every 10 s only");
    });
    m.unref();
  }

  private safeSync(): void {
    if (this.stopped) return;
    this.lastSync = Date.now();
    try {
      this.sync();
    } catch (e) {
      this.log.warn("bridged pod sync failed", { error: (e as Error).message });
    }
  }
}

/**
 * `--pod-bridge none` after a run that had it: the bridges' encap goes, and
 * so do the endpoints an earlier run discovered. Those are told from the CNI
 * plugin's by their veth: the plugin's fast path always attaches
 * ovl_encap_pod to the pod's veth, discovery never does.
 */
export function disablePodBridge(pinPath: string, log: Logger): void {
  const links = listLinks();
  const bridges = detachPodEncap(links.filter((l) => l.kind === "bridge"));
  const map = EndpointMap.openPinned(pinPath);
  const removed: string[] = [];
  try {
    for (const e of map.list()) {
      if (podEncapAttached(e.endpoint.ifindex)) continue;
      map.delete(e.podIp);
      removed.push(formatIp(e.podIp));
    }
  } finally {
    map.close();
  }
  if (bridges.length || removed.length) {
    log.info("pod bridge fast path removed", {
      bridges: bridges.join(","),
      endpoints: removed.join(","),
    });
  }
}
