// Encoding and decoding of every map key and value, from the generated ABI.
// Byte order is spelled out per field, as abi.h documents it: `__be32` fields
// are written big-endian, host-order fields in the machine's order.
import { endianness } from "node:os";
import { ENUMS, RODATA, STRUCTS } from "./abi.generated";
import { Cidr, formatMac, formatMacAt, parseMac, writeMac, type Ip4 } from "../net/ip";

const LE = endianness() === "LE";

export function hostU32(b: Buffer, off: number, v: number): void {
  if (LE) b.writeUInt32LE(v >>> 0, off);
  else b.writeUInt32BE(v >>> 0, off);
}
export function readHostU32(b: Buffer, off: number): number {
  return LE ? b.readUInt32LE(off) : b.readUInt32BE(off);
}
export function hostU16(b: Buffer, off: number, v: number): void {
  if (LE) b.writeUInt16LE(v, off);
  else b.writeUInt16BE(v, off);
}
export function readHostU16(b: Buffer, off: number): number {
  return LE ? b.readUInt16LE(off) : b.readUInt16BE(off);
}
function readHostU64(b: Buffer, off: number): bigint {
  return LE ? b.readBigUInt64LE(off) : b.readBigUInt64BE(off);
}

export const F_LOCAL = ENUMS.ovl_subnet_flags.OVL_F_LOCAL;
export const F_DIRECT = ENUMS.ovl_subnet_flags.OVL_F_DIRECT;
export const ENCAP_OVERHEAD = ENUMS.ovl_wire.OVL_ENCAP_OVERHEAD;
export const DROP_MAX = ENUMS.ovl_drop_reason.OVL_DROP_MAX;
export const DIR_MAX = ENUMS.ovl_dir.OVL_DIR_MAX;

/** What the data path does for a subnet: send to this host (or keep, LOCAL). */
export interface HostEntry {
  remoteIp: Ip4;
  vtepMac: string;
  flags: number;
}

export interface Counter {
  packets: bigint;
  bytes: bigint;
}

export interface PeerCounters {
  txPackets: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  rxBytes: bigint;
}

export interface Endpoint {
  ifindex: number;
  podMac: string;
  hostMac: string;
}

/** A __u32 array index (host order). */
export function encodeIndex(n: number): Buffer {
  const b = Buffer.alloc(4);
  hostU32(b, 0, n);
  return b;
}

// --- ip keys (__be32) ------------------------------------------------------
export function encodeIp(ip: Ip4): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(ip >>> 0); // network order
  return b;
}
/** encodeIp into b at off (batch writes fill one buffer for many keys). */
export function encodeIpInto(ip: Ip4, b: Buffer, off: number): void {
  b.writeUInt32BE(ip >>> 0, off);
}
export function decodeIp(b: Buffer, off = 0): Ip4 {
  return b.readUInt32BE(off);
}

// --- ovl_subnet_key ----------------------------------------------------------
const K = STRUCTS.ovl_subnet_key;
export const SUBNET_KEY_SIZE = K.size;
export function encodeSubnetKey(c: Cidr): Buffer {
  const b = Buffer.alloc(K.size);
  encodeSubnetKeyInto(c, b, 0);
  return b;
}
export function encodeSubnetKeyInto(c: Cidr, b: Buffer, off: number): void {
  hostU32(b, off + K.fields.prefixlen.offset, c.prefixlen);
  b.writeUInt32BE(c.addr >>> 0, off + K.fields.addr.offset); // network order
}
/** An LPM lookup key for one address (/32 finds the longest prefix). */
export function encodeLookupKey(ip: Ip4): Buffer {
  return encodeSubnetKey(Cidr.of(ip, 32));
}
export function decodeSubnetKey(b: Buffer, off = 0): Cidr {
  return Cidr.of(
    b.readUInt32BE(off + K.fields.addr.offset),
    readHostU32(b, off + K.fields.prefixlen.offset),
  );
}

// --- ovl_subnet_val ----------------------------------------------------------
const V = STRUCTS.ovl_subnet_val;
export const HOST_ENTRY_SIZE = V.size;
export function encodeHostEntry(h: HostEntry): Buffer {
  const b = Buffer.alloc(V.size);
  encodeHostEntryInto(h, b, 0);
  return b;
}
export function encodeHostEntryInto(h: HostEntry, b: Buffer, off: number): void {
  b.writeUInt32BE(h.remoteIp >>> 0, off + V.fields.remote_ip.offset);
  writeMac(h.vtepMac, b, off + V.fields.vtep_mac.offset, "VtepMAC");
  hostU16(b, off + V.fields.flags.offset, h.flags);
}
export function decodeHostEntry(b: Buffer, off = 0): HostEntry {
  const m = off + V.fields.vtep_mac.offset;
  return {
    remoteIp: b.readUInt32BE(off + V.fields.remote_ip.offset),
    vtepMac: formatMacAt(b, m),
    flags: readHostU16(b, off + V.fields.flags.offset),
  };
}

/**
 * The fields of an ovl_subnets key and value at offsets into batch buffers,
 * for readers of the whole map that want no object per entry (a 65,536-entry
 * `map dump -o json`).
 */
export const subnetAt = {
  addr: (k: Buffer, off: number): Ip4 => k.readUInt32BE(off + K.fields.addr.offset),
  prefixlen: (k: Buffer, off: number): number => readHostU32(k, off + K.fields.prefixlen.offset),
  remoteIp: (v: Buffer, off: number): Ip4 => v.readUInt32BE(off + V.fields.remote_ip.offset),
  flags: (v: Buffer, off: number): number => readHostU16(v, off + V.fields.flags.offset),
  /** The VTEP MAC's 6 bytes start here. */
  macOffset: V.fields.vtep_mac.offset,
};

// --- ovl_peer ----------------------------------------------------------------
const P = STRUCTS.ovl_peer;
export const PEER_SIZE = P.size;
export function encodePeer(c: Cidr): Buffer {
  const b = Buffer.alloc(P.size);
  encodePeerInto(c, b, 0);
  return b;
}
export function encodePeerInto(c: Cidr, b: Buffer, off: number): void {
  b.writeUInt32BE(c.addr >>> 0, off + P.fields.subnet.offset);
  hostU32(b, off + P.fields.prefixlen.offset, c.prefixlen);
}
export function decodePeer(b: Buffer): Cidr {
  return Cidr.of(b.readUInt32BE(P.fields.subnet.offset), readHostU32(b, P.fields.prefixlen.offset));
}

// --- ovl_endpoint --------------------------------------------------------------
const E = STRUCTS.ovl_endpoint;
export function encodeEndpoint(e: Endpoint): Buffer {
  const b = Buffer.alloc(E.size);
  hostU32(b, E.fields.ifindex.offset, e.ifindex);
  parseMac(e.podMac, "pod MAC").copy(b, E.fields.pod_mac.offset);
  parseMac(e.hostMac, "host MAC").copy(b, E.fields.host_mac.offset);
  return b;
}
export function decodeEndpoint(b: Buffer): Endpoint {
  const f = E.fields;
  return {
    ifindex: readHostU32(b, f.ifindex.offset),
    podMac: formatMac(b.subarray(f.pod_mac.offset, f.pod_mac.offset + 6)),
    hostMac: formatMac(b.subarray(f.host_mac.offset, f.host_mac.offset + 6)),
  };
}

// --- per-CPU counters ----------------------------------------------------------
/** Per-CPU values are laid out one per possible CPU, each rounded up to 8. */
export function percpuStride(valueSize: number): number {
  return Math.ceil(valueSize / 8) * 8;
}

const EB = STRUCTS.ovl_ev_bucket;
/** The per-CPU event buckets' suppressed counts, summed. */
export function sumSuppressed(b: Buffer, ncpu: number): { drop: bigint; trace: bigint } {
  const stride = percpuStride(EB.size);
  let drop = 0n;
  let trace = 0n;
  for (let i = 0; i < ncpu; i++) {
    drop += readHostU64(b, i * stride + EB.fields.suppressed_drop.offset);
    trace += readHostU64(b, i * stride + EB.fields.suppressed_trace.offset);
  }
  return { drop, trace };
}

const C = STRUCTS.ovl_counter;
export function sumCounters(b: Buffer, ncpu: number): Counter {
  const stride = percpuStride(C.size);
  let packets = 0n;
  let bytes = 0n;
  for (let i = 0; i < ncpu; i++) {
    packets += readHostU64(b, i * stride + C.fields.packets.offset);
    bytes += readHostU64(b, i * stride + C.fields.bytes.offset);
  }
  return { packets, bytes };
}

const PC = STRUCTS.ovl_peer_counters;
/** The counters' offsets in 32-bit words (each is a naturally aligned __u64). */
const PC_TX_PACKETS = PC.fields.tx_packets.offset / 4;
const PC_TX_BYTES = PC.fields.tx_bytes.offset / 4;
const PC_RX_PACKETS = PC.fields.rx_packets.offset / 4;
const PC_RX_BYTES = PC.fields.rx_bytes.offset / 4;

/** A 32-bit view of b (kept for the last buffer: a scrape reads one batch
 * buffer entry by entry), or undefined when b is not 4-byte aligned. */
let wordsOf: Buffer | undefined;
let wordsView: Uint32Array | undefined;
function words(b: Buffer): Uint32Array | undefined {
  if (b !== wordsOf) {
    wordsOf = b;
    wordsView =
      b.byteOffset % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.length >> 2) : undefined;
  }
  return wordsView;
}
const u64 = (b: Buffer, off: number): number =>
  LE
    ? b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 4294967296
    : b.readUInt32BE(off) * 4294967296 + b.readUInt32BE(off + 4);

/**
 * sumPeerCounters as Numbers into out[tx packets, tx bytes, rx packets, rx
 * bytes]: exact below 2^53, and no BigInt per value, for a scrape that
 * ranks 65,536 peers.
 */
export function sumPeerCountersInto(b: Buffer, ncpu: number, off: number, out: Float64Array): void {
  const stride = percpuStride(PC.size);
  out.fill(0);
  const w = LE && off % 4 === 0 ? words(b) : undefined;
  if (w) {
    // The same sums, through a 32-bit view of the buffer: a scrape of 65,536
    // peers on 2 CPUs is a million readUInt32LE calls otherwise.
    for (let i = 0; i < ncpu; i++) {
      const o = (off + i * stride) >> 2;
      out[0] +=
        (w[o + PC_TX_PACKETS] as number) + (w[o + PC_TX_PACKETS + 1] as number) * 4294967296;
      out[1] += (w[o + PC_TX_BYTES] as number) + (w[o + PC_TX_BYTES + 1] as number) * 4294967296;
      out[2] +=
        (w[o + PC_RX_PACKETS] as number) + (w[o + PC_RX_PACKETS + 1] as number) * 4294967296;
      out[3] += (w[o + PC_RX_BYTES] as number) + (w[o + PC_RX_BYTES + 1] as number) * 4294967296;
    }
    return;
  }
  for (let i = 0; i < ncpu; i++) {
    const o = off + i * stride;
    out[0] += u64(b, o + PC.fields.tx_packets.offset);
    out[1] += u64(b, o + PC.fields.tx_bytes.offset);
    out[2] += u64(b, o + PC.fields.rx_packets.offset);
    out[3] += u64(b, o + PC.fields.rx_bytes.offset);
  }
}

export function sumPeerCounters(b: Buffer, ncpu: number, off = 0): PeerCounters {
  const stride = percpuStride(PC.size);
  const r: PeerCounters = { txPackets: 0n, txBytes: 0n, rxPackets: 0n, rxBytes: 0n };
  for (let i = 0; i < ncpu; i++) {
    const o = off + i * stride;
    r.txPackets += readHostU64(b, o + PC.fields.tx_packets.offset);
    r.txBytes += readHostU64(b, o + PC.fields.tx_bytes.offset);
    r.rxPackets += readHostU64(b, o + PC.fields.rx_packets.offset);
    r.rxBytes += readHostU64(b, o + PC.fields.rx_bytes.offset);
  }
  return r;
}

/** Drop reasons by number, with their names in snake_case ("wrong_vni"). */
export const DROP_REASONS: ReadonlyMap<number, string> = new Map(
  Object.entries(ENUMS.ovl_drop_reason)
    .filter(([k]) => k !== "OVL_DROP_MAX")
    .map(([k, v]) => [v, k.replace(/^OVL_DROP_/, "").toLowerCase()]),
);

export const DIRECTIONS: ReadonlyMap<number, string> = new Map([
  [ENUMS.ovl_dir.OVL_DIR_TX, "tx"],
  [ENUMS.ovl_dir.OVL_DIR_RX, "rx"],
  [ENUMS.ovl_dir.OVL_DIR_DIRECT, "direct"],
]);

export function dropIndex(dir: number, reason: number): number {
  return dir * DROP_MAX + reason;
}

/** What the programs' load-time constants are made from. */
export interface RodataConfig {
  vni: number;
  port: number;
  localIp: Ip4;
  underlay: { ifindex: number; mac: string };
  overlay: { ifindex: number; mac: string };
  /** The overlay device decapsulates what ovl_decap_tc leaves to it. */
  kernelDecap: boolean;
  /** VXLAN Group Based Policy (Backend.GBP). */
  gbp?: boolean;
  /** Our underlay IPv6 (PublicIPv6), 16 bytes in network order; absent: no IPv6. */
  localIp6?: Buffer;
}

/** Builds the .rodata image from the generated layout. */
export function rodataImage(c: RodataConfig): Buffer {
  const b = Buffer.alloc(RODATA.size);
  const v = RODATA.vars;
  hostU32(b, v.ovl_cfg_vni.offset, c.vni);
  hostU16(b, v.ovl_cfg_port.offset, c.port);
  b.writeUInt32BE(c.localIp >>> 0, v.ovl_cfg_local_ip.offset); // network order
  hostU32(b, v.ovl_cfg_underlay_ifindex.offset, c.underlay.ifindex);
  hostU32(b, v.ovl_cfg_overlay_ifindex.offset, c.overlay.ifindex);
  parseMac(c.overlay.mac, "overlay MAC").copy(b, v.ovl_cfg_vtep_mac.offset);
  parseMac(c.underlay.mac, "underlay MAC").copy(b, v.ovl_cfg_underlay_mac.offset);
  const F = ENUMS.ovl_cfg_flags;
  hostU32(
    b,
    v.ovl_cfg_flags.offset,
    (c.kernelDecap ? F.OVL_CFG_KERNEL_DECAP : 0) | (c.gbp ? F.OVL_CFG_GBP : 0),
  );
  if (c.localIp6) {
    if (c.localIp6.length !== v.ovl_cfg_local_ip6.size) {
      throw new RangeError(`local IPv6 address: ${c.localIp6.length} bytes, want 16`);
    }
    c.localIp6.copy(b, v.ovl_cfg_local_ip6.offset);
  }
  return b;
}
