// Lease keys and values decoded straight from etcd's bytes, for listings of
// tens of thousands of leases. Pure.
//
// Nearly every lease in a cluster is in the one form flannel and overlayd
// write: "…/subnets/10.5.1.0-24" and
//   {"PublicIP":"172.31.0.2","PublicIPv6":null,"BackendType":"vxlan",
//    "BackendData":{"VNI":1,"VtepMAC":"0e:2a:00:00:00:01"}}
// (without "PublicIPv6" from flannel before dual-stack, without
// "BackendData" for host-gw). These read that form byte by byte into
// numbers, with no JSON.parse, regex or intermediate strings. Anything else
// (a dual-stack key, spaces, other fields or order, escapes, upper-case
// hex) is not theirs to judge: they return undefined, and lease.ts's
// parseLeaseKeyParts / decodeLeaseAttrs decide, with their error messages.
// What they do accept, they decode exactly as those would
// (test/unit/lease-bytes.test.ts checks both on the same inputs).
import { Cidr, maskOf, type Ip4 } from "../net/ip";
import { type LeaseAttrs } from "./lease";

const ascii = (s: string) => Buffer.from(s, "latin1");
const OPEN = ascii('{"PublicIP":"');
const PUBLIC_IPV6_NULL = ascii('","PublicIPv6":null,"BackendType":"');
const NO_IPV6 = ascii('","BackendType":"');
const CLOSE_NO_DATA = ascii('"}');
const DATA = ascii('","BackendData":{"VNI":');
const MAC = ascii(',"VtepMAC":"');
const CLOSE_DATA = ascii('"}}');

const DOT = 46;
const DASH = 45;
const QUOTE = 34;
const COLON = 58;

/** 1 for the bytes of "0-9a-f". */
const LOWER_HEX = new Uint8Array(256);
for (const c of "0123456789abcdef") LOWER_HEX[c.charCodeAt(0)] = 1;

// The two strings nearly every lease has, shared rather than made per lease.
const VXLAN = ascii("vxlan");
const HOST_GW = ascii("host-gw");

/** Does buf hold lit at pos (within end)? */
function at(buf: Buffer, pos: number, end: number, lit: Uint8Array): boolean {
  if (end - pos < lit.length) return false;
  for (let i = 0; i < lit.length; i++) if (buf[pos + i] !== lit[i]) return false;
  return true;
}

// Where the last ipv4() or decimal() stopped (a listing decodes 65,536
// keys and values: a second return value without an object per call).
let scanEnd = 0;

/**
 * A decimal number at buf[p..end) of 1..maxDigits digits below `limit`
 * (canonical: no leading zero), scanEnd after it; or -1.
 */
function decimal(
  buf: Buffer,
  p: number,
  end: number,
  maxDigits: number,
  limit: number,
  canonical: boolean,
): number {
  const start = p;
  let v = 0;
  for (; p < end; p++) {
    const c = buf[p] as number;
    if (c < 48 || c > 57) break;
    if (p - start === maxDigits) return -1;
    v = v * 10 + (c - 48);
  }
  if (p === start || v >= limit || (canonical && p - start > 1 && buf[start] === 48)) return -1;
  scanEnd = p;
  return v;
}

/** a.b.c.d at buf[p..end): each part 1-3 digits below 256, scanEnd after it; or -1. */
function ipv4(buf: Buffer, p: number, end: number, canonical: boolean): number {
  let ip = 0;
  for (let i = 0; i < 4; i++) {
    if (i > 0) {
      if (p >= end || buf[p] !== DOT) return -1;
      p++;
    }
    let v = 0;
    const start = p;
    for (; p < end; p++) {
      const c = buf[p] as number;
      if (c < 48 || c > 57) break;
      if (p - start === 3) return -1;
      v = v * 10 + (c - 48);
    }
    if (p === start || v > 255 || (canonical && p - start > 1 && buf[start] === 48)) return -1;
    ip = ip * 256 + v;
  }
  scanEnd = p;
  return ip;
}

/**
 * A v4-only lease key, "<prefix>a.b.c.d-len", in leaseKey()'s canonical
 * text, from key bytes buf[start..end) whose subnets prefix (subnetsPrefix()
 * as bytes) is `prefix`. Undefined: not this form (parseLeaseKeyParts
 * decides).
 */
export function leaseKeyFromBytes(
  buf: Buffer,
  start: number,
  end: number,
  prefix: Uint8Array,
): Cidr | undefined {
  if (!at(buf, start, end, prefix)) return undefined;
  const addr = ipv4(buf, start + prefix.length, end, true);
  if (addr < 0 || scanEnd >= end || buf[scanEnd] !== DASH) return undefined;
  const len = decimal(buf, scanEnd + 1, end, 2, 33, true);
  if (len < 0 || scanEnd !== end) return undefined;
  if ((addr & ~maskOf(len)) >>> 0 !== 0) return undefined; // host bits: not a lease key
  return Cidr.of(addr, len);
}

/**
 * flannel's lease JSON in the form it writes (see the top of this file),
 * from value bytes buf[start..end). Undefined: not this form
 * (decodeLeaseAttrs decides).
 */
export function leaseAttrsFromBytes(
  buf: Buffer,
  start: number,
  end: number,
): LeaseAttrs | undefined {
  if (!at(buf, start, end, OPEN)) return undefined;
  const publicIp: Ip4 = ipv4(buf, start + OPEN.length, end, false); // parseIp takes leading zeros
  if (publicIp < 0) return undefined;
  let p = scanEnd;
  if (at(buf, p, end, PUBLIC_IPV6_NULL)) p += PUBLIC_IPV6_NULL.length;
  else if (at(buf, p, end, NO_IPV6)) p += NO_IPV6.length;
  else return undefined;
  // BackendType: plain lower-case letters, digits and dashes ("vxlan", "host-gw").
  const typeStart = p;
  for (; p < end; p++) {
    const c = buf[p] as number;
    if (c === QUOTE) break;
    if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === DASH)) return undefined;
  }
  if (p >= end) return undefined;
  const n = p - typeStart;
  const backendType =
    n === VXLAN.length && at(buf, typeStart, p, VXLAN)
      ? "vxlan"
      : n === HOST_GW.length && at(buf, typeStart, p, HOST_GW)
        ? "host-gw"
        : buf.toString("latin1", typeStart, p);
  const attrs: LeaseAttrs = { publicIp, backendType };
  if (p + CLOSE_NO_DATA.length === end && at(buf, p, end, CLOSE_NO_DATA)) return attrs;
  if (!at(buf, p, end, DATA)) return undefined;
  const vni = decimal(buf, p + DATA.length, end, 10, 2 ** 32, true);
  if (vni < 0 || !at(buf, scanEnd, end, MAC)) return undefined;
  const mac = scanEnd + MAC.length;
  if (end - mac !== 17 + CLOSE_DATA.length || !at(buf, mac + 17, end, CLOSE_DATA)) return undefined;
  // Upper-case hex is decodeLeaseAttrs's to judge.
  for (let i = mac; i < mac + 17; i += 3) {
    if (!LOWER_HEX[buf[i] as number] || !LOWER_HEX[buf[i + 1] as number]) return undefined;
    if (i + 2 < mac + 17 && buf[i + 2] !== COLON) return undefined;
  }
  attrs.vni = vni;
  attrs.vtepMac = buf.toString("latin1", mac, mac + 17);
  return attrs;
}
