// overlayctl trace <src> <dst>: what this node's data path would do with an
// IPv4 or IPv6 packet from src to dst, like `ip route get` for the overlay.
// Pure: the command (commands/trace.ts) looks the addresses up in the live
// maps of their family and the attachments and hands the results here.
import { F_DIRECT, F_LOCAL, type Endpoint } from "../agent/bpf/codec";
import { type Ip4 } from "../agent/net/ip";
import { formatAddr, type Ip6 } from "../agent/net/ip6";

/** An ovl_subnets or ovl_subnets6 entry. */
export interface TraceEntry<A extends Ip4 | Ip6 = Ip4> {
  subnet: { toString(): string };
  host: { remoteIp: A; vtepMac: string; flags: number };
}

export interface TraceInput<A extends Ip4 | Ip6 = Ip4> {
  src: A;
  dst: A;
  /** Longest-prefix matches in ovl_subnets. */
  srcEntry?: TraceEntry<A>;
  dstEntry?: TraceEntry<A>;
  /** ovl_endpoints entries, with the interface name when known. */
  srcEndpoint?: Endpoint & { iface?: string };
  dstEndpoint?: Endpoint & { iface?: string };
  /** The cluster network of the family (subnet.env's FLANNEL_NETWORK or
   * FLANNEL_IPV6_NETWORK), when known. */
  network?: { contains(ip: A): boolean };
  /** What is attached (as overlayctl status reads it from the kernel). */
  mechanism: { decap: string; gro: string; podBridge: string };
  overlayDev: string;
  underlayDev?: string;
}

export type TracePath = "encap" | "direct" | "decap" | "local" | "outside" | "drop";

export interface TraceResult {
  src: string;
  dst: string;
  path: TracePath;
  /** The ovl_subnets entry that decides it. */
  entry: { subnet: string; remoteIp: string; vtepMac: string; flags: string[] } | null;
  /** The host the packet is sent to or came from (outer address). */
  peer: string | null;
  vtepMac: string | null;
  /** Program and hook that handle it, in order. */
  steps: string[];
  /** The drop reason the data path would count (ovl_drops), if dropped. */
  dropReason: string | null;
}

function flagsOf(h: { flags: number }): string[] {
  return [...(h.flags & F_LOCAL ? ["local"] : []), ...(h.flags & F_DIRECT ? ["direct"] : [])];
}

function entryJson(e: TraceEntry<Ip4 | Ip6> | undefined): TraceResult["entry"] {
  return e
    ? {
        subnet: e.subnet.toString(),
        remoteIp: formatAddr(e.host.remoteIp),
        vtepMac: e.host.vtepMac,
        flags: flagsOf(e.host),
      }
    : null;
}

export function trace<A extends Ip4 | Ip6>(t: TraceInput<A>): TraceResult {
  const v6 = typeof t.dst === "bigint";
  const base = { src: formatAddr(t.src), dst: formatAddr(t.dst) };
  const d = t.dstEntry;
  const s = t.srcEntry;
  const dstLocal = d !== undefined && (d.host.flags & F_LOCAL) !== 0;
  const srcLocal = s !== undefined && (s.host.flags & F_LOCAL) !== 0;
  const inNetwork = (ip: A) => t.network?.contains(ip) ?? false;
  const from = t.srcEndpoint
    ? `ovl_encap_pod on ${t.srcEndpoint.iface ?? `ifindex ${t.srcEndpoint.ifindex}`} (TC ingress)`
    : `the stack routes it to ${t.overlayDev}: ovl_encap_dev (TC egress)`;

  // Towards another node's subnet.
  if (d && !dstLocal) {
    const peer = formatAddr(d.host.remoteIp);
    if (d.host.flags & F_DIRECT) {
      return {
        ...base,
        path: "direct",
        entry: entryJson(d),
        peer,
        vtepMac: null,
        steps: [from, `sent unencapsulated with ${peer} as next hop (bpf_redirect_neigh)`],
        dropReason: null,
      };
    }
    return {
      ...base,
      path: "encap",
      entry: entryJson(d),
      peer,
      vtepMac: d.host.vtepMac,
      steps: v6
        ? [
            from,
            `inner destination MAC ${d.host.vtepMac}, tunnel key to ${peer}`,
            `redirected to ${t.overlayDev}, whose VXLAN socket adds the outer IPv6 and UDP headers`,
          ]
        : [
            from,
            `VXLAN to ${peer}, inner destination MAC ${d.host.vtepMac}`,
            `out of ${t.underlayDev ?? "the underlay"} (bpf_redirect_neigh)`,
          ],
      dropReason: null,
    };
  }

  // Into this node's subnet.
  if (dstLocal) {
    if (srcLocal || !s) {
      if (!s && inNetwork(t.src)) {
        return {
          ...base,
          path: "drop",
          entry: entryJson(d),
          peer: null,
          vtepMac: null,
          steps: [`${base.src} is in the cluster network but no lease covers it`],
          dropReason: "spoofed_source",
        };
      }
      return {
        ...base,
        path: "local",
        entry: entryJson(d),
        peer: null,
        vtepMac: null,
        steps: ["this node's own subnet: the stack delivers it, the overlay is not involved"],
        dropReason: null,
      };
    }
    const peer = formatAddr(s.host.remoteIp);
    const steps: string[] = [];
    const viaSocket = () => {
      steps.push(`${t.overlayDev}'s VXLAN socket decapsulates`);
      steps.push(
        `ovl_decap_dev on ${t.overlayDev} (TC ingress): checks, routes it (FIB) or to the stack`,
      );
    };
    if (v6 && t.mechanism.decap === "xdp") {
      steps.push(`ovl_decap_xdp on ${t.underlayDev ?? "the underlay"}: IPv6, passed`);
      viaSocket();
    } else if (t.mechanism.decap === "xdp") {
      steps.push(`ovl_decap_xdp on ${t.underlayDev ?? "the underlay"}: checks, strips, passes`);
      steps.push("the stack forwards it to the pod");
    } else if (t.dstEndpoint) {
      steps.push(`ovl_decap_tc on ${t.underlayDev ?? "the underlay"} (TC ingress): checks, strips`);
      steps.push(
        `bpf_redirect_peer into ${t.dstEndpoint.iface ?? `ifindex ${t.dstEndpoint.ifindex}`}'s pod`,
      );
    } else if (t.mechanism.gro === "vxlan-socket") {
      steps.push(`ovl_decap_tc on ${t.underlayDev ?? "the underlay"} (TC ingress): checks, passes`);
      viaSocket();
    } else {
      steps.push(
        `ovl_decap_tc on ${t.underlayDev ?? "the underlay"}: checks, strips, routes it (FIB)`,
      );
    }
    return {
      ...base,
      path: "decap",
      entry: entryJson(s),
      peer,
      vtepMac: null,
      steps: [`VXLAN from ${peer}, which holds ${s.subnet}`, ...steps],
      dropReason: null,
    };
  }

  // No lease covers the destination.
  if (inNetwork(t.dst)) {
    return {
      ...base,
      path: "drop",
      entry: null,
      peer: null,
      vtepMac: null,
      steps: [
        `no lease covers ${base.dst}: the stack routes it to ${t.overlayDev}`,
        `ovl_encap_dev drops it (TC egress)`,
      ],
      dropReason: "no_peer",
    };
  }
  return {
    ...base,
    path: "outside",
    entry: null,
    peer: null,
    vtepMac: null,
    steps: [`${base.dst} is outside the cluster network: the host routes it`],
    dropReason: null,
  };
}
