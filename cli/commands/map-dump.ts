// overlayctl map dump: the pinned subnet maps with live per-peer counters:
// the IPv4 subnets, then the IPv6 subnets of a dual-stack network (the same
// rows, with IPv6 subnets and PublicIPv6s).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { type SubnetEntry, SubnetHostMap, SubnetHostMap6 } from "../../agent/bpf/subnet-map";
import { MAPS } from "../../agent/bpf/abi.generated";
import { F_DIRECT, F_LOCAL, subnetAt } from "../../agent/bpf/codec";
import { writeMac, type Ip4 } from "../../agent/net/ip";
import { formatAddr, type Ip6 } from "../../agent/net/ip6";
import { outputOption, print, table, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
}

/** An entry of either family's subnet map, as a dump reads it. */
export interface DumpEntry {
  subnet: { toString(): string };
  host: { remoteIp: Ip4 | Ip6; vtepMac: string; flags: number };
}

/**
 * Every peer's live counters, as Numbers (exact below 2^53, as the JSON
 * always printed them): a BigInt per counter was a fifth of a 65,536-entry
 * dump.
 */
export class PeerCounts {
  private readonly at = new Map<Ip4 | Ip6, number>();
  /** tx packets, tx bytes, rx packets, rx bytes of each peer in turn */
  private readonly c: number[] = [];

  static read(
    ...maps: { eachPeer(fn: (ip: Ip4 | Ip6, c: Float64Array) => void): void }[]
  ): PeerCounts {
    const p = new PeerCounts();
    for (const m of maps) m.eachPeer((ip, c) => p.add(ip, c));
    return p;
  }

  /** read() of the maps side by side, the kernel's copies on worker threads. */
  static async readAsync(
    ...maps: { eachPeerAsync(fn: (ip: Ip4 | Ip6, c: Float64Array) => void): Promise<void> }[]
  ): Promise<PeerCounts> {
    const p = new PeerCounts();
    await Promise.all(maps.map((m) => m.eachPeerAsync((ip, c) => p.add(ip, c))));
    return p;
  }

  add(ip: Ip4 | Ip6, c: ArrayLike<number>): void {
    if (!c[0] && !c[1] && !c[2] && !c[3]) return; // absent reads as zeros
    this.at.set(ip, this.c.length);
    this.c.push(c[0] as number, c[1] as number, c[2] as number, c[3] as number);
  }

  /** Where the counters of a host's entry are (for counter()), or -1 for zeros. */
  index(remoteIp: Ip4 | Ip6, flags: number): number {
    return flags & F_LOCAL ? -1 : (this.at.get(remoteIp) ?? -1);
  }

  /** Counter k (0 tx packets, 1 tx bytes, 2 rx packets, 3 rx bytes) at index i. */
  counter(i: number, k: number): number {
    return i < 0 ? 0 : (this.c[i + k] as number);
  }
}

function flagsOf(flags: number): string[] {
  const out: string[] = [];
  if (flags & F_LOCAL) out.push("local");
  if (flags & F_DIRECT) out.push("direct"); // sent without VXLAN (host-gw, DirectRouting)
  return out;
}

/** The rows, sorted by subnet (the table, and what -o json prints). */
export function dumpRows(entries: DumpEntry[], peers: PeerCounts) {
  return entries.map((e) => {
    const i = peers.index(e.host.remoteIp, e.host.flags);
    return {
      subnet: e.subnet.toString(),
      remoteIp: formatAddr(e.host.remoteIp),
      vtepMac: e.host.vtepMac,
      flags: flagsOf(e.host.flags),
      txPackets: peers.counter(i, 0),
      txBytes: peers.counter(i, 1),
      rxPackets: peers.counter(i, 2),
      rxBytes: peers.counter(i, 3),
    };
  });
}

/** The map in columns (-o json reads 65,536 entries without an object each). */
export class EntryColumns {
  n = 0;
  readonly addr: Uint32Array;
  readonly prefixlen: Uint8Array;
  readonly remoteIp: Uint32Array;
  readonly flags: Uint16Array;
  readonly mac: Uint8Array;

  constructor(capacity: number) {
    this.addr = new Uint32Array(capacity);
    this.prefixlen = new Uint8Array(capacity);
    this.remoteIp = new Uint32Array(capacity);
    this.flags = new Uint16Array(capacity);
    this.mac = new Uint8Array(capacity * 6);
  }

  /** The map's entries, the kernel's copy on a worker thread (BpfMap.forEachAsync). */
  static async read(map: SubnetHostMap, capacity: number): Promise<EntryColumns> {
    const t = new EntryColumns(capacity);
    await map.forEachEntryAsync((k, ko, v, vo) => {
      const i = t.n++;
      t.addr[i] = subnetAt.addr(k, ko);
      t.prefixlen[i] = subnetAt.prefixlen(k, ko);
      t.remoteIp[i] = subnetAt.remoteIp(v, vo);
      t.flags[i] = subnetAt.flags(v, vo);
      const m = vo + subnetAt.macOffset;
      t.mac.set(v.subarray(m, m + 6), i * 6);
    });
    return t;
  }

  static of(entries: SubnetEntry[]): EntryColumns {
    const t = new EntryColumns(entries.length);
    for (const e of entries) {
      const i = t.n++;
      t.addr[i] = e.subnet.addr;
      t.prefixlen[i] = e.subnet.prefixlen;
      t.remoteIp[i] = e.host.remoteIp;
      t.flags[i] = e.host.flags;
      writeMac(e.host.vtepMac, t.mac, i * 6);
    }
    return t;
  }

  /** Entry indexes sorted by subnet address, then prefix length (as list()). */
  order(): number[] {
    const idx = Array.from({ length: this.n }, (_, i) => i);
    const a = this.addr;
    const l = this.prefixlen;
    return idx.sort(
      (x, y) => (a[x] as number) - (a[y] as number) || (l[x] as number) - (l[y] as number),
    );
  }
}

const ascii = (s: string) => Uint8Array.from(Buffer.from(s, "latin1"));
const ROW_SUBNET = ascii('  {\n    "subnet": "');
const ROW_REMOTE = ascii('",\n    "remoteIp": "');
const ROW_MAC = ascii('",\n    "vtepMac": "');
const ROW_FLAGS = ascii('",\n    "flags": ');
const ROW_COUNTERS = ["txPackets", "txBytes", "rxPackets", "rxBytes"].map((k) =>
  ascii(`,\n    "${k}": `),
);
const ROW_END = ascii("\n  }");
const BETWEEN = ascii(",\n");
/** The "flags" value by flag bits, as JSON.stringify(rows, null, 2) writes it. */
const FLAGS = Array.from({ length: 4 }, (_, bits) => {
  const f = flagsOf((bits & 1 ? F_LOCAL : 0) | (bits & 2 ? F_DIRECT : 0));
  return ascii(f.length ? `[\n${f.map((x) => `      "${x}"`).join(",\n")}\n    ]` : "[]");
});
/** The most one IPv4 row takes (its longest fields and counters: under 400). */
const ROW_MAX = 512;
const HEX_DIGIT = ascii("0123456789abcdef");
const [DOT, SLASH, COLON, ZERO] = [46, 47, 58, 48];

/**
 * Bytes into 1 MB buffers, each handed to `write` once full (a new one
 * each), written a byte at a time: a Buffer.set or latin1 write per field
 * (a million small copies for 65,536 rows) was most of a big dump's time.
 */
class ByteOut {
  private buf = Buffer.allocUnsafe(1 << 20);
  private pos = 0;

  constructor(private readonly write: (chunk: Buffer) => void) {}

  /** Room for n more bytes in the current buffer. */
  room(n: number): void {
    if (this.pos + n > this.buf.length) this.flush();
  }

  /** b, in room the caller made (room(); a row makes ROW_MAX). */
  bytes(b: Uint8Array): void {
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < b.length; i++) buf[p++] = b[i] as number;
    this.pos = p;
  }

  text(s: string): void {
    this.room(s.length);
    this.pos += this.buf.write(s, this.pos, "latin1");
  }

  /** A whole number 0 <= n <= 2^53 - 1 in decimal. */
  private decimal(n: number): void {
    const buf = this.buf;
    const start = this.pos;
    let p = start;
    do {
      buf[p++] = ZERO + (n % 10);
      n = Math.floor(n / 10);
    } while (n > 0);
    this.pos = p;
    for (let i = start, j = p - 1; i < j; i++, j--) {
      const c = buf[i] as number;
      buf[i] = buf[j] as number;
      buf[j] = c;
    }
  }

  ip(v: Ip4): void {
    this.decimal(v >>> 24);
    for (let s = 16; s >= 0; s -= 8) {
      this.buf[this.pos++] = DOT;
      this.decimal((v >>> s) & 255);
    }
  }

  /** n as JSON.stringify writes it (a sum past 2^53 is not exact: its own form). */
  number(n: number): void {
    if (Number.isSafeInteger(n) && n >= 0) this.decimal(n);
    else this.text(JSON.stringify(n));
  }

  prefix(n: number): void {
    this.buf[this.pos++] = SLASH;
    this.decimal(n);
  }

  mac(m: Uint8Array, off: number): void {
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < 6; i++) {
      if (i) buf[p++] = COLON;
      const b = m[off + i] as number;
      buf[p++] = HEX_DIGIT[b >> 4] as number;
      buf[p++] = HEX_DIGIT[b & 15] as number;
    }
    this.pos = p;
  }

  flush(): void {
    if (this.pos) this.write(this.buf.subarray(0, this.pos));
    this.buf = Buffer.allocUnsafe(1 << 20); // the last one may still be queued for writing
    this.pos = 0;
  }
}

/**
 * `-o json`: exactly the bytes of JSON.stringify(dumpRows(entries, peers),
 * null, 2) + "\n", written straight from the columns a megabyte at a time:
 * no row object, no string per address or counter (every value is an
 * address, a MAC, a flag name or a number: nothing needs escaping). The
 * IPv6 rows (`after`, one per dual-stack node: few) follow as
 * JSON.stringify writes them.
 */
export function dumpJson(
  t: EntryColumns,
  peers: PeerCounts,
  write: (chunk: Buffer) => void,
  after: ReturnType<typeof dumpRows> = [],
): void {
  const out = new ByteOut(write);
  if (!t.n && !after.length) {
    out.text("[]\n");
    out.flush();
    return;
  }
  out.text("[\n");
  const order = t.order();
  for (let j = 0; j < order.length; j++) {
    const i = order[j] as number;
    const flags = t.flags[i] as number;
    out.room(ROW_MAX);
    out.bytes(ROW_SUBNET);
    out.ip(t.addr[i] as number);
    out.prefix(t.prefixlen[i] as number);
    out.bytes(ROW_REMOTE);
    out.ip(t.remoteIp[i] as number);
    out.bytes(ROW_MAC);
    out.mac(t.mac, i * 6);
    out.bytes(ROW_FLAGS);
    out.bytes(FLAGS[(flags & F_LOCAL ? 1 : 0) | (flags & F_DIRECT ? 2 : 0)] as Uint8Array);
    const at = peers.index(t.remoteIp[i] as number, flags);
    for (let k = 0; k < 4; k++) {
      out.bytes(ROW_COUNTERS[k] as Uint8Array);
      out.number(peers.counter(at, k));
    }
    out.bytes(ROW_END);
    if (j < order.length - 1 || after.length) out.bytes(BETWEEN);
  }
  after.forEach((r, j) => {
    out.text(JSON.stringify(r, null, 2).replace(/^/gm, "  "));
    if (j < after.length - 1) {
      out.room(BETWEEN.length);
      out.bytes(BETWEEN);
    }
  });
  out.text("\n]\n");
  out.flush();
}

export const mapDump: CommandModule<object, Args> = {
  command: "dump",
  describe: "list the subnet maps (IPv4, then IPv6): remote subnet, host, VTEP MAC, live counters",
  builder: (y) =>
    (y as Argv<Args>)
      .options(outputOption)
      .example("$0 map dump", "table sorted by subnet")
      .example("$0 map dump -o json", "stable JSON for scripts") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const map = SubnetHostMap.openPinned(a.pinPath);
    const map6 = SubnetHostMap6.openPinned(a.pinPath);
    try {
      if (a.output === "json") {
        // The two big maps (subnets, counters) are read side by side.
        const [peers, cols] = await Promise.all([
          PeerCounts.readAsync(map, map6),
          EntryColumns.read(map, MAPS.ovl_subnets.maxEntries),
        ]);
        dumpJson(cols, peers, (b) => process.stdout.write(b), dumpRows(map6.list(), peers));
        return;
      }
      const peers = PeerCounts.read(map, map6);
      const rows6 = dumpRows(map6.list(), peers);
      const rows = [...dumpRows(map.list(), peers), ...rows6];
      print(a.output, rows, () =>
        table(
          [
            "SUBNET",
            "REMOTE IP",
            "VTEP MAC",
            "FLAGS",
            "TX PACKETS",
            "TX BYTES",
            "RX PACKETS",
            "RX BYTES",
          ],
          rows.map((r) => [
            r.subnet,
            r.remoteIp,
            r.vtepMac,
            r.flags.join(",") || "-",
            r.txPackets,
            r.txBytes,
            r.rxPackets,
            r.rxBytes,
          ]),
        ),
      );
    } finally {
      map.close();
      map6.close();
    }
  },
};
