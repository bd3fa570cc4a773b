// IPv6 arithmetic, the counterpart of ip.ts (which stays IPv4 only). Pure: no
// I/O. An address is a bigint of 128 bits; text is RFC 4291 on input and
// RFC 5952 canonical on output (lower case, no leading zeros, the longest run
// of two or more zero groups as "::", the first on a tie), which is also what
// Go's net.IP prints, so flannel's lease keys and JSON compare byte for byte.
import { ConfigError } from "../errors";
import { formatIp, type Ip4 } from "./ip";

/** An IPv6 address as an unsigned 128-bit number. */
export type Ip6 = bigint;

const BITS = 128n;
const ALL = (1n << BITS) - 1n;
const IPV4_TAIL = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const GROUP = /^[0-9a-f]{1,4}$/i;

function bad(s: string, field: string, why: string): ConfigError {
  return new ConfigError(field, `"${s}" is not an IPv6 address (${why})`);
}

/** The 16-bit groups of one side of "::", with an IPv4 tail allowed last. */
function groupsOf(part: string, s: string, field: string, last: boolean): number[] {
  if (part === "") return [];
  const out: number[] = [];
  const items = part.split(":");
  items.forEach((g, i) => {
    const m = last && i === items.length - 1 ? IPV4_TAIL.exec(g) : null;
    if (m) {
      const b = m.slice(1, 5).map(Number);
      if (b.some((x) => x > 255)) throw bad(s, field, `bad IPv4 part "${g}"`);
      out.push(
        ((b[0] as number) << 8) | (b[1] as number),
        ((b[2] as number) << 8) | (b[3] as number),
      );
    } else if (GROUP.test(g)) {
      out.push(parseInt(g, 16));
    } else {
      throw bad(s, field, g === "" ? "empty group" : `bad group "${g}"`);
    }
  });
  return out;
}

/** Parses "fc00::1", "fc00:0:0:1::", "::ffff:10.0.0.1". No zones, no brackets. */
export function parseIp6(s: string, field = "address"): Ip6 {
  const t = s.trim();
  if (t === "" || !/^[0-9a-f:.]+$/i.test(t)) throw bad(s, field, "only hex digits, ':' and '.'");
  const halves = t.split("::");
  if (halves.length > 2) throw bad(s, field, '"::" appears more than once');
  let groups: number[];
  if (halves.length === 2) {
    const head = groupsOf(halves[0] as string, s, field, false);
    const tail = groupsOf(halves[1] as string, s, field, true);
    if (head.length + tail.length > 7) throw bad(s, field, 'too many groups with "::"');
    groups = [...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    groups = groupsOf(t, s, field, true);
    if (groups.length !== 8) throw bad(s, field, `${groups.length} groups, want 8`);
  }
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/** True when `s` parses as an IPv6 address. */
export function isIp6(s: string): boolean {
  try {
    parseIp6(s);
    return true;
  } catch {
    return false;
  }
}

function groups(n: Ip6): number[] {
  const out: number[] = [];
  for (let i = 7; i >= 0; i--) out.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  return out;
}

/**
 * RFC 5952 text. IPv4-mapped addresses (::ffff:0:0/96) end in dotted
 * IPv4, as section 5 recommends; config.ts refuses them for networks, so
 * lease keys never carry one (flannel's key pattern allows hex only).
 */
export function formatIp6(n: Ip6): string {
  if (n < 0n || n > ALL) throw new RangeError(`${n} is not a 128-bit address`);
  const g = groups(n);
  if (n >> 32n === 0xffffn) {
    const v4 = Number(n & 0xffffffffn);
    return `::ffff:${[v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255].join(".")}`;
  }
  // The longest run of zero groups (two or more), the first on a tie.
  let best = -1,
    bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** Network order, as the kernel and BPF maps hold it. */
export function ip6ToBytes(n: Ip6): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(n >> 64n, 0);
  b.writeBigUInt64BE(n & 0xffffffffffffffffn, 8);
  return b;
}

export function ip6FromBytes(b: Uint8Array): Ip6 {
  if (b.length !== 16) throw new RangeError(`an IPv6 address is 16 bytes, got ${b.length}`);
  const v = Buffer.from(b.buffer, b.byteOffset, 16);
  return (v.readBigUInt64BE(0) << 64n) | v.readBigUInt64BE(8);
}

export function maskOf6(prefixlen: number): Ip6 {
  return prefixlen === 0 ? 0n : (ALL << BigInt(128 - prefixlen)) & ALL;
}

/** An IPv6 network: `addr` has no bits set beyond the prefix. */
export class Cidr6 {
  private constructor(
    readonly addr: Ip6,
    readonly prefixlen: number,
  ) {}

  static of(addr: Ip6, prefixlen: number): Cidr6 {
    if (!Number.isInteger(prefixlen) || prefixlen < 0 || prefixlen > 128) {
      throw new ConfigError("prefix", `length ${prefixlen} is not within 0..128`);
    }
    if (addr < 0n || addr > ALL)
      throw new ConfigError("prefix", `${addr} is not a 128-bit address`);
    return new Cidr6(addr & maskOf6(prefixlen), prefixlen);
  }

  /** Parses "fc00::/48"; with strict, host bits must be zero. */
  static parse(s: string, field = "network", strict = true): Cidr6 {
    const m = /^([^/]+)\/(\d{1,3})$/.exec(s.trim());
    if (!m) throw new ConfigError(field, `"${s}" is not in CIDR form addr/len (e.g. "fc00::/48")`);
    const addr = parseIp6(m[1] as string, field);
    const len = Number(m[2]);
    if (len > 128) throw new ConfigError(field, `"${s}": prefix length must be 0..128`);
    const c = Cidr6.of(addr, len);
    if (strict && c.addr !== addr) {
      throw new ConfigError(field, `"${s}" has host bits set (network is ${c.toString()})`);
    }
    return c;
  }

  get mask(): Ip6 {
    return maskOf6(this.prefixlen);
  }
  /** Addresses in the network (2^(128-len)). */
  get size(): bigint {
    return 1n << BigInt(128 - this.prefixlen);
  }
  get last(): Ip6 {
    return this.addr + this.size - 1n;
  }
  contains(ip: Ip6): boolean {
    return (ip & this.mask) === this.addr;
  }
  covers(other: Cidr6): boolean {
    return other.prefixlen >= this.prefixlen && this.contains(other.addr);
  }
  overlaps(other: Cidr6): boolean {
    return this.covers(other) || other.covers(this);
  }
  equals(other: Cidr6): boolean {
    return this.addr === other.addr && this.prefixlen === other.prefixlen;
  }
  /** The network of the same length right after this one; undefined past ffff:...:ffff. */
  next(): Cidr6 | undefined {
    const a = this.addr + this.size;
    return a > ALL ? undefined : new Cidr6(a, this.prefixlen);
  }
  toString(): string {
    return `${formatIp6(this.addr)}/${this.prefixlen}`;
  }
  /** flannel's etcd key form of the IPv6 half: fc00:0:0:1::-64 */
  toKey(): string {
    return `${formatIp6(this.addr)}-${this.prefixlen}`;
  }
}

/** The subnets of length `len` from `min` to `max` (both subnet addresses), in order. */
export function* subnets6(min: Ip6, max: Ip6, len: number): Generator<Cidr6> {
  for (let c: Cidr6 | undefined = Cidr6.of(min, len); c && c.addr <= max; c = c.next()) yield c;
}

/** ::ffff:0:0/96, IPv4 addresses in IPv6 form (RFC 4291 2.5.5.2). */
export const IPV4_MAPPED = Cidr6.of(0xffff00000000n, 96);
/** ff00::/8, multicast: never masqueraded (flannel's rule). */
export const MULTICAST6 = Cidr6.of(0xffn << 120n, 8);

/** An address of either family as text (IPv4 numbers, IPv6 bigints). */
export function formatAddr(ip: Ip4 | Ip6): string {
  return typeof ip === "bigint" ? formatIp6(ip) : formatIp(ip);
}
