// Packet bytes for fixtures: Ethernet, IPv4 and IPv6 (with correct checksums
// unless told otherwise), UDP, ICMP echo, VXLAN. Pure; used by the BPF tier
// and by the hostile-packet tests.
import { parseIp } from "../../agent/net/ip";
import { ip6ToBytes, parseIp6, type Ip6 } from "../../agent/net/ip6";

export function mac(s: string): Buffer {
  // "aa:bb:cc:dd:ee:ff" as hex in one go (the fuzzer builds millions of frames)
  if (s.length === 17) return Buffer.from(s.replace(/:/g, ""), "hex");
  return Buffer.from(s.split(":").map((h) => parseInt(h, 16)));
}

export function eth(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

export function csum16(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += (b[b.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface Ipv4Opts {
  src: string;
  dst: string;
  proto: number;
  ttl?: number;
  tos?: number;
  id?: number;
  flags?: number; // high 3 bits of frag_off: 0x4000 DF, 0x2000 MF
  fragOffset?: number; // in 8-byte units
  options?: Buffer; // multiple of 4 bytes
  badChecksum?: boolean;
  totLen?: number; // override
}

export function ipv4(o: Ipv4Opts, payload: Buffer): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const hlen = 20 + opts.length;
  const h = Buffer.alloc(hlen);
  h[0] = 0x40 | (hlen / 4);
  h[1] = o.tos ?? 0;
  h.writeUInt16BE(o.totLen ?? hlen + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE((o.flags ?? 0) | (o.fragOffset ?? 0), 6);
  h[8] = o.ttl ?? 64;
  h[9] = o.proto;
  h.writeUInt32BE(parseIp(o.src), 12);
  h.writeUInt32BE(parseIp(o.dst), 16);
  opts.copy(h, 20);
  const c = csum16(h);
  h.writeUInt16BE(o.badChecksum ? c ^ 0xffff : c, 10);
  return Buffer.concat([h, payload]);
}

export function udp(sport: number, dport: number, payload: Buffer, lenOverride?: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(lenOverride ?? 8 + payload.length, 4);
  h.writeUInt16BE(0, 6); // no checksum, as VXLAN senders do over IPv4
  return Buffer.concat([h, payload]);
}

export function icmpEcho(id: number, seq: number, data: Buffer = Buffer.alloc(32, 0xab)): Buffer {
  const h = Buffer.alloc(8);
  h[0] = 8;
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(seq, 6);
  const b = Buffer.concat([h, data]);
  b.writeUInt16BE(csum16(b), 2);
  return b;
}

export function vxlan(vni: number, payload: Buffer, flags = 0x08, reserved = 0): Buffer {
  const h = Buffer.alloc(8);
  h[0] = flags;
  h.writeUInt32BE(((vni << 8) | (reserved & 0xff)) >>> 0, 4);
  return Buffer.concat([h, payload]);
}

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;

/** A complete VXLAN frame as a flannel or overlayd peer would send it. */
export function vxlanFrame(o: {
  outerSrc: string;
  outerDst: string;
  innerSrc: string;
  innerDst: string;
  vni?: number;
  port?: number;
  innerTtl?: number;
  innerMac?: string;
  outer?: Partial<Ipv4Opts>;
  vxlanFlags?: number;
  inner?: Buffer; // full inner Ethernet frame, overrides the ICMP echo
}): Buffer {
  const innerFrame =
    o.inner ??
    eth(
      o.innerMac ?? "02:00:00:00:00:01",
      "02:00:00:00:00:02",
      ETH_P_IP,
      ipv4({ src: o.innerSrc, dst: o.innerDst, proto: 1, ttl: o.innerTtl ?? 64 }, icmpEcho(7, 1)),
    );
  const v = vxlan(o.vni ?? 1, innerFrame, o.vxlanFlags ?? 0x08);
  const u = udp(40000, o.port ?? 8472, v);
  const ip = ipv4({ src: o.outerSrc, dst: o.outerDst, proto: 17, flags: 0x4000, ...o.outer }, u);
  return eth("02:aa:aa:aa:aa:01", "02:bb:bb:bb:bb:02", ETH_P_IP, ip);
}

// --- IPv6 ------------------------------------------------------------------------

/** An IPv6 address as text or as its number (the fuzzer's generators). */
export type Addr6 = string | Ip6;
const bytes6 = (a: Addr6): Buffer => ip6ToBytes(typeof a === "string" ? parseIp6(a) : a);

export interface Ipv6Opts {
  src: Addr6;
  dst: Addr6;
  next: number; // next header
  hop?: number;
  trafficClass?: number;
  payloadLen?: number; // override
}

export function ipv6(o: Ipv6Opts, payload: Buffer): Buffer {
  const h = Buffer.alloc(40);
  const tc = o.trafficClass ?? 0;
  h.writeUInt32BE(((6 << 28) | (tc << 20)) >>> 0, 0);
  h.writeUInt16BE(o.payloadLen ?? payload.length, 4);
  h[6] = o.next;
  h[7] = o.hop ?? 64;
  bytes6(o.src).copy(h, 8);
  bytes6(o.dst).copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** The upper-layer checksum over IPv6 (RFC 8200 8.1 pseudo-header). */
export function csum6(src: Addr6, dst: Addr6, next: number, l4: Buffer): number {
  const ph = Buffer.alloc(40);
  bytes6(src).copy(ph, 0);
  bytes6(dst).copy(ph, 16);
  ph.writeUInt32BE(l4.length, 32);
  ph[39] = next;
  return csum16(Buffer.concat([ph, l4]));
}

/** UDP over IPv6, with its checksum (0 only when told: RFC 8200 forbids it). */
export function udp6(
  src: Addr6,
  dst: Addr6,
  sport: number,
  dport: number,
  payload: Buffer,
  o: { lenOverride?: number; zeroChecksum?: boolean } = {},
): Buffer {
  const b = Buffer.concat([Buffer.alloc(8), payload]);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt16BE(o.lenOverride ?? b.length, 4);
  const c = o.zeroChecksum ? 0 : csum6(src, dst, 17, b) || 0xffff;
  b.writeUInt16BE(c, 6);
  return b;
}

export function icmp6Echo(src: Addr6, dst: Addr6, id: number, seq: number): Buffer {
  const b = Buffer.concat([Buffer.alloc(8), Buffer.alloc(32, 0xab)]);
  b[0] = 128; // echo request
  b.writeUInt16BE(id, 4);
  b.writeUInt16BE(seq, 6);
  b.writeUInt16BE(csum6(src, dst, 58, b), 2);
  return b;
}

/** A complete VXLAN frame over IPv6, as flannel-v6.1 or overlayd sends it. */
export function vxlan6Frame(o: {
  outerSrc: string;
  outerDst: string;
  innerSrc: string;
  innerDst: string;
  vni?: number;
  port?: number;
  innerHop?: number;
  innerMac?: string;
  vxlanFlags?: number;
  zeroChecksum?: boolean;
  udpLen?: number;
  payloadLen?: number;
  inner?: Buffer; // full inner Ethernet frame, overrides the ICMPv6 echo
}): Buffer {
  const innerFrame =
    o.inner ??
    eth(
      o.innerMac ?? "02:00:00:00:00:01",
      "02:00:00:00:00:02",
      ETH_P_IPV6,
      ipv6(
        { src: o.innerSrc, dst: o.innerDst, next: 58, hop: o.innerHop ?? 64 },
        icmp6Echo(o.innerSrc, o.innerDst, 7, 1),
      ),
    );
  const v = vxlan(o.vni ?? 1, innerFrame, o.vxlanFlags ?? 0x08);
  const u = udp6(o.outerSrc, o.outerDst, 40000, o.port ?? 8472, v, {
    lenOverride: o.udpLen,
    zeroChecksum: o.zeroChecksum,
  });
  const ip = ipv6({ src: o.outerSrc, dst: o.outerDst, next: 17, payloadLen: o.payloadLen }, u);
  return eth("02:aa:aa:aa:aa:01", "02:bb:bb:bb:bb:02", ETH_P_IPV6, ip);
}

/** A struct __sk_buff (6.x, 192 bytes) with gso_size/gso_segs set: a GRO'd or TSO super-packet. */
export function gsoCtx(gsoSize: number, segs: number): Buffer {
  const ctx = Buffer.alloc(192);
  ctx.writeUInt32LE(segs, 164); // gso_segs
  ctx.writeUInt32LE(gsoSize, 176); // gso_size
  return ctx;
}
