// overlayctl map dump: the pinned subnet maps with live per-peer counters:
// the IPv4 subnets, then the IPv6 subnets of a dual-stack network (the same
// rows, with IPv6 subnets and PublicIPv6s).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { SubnetHostMap, SubnetHostMap6 } from "../../agent/bpf/subnet-map";
import { F_DIRECT, F_LOCAL } from "../../agent/bpf/codec";
import { formatIp, type Ip4 } from "../../agent/net/ip";
import { formatIp6, type Ip6 } from "../../agent/net/ip6";
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

const fmt = (ip: Ip4 | Ip6): string => (typeof ip === "bigint" ? formatIp6(ip) : formatIp(ip));

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

  add(ip: Ip4 | Ip6, c: ArrayLike<number>): void {
    if (!c[0] && !c[1] && !c[2] && !c[3]) return; // absent reads as zeros
    this.at.set(ip, this.c.length);
    this.c.push(c[0] as number, c[1] as number, c[2] as number, c[3] as number);
  }

  /** An entry's counters: tx packets, tx bytes, rx packets, rx bytes. */
  of(e: DumpEntry): [number, number, number, number] {
    const i = e.host.flags & F_LOCAL ? undefined : this.at.get(e.host.remoteIp);
    if (i === undefined) return ZEROS;
    const c = this.c;
    return [c[i] as number, c[i + 1] as number, c[i + 2] as number, c[i + 3] as number];
  }
}

const ZEROS: [number, number, number, number] = [0, 0, 0, 0];

function flagsOf(e: DumpEntry): string[] {
  return [
    ...(e.host.flags & F_LOCAL ? ["local"] : []),
    // sent without VXLAN to this host (host-gw, DirectRouting)
    ...(e.host.flags & F_DIRECT ? ["direct"] : []),
  ];
}

/** The rows, sorted by subnet. */
export function dumpRows(entries: DumpEntry[], peers: PeerCounts) {
  return entries.map((e) => {
    const [txPackets, txBytes, rxPackets, rxBytes] = peers.of(e);
    return {
      subnet: e.subnet.toString(),
      remoteIp: fmt(e.host.remoteIp),
      vtepMac: e.host.vtepMac,
      flags: flagsOf(e),
      txPackets,
      txBytes,
      rxPackets,
      rxBytes,
    };
  });
}

/**
 * `-o json`: the text of JSON.stringify(dumpRows(entries, peers), null, 2),
 * handed to `write` a chunk at a time, without a row object per entry or
 * one 13 MB string for 65,536 of them. Every value is an address, a MAC,
 * a flag name or a number: nothing needs escaping.
 */
export function dumpJson(
  entries: DumpEntry[],
  peers: PeerCounts,
  write: (chunk: string) => void,
): void {
  if (!entries.length) {
    write("[]\n");
    return;
  }
  let out = "[\n";
  entries.forEach((e, i) => {
    const flags = flagsOf(e);
    const c = peers.of(e);
    out +=
      `  {\n    "subnet": "${e.subnet.toString()}",\n    "remoteIp": "${fmt(e.host.remoteIp)}",\n` +
      `    "vtepMac": "${e.host.vtepMac}",\n    "flags": ` +
      (flags.length ? `[\n${flags.map((f) => `      "${f}"`).join(",\n")}\n    ]` : "[]") +
      `,\n    "txPackets": ${c[0]},\n    "txBytes": ${c[1]},\n` +
      `    "rxPackets": ${c[2]},\n    "rxBytes": ${c[3]}\n  }` +
      (i < entries.length - 1 ? ",\n" : "\n]\n");
    if (out.length >= 1 << 20) {
      write(out);
      out = "";
    }
  });
  if (out) write(out);
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
      const peers = PeerCounts.read(map, map6);
      const entries: DumpEntry[] = [...map.list(), ...map6.list()];
      if (a.output === "json") {
        dumpJson(entries, peers, (s) => process.stdout.write(s));
        return;
      }
      const rows = dumpRows(entries, peers);
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
