// Seeded generators for the differential fuzzer (issue 18): random map
// contents and config, valid encap and decap flows over them, and mutators
// that break them in the ways the README's drop table names (and more).
// Pure: the same seed gives the same packets.
import type {
  Config,
  EndpointEntry,
  EndpointEntry6,
  Input,
  Maps,
  PeerEntry,
  PeerEntry6,
  SubnetEntry,
  SubnetEntry6,
} from "./model";
import { inetCsum } from "./model";
import { maskOf6, type Ip6 } from "../../agent/net/ip6";
import { eth, ETH_P_IP, ETH_P_IPV6, ipv6, udp6 } from "../lib/packets";

/** sfc32: small, fast, good enough for fuzzing; state from one 32-bit seed. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(readonly seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** 0 <= n < max */
  int(max: number): number {
    return Math.floor((this.u32() / 0x100000000) * max);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32(); // four bytes a draw: payloads are most of what is drawn
      for (let j = 0; j < 4 && i + j < n; j++) b[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return b;
  }
  /** 128 random bits. */
  ip6(): Ip6 {
    let v = 0n;
    for (let i = 0; i < 4; i++) v = (v << 32n) | BigInt(this.u32());
    return v;
  }
  mac(): string {
    const b = this.bytes(6);
    b[0] = ((b[0] as number) & 0xfe) | 0x02; // unicast, locally administered
    return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
  }
}

const mask = (p: number) => (p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0);
const inPrefix = (rng: Rng, addr: number, p: number) =>
  ((addr & mask(p)) | (rng.u32() & ~mask(p))) >>> 0;

export function randomConfig(rng: Rng): Config {
  return {
    vni: rng.chance(0.3) ? 1 : rng.chance(0.1) ? 0xffffff : rng.range(0, 0xffffff),
    port: rng.pick([8472, 4789, rng.range(1, 65535)]),
    localIp: ((172 << 24) | (rng.range(16, 31) << 16) | rng.range(0, 0xffff)) >>> 0,
    vtepMac: rng.mac(),
    underlayMac: rng.mac(),
    underlayIfindex: 1, // ENV: loopback, see model.ts
    overlayIfindex: rng.pick([1, 1, rng.range(2, 1000)]),
    kernelDecap: rng.chance(0.5),
    gbp: rng.chance(0.5),
    // A PublicIPv6 (dual-stack) on most loads; without one, IPv6 is left alone.
    localIp6: rng.chance(0.7) ? underlay6(rng) : undefined,
  };
}

const in6 = (rng: Rng, addr: Ip6, p: number): Ip6 =>
  (addr & maskOf6(p)) | (rng.ip6() & ~maskOf6(p) & ALL6);
const ALL6 = (1n << 128n) - 1n;
/** An underlay IPv6 address: mostly one /48 of fd00::/8, so peers share a prefix. */
function underlay6(rng: Rng): Ip6 {
  return rng.chance(0.8) ? in6(rng, 0xfd00_0000_0001n << 80n, 48) : in6(rng, 0xfdn << 120n, 8);
}

/** Adds a subnet entry to list unless its prefix is there already; says whether it did. */
function adder<T extends { addr: number | Ip6; prefixlen: number }>(list: T[]): (e: T) => boolean {
  const seen = new Set<string>();
  return (e) => {
    const k = `${e.addr}/${e.prefixlen}`;
    if (seen.has(k)) return false;
    seen.add(k);
    list.push(e);
    return true;
  };
}

/**
 * A cluster network with our lease (LOCAL), remote leases (some DIRECT),
 * their peers, stray peers without a subnet, more specific remote subnets
 * inside other leases, and local endpoints.
 */
export function randomMaps(rng: Rng, cfg: Config): Maps {
  const netLen = rng.pick([8, 12, 16]);
  const net = ((10 << 24) | (rng.u32() & 0x00ffffff)) & mask(netLen);
  const leaseLen = rng.range(Math.max(netLen + 1, 16), 30);
  const lease = () => (inPrefix(rng, net, netLen) & mask(leaseLen)) >>> 0;
  const subnets: SubnetEntry[] = [];
  const peers: PeerEntry[] = [];
  const add = adder(subnets);
  const local = lease();
  add({ addr: local, prefixlen: leaseLen, remoteIp: cfg.localIp, vtepMac: cfg.vtepMac, flags: 1 });
  const nRemote = rng.range(0, 12);
  for (let i = 0; i < nRemote; i++) {
    const s: SubnetEntry = {
      addr: lease(),
      prefixlen: leaseLen,
      remoteIp: ((172 << 24) | (rng.range(16, 31) << 16) | rng.range(0, 0xffff)) >>> 0,
      vtepMac: rng.mac(),
      flags: rng.chance(0.25) ? 2 : 0,
    };
    if (s.remoteIp === cfg.localIp || !add(s)) continue;
    if (rng.chance(0.9)) peers.push({ ip: s.remoteIp, subnet: s.addr, prefixlen: s.prefixlen });
  }
  if (rng.chance(0.2)) {
    // a more specific non-local subnet inside our own lease (LPM must win)
    const p = Math.min(leaseLen + rng.range(1, 2), 32);
    add({
      addr: (inPrefix(rng, local, leaseLen) & mask(p)) >>> 0,
      prefixlen: p,
      remoteIp: rng.u32(),
      vtepMac: rng.mac(),
      flags: 0,
    });
  }
  if (rng.chance(0.1))
    add({
      addr: 0,
      prefixlen: 0,
      remoteIp: rng.u32(),
      vtepMac: rng.mac(),
      flags: rng.pick([0, 2]),
    });
  for (let i = rng.range(0, 3); i > 0; i--) {
    const p = rng.range(0, 32);
    const ip = rng.u32();
    if (ip !== cfg.localIp && !peers.some((x) => x.ip === ip))
      peers.push({ ip, subnet: (rng.u32() & mask(p)) >>> 0, prefixlen: p });
  }
  const endpoints: EndpointEntry[] = [];
  for (let i = rng.range(0, 8); i > 0; i--) {
    const ip = inPrefix(rng, local, leaseLen);
    if (!endpoints.some((e) => e.ip === ip))
      endpoints.push({ ip, ifindex: rng.range(1, 100), podMac: rng.mac(), hostMac: rng.mac() });
  }
  return { subnets, peers, endpoints, ...randomMaps6(rng, cfg) };
}

/**
 * The IPv6 half of a dual-stack network, made as randomMaps makes the IPv4
 * one: our lease (LOCAL, with our PublicIPv6), remote leases (some DIRECT)
 * with their peers, stray peers, a more specific subnet inside ours, now
 * and then ::/0 (which covers link-local and multicast: they must still be
 * left alone), and endpoints. Made whether or not the node has a
 * PublicIPv6: without one the programs must ignore it.
 */
function randomMaps6(
  rng: Rng,
  cfg: Config,
): Required<Pick<Maps, "subnets6" | "peers6" | "endpoints6">> {
  const netLen = rng.pick([16, 32, 48, 56]);
  const net = in6(rng, 0xfcn << 120n, 7) & maskOf6(netLen);
  const leaseLen = rng.chance(0.6) ? 64 : rng.range(netLen + 1, 124);
  const lease = () => in6(rng, net, netLen) & maskOf6(leaseLen);
  const subnets6: SubnetEntry6[] = [];
  const peers6: PeerEntry6[] = [];
  const add = adder(subnets6);
  const me = cfg.localIp6 ?? underlay6(rng);
  const local = lease();
  add({ addr: local, prefixlen: leaseLen, remoteIp: me, vtepMac: cfg.vtepMac, flags: 1 });
  for (let i = rng.range(0, 10); i > 0; i--) {
    const e: SubnetEntry6 = {
      addr: lease(),
      prefixlen: leaseLen,
      remoteIp: underlay6(rng),
      vtepMac: rng.mac(),
      flags: rng.chance(0.25) ? 2 : 0,
    };
    if (e.remoteIp === me || !add(e)) continue;
    if (rng.chance(0.9)) peers6.push({ ip: e.remoteIp, subnet: e.addr, prefixlen: e.prefixlen });
  }
  if (rng.chance(0.2)) {
    const p = Math.min(leaseLen + rng.range(1, 4), 128);
    add({
      addr: in6(rng, local, leaseLen) & maskOf6(p),
      prefixlen: p,
      remoteIp: underlay6(rng),
      vtepMac: rng.mac(),
      flags: 0,
    });
  }
  if (rng.chance(0.15))
    add({
      addr: 0n,
      prefixlen: 0,
      remoteIp: underlay6(rng),
      vtepMac: rng.mac(),
      flags: rng.pick([0, 2]),
    });
  for (let i = rng.range(0, 3); i > 0; i--) {
    const p = rng.range(0, 128);
    const ip = underlay6(rng);
    if (ip !== me && !peers6.some((x) => x.ip === ip))
      peers6.push({ ip, subnet: rng.ip6() & maskOf6(p), prefixlen: p });
  }
  const endpoints6: EndpointEntry6[] = [];
  for (let i = rng.range(0, 8); i > 0; i--) {
    const ip = in6(rng, local, leaseLen);
    if (!endpoints6.some((e) => e.ip === ip))
      endpoints6.push({ ip, ifindex: rng.range(1, 100), podMac: rng.mac(), hostMac: rng.mac() });
  }
  return { subnets6, peers6, endpoints6 };
}

// --- packet building ---------------------------------------------------------
function ipv4(
  o: {
    src: number;
    dst: number;
    proto: number;
    ttl: number;
    tos: number;
    frag?: number;
    options?: Buffer;
  },
  payload: Buffer,
): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const h = Buffer.alloc(20 + opts.length);
  h[0] = 0x40 | (h.length / 4);
  h[1] = o.tos;
  h.writeUInt16BE(h.length + payload.length, 2);
  h.writeUInt16BE(0x1234, 4);
  h.writeUInt16BE(o.frag ?? 0x4000, 6);
  h[8] = o.ttl;
  h[9] = o.proto;
  h.writeUInt32BE(o.src >>> 0, 12);
  h.writeUInt32BE(o.dst >>> 0, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(inetCsum(h), 10);
  return Buffer.concat([h, payload]);
}

function l4(rng: Rng): { proto: number; bytes: Buffer } {
  const data = rng.bytes(rng.pick([0, 1, 7, 32, rng.range(0, 1400)]));
  const proto = rng.pick([1, 6, 17, 17, rng.int(256)]);
  if (proto === 6) {
    const t = rng.bytes(20);
    t[12] = rng.chance(0.9) ? 0x50 : rng.int(256);
    return { proto, bytes: Buffer.concat([t, data]) };
  }
  if (proto === 17) {
    const u = Buffer.alloc(8);
    u.writeUInt16BE(rng.range(1, 65535), 0);
    u.writeUInt16BE(rng.range(1, 65535), 2);
    u.writeUInt16BE(8 + data.length, 4);
    return { proto, bytes: Buffer.concat([u, data]) };
  }
  return { proto, bytes: Buffer.concat([rng.bytes(8), data]) };
}

const TTLS = [0, 1, 2, 64, 255];
function ttl(rng: Rng): number {
  return rng.chance(0.5) ? rng.pick(TTLS) : rng.int(256);
}

/** An address a flow may go to: a remote lease, our lease, an endpoint, anywhere. */
function someDst(rng: Rng, maps: Maps): number {
  const s = rng.pick(maps.subnets);
  switch (rng.int(4)) {
    case 0:
      return rng.u32();
    case 1:
      if (maps.endpoints.length) return rng.pick(maps.endpoints).ip;
      return inPrefix(rng, s.addr, s.prefixlen);
    default:
      return inPrefix(rng, s.addr, s.prefixlen);
  }
}

/** A pod's (or the host's) packet into the overlay, as encap sees it. */
export function encapFlow(rng: Rng, _cfg: Config, maps: Maps): Input {
  const local = maps.subnets.find((s) => s.flags & 1) as SubnetEntry;
  const p = l4(rng);
  const ip = ipv4(
    {
      src: inPrefix(rng, local.addr, local.prefixlen),
      dst: someDst(rng, maps),
      proto: p.proto,
      ttl: ttl(rng),
      tos: rng.chance(0.7) ? 0 : rng.int(256),
    },
    p.bytes,
  );
  return {
    frame: eth(rng.mac(), rng.mac(), ETH_P_IP, ip),
    mark: randomMark(rng),
    gsoSize: gso(rng),
  };
}

function randomMark(rng: Rng): number {
  switch (rng.int(4)) {
    case 0:
      return 0;
    case 1:
      return rng.int(0x10000);
    case 2:
      return (rng.pick([0, 0x400000, 0x80000, 0x480000]) | rng.int(0x10000)) >>> 0;
    default:
      return rng.u32();
  }
}

function gso(rng: Rng): number {
  if (!rng.chance(0.05)) return 0;
  // ... and sizes where one segment plus 50 or 70 bytes of encapsulation
  // meets the underlay's 65,536 (see LO_MTU in model.ts): the MTU edge.
  return rng.pick([1, 1400, 1448, rng.range(1, 65535), 65535, rng.range(65300, 65480)]);
}

/** A VXLAN frame as a peer sends it, mostly right for the maps. */
export function decapFlow(rng: Rng, cfg: Config, maps: Maps): Input {
  const peer = maps.peers.length && rng.chance(0.9) ? rng.pick(maps.peers) : undefined;
  const local = maps.subnets.find((s) => s.flags & 1) as SubnetEntry;
  const innerSrc = peer && rng.chance(0.9) ? inPrefix(rng, peer.subnet, peer.prefixlen) : rng.u32();
  const innerDst = rng.chance(0.85)
    ? maps.endpoints.length && rng.chance(0.5)
      ? rng.pick(maps.endpoints).ip
      : inPrefix(rng, local.addr, local.prefixlen)
    : someDst(rng, maps);
  const p = l4(rng);
  // Now and then IPv6-in-IPv4, a cross-family frame flannel never sends.
  const inner = rng.chance(0.05)
    ? innerFrame6(rng, cfg, maps)
    : eth(
        rng.chance(0.7) ? cfg.vtepMac : rng.mac(),
        rng.mac(),
        ETH_P_IP,
        ipv4(
          { src: innerSrc, dst: innerDst, proto: p.proto, ttl: ttl(rng), tos: rng.int(4) },
          p.bytes,
        ),
      );
  const vx = vxlanHdr(rng, cfg);
  const u = Buffer.alloc(8);
  u.writeUInt16BE(rng.range(49152, 65535), 0);
  u.writeUInt16BE(cfg.port, 2);
  u.writeUInt16BE(8 + vx.length + inner.length, 4);
  const src = peer ? peer.ip : rng.chance(0.5) ? rng.pick(maps.subnets).remoteIp : rng.u32();
  const ip = ipv4(
    { src, dst: cfg.localIp, proto: 17, ttl: ttl(rng), tos: 0 },
    Buffer.concat([u, vx, inner]),
  );
  return {
    frame: eth(cfg.underlayMac, rng.mac(), ETH_P_IP, ip),
    mark: randomMark(rng),
    gsoSize: gso(rng),
  };
}

/** The VXLAN header for our VNI; with GBP, half the time a policy (some all zero). */
function vxlanHdr(rng: Rng, cfg: Config): Buffer {
  const vx = Buffer.alloc(8);
  vx[0] = 0x08;
  vx.writeUInt32BE(((cfg.vni & 0xffffff) << 8) >>> 0, 4);
  if (cfg.gbp && rng.chance(0.5)) {
    vx[0] |= 0x80;
    vx[1] = rng.pick([0, 0x40, 0x08, 0x48]);
    vx.writeUInt16BE(rng.chance(0.2) ? 0 : rng.int(0x10000), 2);
  }
  return vx;
}

// --- IPv6 flows ------------------------------------------------------------------
const EXT6 = [0, 43, 44, 60]; // hop-by-hop, routing, fragment, destination options

/** One IPv6 extension header (RFC 8200 4.3-4.6) whose next header is next. */
function ext6(rng: Rng, kind: number, next: number): Buffer {
  if (kind === 44) {
    const b = Buffer.alloc(8);
    b[0] = next;
    // offset 0 or not, M or not: first, middle, last fragments and atomic ones
    const off = rng.chance(0.5) ? 0 : rng.range(1, 0x1fff);
    b.writeUInt16BE(((off << 3) | (rng.chance(0.5) ? 1 : 0)) & 0xffff, 2);
    b.writeUInt32BE(rng.u32(), 4);
    return b;
  }
  const len = rng.pick([0, 0, 1, rng.range(0, 4)]);
  const b = Buffer.alloc((len + 1) * 8);
  b[0] = next;
  b[1] = len;
  if (kind === 43) {
    b[2] = rng.pick([0, 2, 3, 4, rng.int(256)]); // routing type
    b[3] = rng.pick([0, 1, rng.int(256)]); // segments left
    rng.bytes(b.length - 4).copy(b, 4);
  } else if (rng.chance(0.8)) {
    b[2] = 1; // PadN over the rest (RFC 8200 4.2)
    b[3] = b.length - 4;
  } else {
    rng.bytes(b.length - 2).copy(b, 2);
  }
  return b;
}

/** Inserts 1-3 extension headers after the IPv6 header at off, lengths kept right. */
export function withExt6(rng: Rng, b: Buffer, off: number): Buffer {
  if (b.length < off + 40) return b;
  const kinds = Array.from({ length: rng.range(1, 3) }, () => rng.pick(EXT6));
  let next = b[off + 6] as number;
  const hdrs: Buffer[] = [];
  for (let i = kinds.length - 1; i >= 0; i--) {
    hdrs.unshift(ext6(rng, kinds[i] as number, next));
    next = kinds[i] as number;
  }
  const ext = Buffer.concat(hdrs);
  const out = Buffer.concat([b.subarray(0, off + 40), ext, b.subarray(off + 40)]);
  out[off + 6] = next;
  out.writeUInt16BE((out.readUInt16BE(off + 4) + ext.length) & 0xffff, off + 4);
  return out;
}

const LINK_LOCAL6: Ip6 = 0xfe80n << 112n;
/** Multicast destinations: all-nodes, solicited-node, MLD routers, any scope. */
function multicast6(rng: Rng): Ip6 {
  switch (rng.int(4)) {
    case 0:
      return (0xff02n << 112n) | 1n;
    case 1:
      return (0xff02n << 112n) | (0x1ff00n << 24n) | BigInt(rng.int(0x1000000));
    case 2:
      return (0xff02n << 112n) | 0x16n;
    default:
      return (0xffn << 120n) | (rng.ip6() & ~maskOf6(8) & ALL6);
  }
}

/** An IPv6 destination: a lease (remote or ours), an endpoint, link-local, multicast, anywhere. */
function someDst6(rng: Rng, maps: Maps): Ip6 {
  const subnets6 = maps.subnets6 ?? [];
  const s = rng.pick(subnets6);
  switch (rng.int(7)) {
    case 0:
      return rng.ip6();
    case 1:
      return maps.endpoints6?.length ? rng.pick(maps.endpoints6).ip : in6(rng, s.addr, s.prefixlen);
    case 2:
      return rng.chance(0.7) ? in6(rng, LINK_LOCAL6, 64) : in6(rng, LINK_LOCAL6, 10);
    case 3:
      return multicast6(rng);
    default:
      return in6(rng, s.addr, s.prefixlen);
  }
}

/** An IPv6 pod's packet (next header ICMPv6 for ICMP), now and then with extension headers. */
function pod6(rng: Rng, src: Ip6, dst: Ip6): Buffer {
  const p = l4(rng);
  const ip = ipv6(
    {
      src,
      dst,
      next: p.proto === 1 ? 58 : p.proto,
      hop: ttl(rng),
      trafficClass: rng.chance(0.7) ? 0 : rng.int(256),
    },
    p.bytes,
  );
  return rng.chance(0.15) ? withExt6(rng, ip, 0) : ip;
}

/** A pod's (or the host's) IPv6 packet into the overlay, as encap sees it. */
export function encapFlow6(rng: Rng, _cfg: Config, maps: Maps): Input {
  const local = (maps.subnets6 ?? []).find((s) => s.flags & 1) as SubnetEntry6;
  const ip = pod6(rng, in6(rng, local.addr, local.prefixlen), someDst6(rng, maps));
  return {
    frame: eth(rng.mac(), rng.mac(), ETH_P_IPV6, ip),
    mark: randomMark(rng),
    gsoSize: gso(rng),
  };
}

/** The inner Ethernet frame of a peer's IPv6 packet, mostly right for the maps. */
function innerFrame6(rng: Rng, cfg: Config, maps: Maps, peer?: PeerEntry6): Buffer {
  const local = (maps.subnets6 ?? []).find((s) => s.flags & 1) as SubnetEntry6;
  const eps = maps.endpoints6 ?? [];
  const src = peer && rng.chance(0.9) ? in6(rng, peer.subnet, peer.prefixlen) : rng.ip6();
  const dst = rng.chance(0.85)
    ? eps.length && rng.chance(0.5)
      ? rng.pick(eps).ip
      : in6(rng, local.addr, local.prefixlen)
    : someDst6(rng, maps);
  return eth(rng.chance(0.7) ? cfg.vtepMac : rng.mac(), rng.mac(), ETH_P_IPV6, pod6(rng, src, dst));
}

/** A VXLAN frame over IPv6 as a flannel-v6.1 peer sends it, mostly right for the maps. */
export function decapFlow6(rng: Rng, cfg: Config, maps: Maps): Input {
  const peers6 = maps.peers6 ?? [];
  const subnets6 = maps.subnets6 ?? [];
  const peer = peers6.length && rng.chance(0.9) ? rng.pick(peers6) : undefined;
  const local = subnets6.find((s) => s.flags & 1) as SubnetEntry6;
  // Now and then IPv4-in-IPv6, a cross-family frame flannel never sends.
  const inner = rng.chance(0.05)
    ? (encapFlow(rng, cfg, maps).frame as Buffer)
    : innerFrame6(rng, cfg, maps, peer);
  const src = peer ? peer.ip : rng.chance(0.5) ? rng.pick(subnets6).remoteIp : underlay6(rng);
  const dst = rng.chance(0.95) ? (cfg.localIp6 ?? local.remoteIp) : underlay6(rng);
  const u = udp6(
    src,
    dst,
    rng.range(49152, 65535),
    cfg.port,
    Buffer.concat([vxlanHdr(rng, cfg), inner]),
    {
      zeroChecksum: rng.chance(0.05),
    },
  );
  const ip = ipv6(
    { src, dst, next: 17, hop: ttl(rng), trafficClass: rng.chance(0.8) ? 0 : rng.int(256) },
    u,
  );
  return {
    frame: eth(cfg.underlayMac, rng.mac(), ETH_P_IPV6, ip),
    mark: randomMark(rng),
    gsoSize: gso(rng),
  };
}

// --- mutators ---------------------------------------------------------------
/** Re-computes the IPv4 header checksum at off (most mutators keep it right,
 *  so that the check after the checksum is reached). */
function fixCsum(b: Buffer, off: number): void {
  if (b.length < off + 20) return;
  const ihl = ((b[off] as number) & 0x0f) * 4;
  if (ihl < 20 || b.length < off + ihl) return;
  b.writeUInt16BE(0, off + 10);
  b.writeUInt16BE(inetCsum(b.subarray(off, off + ihl)), off + 10);
}

const OUTER = 14;

/** Where a flow's headers are: the outer IP header, UDP, VXLAN, inner Ethernet and IP. */
interface Layout {
  udp: number;
  vx: number;
  innerEth: number;
  innerIp: number;
}
const V4: Layout = { udp: 34, vx: 42, innerEth: 50, innerIp: 64 };
const V6: Layout = { udp: 54, vx: 62, innerEth: 70, innerIp: 84 };

type Mutator = (rng: Rng, b: Buffer, cfg: Config, l: Layout) => Buffer;

export const MUTATORS: Record<string, Mutator> = {
  bitflip: (rng, b, _cfg, l) => {
    for (let i = rng.range(1, 3); i > 0; i--) {
      const o = rng.int(Math.min(b.length, rng.chance(0.8) ? l.innerIp + 36 : b.length));
      b[o] = (b[o] as number) ^ (1 << rng.int(8));
    }
    return b;
  },
  // Every offset up to past the inner IP header: each length check has its edge.
  truncate: (rng, b, _cfg, l) =>
    b.subarray(0, Math.max(14, rng.int(Math.min(b.length, l.innerIp + 56) + 1))),
  outerTotLen: (rng, b) => {
    if (b.length < OUTER + 20) return b;
    b.writeUInt16BE(
      rng.pick([
        0,
        19,
        20,
        69,
        70,
        71,
        b.length - OUTER - 1,
        b.length - OUTER + 1,
        b.length,
        rng.int(65536),
      ]),
      OUTER + 2,
    );
    if (rng.chance(0.9)) fixCsum(b, OUTER);
    return b;
  },
  udpLen: (rng, b, _cfg, lay) => {
    if (b.length < lay.udp + 8) return b;
    const l = b.readUInt16BE(lay.udp + 4);
    b.writeUInt16BE(rng.pick([0, 8, l - 1, l + 1, rng.int(65536)]) & 0xffff, lay.udp + 4);
    return b;
  },
  ipOptions: (rng, b) => {
    if (b.length < OUTER + 20) return b;
    const n = rng.range(1, 10) * 4;
    const opts = rng.chance(0.5) ? Buffer.alloc(n, 1) : rng.bytes(n);
    const out = Buffer.concat([b.subarray(0, OUTER + 20), opts, b.subarray(OUTER + 20)]);
    out[OUTER] = 0x40 | (5 + n / 4);
    out.writeUInt16BE((out.readUInt16BE(OUTER + 2) + n) & 0xffff, OUTER + 2);
    fixCsum(out, OUTER);
    return out;
  },
  fragment: (rng, b) => {
    if (b.length < OUTER + 20) return b;
    const mf = rng.chance(0.5) ? 0x2000 : 0;
    const off = rng.chance(0.5) ? 0 : rng.range(1, 0x1fff);
    b.writeUInt16BE(
      mf | off | (rng.chance(0.3) ? 0x4000 : 0) | (rng.chance(0.1) ? 0x8000 : 0),
      OUTER + 6,
    );
    fixCsum(b, OUTER);
    return b;
  },
  vlan: (rng, b) => {
    const tag = Buffer.alloc(4);
    tag.writeUInt16BE(rng.pick([0x8100, 0x88a8]), 0);
    tag.writeUInt16BE(rng.int(0x10000), 2);
    return Buffer.concat([b.subarray(0, 12), tag, b.subarray(12)]);
  },
  vxlanFlags: (rng, b, _cfg, l) => {
    if (b.length < l.vx + 8) return b;
    b[l.vx] = rng.chance(0.5) ? rng.int(256) : rng.pick([0x00, 0x08, 0x88, 0x80, 0x0c, 0x09, 0x18]);
    if (rng.chance(0.5))
      b[l.vx + 1] = rng.chance(0.5) ? rng.int(256) : rng.pick([0, 0x40, 0x08, 0x48, 0x01]);
    if (rng.chance(0.3)) b[l.vx + 2] = rng.int(256);
    if (rng.chance(0.3)) b[l.vx + 3] = rng.int(256);
    if (rng.chance(0.3)) b[l.vx + 7] = rng.int(256);
    return b;
  },
  vni: (rng, b, cfg, l) => {
    if (b.length < l.vx + 8) return b;
    b.writeUIntBE(
      rng.pick([0, 1, cfg.vni ^ 1, cfg.vni ^ 0x800000, 0xffffff, rng.int(0x1000000)]) & 0xffffff,
      l.vx + 4,
      3,
    );
    return b;
  },
  innerType: (rng, b, _cfg, l) => {
    if (b.length < l.innerEth + 14) return b;
    b.writeUInt16BE(
      rng.pick([0x0806, 0x86dd, 0x0800, 0x8100, 0x0000, 0x0801, 0x8800, rng.int(65536)]),
      l.innerEth + 12,
    );
    return b;
  },
  innerIp: (rng, b) => {
    if (b.length < V4.innerIp + 20) return b;
    switch (rng.int(4)) {
      case 0:
        b[V4.innerIp] = rng.int(256); // version / ihl
        break;
      case 1:
        b.writeUInt16BE(rng.pick([0, 19, 20, 21, rng.int(65536)]), V4.innerIp + 2);
        break;
      case 2:
        b[V4.innerIp + 8] = rng.pick(TTLS);
        break;
      default:
        b.writeUInt32BE(rng.u32(), V4.innerIp + rng.pick([12, 16]));
    }
    if (rng.chance(0.8)) fixCsum(b, V4.innerIp);
    return b;
  },
  outerTtl: (rng, b) => {
    if (b.length < OUTER + 20) return b;
    b[OUTER + 8] = rng.pick(TTLS);
    fixCsum(b, OUTER);
    return b;
  },
  encapIp: (rng, b) => {
    // encap's input is an IPv4 packet at OUTER: break its header
    if (b.length < OUTER + 20) return b;
    switch (rng.int(3)) {
      case 0:
        b[OUTER] = rng.int(256);
        break;
      case 1:
        b.writeUInt16BE(rng.int(65536), OUTER + 2);
        break;
      default:
        b[OUTER + 8] = rng.pick(TTLS);
    }
    if (rng.chance(0.5)) fixCsum(b, OUTER);
    return b;
  },
  ethType: (rng, b) => {
    b.writeUInt16BE(rng.pick([0x0806, 0x86dd, 0x0800, 0x8100, rng.int(65536)]), 12);
    return b;
  },
};

const ENCAP_MUTATORS = [
  "bitflip",
  "truncate",
  "encapIp",
  "ipOptions",
  "fragment",
  "vlan",
  "ethType",
];
// IPv4-only mutators, and the IPv6 ones below, each for its own flows.
const V4_ONLY = ["outerTotLen", "ipOptions", "fragment", "innerIp", "outerTtl", "encapIp"];
const DECAP_MUTATORS = Object.keys(MUTATORS).filter((m) => m !== "encapIp");

/** A link-local or multicast address written over the destination at off. */
function special6(rng: Rng, b: Buffer, off: number): Buffer {
  if (b.length < off + 16) return b;
  const a = rng.chance(0.5) ? in6(rng, LINK_LOCAL6, rng.pick([10, 64])) : multicast6(rng);
  b.writeBigUInt64BE(a >> 64n, off);
  b.writeBigUInt64BE(a & 0xffffffffffffffffn, off + 8);
  return b;
}

const HOPS = [0, 1, 2, 255];

/** Mutators of IPv6 flows (the layout is V6 for decap, the pod's header at 14 for encap). */
const MUTATORS6: Record<string, Mutator> = {
  payloadLen6: (rng, b) => {
    if (b.length < OUTER + 40) return b;
    const real = b.length - OUTER - 40;
    b.writeUInt16BE(
      rng.pick([0, 1, 69, 70, 71, real - 1, real + 1, real + 8, 0xffff, rng.int(65536)]) & 0xffff,
      OUTER + 4,
    );
    return b;
  },
  udpCsum6: (rng, b, _cfg, l) => {
    if (b.length < l.udp + 8) return b;
    b.writeUInt16BE(rng.pick([0, 0, 0xffff, 1, rng.int(65536)]), l.udp + 6);
    return b;
  },
  extHdr: (rng, b) => withExt6(rng, b, OUTER),
  // Extension headers in the inner IPv6 header, outer lengths kept right so
  // that the inner checks are reached.
  innerExtHdr: (rng, b, _cfg, l) => {
    if (b.length < l.innerIp + 40) return b;
    const out = withExt6(rng, b, l.innerIp);
    const grown = out.length - b.length;
    out.writeUInt16BE((out.readUInt16BE(OUTER + 4) + grown) & 0xffff, OUTER + 4);
    out.writeUInt16BE((out.readUInt16BE(l.udp + 4) + grown) & 0xffff, l.udp + 4);
    return out;
  },
  innerIp6: (rng, b, _cfg, l) => {
    if (b.length < l.innerIp + 40) return b;
    const ip = l.innerIp;
    switch (rng.int(5)) {
      case 0:
        b[ip] = rng.chance(0.5) ? 0x45 : rng.int(256); // version (and traffic class)
        break;
      case 1:
        b.writeUInt16BE(rng.pick([0, 1, 0xffff, rng.int(65536)]), ip + 4);
        break;
      case 2:
        b[ip + 7] = rng.pick(HOPS);
        break;
      case 3:
        special6(rng, b, ip + 24);
        break;
      default:
        rng.bytes(16).copy(b, ip + rng.pick([8, 24]));
    }
    return b;
  },
  hopLimit6: (rng, b) => {
    if (b.length >= OUTER + 40) b[OUTER + 7] = rng.pick(HOPS);
    return b;
  },
  // encap's input is an IPv6 packet at OUTER: break or vary its header
  encapIp6: (rng, b) => {
    if (b.length < OUTER + 40) return b;
    switch (rng.int(4)) {
      case 0:
        b[OUTER] = rng.chance(0.5) ? 0x45 : rng.int(256);
        break;
      case 1:
        b.writeUInt16BE(rng.int(65536), OUTER + 4);
        break;
      case 2:
        b[OUTER + 7] = rng.pick(HOPS);
        break;
      default:
        special6(rng, b, OUTER + 24);
    }
    return b;
  },
};
const ENCAP6_MUTATORS = ["bitflip", "truncate", "encapIp6", "extHdr", "vlan", "ethType"];
const DECAP6_MUTATORS = [
  ...DECAP_MUTATORS.filter((m) => !V4_ONLY.includes(m)),
  ...Object.keys(MUTATORS6).filter((m) => m !== "encapIp6"),
];

/**
 * One packet for prog: a valid flow, then (most of the time) 1-3 mutations.
 * IPv6 flows are mixed in, more of them on a node with a PublicIPv6; on one
 * without, they check that IPv6 is left alone.
 */
export function packet(
  rng: Rng,
  prog: string,
  cfg: Config,
  maps: Maps,
): { input: Input; mutations: string[] } {
  const isEncap = prog.startsWith("ovl_encap");
  const v6 = rng.chance(cfg.localIp6 !== undefined ? 0.5 : 0.2);
  const flow = isEncap ? (v6 ? encapFlow6 : encapFlow) : v6 ? decapFlow6 : decapFlow;
  const input = flow(rng, cfg, maps);
  const layout = v6 ? V6 : V4;
  const names = isEncap
    ? v6
      ? ENCAP6_MUTATORS
      : ENCAP_MUTATORS
    : v6
      ? DECAP6_MUTATORS
      : DECAP_MUTATORS;
  const mutations: string[] = v6 ? ["ipv6"] : [];
  if (rng.chance(0.7)) {
    let b = Buffer.from(input.frame);
    for (let i = rng.range(1, 3); i > 0; i--) {
      const m = rng.pick(names);
      b = Buffer.from(((MUTATORS[m] ?? MUTATORS6[m]) as Mutator)(rng, b, cfg, layout));
      mutations.push(m);
    }
    input.frame = b.length < 14 ? Buffer.concat([b, Buffer.alloc(14 - b.length)]) : b;
  }
  if (prog === "ovl_decap_dev") input.frame = Buffer.from(input.frame.subarray(layout.innerEth));
  if (input.frame.length < 14)
    input.frame = Buffer.concat([input.frame, Buffer.alloc(14 - input.frame.length)]);
  return { input, mutations };
}
