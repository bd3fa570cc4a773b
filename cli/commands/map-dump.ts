// overlayctl map dump: the pinned subnet map with live per-peer counters.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { type SubnetEntry, SubnetHostMap } from "../../agent/bpf/subnet-map";
import { F_DIRECT, F_LOCAL } from "../../agent/bpf/codec";
import { formatIp, type Ip4 } from "../../agent/net/ip";
import { outputOption, print, table, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
}

/**
 * Every peer's live counters, as Numbers (exact below 2^53, as the JSON
 * always printed them): a BigInt per counter was a fifth of a 65,536-entry
 * dump.
 */
export class PeerCounts {
  private readonly at = new Map<Ip4, number>();
  /** tx packets, tx bytes, rx packets, rx bytes of each peer in turn */
  private readonly c: number[] = [];

  static read(map: SubnetHostMap): PeerCounts {
    const p = new PeerCounts();
    map.eachPeer((ip, c) => p.add(ip, c));
    return p;
  }

  add(ip: Ip4, c: ArrayLike<number>): void {
    if (!c[0] && !c[1] && !c[2] && !c[3]) return; // absent reads as zeros
    this.at.set(ip, this.c.length);
    this.c.push(c[0] as number, c[1] as number, c[2] as number, c[3] as number);
  }

  /** An entry's counters: tx packets, tx bytes, rx packets, rx bytes. */
  of(e: SubnetEntry): [number, number, number, number] {
    const i = e.host.flags & F_LOCAL ? undefined : this.at.get(e.host.remoteIp);
    if (i === undefined) return ZEROS;
    const c = this.c;
    return [c[i] as number, c[i + 1] as number, c[i + 2] as number, c[i + 3] as number];
  }
}

const ZEROS: [number, number, number, number] = [0, 0, 0, 0];

function flagsOf(e: SubnetEntry): string[] {
  return [
    ...(e.host.flags & F_LOCAL ? ["local"] : []),
    // sent without VXLAN to this host (host-gw, DirectRouting)
    ...(e.host.flags & F_DIRECT ? ["direct"] : []),
  ];
}

/** The rows, sorted by subnet. */
export function dumpRows(entries: SubnetEntry[], peers: PeerCounts) {
  return entries.map((e) => {
    const [txPackets, txBytes, rxPackets, rxBytes] = peers.of(e);
    return {
      subnet: e.subnet.toString(),
      remoteIp: formatIp(e.host.remoteIp),
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
  entries: SubnetEntry[],
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
      `  {\n    "subnet": "${e.subnet.toString()}",\n    "remoteIp": "${formatIp(e.host.remoteIp)}",\n` +
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
  describe: "list the subnet map: remote subnet, host, VTEP MAC, live counters",
  builder: (y) =>
    (y as Argv<Args>)
      .options(outputOption)
      .example("$0 map dump", "table sorted by subnet")
      .example("$0 map dump -o json", "stable JSON for scripts") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const map = SubnetHostMap.openPinned(a.pinPath);
    try {
      const peers = PeerCounts.read(map);
      const entries = map.list();
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
    }
  },
};
