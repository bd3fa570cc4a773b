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
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
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

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function parseMac(s: string, field = "mac"): Buffer {
  if (!MAC_RE.test(s))
    throw new ConfigError(field, `"${s}" is not a MAC address aa:bb:cc:dd:ee:ff`);
  return Buffer.from(s.split(":").map((h) => parseInt(h, 16)));
}

export function formatMac(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}
