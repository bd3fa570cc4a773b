// overlayctl trace <src> <dst>: what this node's data path would do with an
// IPv4 packet from src to dst, like `ip route get` for the overlay. Pure:
// the command (commands/trace.ts) looks the addresses up in the live maps
// and the attachments and hands the results here.
import { F_DIRECT, F_LOCAL, type Endpoint, type HostEntry } from "../agent/bpf/codec";
import { type Cidr, formatIp, type Ip4 } from "../agent/net/ip";

export interface TraceEntry {
  subnet: Cidr;
  host: HostEntry;
}

export interface TraceInput {
  src: Ip4;
  dst: Ip4;
  /** Longest-prefix matches in ovl_subnets. */
  srcEntry?: TraceEntry;
  dstEntry?: TraceEntry;
  /** ovl_endpoints entries, with the interface name when known. */
  srcEndpoint?: Endpoint & { iface?: string };
  dstEndpoint?: Endpoint & { iface?: string };
  /** The cluster network (subnet.env's FLANNEL_NETWORK), when known. */
  network?: Cidr;
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

function flagsOf(h: HostEntry): string[] {
  return [...(h.flags & F_LOCAL ? ["local"] : []), ...(h.flags & F_DIRECT ? ["direct"] : [])];
}

function entryJson(e: TraceEntry | undefined): TraceResult["entry"] {
  return e
    ? {
        subnet: e.subnet.toString(),
        remoteIp: formatIp(e.host.remoteIp),
        vtepMac: e.host.vtepMac,
        flags: flagsOf(e.host),
      }
    : null;
}

export function trace(t: TraceInput): TraceResult {
  const base = { src: formatIp(t.src), dst: formatIp(t.dst) };
  const d = t.dstEntry;
  const s = t.srcEntry;
  const dstLocal = d !== undefined && (d.host.flags & F_LOCAL) !== 0;
  const srcLocal = s !== undefined && (s.host.flags & F_LOCAL) !== 0;
  const inNetwork = (ip: Ip4) => t.network?.contains(ip) ?? false;
  const from = t.srcEndpoint
    ? `ovl_encap_pod on ${t.srcEndpoint.iface ?? `ifindex ${t.srcEndpoint.ifindex}`} (TC ingress)`
    : `the stack routes it to ${t.overlayDev}: ovl_encap_dev (TC egress)`;

  // Towards another node's subnet.
  if (d && !dstLocal) {
    const peer = formatIp(d.host.remoteIp);
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
      steps: [
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
    const peer = formatIp(s.host.remoteIp);
    const steps: string[] = [];
    if (t.mechanism.decap === "xdp") {
      steps.push(`ovl_decap_xdp on ${t.underlayDev ?? "the underlay"}: checks, strips, passes`);
      steps.push("the stack forwards it to the pod");
    } else if (t.dstEndpoint) {
      steps.push(`ovl_decap_tc on ${t.underlayDev ?? "the underlay"} (TC ingress): checks, strips`);
      steps.push(
        `bpf_redirect_peer into ${t.dstEndpoint.iface ?? `ifindex ${t.dstEndpoint.ifindex}`}'s pod`,
      );
    } else if (t.mechanism.gro === "vxlan-socket") {
      steps.push(`ovl_decap_tc on ${t.underlayDev ?? "the underlay"} (TC ingress): checks, passes`);
      steps.push(`${t.overlayDev}'s VXLAN socket decapsulates`);
      steps.push(
        `ovl_decap_dev on ${t.overlayDev} (TC ingress): checks, routes it (FIB) or to the stack`,
      );
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
