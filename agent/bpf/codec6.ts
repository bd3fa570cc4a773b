// Byte layouts of the IPv6 maps (bpf/include/abi.h: ovl_subnets6, ovl_peers6,
// ovl_peer_stats6, ovl_endpoints6), from the generated ABI. Addresses are
// 16 bytes in network order; counters and endpoint values are the IPv4
// maps' own (codec.ts).
import { ENUMS, STRUCTS } from "./abi.generated";
import { hostU16, hostU32, readHostU16, readHostU32 } from "./codec";
import { formatMac, writeMac } from "../net/ip";
import { Cidr6, ip6FromBytes, ip6ToBytes, type Ip6 } from "../net/ip6";

export const ENCAP6_OVERHEAD = ENUMS.ovl_wire.OVL_ENCAP6_OVERHEAD;

/** What ovl_subnets6 says of a subnet: the host's PublicIPv6 and VtepMAC. */
export interface HostEntry6 {
  remoteIp: Ip6;
  vtepMac: string;
  flags: number;
}

// --- struct ovl_ip6 (keys of ovl_peers6, ovl_peer_stats6, ovl_endpoints6) ---
export function encodeIp6(ip: Ip6): Buffer {
  return ip6ToBytes(ip);
}
export function encodeIp6Into(ip: Ip6, b: Buffer, off: number): void {
  b.writeBigUInt64BE(ip >> 64n, off);
  b.writeBigUInt64BE(ip & 0xffffffffffffffffn, off + 8);
}
export function decodeIp6(b: Buffer, off = 0): Ip6 {
  return ip6FromBytes(b.subarray(off, off + 16));
}

// --- ovl_subnet6_key ---------------------------------------------------------
const K = STRUCTS.ovl_subnet6_key;
export const SUBNET6_KEY_SIZE = K.size;
export function encodeSubnet6Key(c: Cidr6): Buffer {
  const b = Buffer.alloc(K.size);
  encodeSubnet6KeyInto(c, b, 0);
  return b;
}
export function encodeSubnet6KeyInto(c: Cidr6, b: Buffer, off: number): void {
  hostU32(b, off + K.fields.prefixlen.offset, c.prefixlen);
  encodeIp6Into(c.addr, b, off + K.fields.addr.offset);
}
/** An LPM lookup key for one address (/128 finds the longest prefix). */
export function encodeLookup6Key(ip: Ip6): Buffer {
  return encodeSubnet6Key(Cidr6.of(ip, 128));
}
export function decodeSubnet6Key(b: Buffer): Cidr6 {
  return Cidr6.of(decodeIp6(b, K.fields.addr.offset), readHostU32(b, K.fields.prefixlen.offset));
}

// --- ovl_subnet6_val ---------------------------------------------------------
const V = STRUCTS.ovl_subnet6_val;
export const HOST_ENTRY6_SIZE = V.size;
export function encodeHostEntry6(h: HostEntry6): Buffer {
  const b = Buffer.alloc(V.size);
  encodeHostEntry6Into(h, b, 0);
  return b;
}
export function encodeHostEntry6Into(h: HostEntry6, b: Buffer, off: number): void {
  encodeIp6Into(h.remoteIp, b, off + V.fields.remote_ip.offset);
  writeMac(h.vtepMac, b, off + V.fields.vtep_mac.offset, "VtepMAC");
  hostU16(b, off + V.fields.flags.offset, h.flags);
}
export function decodeHostEntry6(b: Buffer): HostEntry6 {
  const m = V.fields.vtep_mac;
  return {
    remoteIp: decodeIp6(b, V.fields.remote_ip.offset),
    vtepMac: formatMac(b.subarray(m.offset, m.offset + m.size)),
    flags: readHostU16(b, V.fields.flags.offset),
  };
}

// --- ovl_peer6 -----------------------------------------------------------------
const P = STRUCTS.ovl_peer6;
export const PEER6_SIZE = P.size;
export function encodePeer6(c: Cidr6): Buffer {
  const b = Buffer.alloc(P.size);
  encodePeer6Into(c, b, 0);
  return b;
}
export function encodePeer6Into(c: Cidr6, b: Buffer, off: number): void {
  encodeIp6Into(c.addr, b, off + P.fields.subnet.offset);
  hostU32(b, off + P.fields.prefixlen.offset, c.prefixlen);
}
export function decodePeer6(b: Buffer): Cidr6 {
  return Cidr6.of(decodeIp6(b, P.fields.subnet.offset), readHostU32(b, P.fields.prefixlen.offset));
}
