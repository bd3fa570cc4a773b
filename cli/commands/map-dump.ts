// overlayctl map dump: the pinned subnet map with live per-peer counters.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { F_DIRECT, F_LOCAL } from "../../agent/bpf/codec";
import { formatIp } from "../../agent/net/ip";
import { outputOption, print, table, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
}

export function dumpRows(map: SubnetHostMap) {
  const peers = map.peerCounters();
  return map.list().map((e) => {
    const local = (e.host.flags & F_LOCAL) !== 0;
    const c = local ? undefined : peers.get(e.host.remoteIp);
    return {
      subnet: e.subnet.toString(),
      remoteIp: formatIp(e.host.remoteIp),
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
  describe: "list the subnet map: remote subnet, host, VTEP MAC, live counters",
  builder: (y) =>
    (y as Argv<Args>)
      .options(outputOption)
      .example("$0 map dump", "table sorted by subnet")
      .example("$0 map dump -o json", "stable JSON for scripts") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const map = SubnetHostMap.openPinned(a.pinPath);
    try {
      const rows = dumpRows(map);
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
