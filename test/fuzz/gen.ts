// Seeded generators for the differential fuzzer (issue 18): random map
// contents and config, valid encap and decap flows over them, and mutators
// that break them in the ways the README's drop table names (and more).
// Pure: the same seed gives the same packets.
import type { Config, EndpointEntry, Input, Maps, PeerEntry, SubnetEntry } from "./model";
import { inetCsum } from "./model";

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
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
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
  const seen = new Set<string>();
  const add = (s: SubnetEntry) => {
    const k = `${s.addr}/${s.prefixlen}`;
    if (seen.has(k)) return false;
    seen.add(k);
    subnets.push(s);
    return true;
  };
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
  return { subnets, peers, endpoints };
}

// --- packet building ---------------------------------------------------------
function ethHdr(dst: string, src: string, type: number): Buffer {
  const h = Buffer.alloc(14);
  Buffer.from(dst.split(":").map((x) => parseInt(x, 16))).copy(h, 0);
  Buffer.from(src.split(":").map((x) => parseInt(x, 16))).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return h;
}

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
  const frame = Buffer.concat([ethHdr(rng.mac(), rng.mac(), 0x0800), ip]);
  return { frame, mark: randomMark(rng), gsoSize: gso(rng) };
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
  return rng.pick([1, 1400, 1448, rng.range(1, 65535), 65535]);
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
  const inner = Buffer.concat([
    ethHdr(rng.chance(0.7) ? cfg.vtepMac : rng.mac(), rng.mac(), 0x0800),
    ipv4({ src: innerSrc, dst: innerDst, proto: p.proto, ttl: ttl(rng), tos: rng.int(4) }, p.bytes),
  ]);
  const vx = Buffer.alloc(8);
  vx[0] = 0x08;
  vx.writeUInt32BE(((cfg.vni & 0xffffff) << 8) >>> 0, 4);
  if (cfg.gbp && rng.chance(0.5)) {
    vx[0] |= 0x80;
    vx[1] = rng.pick([0, 0x40, 0x08, 0x48]);
    vx.writeUInt16BE(rng.chance(0.2) ? 0 : rng.int(0x10000), 2);
  }
  const u = Buffer.alloc(8);
  u.writeUInt16BE(rng.range(49152, 65535), 0);
  u.writeUInt16BE(cfg.port, 2);
  u.writeUInt16BE(8 + vx.length + inner.length, 4);
  const src = peer ? peer.ip : rng.chance(0.5) ? rng.pick(maps.subnets).remoteIp : rng.u32();
  const ip = ipv4(
    { src, dst: cfg.localIp, proto: 17, ttl: ttl(rng), tos: 0 },
    Buffer.concat([u, vx, inner]),
  );
  const frame = Buffer.concat([ethHdr(cfg.underlayMac, rng.mac(), 0x0800), ip]);
  return { frame, mark: randomMark(rng), gsoSize: gso(rng) };
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
const UDP = 34;
const VX = 42;
const INNER_ETH = 50;
const INNER_IP = 64;

type Mutator = (rng: Rng, b: Buffer, cfg: Config) => Buffer;

export const MUTATORS: Record<string, Mutator> = {
  bitflip: (rng, b) => {
    for (let i = rng.range(1, 3); i > 0; i--) {
      const o = rng.int(Math.min(b.length, rng.chance(0.8) ? 100 : b.length));
      b[o] = (b[o] as number) ^ (1 << rng.int(8));
    }
    return b;
  },
  truncate: (rng, b) => b.subarray(0, Math.max(14, rng.int(Math.min(b.length, 120) + 1))),
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
  udpLen: (rng, b) => {
    if (b.length < UDP + 8) return b;
    const l = b.readUInt16BE(UDP + 4);
    b.writeUInt16BE(rng.pick([0, 8, l - 1, l + 1, rng.int(65536)]) & 0xffff, UDP + 4);
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
  vxlanFlags: (rng, b) => {
    if (b.length < VX + 8) return b;
    b[VX] = rng.chance(0.5) ? rng.int(256) : rng.pick([0x00, 0x08, 0x88, 0x80, 0x0c, 0x09, 0x18]);
    if (rng.chance(0.5))
      b[VX + 1] = rng.chance(0.5) ? rng.int(256) : rng.pick([0, 0x40, 0x08, 0x48, 0x01]);
    if (rng.chance(0.3)) b[VX + 2] = rng.int(256);
    if (rng.chance(0.3)) b[VX + 3] = rng.int(256);
    if (rng.chance(0.3)) b[VX + 7] = rng.int(256);
    return b;
  },
  vni: (rng, b, cfg) => {
    if (b.length < VX + 8) return b;
    b.writeUIntBE(
      rng.pick([0, 1, cfg.vni ^ 1, cfg.vni ^ 0x800000, 0xffffff, rng.int(0x1000000)]) & 0xffffff,
      VX + 4,
      3,
    );
    return b;
  },
  innerType: (rng, b) => {
    if (b.length < INNER_ETH + 14) return b;
    b.writeUInt16BE(
      rng.pick([0x0806, 0x86dd, 0x8100, 0x0000, 0x0801, 0x8800, rng.int(65536)]),
      INNER_ETH + 12,
    );
    return b;
  },
  innerIp: (rng, b) => {
    if (b.length < INNER_IP + 20) return b;
    switch (rng.int(4)) {
      case 0:
        b[INNER_IP] = rng.int(256); // version / ihl
        break;
      case 1:
        b.writeUInt16BE(rng.pick([0, 19, 20, 21, rng.int(65536)]), INNER_IP + 2);
        break;
      case 2:
        b[INNER_IP + 8] = rng.pick(TTLS);
        break;
      default:
        b.writeUInt32BE(rng.u32(), INNER_IP + rng.pick([12, 16]));
    }
    if (rng.chance(0.8)) fixCsum(b, INNER_IP);
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
    b.writeUInt16BE(rng.pick([0x0806, 0x86dd, 0x8100, rng.int(65536)]), 12);
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
const DECAP_MUTATORS = Object.keys(MUTATORS).filter((m) => m !== "encapIp");

/** One packet for prog: a valid flow, then (most of the time) 1-3 mutations. */
export function packet(
  rng: Rng,
  prog: string,
  cfg: Config,
  maps: Maps,
): { input: Input; mutations: string[] } {
  const isEncap = prog.startsWith("ovl_encap");
  const input = isEncap ? encapFlow(rng, cfg, maps) : decapFlow(rng, cfg, maps);
  const mutations: string[] = [];
  if (rng.chance(0.7)) {
    let b = Buffer.from(input.frame);
    for (let i = rng.range(1, 3); i > 0; i--) {
      const m = rng.pick(isEncap ? ENCAP_MUTATORS : DECAP_MUTATORS);
      b = Buffer.from((MUTATORS[m] as Mutator)(rng, b, cfg));
      mutations.push(m);
    }
    input.frame = b.length < 14 ? Buffer.concat([b, Buffer.alloc(14 - b.length)]) : b;
  }
  if (prog === "ovl_decap_dev") input.frame = Buffer.from(input.frame.subarray(INNER_ETH));
  if (input.frame.length < 14)
    input.frame = Buffer.concat([input.frame, Buffer.alloc(14 - input.frame.length)]);
  return { input, mutations };
}
