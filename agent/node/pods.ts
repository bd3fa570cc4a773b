// Pods that overlayd's CNI plugin did not create (flannel's CNI, any plain
// bridge): which bridge holds them, and which ovl_endpoints entries give
// them the same fast path as registered pods. Pure: the inputs are what
// `ip -j neigh`, `bridge -j fdb` and `ip -j link` report (agent/net/neigh.ts).
//
// A pod behind the bridge is known by three facts the kernel already has:
// a neighbour entry on the bridge (pod IP -> MAC, made by the pod's first
// ARP for its gateway or by ours for it), a learned FDB entry (MAC -> bridge
// port) and the port being a veth. Together they are exactly what the CNI
// plugin registers: the veth to redirect into, the pod's MAC, the MAC the
// pod sees its gateway with (the bridge's).
import { type Endpoint } from "../bpf/codec";
import { type Cidr, type Ip4 } from "../net/ip";

export interface BridgeLink {
  name: string;
  ifindex: number;
  mac: string;
  kind?: string;
  /** Name of the bridge it is a port of. */
  master?: string;
  /** IPv4 addresses with their prefix lengths. */
  addrs: { ip: Ip4; prefixlen: number }[];
}

export interface Neighbour {
  ip: Ip4;
  mac?: string;
  state: string[];
}

export interface FdbEntry {
  mac: string;
  /** The port it was learned on. */
  port: string;
  master?: string;
  /** "permanent" for the ports' own addresses; learned entries have "". */
  state?: string;
  flags: string[];
}

/**
 * The pod bridge: `name` when given, else the bridge whose IPv4 address is
 * inside our lease with the lease's prefix (cni0 holding 10.5.1.1/24, as the
 * bridge plugin and flannel's CNI configure it).
 */
export function findPodBridge(
  links: BridgeLink[],
  subnet: Cidr,
  name?: string,
): BridgeLink | undefined {
  if (name) return links.find((l) => l.name === name && l.kind === "bridge");
  return links.find(
    (l) =>
      l.kind === "bridge" &&
      l.addrs.some((a) => a.prefixlen === subnet.prefixlen && subnet.contains(a.ip)),
  );
}

const UNUSABLE = new Set(["FAILED", "INCOMPLETE", "NOARP"]);

/** The endpoints the bridge's pods should have, by pod IP. */
export function discoverEndpoints(o: {
  bridge: BridgeLink;
  subnet: Cidr;
  links: BridgeLink[];
  neighbours: Neighbour[];
  fdb: FdbEntry[];
}): Map<Ip4, Endpoint> {
  const ports = new Map(
    o.links
      .filter((l) => l.master === o.bridge.name && l.kind === "veth")
      .map((l) => [l.name, l] as const),
  );
  const own = new Set(o.bridge.addrs.map((a) => a.ip));
  const portOf = new Map<string, BridgeLink>();
  for (const f of o.fdb) {
    const port = ports.get(f.port);
    if (!port || f.master !== o.bridge.name || f.state === "permanent") continue;
    if (f.flags.includes("self")) continue;
    portOf.set(f.mac.toLowerCase(), port);
  }
  const out = new Map<Ip4, Endpoint>();
  for (const n of o.neighbours) {
    if (!n.mac || own.has(n.ip) || !o.subnet.contains(n.ip)) continue;
    if (n.state.some((s) => UNUSABLE.has(s))) continue;
    const port = portOf.get(n.mac.toLowerCase());
    if (!port) continue;
    out.set(n.ip, { ifindex: port.ifindex, podMac: n.mac.toLowerCase(), hostMac: o.bridge.mac });
  }
  return out;
}

export interface EndpointPlan {
  upserts: Array<[Ip4, Endpoint]>;
  deletes: Ip4[];
}

/** Same pod on the same veth; the source MAC it is handed packets with is
 *  the writer's choice (the CNI plugin's stays, and stays its own). */
const same = (a: Endpoint, b: Endpoint) =>
  a.ifindex === b.ifindex && a.podMac.toLowerCase() === b.podMac.toLowerCase();

/**
 * What to write so that the map serves the discovered pods. Entries the CNI
 * plugin wrote stay as they are (it removes them at DEL), unless their veth
 * is gone; entries this agent wrote go when their pod is no longer seen;
 * an entry whose veth no longer exists goes whoever wrote it, since
 * redirecting to it would lose the packet.
 */
export function planEndpoints(o: {
  discovered: Map<Ip4, Endpoint>;
  actual: Map<Ip4, Endpoint>;
  owned: ReadonlySet<Ip4>;
  liveIfindexes: ReadonlySet<number>;
}): EndpointPlan {
  const upserts: Array<[Ip4, Endpoint]> = [];
  const deletes: Ip4[] = [];
  for (const [ip, ep] of o.discovered) {
    const have = o.actual.get(ip);
    if (!have || !same(have, ep)) upserts.push([ip, ep]);
  }
  for (const [ip, ep] of o.actual) {
    if (o.discovered.has(ip)) continue;
    if (o.owned.has(ip) || !o.liveIfindexes.has(ep.ifindex)) deletes.push(ip);
  }
  return { upserts, deletes };
}
