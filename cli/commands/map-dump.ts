// overlayctl map dump: the pinned subnet maps with live per-peer counters:
// the IPv4 subnets, then the IPv6 subnets of a dual-stack network (the same
// rows, with IPv6 subnets and PublicIPv6s).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { SubnetHostMap, SubnetHostMap6 } from "../../agent/bpf/subnet-map";
import { F_DIRECT, F_LOCAL, type PeerCounters } from "../../agent/bpf/codec";
import { formatIp } from "../../agent/net/ip";
import { formatIp6 } from "../../agent/net/ip6";
import { outputOption, print, table, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
}

/** What a dump reads of either family's map. */
interface Dumpable<A> {
  list(): {
    subnet: { toString(): string };
    host: { remoteIp: A; vtepMac: string; flags: number };
  }[];
  peerCounters(): Map<A, PeerCounters>;
}

export function dumpRows<A>(map: Dumpable<A>, fmt: (ip: A) => string) {
  const peers = map.peerCounters();
  return map.list().map((e) => {
    const local = (e.host.flags & F_LOCAL) !== 0;
    const c = local ? undefined : peers.get(e.host.remoteIp);
    return {
      subnet: e.subnet.toString(),
      remoteIp: fmt(e.host.remoteIp),
      vtepMac: e.host.vtepMac,
      flags: [
        ...(local ? ["local"] : []),
        // sent without VXLAN to this host (host-gw, DirectRouting)
        ...(e.host.flags & F_DIRECT ? ["direct"] : []),
      ],
      txPackets: c?.txPackets ?? 0n,
      txBytes: c?.txBytes ?? 0n,
      rxPackets: c?.rxPackets ?? 0n,
      rxBytes: c?.rxBytes ?? 0n,
    };
  });
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
      const rows = [...dumpRows(map, formatIp), ...dumpRows(map6, formatIp6)];
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
