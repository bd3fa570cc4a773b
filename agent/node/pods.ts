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
// pod sees its gateway with (the bridge's). The same holds for IPv6 (the
// pod's neighbour solicitation for its gateway makes the entry), so the
// discovery is written once for an address type A: Ip4 or Ip6.
import { type Endpoint } from "../bpf/codec";
import { type Cidr, type Ip4 } from "../net/ip";
import { type Cidr6, type Ip6 } from "../net/ip6";

export interface BridgeLink {
  name: string;
  ifindex: number;
  mac: string;
  kind?: string;
  /** Name of the bridge it is a port of. */
  master?: string;
  /** IPv4 addresses with their prefix lengths. */
  addrs: { ip: Ip4; prefixlen: number }[];
  /** IPv6 addresses (global and link-local) with their prefix lengths. */
  addrs6?: { ip: Ip6; prefixlen: number }[];
}

export interface Neighbour<A = Ip4> {
  ip: A;
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

/** Which addresses of one family are pods of ours: inside our lease, not the bridge's own. */
export interface FamilyScope<A> {
  contains(ip: A): boolean;
  own: ReadonlySet<A>;
}

export function scope4(bridge: BridgeLink, subnet: Cidr): FamilyScope<Ip4> {
  return { contains: (ip) => subnet.contains(ip), own: new Set(bridge.addrs.map((a) => a.ip)) };
}

export function scope6(bridge: BridgeLink, subnet: Cidr6): FamilyScope<Ip6> {
  return {
    contains: (ip) => subnet.contains(ip),
    own: new Set((bridge.addrs6 ?? []).map((a) => a.ip)),
  };
}

/** The endpoints the bridge's pods should have, by pod IP. */
export function discoverEndpoints<A>(o: {
  bridge: BridgeLink;
  scope: FamilyScope<A>;
  links: BridgeLink[];
  neighbours: Neighbour<A>[];
  fdb: FdbEntry[];
}): Map<A, Endpoint> {
  const ports = new Map(
    o.links
      .filter((l) => l.master === o.bridge.name && l.kind === "veth")
      .map((l) => [l.name, l] as const),
  );
  const portOf = new Map<string, BridgeLink>();
  for (const f of o.fdb) {
    const port = ports.get(f.port);
    if (!port || f.master !== o.bridge.name || f.state === "permanent") continue;
    if (f.flags.includes("self")) continue;
    portOf.set(f.mac.toLowerCase(), port);
  }
  const out = new Map<A, Endpoint>();
  for (const n of o.neighbours) {
    if (!n.mac || o.scope.own.has(n.ip) || !o.scope.contains(n.ip)) continue;
    if (n.state.some((s) => UNUSABLE.has(s))) continue;
    const port = portOf.get(n.mac.toLowerCase());
    if (!port) continue;
    out.set(n.ip, { ifindex: port.ifindex, podMac: n.mac.toLowerCase(), hostMac: o.bridge.mac });
  }
  return out;
}

export interface EndpointPlan<A = Ip4> {
  upserts: Array<[A, Endpoint]>;
  deletes: A[];
  /** Entries this agent wrote that are now the CNI plugin's: forget, keep. */
  disowns: A[];
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
 *
 * A veth that runs the plugin's own fast path (`pluginPorts`) is the
 * plugin's alone: its pod is never written here, even when seen, and an
 * entry on it that this agent wrote first (a sync that ran before the
 * plugin's ADD finished) becomes the plugin's. Otherwise a sync that listed
 * the bridge just before a DEL would write back the entry the DEL removed.
 */
export function planEndpoints<A>(o: {
  discovered: Map<A, Endpoint>;
  actual: Map<A, Endpoint>;
  owned: ReadonlySet<A>;
  liveIfindexes: ReadonlySet<number>;
  pluginPorts: ReadonlySet<number>;
}): EndpointPlan<A> {
  const upserts: Array<[A, Endpoint]> = [];
  const deletes: A[] = [];
  const disowns: A[] = [];
  for (const [ip, ep] of o.discovered) {
    if (o.pluginPorts.has(ep.ifindex)) continue;
    const have = o.actual.get(ip);
    if (!have || !same(have, ep)) upserts.push([ip, ep]);
  }
  for (const [ip, ep] of o.actual) {
    if (o.pluginPorts.has(ep.ifindex)) {
      if (o.owned.has(ip)) disowns.push(ip);
      continue;
    }
    if (o.discovered.has(ip)) continue;
    if (o.owned.has(ip) || !o.liveIfindexes.has(ep.ifindex)) deletes.push(ip);
  }
  return { upserts, deletes, disowns };
}
