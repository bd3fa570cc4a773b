// Reference model of the encap and decap programs' decisions (issue 18),
// written from the wire formats (RFC 791, RFC 8200, RFC 768, RFC 7348,
// draft-smith-vxlan-group-policy) and the project's rules (the comments in
// bpf/include/abi.h, README "Drop reasons", "The data path", "GBP"), not by
// translating bpf/*.c: where the two disagree, one of them is wrong.
//
// Pure: no FFI, no fs. IPv4 addresses are host-order numbers, IPv6 addresses
// 128-bit bigints (agent/net/ip6.ts), MACs "aa:bb:..".
//
// Environment facts the model takes as given (BPF_PROG_RUN in a network
// namespace of its own, see run.ts), each marked ENV below:
//  - the underlay device is loopback (ifindex 1, MTU 65536);
//  - the namespace has no routes, so no FIB lookup finds a next hop: a
//    decapsulated packet that is not for a registered pod takes the
//    "as if received on the overlay device" path;
//  - the test runner cannot set gso_type, so the kernel refuses to grow or
//    shrink a GSO skb (gso_size != 0): encap_failed / decap_failed.

import { Cidr6, maskOf6, ip6FromBytes, MULTICAST6, type Ip6 } from "../../agent/net/ip6";
import { mac } from "../lib/packets";

export interface SubnetEntry {
  addr: number;
  prefixlen: number;
  remoteIp: number;
  vtepMac: string;
  flags: number; // 1 LOCAL, 2 DIRECT
}
export interface PeerEntry {
  ip: number; // underlay address (the key)
  subnet: number;
  prefixlen: number;
}
export interface EndpointEntry {
  ip: number;
  ifindex: number;
  podMac: string;
  hostMac: string;
}
export interface SubnetEntry6 {
  addr: Ip6;
  prefixlen: number;
  remoteIp: Ip6; // the host's PublicIPv6
  vtepMac: string;
  flags: number;
}
export interface PeerEntry6 {
  ip: Ip6; // underlay IPv6 address (the key)
  subnet: Ip6;
  prefixlen: number;
}
export interface EndpointEntry6 {
  ip: Ip6;
  ifindex: number;
  podMac: string;
  hostMac: string;
}
export interface Maps {
  subnets: SubnetEntry[];
  peers: PeerEntry[];
  endpoints: EndpointEntry[];
  /** ovl_subnets6, ovl_peers6, ovl_endpoints6 (absent in fixtures from before IPv6). */
  subnets6?: SubnetEntry6[];
  peers6?: PeerEntry6[];
  endpoints6?: EndpointEntry6[];
}
export interface Config {
  vni: number;
  port: number;
  localIp: number;
  vtepMac: string; // overlay device MAC
  underlayMac: string;
  underlayIfindex: number;
  overlayIfindex: number;
  kernelDecap: boolean;
  gbp: boolean;
  /** Our PublicIPv6 (ovl_cfg_local_ip6); absent: the network has no IPv6. */
  localIp6?: Ip6;
}
export type Program =
  "ovl_encap_pod" | "ovl_encap_dev" | "ovl_decap_tc" | "ovl_decap_xdp" | "ovl_decap_dev";
export const PROGRAMS: Program[] = [
  "ovl_encap_pod",
  "ovl_encap_dev",
  "ovl_decap_tc",
  "ovl_decap_xdp",
  "ovl_decap_dev",
];

export interface Input {
  frame: Buffer;
  mark: number; // skb->mark (TC only)
  gsoSize: number; // skb gso_size (TC only); 0: not GSO
}

export type Verdict = "pass" | "redirect" | "drop";
/** Whose ovl_peer_stats (IPv4, a number) or ovl_peer_stats6 (a bigint) entry moves, by the same bytes. */
export type PeerKey = number | Ip6;
export interface Expected {
  verdict: Verdict;
  /** Drop reason name as in the README table, when verdict is drop. */
  reason?: string;
  /** Output bytes, when deterministic. */
  out?: Buffer;
  /** Offsets in out whose bytes are not deterministic (masked in the comparison). */
  mask?: number[];
  /** skb->mark afterwards (TC). */
  mark?: number;
  /** The rule that decided, where several lead to one verdict ("mtu"). */
  rule?: string;
  /** Counted as sent/received/direct (ovl_stats direction), with bytes, and
   *  in the peer's counters (tx for sent and direct, rx for received). */
  count?: { dir: "tx" | "rx" | "direct"; bytes: number; peer: PeerKey };
}

// --- wire constants -------------------------------------------------------
const ETH_HLEN = 14;
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const IPPROTO_UDP = 17;
const IPPROTO_TCP = 6;
const OVERHEAD = 50; // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
const VXLAN_I = 0x08;
const VXLAN_G = 0x80;
const GBP_D = 0x40;
const GBP_A = 0x08;
const MARK_D = 0x400000;
const MARK_A = 0x80000;
const F_LOCAL = 1;
const F_DIRECT = 2;
const LO_MTU = 65536; // ENV: the underlay is loopback

/** RFC 1071 checksum over b (even length assumed for headers). */
export function inetCsum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length & 1) s += (b[b.length - 1] as number) << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** RFC 1624 incremental update HC' = ~(~HC + ~m + m') of one 16-bit word. */
function csumUpdate(hc: number, oldWord: number, newWord: number): number {
  let s = (~hc & 0xffff) + (~oldWord & 0xffff) + newWord;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** Forwarding's TTL work on the IPv4 header at off: TTL - 1, checksum patched. */
function ttlDec(b: Buffer, off: number): void {
  const oldWord = b.readUInt16BE(off + 8); // TTL and protocol share a word
  b[off + 8] = ((b[off + 8] as number) - 1) & 0xff;
  b.writeUInt16BE(csumUpdate(b.readUInt16BE(off + 10), oldWord, b.readUInt16BE(off + 8)), off + 10);
}

function maskOf(prefixlen: number): number {
  return prefixlen === 0 ? 0 : (0xffffffff << (32 - Math.min(prefixlen, 32))) >>> 0;
}

/** Longest-prefix match, as an LPM trie answers. */
export function lpm(subnets: SubnetEntry[], ip: number): SubnetEntry | undefined {
  let best: SubnetEntry | undefined;
  for (const s of subnets) {
    if ((ip & maskOf(s.prefixlen)) >>> 0 !== (s.addr & maskOf(s.prefixlen)) >>> 0) continue;
    if (!best || s.prefixlen > best.prefixlen) best = s;
  }
  return best;
}

// --- encapsulation ----------------------------------------------------------
/** A packet that does not fit the underlay: the stack's from a pod, an mtu drop on the device. */
function tooBigFor(fromPod: boolean, inp: Input): Expected {
  return fromPod
    ? { verdict: "pass", out: inp.frame, mark: inp.mark, rule: "mtu" }
    : { verdict: "drop", reason: "mtu", mark: inp.mark, rule: "mtu" };
}

/**
 * A DIRECT host, either family: the packet as it is, if it fits; on the pod
 * path forwarding's TTL or hop-limit work (dec), an expiring one to the
 * stack.
 */
function sendDirect(
  fromPod: boolean,
  inp: Input,
  fits: boolean,
  ttl: number,
  dec: (out: Buffer) => void,
  peer: PeerKey,
): Expected {
  if (!fits) return tooBigFor(fromPod, inp);
  const out = Buffer.from(inp.frame);
  if (fromPod) {
    if (ttl <= 1) return { verdict: "pass", out: inp.frame, mark: inp.mark };
    dec(out);
  }
  const count = { dir: "direct", bytes: inp.frame.length, peer } as const;
  return { verdict: "redirect", out, mark: inp.mark, count };
}

/**
 * ovl_encap_pod / ovl_encap_dev. The rules: non-IPv4 is not the overlay's
 * business (pass). A destination no remote lease covers is the stack's from
 * a pod (pass) and undeliverable on the overlay device (no_peer). A DIRECT
 * host gets the packet as is; any other host gets flannel's VXLAN. The pod
 * path bypasses ip_forward(): expiring TTL -> stack, else TTL - 1. A pod
 * packet that does not fit the underlay goes to the stack; on the device it
 * is an mtu drop. With GBP, pod packets take the stack (the mark is set
 * later); the device path carries the mark.
 */
export function encap(fromPod: boolean, cfg: Config, maps: Maps, inp: Input): Expected {
  const f = inp.frame;
  if (isIp6(cfg, f)) return encap6(fromPod, cfg, maps, inp);
  const pass: Expected = { verdict: "pass", out: f, mark: inp.mark };
  if (f.length < ETH_HLEN + 20 || f.readUInt16BE(12) !== ETH_P_IP) return pass;
  const ip = ETH_HLEN;
  const dst = lpm(maps.subnets, f.readUInt32BE(ip + 16));
  if (!dst || dst.flags & F_LOCAL) {
    return fromPod ? pass : { verdict: "drop", reason: "no_peer", mark: inp.mark };
  }
  const ttl = f[ip + 8] as number;
  // What one segment is on the wire: the packet itself, or, for GSO, its
  // headers plus gso_size (IPv4 header + TCP header (doff) or UDP header).
  const segLen = (): number => {
    if (!inp.gsoSize) return f.length - ETH_HLEN;
    const ihl = ((f[ip] as number) & 0x0f) * 4;
    // A TCP header that cannot be read where the IPv4 header says (an ihl
    // outside 20..60, or beyond the frame) counts as the smallest one.
    const doff = ihl >= 20 && ihl <= 60 ? f[ip + ihl + 12] : undefined;
    const l4 = f[ip + 9] === IPPROTO_TCP ? (doff === undefined ? 20 : (doff >> 4) * 4) : 8;
    return ihl + l4 + inp.gsoSize;
  };
  // One segment plus what encapsulation adds must fit the underlay MTU.
  const fits = (extra: number) => segLen() + extra <= LO_MTU;
  const tooBig = tooBigFor(fromPod, inp);

  if (dst.flags & F_DIRECT) {
    return sendDirect(fromPod, inp, fits(0), ttl, (out) => ttlDec(out, ip), dst.remoteIp);
  }
  if (fromPod && cfg.gbp) return pass;
  if (!fits(OVERHEAD)) return tooBig;
  if (fromPod && ttl <= 1) return pass;
  // ENV: the kernel cannot grow a GSO skb without gso_type.
  if (inp.gsoSize) return { verdict: "drop", reason: "encap_failed", mark: inp.mark };

  const inner = Buffer.from(f.subarray(ETH_HLEN));
  if (fromPod) ttlDec(inner, 0);
  const h = Buffer.alloc(OVERHEAD);
  // Outer IPv4: tos copied from the inner header, DF, TTL 64, no options.
  const totLen = Math.min(f.length - ETH_HLEN + OVERHEAD, 0xffff);
  h[0] = 0x45;
  h[1] = f[ip + 1] as number;
  h.writeUInt16BE(totLen, 2);
  h.writeUInt16BE(0, 4); // ID: DF packets need none (RFC 6864)
  h.writeUInt16BE(0x4000, 6);
  h[8] = 64;
  h[9] = IPPROTO_UDP;
  h.writeUInt32BE(cfg.localIp >>> 0, 12);
  h.writeUInt32BE(dst.remoteIp >>> 0, 16);
  h.writeUInt16BE(inetCsum(h.subarray(0, 20)), 10);
  // UDP: the source port is the flow hash folded into 49152-65535; which
  // port is not ours to predict, so the two bytes are masked in the
  // comparison and only the range is checked (see checkOutput in run.ts).
  h.writeUInt16BE(49152, 20);
  h.writeUInt16BE(cfg.port, 22);
  h.writeUInt16BE(totLen - 20, 24);
  h.writeUInt16BE(0, 26); // zero checksum over IPv4 (RFC 7348)
  // VXLAN: I flag, VNI; with GBP the mark's policy ID, D and A, G flag only
  // when the mark has any of them.
  h[28] = VXLAN_I;
  h.writeUInt32BE(((cfg.vni & 0xffffff) << 8) >>> 0, 32);
  if (cfg.gbp && inp.mark & (0xffff | MARK_D | MARK_A)) {
    h[28] |= VXLAN_G;
    h[29] = (inp.mark & MARK_D ? GBP_D : 0) | (inp.mark & MARK_A ? GBP_A : 0);
    h.writeUInt16BE(inp.mark & 0xffff, 30);
  }
  // Inner Ethernet: the peer's VTEP MAC <- ours.
  mac(dst.vtepMac).copy(h, 36);
  mac(cfg.vtepMac).copy(h, 42);
  h.writeUInt16BE(ETH_P_IP, 48);
  const out = Buffer.concat([f.subarray(0, ETH_HLEN), h, inner]);
  return {
    verdict: "redirect",
    out,
    mask: [ETH_HLEN + 20, ETH_HLEN + 21],
    mark: inp.mark,
    count: { dir: "tx", bytes: out.length, peer: dst.remoteIp },
  };
}

// --- decapsulation ----------------------------------------------------------
type Check =
  | { ok: false; pass: true }
  | { ok: false; pass: false; reason: string }
  | { ok: true; peer: PeerEntry; mark: number; innerDst: number; innerTtl: number };

/**
 * Is this frame our VXLAN, and is it right? "Ours" is IPv4 UDP to our
 * address and port, and only a packet whose UDP header we can read can be
 * attributed (a non-first fragment cannot, README). Anything ours that is
 * wrong is dropped with the reason the README table gives. When several
 * things are wrong the rules name no precedence; the model checks the
 * outer header's shape (options, fragment, checksum), then lengths, then
 * VXLAN, then the peer, then the inner frame.
 */
function decapCheck(cfg: Config, maps: Maps, f: Buffer, gso: boolean): Check {
  const PASS = { ok: false, pass: true } as const;
  const drop = (reason: string) => ({ ok: false, pass: false, reason }) as const;
  if (f.length < ETH_HLEN + 20 || f.readUInt16BE(12) !== ETH_P_IP) return PASS;
  const ip = ETH_HLEN;
  const vihl = f[ip] as number;
  const ihl = (vihl & 0x0f) * 4;
  if (vihl >> 4 !== 4 || ihl < 20) return PASS; // not an IPv4 header we can walk
  if (f[ip + 9] !== IPPROTO_UDP || f.readUInt32BE(ip + 16) !== cfg.localIp >>> 0) return PASS;
  const frag = f.readUInt16BE(ip + 6);
  if (frag & 0x1fff) return PASS;
  const udp = ip + ihl;
  if (f.length < udp + 8 || f.readUInt16BE(udp + 2) !== cfg.port) return PASS;

  if (ihl !== 20) return drop("ip_options");
  if (frag & 0x2000) return drop("fragment");
  if (inetCsum(f.subarray(ip, ip + 20)) !== 0) return drop("bad_ip_hdr");
  const totLen = f.readUInt16BE(ip + 2);
  const need = 20 + 8 + 8 + 14 + 20; // outer IPv4 .. inner IPv4 header
  if (f.length < ETH_HLEN + need || totLen < need) return drop("truncated");
  if (!gso) {
    // A GSO super-packet's headers describe one segment: not checkable.
    if (totLen > f.length - ETH_HLEN) return drop("truncated");
    if (f.readUInt16BE(udp + 4) !== totLen - 20) return drop("bad_udp_len");
  }
  const vx = udp + 8;
  const v = vxlanCheck(cfg, f, vx);
  if (!v.ok) return v;
  const mark = v.mark;
  const src = f.readUInt32BE(ip + 12);
  const peer = maps.peers.find((p) => p.ip >>> 0 === src);
  if (!peer) return drop("unknown_source");
  const r = innerCheck(maps, peer, f, vx + 8);
  if (!r.ok) return r;
  return { ...r, mark };
}

/**
 * The VXLAN header at vx (RFC 7348 5: flags I, 24-bit VNI, the rest
 * reserved and zero; with GBP the G flag, D and A and the group policy ID of
 * draft-smith-vxlan-group-policy, which become the mark), the same over
 * either underlay.
 */
function vxlanCheck(
  cfg: Config,
  f: Buffer,
  vx: number,
): { ok: true; mark: number } | { ok: false; pass: false; reason: string } {
  const drop = (reason: string) => ({ ok: false, pass: false, reason }) as const;
  const flags = f[vx] as number;
  let mark = 0;
  if (cfg.gbp && flags === (VXLAN_I | VXLAN_G)) {
    const gf = f[vx + 1] as number;
    if (gf & ~(GBP_D | GBP_A) || f[vx + 7] !== 0) return drop("bad_vxlan_flags");
    mark = f.readUInt16BE(vx + 2) | (gf & GBP_D ? MARK_D : 0) | (gf & GBP_A ? MARK_A : 0);
  } else if (flags !== VXLAN_I || f[vx + 1] || f[vx + 2] || f[vx + 3] || f[vx + 7]) {
    return drop("bad_vxlan_flags");
  }
  if (f.readUIntBE(vx + 4, 3) !== cfg.vni) return drop("wrong_vni");
  return { ok: true, mark };
}

/** The inner frame at off: IPv4, sane header, source in the sender's lease,
 *  destination in our own lease (the longest match must be LOCAL). */
function innerCheck(maps: Maps, peer: PeerEntry, f: Buffer, off: number): Check {
  if (f.readUInt16BE(off + 12) !== ETH_P_IP)
    return { ok: false, pass: false, reason: "inner_not_ipv4" };
  const iip = off + ETH_HLEN;
  const vihl = f[iip] as number;
  const ihl = (vihl & 0x0f) * 4;
  if (vihl >> 4 !== 4 || ihl < 20 || f.readUInt16BE(iip + 2) < ihl) {
    return { ok: false, pass: false, reason: "inner_bad_ip" };
  }
  const m = maskOf(peer.prefixlen);
  if ((f.readUInt32BE(iip + 12) & m) >>> 0 !== peer.subnet >>> 0) {
    return { ok: false, pass: false, reason: "spoofed_source" };
  }
  const innerDst = f.readUInt32BE(iip + 16);
  const local = lpm(maps.subnets, innerDst);
  if (!local || !(local.flags & F_LOCAL)) return { ok: false, pass: false, reason: "not_local" };
  return { ok: true, peer, mark: 0, innerDst, innerTtl: f[iip + 8] as number };
}

/**
 * ovl_decap_tc. Right packets for a registered pod (TTL > 1) are stripped
 * here and handed to the pod with its MACs and TTL - 1. Other right ones:
 * with KERNEL_DECAP left untouched to the overlay device's socket; without,
 * stripped here and (ENV: no route in this namespace) entered into the
 * stack as if received on the overlay device: destination MAC our VTEP MAC,
 * TTL untouched. With GBP the mark comes from the header.
 */
export function decapTc(cfg: Config, maps: Maps, inp: Input): Expected {
  const f = inp.frame;
  if (isIp6(cfg, f)) return decapTc6(cfg, maps, inp);
  const r = decapCheck(cfg, maps, f, inp.gsoSize !== 0);
  if (!r.ok) {
    if (r.pass) return { verdict: "pass", out: f, mark: inp.mark };
    return { verdict: "drop", reason: r.reason, mark: inp.mark };
  }
  const ep = maps.endpoints.find((e) => e.ip >>> 0 === r.innerDst);
  return decapRight(cfg, inp, {
    ep,
    ttl: r.innerTtl,
    mark: r.mark,
    peer: r.peer.ip,
    overhead: OVERHEAD,
    ethType: ETH_P_IP,
    dec: (out) => ttlDec(out, ETH_HLEN),
  });
}

/**
 * ovl_decap_tc's work on a packet that passed the checks, either family:
 * to a registered pod when its TTL (hop limit) survives, else to the
 * kernel's socket (kernelDecap) or into the stack on the overlay device.
 */
function decapRight(
  cfg: Config,
  inp: Input,
  r: {
    ep: { podMac: string; hostMac: string } | undefined;
    ttl: number;
    mark: number;
    peer: PeerKey;
    overhead: number;
    ethType: number;
    dec: (out: Buffer) => void;
  },
): Expected {
  const f = inp.frame;
  const toPod = r.ep !== undefined && r.ttl > 1;
  if (cfg.kernelDecap && !toPod) return { verdict: "pass", out: f, mark: inp.mark };
  if (inp.gsoSize) return { verdict: "drop", reason: "decap_failed", mark: inp.mark }; // ENV
  const out = Buffer.concat([f.subarray(0, ETH_HLEN), f.subarray(ETH_HLEN + r.overhead)]);
  out.writeUInt16BE(r.ethType, 12);
  if (toPod && r.ep) {
    mac(r.ep.podMac).copy(out, 0);
    mac(r.ep.hostMac).copy(out, 6);
    r.dec(out);
  } else {
    mac(cfg.vtepMac).copy(out, 0);
  }
  return {
    verdict: "redirect",
    out,
    mark: cfg.gbp ? r.mark : inp.mark,
    count: { dir: "rx", bytes: f.length, peer: r.peer },
  };
}

/**
 * ovl_decap_xdp: the same checks (XDP has no GSO); a right packet becomes
 * its inner frame addressed to the underlay device's MAC, passed to the
 * stack. XDP cannot set a mark, so a packet carrying a GBP policy is left
 * whole to the overlay device's socket. (A G-flagged header whose policy ID
 * and D/A bits are all zero carries mark 0, the same as no mark: either
 * path gives the same result, the model takes the XDP one.) IPv6 is left
 * whole to the stack, with or without a PublicIPv6: the socket decapsulates
 * it and ovl_decap_dev checks it (README).
 */
export function decapXdp(cfg: Config, maps: Maps, inp: Input): Expected {
  const f = inp.frame;
  if (f.readUInt16BE(12) === ETH_P_IPV6) return { verdict: "pass", out: f };
  const r = decapCheck(cfg, maps, f, false);
  if (!r.ok) {
    if (r.pass) return { verdict: "pass", out: f };
    return { verdict: "drop", reason: r.reason };
  }
  if (r.mark !== 0) return { verdict: "pass", out: f };
  const out = Buffer.from(f.subarray(OVERHEAD));
  mac(cfg.underlayMac).copy(out, 0);
  return { verdict: "pass", out, count: { dir: "rx", bytes: f.length, peer: r.peer.ip } };
}

/**
 * ovl_decap_dev: the peer comes from the tunnel metadata the kernel's VXLAN
 * receive path attaches. BPF_PROG_RUN cannot attach any, and a packet
 * without it did not come through the socket: the only branch reachable
 * here is "no metadata -> unknown_source", for either family, and with or
 * without a PublicIPv6 (a frame without metadata was dropped before
 * dual-stack too).
 */
export function decapDev(_cfg: Config, _maps: Maps, inp: Input): Expected {
  return { verdict: "drop", reason: "unknown_source", mark: inp.mark };
}

// --- IPv6 (dual-stack) --------------------------------------------------------
// flannel-v6.1's format: IPv6 pods over an IPv6 underlay, outer IPv6 (RFC 8200)
// + UDP with a checksum (RFC 8200 8.1 forbids a zero one, RFC 6935 aside) +
// VXLAN + the inner Ethernet frame: 70 bytes in front of the inner IPv6
// header (OVL_ENCAP6_OVERHEAD). Only a node with a PublicIPv6 (localIp6)
// carries IPv6; without one every IPv6 frame is left alone, as before
// dual-stack (README "The data path", IPv6).
const OVERHEAD6 = 70; // outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14
const IP6_HLEN = 40;
const NEXT_HOPOPTS = 0;
const NEXT_ROUTING = 43;
const NEXT_FRAGMENT = 44;
const NEXT_DSTOPTS = 60;
const LINK_LOCAL6 = Cidr6.parse("fe80::/10"); // RFC 4291 2.5.6; multicast: ff00::/8

const ip6At = (b: Buffer, off: number): Ip6 => ip6FromBytes(b.subarray(off, off + 16));

/** Longest-prefix match over ovl_subnets6. */
export function lpm6(subnets: SubnetEntry6[], ip: Ip6): SubnetEntry6 | undefined {
  let best: SubnetEntry6 | undefined;
  for (const s of subnets) {
    const m = maskOf6(s.prefixlen);
    if ((ip & m) !== (s.addr & m)) continue;
    if (!best || s.prefixlen > best.prefixlen) best = s;
  }
  return best;
}

/**
 * Where the upper-layer header of the IPv6 packet at ip starts, and which it
 * is: the fixed header, then the extension headers of RFC 8200 4 that carry
 * a length (hop-by-hop, routing, destination options: (len + 1) * 8 bytes;
 * fragment: 8). RFC 8200 4.1 has each occur once at most (destination
 * options twice), so a walk of 6 covers any packet that keeps to it; one
 * whose next header and length bytes are not in the frame ends there.
 */
function upperLayer6(f: Buffer, ip: number): { off: number; next: number } {
  let off = ip + IP6_HLEN;
  let next = f[ip + 6] as number;
  for (let n = 0; n < 6; n++) {
    const walked = [NEXT_HOPOPTS, NEXT_ROUTING, NEXT_DSTOPTS, NEXT_FRAGMENT].includes(next);
    if (!walked || f.length < off + 2) break;
    const len = next === NEXT_FRAGMENT ? 8 : ((f[off + 1] as number) + 1) * 8;
    next = f[off] as number;
    off += len;
  }
  return { off, next };
}

/**
 * ovl_encap_pod / ovl_encap_dev for an IPv6 frame, on a node with a
 * PublicIPv6. The IPv4 rules (no remote lease: the stack's from a pod,
 * no_peer on the device; DIRECT as is; a pod packet whose hop limit would
 * expire, or that does not fit, goes to the stack; GBP pod packets take
 * the stack), and what IPv6 adds:
 *  - link-local and multicast destinations (neighbour discovery, MLD) are
 *    left alone, from pods and on the device, whatever the map says;
 *  - a remote lease's packet is not wrapped here: it gets the peer's VtepMAC
 *    as inner destination and our VTEP MAC as inner source, a tunnel key
 *    (not visible under BPF_PROG_RUN), and goes to the collect_md overlay
 *    device, which adds the outer headers. From a pod that is a redirect to
 *    the device; on the device it goes on there (pass). Without that device
 *    (kernelDecap off) there is no IPv6 tunnel: a pod's packet goes to the
 *    stack, the device's is encap_failed. GSO needs nothing of BPF here, so
 *    a GSO skb is keyed like any other;
 *  - the MTU check adds 70 bytes.
 * Counted as sent with the outer frame's length (what ovl0 puts on the wire:
 * the frame + 70), as IPv4 counts its outer frame.
 */
function encap6(fromPod: boolean, cfg: Config, maps: Maps, inp: Input): Expected {
  const f = inp.frame;
  const pass: Expected = { verdict: "pass", out: f, mark: inp.mark };
  const ip = ETH_HLEN;
  if (f.length < ETH_HLEN + IP6_HLEN) return pass;
  const daddr = ip6At(f, ip + 24);
  if (LINK_LOCAL6.contains(daddr) || MULTICAST6.contains(daddr)) return pass;
  const dst = lpm6(maps.subnets6 ?? [], daddr);
  if (!dst || dst.flags & F_LOCAL) {
    return fromPod ? pass : { verdict: "drop", reason: "no_peer", mark: inp.mark };
  }
  const hop = f[ip + 7] as number;
  // One segment on the wire: the packet, or for GSO its network headers
  // (extension headers included) + TCP header (doff) or UDP header + gso_size.
  const segLen = (): number => {
    if (!inp.gsoSize) return f.length - ETH_HLEN;
    const u = upperLayer6(f, ip);
    const doff = f[u.off + 12];
    const l4 = u.next === IPPROTO_TCP ? (doff === undefined ? 20 : (doff >> 4) * 4) : 8;
    return u.off - ip + l4 + inp.gsoSize;
  };
  const fits = (extra: number) => segLen() + extra <= LO_MTU;
  const tooBig = tooBigFor(fromPod, inp);
  // Forwarding's hop-limit work (RFC 8200 3: decremented by one by each
  // node that forwards; no header checksum to patch).
  const hopDec = (out: Buffer) => {
    out[ip + 7] = hop - 1;
  };

  if (dst.flags & F_DIRECT) return sendDirect(fromPod, inp, fits(0), hop, hopDec, dst.remoteIp);
  if (fromPod && cfg.gbp) return pass;
  if (!cfg.kernelDecap) {
    return fromPod ? pass : { verdict: "drop", reason: "encap_failed", mark: inp.mark };
  }
  if (!fits(OVERHEAD6)) return tooBig;
  if (fromPod && hop <= 1) return pass;
  const out = Buffer.from(f);
  mac(dst.vtepMac).copy(out, 0);
  mac(cfg.vtepMac).copy(out, 6);
  if (fromPod) hopDec(out);
  return {
    verdict: fromPod ? "redirect" : "pass",
    out,
    mark: inp.mark,
    count: { dir: "tx", bytes: f.length + OVERHEAD6, peer: dst.remoteIp },
  };
}

/**
 * Is this IPv6 frame our VXLAN, and is it right? "Ours" is IPv6 whose next
 * header is UDP, to our PublicIPv6 and port: extension headers are not
 * walked, so a packet with any goes to the stack (README), and so does a
 * header whose version is not 6 (the IPv4 rule for a version that is not
 * 4). The checks then follow the wire, outer to inner: the payload length
 * (0 is a jumbogram, which VXLAN never is: bad_ip6_hdr; too short for the
 * headers, or longer than the frame: truncated), the UDP length (must be
 * the payload length: bad_udp_len), the UDP checksum (zero: udp_zero_csum;
 * present is enough, it is not verified), VXLAN flags and VNI as over IPv4,
 * the outer source in ovl_peers6, then the inner frame: IPv6 (else
 * inner_not_ipv6), version 6 (else inner_bad_ip), source inside the peer's
 * IPv6 subnet, destination inside our IPv6 lease.
 */
function decapCheck6(cfg: Config, maps: Maps, f: Buffer, gso: boolean): Check6 {
  const PASS = { ok: false, pass: true } as const;
  const drop = (reason: string) => ({ ok: false, pass: false, reason }) as const;
  const ip = ETH_HLEN;
  if (f.length < ETH_HLEN + IP6_HLEN) return PASS;
  if ((f[ip] as number) >> 4 !== 6 || f[ip + 6] !== IPPROTO_UDP) return PASS;
  if (ip6At(f, ip + 24) !== cfg.localIp6) return PASS;
  const udp = ip + IP6_HLEN;
  if (f.length < udp + 8 || f.readUInt16BE(udp + 2) !== cfg.port) return PASS;

  const plen = f.readUInt16BE(ip + 4);
  const need = 8 + 8 + ETH_HLEN + IP6_HLEN; // UDP .. inner IPv6 header
  // Precedence (the rules name none): a frame too short to hold the headers
  // is truncated whatever its payload length says.
  if (f.length < udp + need) return drop("truncated");
  // A GSO super-packet's lengths are not one packet's: GRO writes the
  // aggregate's, or 0 above 64 KB (BIG TCP: RFC 2675 without the hop-by-hop
  // option), so they are not checked.
  if (!gso) {
    if (plen === 0) return drop("bad_ip6_hdr");
    if (plen < need || plen > f.length - udp) return drop("truncated");
    if (f.readUInt16BE(udp + 4) !== plen) return drop("bad_udp_len");
  }
  if (f.readUInt16BE(udp + 6) === 0) return drop("udp_zero_csum");
  const vx = udp + 8;
  const v = vxlanCheck(cfg, f, vx);
  if (!v.ok) return v;
  const src = ip6At(f, ip + 8);
  const peer = (maps.peers6 ?? []).find((p) => p.ip === src);
  if (!peer) return drop("unknown_source");
  const ie = vx + 8;
  if (f.readUInt16BE(ie + 12) !== ETH_P_IPV6) return drop("inner_not_ipv6");
  const iip = ie + ETH_HLEN;
  if ((f[iip] as number) >> 4 !== 6) return drop("inner_bad_ip");
  const m = maskOf6(peer.prefixlen);
  if ((ip6At(f, iip + 8) & m) !== (peer.subnet & m)) return drop("spoofed_source");
  const innerDst = ip6At(f, iip + 24);
  const local = lpm6(maps.subnets6 ?? [], innerDst);
  if (!local || !(local.flags & F_LOCAL)) return drop("not_local");
  return { ok: true, peer: src, mark: v.mark, innerDst, innerHop: f[iip + 7] as number };
}

type Check6 =
  | { ok: false; pass: true }
  | { ok: false; pass: false; reason: string }
  | { ok: true; peer: Ip6; mark: number; innerDst: Ip6; innerHop: number };

/**
 * ovl_decap_tc over IPv6: a right packet for a pod in ovl_endpoints6 whose
 * hop limit survives forwarding loses its 70 outer bytes here and goes to
 * the pod with its MACs and hop limit - 1 (the mark from the header with
 * GBP, as over IPv4). Every other right packet is left untouched to ovl0's
 * socket (README); without that socket (kernelDecap off: ovl0 is no VXLAN
 * device) it is decapsulated here and enters the stack as if received on
 * the overlay device, as over IPv4 (abi.h OVL_CFG_KERNEL_DECAP: "without it
 * ovl_decap_tc decapsulates everything").
 */
function decapTc6(cfg: Config, maps: Maps, inp: Input): Expected {
  const f = inp.frame;
  const r = decapCheck6(cfg, maps, f, inp.gsoSize !== 0);
  if (!r.ok) {
    if (r.pass) return { verdict: "pass", out: f, mark: inp.mark };
    return { verdict: "drop", reason: r.reason, mark: inp.mark };
  }
  const ep = (maps.endpoints6 ?? []).find((e) => e.ip === r.innerDst);
  return decapRight(cfg, inp, {
    ep,
    ttl: r.innerHop,
    mark: r.mark,
    peer: r.peer,
    overhead: OVERHEAD6,
    ethType: ETH_P_IPV6,
    dec: (out) => {
      out[ETH_HLEN + 7] = r.innerHop - 1;
    },
  });
}

/** Is an IPv6 frame one the programs look at: a node with a PublicIPv6. */
function isIp6(cfg: Config, f: Buffer): boolean {
  return cfg.localIp6 !== undefined && f.length >= ETH_HLEN && f.readUInt16BE(12) === ETH_P_IPV6;
}

export function model(prog: Program, cfg: Config, maps: Maps, inp: Input): Expected {
  switch (prog) {
    case "ovl_encap_pod":
      return encap(true, cfg, maps, inp);
    case "ovl_encap_dev":
      return encap(false, cfg, maps, inp);
    case "ovl_decap_tc":
      return decapTc(cfg, maps, inp);
    case "ovl_decap_xdp":
      return decapXdp(cfg, maps, inp);
    case "ovl_decap_dev":
      return decapDev(cfg, maps, inp);
  }
}
