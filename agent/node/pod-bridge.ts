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
import { attachPodFromPin, detachPodEncap, podEncapAttached } from "../bpf/datapath";
import { EndpointMap, EndpointMap6, type EndpointMapOf } from "../bpf/endpoint-map";
import { type Endpoint } from "../bpf/codec";
import { type Logger } from "../log";
import { type IpMonitor } from "../net/ip-monitor";
import { listFdb, listLinks, listNeighbours, listNeighbours6 } from "../net/neigh";
import { formatIp, type Cidr, type Ip4 } from "../net/ip";
import { formatIp6, type Cidr6, type Ip6 } from "../net/ip6";
import {
  discoverEndpoints,
  findPodBridge,
  planEndpoints,
  scope4,
  scope6,
  type BridgeLink,
  type FamilyScope,
  type FdbEntry,
  type Neighbour,
} from "./pods";

export interface PodBridgeSync {
  bridge?: string;
  endpoints: number;
  upserts: number;
  deletes: number;
}

/** One address family's side of a sync. */
interface FamilySync<A extends number | bigint> {
  open(): EndpointMapOf<A>;
  owned: Set<A>;
  scope(bridge: BridgeLink): FamilyScope<A>;
  neighbours(dev: string): Neighbour<A>[];
  format(ip: A): string;
}

/** What both families' syncs share: the bridge and the kernel's view around it. */
interface SyncScene {
  bridge: BridgeLink | undefined;
  links: BridgeLink[];
  fdb: FdbEntry[];
  live: ReadonlySet<number>;
  /** Bridge ports that run the CNI plugin's fast path: its pods, not ours. */
  pluginPorts: ReadonlySet<number>;
}

export class PodBridge {
  private readonly owned = new Set<Ip4>();
  private readonly owned6 = new Set<Ip6>();
  private attached: number | undefined;
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
    /** Our lease's IPv6 subnet, in a dual-stack network. */
    private readonly subnet6: () => Cidr6 | undefined = () => undefined,
  ) {}

  /** One pass: find the bridge, attach encap to it, sync the endpoints of both families. */
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
    const scene: SyncScene = {
      bridge,
      links,
      fdb: bridge ? listFdb(bridge.name) : [],
      live: new Set(links.map((l) => l.ifindex)),
      pluginPorts: new Set(
        links
          .filter((l) => bridge !== undefined && l.master === bridge.name && l.kind === "veth")
          .filter((l) => podEncapAttached(l.ifindex))
          .map((l) => l.ifindex),
      ),
    };
    const out: PodBridgeSync = { bridge: bridge?.name, endpoints: 0, upserts: 0, deletes: 0 };
    const add = (r: Omit<PodBridgeSync, "bridge">) => {
      out.endpoints += r.endpoints;
      out.upserts += r.upserts;
      out.deletes += r.deletes;
    };
    add(
      this.syncFamily(scene, {
        open: () => EndpointMap.openPinned(this.pinPath),
        owned: this.owned,
        scope: (b) => scope4(b, subnet),
        neighbours: listNeighbours,
        format: formatIp,
      }),
    );
    const subnet6 = this.subnet6();
    if (!subnet6) return out;
    add(
      this.syncFamily(scene, {
        open: () => EndpointMap6.openPinned(this.pinPath),
        owned: this.owned6,
        scope: (b) => scope6(b, subnet6),
        neighbours: listNeighbours6,
        format: formatIp6,
      }),
    );
    return out;
  }

  private syncFamily<A extends number | bigint>(
    scene: SyncScene,
    f: FamilySync<A>,
  ): Omit<PodBridgeSync, "bridge"> {
    const { bridge, links, fdb } = scene;
    const discovered = bridge
      ? discoverEndpoints({
          bridge,
          scope: f.scope(bridge),
          links,
          neighbours: f.neighbours(bridge.name),
          fdb,
        })
      : new Map<A, Endpoint>();
    const map = f.open();
    try {
      return this.applyFamily(scene, discovered, map, f);
    } finally {
      map.close();
    }
  }

  private applyFamily<A extends number | bigint>(
    { bridge, live, pluginPorts }: SyncScene,
    discovered: Map<A, Endpoint>,
    map: EndpointMapOf<A>,
    f: FamilySync<A>,
  ): Omit<PodBridgeSync, "bridge"> {
    const actual = new Map(map.list().map((e) => [e.podIp, e.endpoint] as const));
    const plan = planEndpoints({
      discovered,
      actual,
      owned: f.owned,
      liveIfindexes: live,
      pluginPorts,
    });
    for (const ip of plan.disowns) f.owned.delete(ip);
    for (const ip of plan.deletes) {
      map.delete(ip);
      f.owned.delete(ip);
    }
    for (const [ip, ep] of plan.upserts) {
      map.upsert(ip, ep);
      f.owned.add(ip);
    }
    if (plan.upserts.length || plan.deletes.length) {
      this.log.debug("bridged pods synced", {
        bridge: bridge?.name,
        added: plan.upserts.map(([ip]) => f.format(ip)).join(","),
        removed: plan.deletes.map((ip) => f.format(ip)).join(","),
      });
    }
    return {
      endpoints: discovered.size,
      upserts: plan.upserts.length,
      deletes: plan.deletes.length,
    };
  }

  /** Syncs now, within a second of a link/neighbour change, and every 10 s. */
  start(monitor: IpMonitor): void {
    this.safeSync();
    this.timer = setInterval(() => this.safeSync(), 10000);
    this.timer.unref();
    // Changes come in bursts (a pod's veth, its ARP), and neighbour state
    // changes never stop on a busy node: one sync per burst, at most one a
    // second (each lists links, neighbours and the FDB).
    monitor.on(
      () => this.syncSoon(),
      () => this.syncSoon(),
    );
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.pending) clearTimeout(this.pending);
  }

  private syncSoon(): void {
    if (this.pending || this.stopped) return;
    const wait = Math.max(50, this.lastSync + 1000 - Date.now());
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.safeSync();
    }, wait);
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
  const removed: string[] = [];
  const sweep = <A extends number | bigint>(map: EndpointMapOf<A>, format: (ip: A) => string) => {
    try {
      for (const e of map.list()) {
        if (podEncapAttached(e.endpoint.ifindex)) continue;
        map.delete(e.podIp);
        removed.push(format(e.podIp));
      }
    } finally {
      map.close();
    }
  };
  sweep(EndpointMap.openPinned(pinPath), formatIp);
  sweep(EndpointMap6.openPinned(pinPath), formatIp6);
  if (bridges.length || removed.length) {
    log.info("pod bridge fast path removed", {
      bridges: bridges.join(","),
      endpoints: removed.join(","),
    });
  }
}
