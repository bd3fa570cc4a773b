// IPv4 and MAC arithmetic. Pure: no I/O, no kernel, used by every layer.
import { ConfigError } from "../errors";

/** An IPv4 address as an unsigned 32-bit number (host arithmetic). */
export type Ip4 = number;

const IPV4_RE = /^\s*(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\s*$/;

export function parseIp(s: string, field = "address"): Ip4 {
  const m = IPV4_RE.exec(s);
  if (m) {
    const a = +(m[1] as string),
      b = +(m[2] as string),
      c = +(m[3] as string),
      d = +(m[4] as string);
    if (a < 256 && b < 256 && c < 256 && d < 256)
      return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  }
  throw new ConfigError(field, `"${s}" is not an IPv4 address`);
}

export function formatIp(n: Ip4): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function maskOf(prefixlen: number): number {
  return prefixlen === 0 ? 0 : (0xffffffff << (32 - prefixlen)) >>> 0;
}

/** An IPv4 network: `addr` has no bits set beyond the prefix. */
export class Cidr {
  private constructor(
    readonly addr: Ip4,
    readonly prefixlen: number,
  ) {}

  static of(addr: Ip4, prefixlen: number): Cidr {
    if (!Number.isInteger(prefixlen) || prefixlen < 0 || prefixlen > 32) {
      throw new ConfigError("prefix", `length ${prefixlen} is not within 0..32`);
    }
    return new Cidr((addr & maskOf(prefixlen)) >>> 0, prefixlen);
  }

  /** Parses "10.5.0.0/16"; with strict, host bits must be zero. */
  static parse(s: string, field = "network", strict = true): Cidr {
    const m = /^([^/]+)\/(\d{1,2})$/.exec(s.trim());
    if (!m) throw new ConfigError(field, `"${s}" is not in CIDR form a.b.c.d/len`);
    const addr = parseIp(m[1] as string, field);
    const len = Number(m[2]);
    if (len > 32) throw new ConfigError(field, `"${s}": prefix length must be 0..32`);
    const c = Cidr.of(addr, len);
    if (strict && c.addr !== addr) {
      throw new ConfigError(field, `"${s}" has host bits set (network is ${c.toString()})`);
    }
    return c;
  }

  get mask(): number {
    return maskOf(this.prefixlen);
  }
  get size(): number {
    return 2 ** (32 - this.prefixlen);
  }
  get last(): Ip4 {
    return (this.addr + this.size - 1) >>> 0;
  }
  contains(ip: Ip4): boolean {
    return (ip & this.mask) >>> 0 === this.addr;
  }
  covers(other: Cidr): boolean {
    return other.prefixlen >= this.prefixlen && this.contains(other.addr);
  }
  equals(other: Cidr): boolean {
    return this.addr === other.addr && this.prefixlen === other.prefixlen;
  }
  toString(): string {
    return `${formatIp(this.addr)}/${this.prefixlen}`;
  }
  /** flannel's etcd key form: 10.5.1.0-24 */
  toKey(): string {
    return `${formatIp(this.addr)}-${this.prefixlen}`;
  }
}

export function parseMac(s: string, field = "mac"): Buffer {
  const b = Buffer.alloc(6);
  writeMac(s, b, 0, field);
  return b;
}

/** One hex digit's value, or -1. */
function hex(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  c |= 0x20; // lower case
  return c >= 97 && c <= 102 ? c - 87 : -1; // a-f
}

/**
 * Parses "aa:bb:cc:dd:ee:ff" into b[off..off+6), with parseMac's error. A
 * scan of the characters rather than a regex and a split: the map writes
 * of 65,536 leases parse one MAC each.
 */
export function writeMac(s: string, b: Uint8Array, off: number, field = "mac"): void {
  let ok = s.length === 17;
  for (let i = 0; ok && i < 6; i++) {
    const hi = hex(s.charCodeAt(i * 3));
    const lo = hex(s.charCodeAt(i * 3 + 1));
    if (hi < 0 || lo < 0 || (i < 5 && s.charCodeAt(i * 3 + 2) !== 58)) ok = false;
    else b[off + i] = hi * 16 + lo;
  }
  if (!ok) throw new ConfigError(field, `"${s}" is not a MAC address aa:bb:cc:dd:ee:ff`);
}

const HEX2 = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function formatMac(b: Uint8Array): string {
  return formatMacAt(b, 0);
}

/** The MAC at b[off..off+6). */
export function formatMacAt(b: Uint8Array, off: number): string {
  return `${HEX2[b[off] as number]}:${HEX2[b[off + 1] as number]}:${HEX2[b[off + 2] as number]}:${HEX2[b[off + 3] as number]}:${HEX2[b[off + 4] as number]}:${HEX2[b[off + 5] as number]}`;
}
