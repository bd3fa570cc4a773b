// overlayctl map get <ip>: the longest-prefix match, i.e. what the data path
// does with a packet for that destination.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { F_LOCAL } from "../../agent/bpf/codec";
import { formatIp, parseIp } from "../../agent/net/ip";
import { outputOption, print, table, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
  ip: string;
}

export const mapGet: CommandModule<object, Args> = {
  command: "get <ip>",
  describe: "what the data path does with a packet for <ip> (longest-prefix match)",
  builder: (y) =>
    (y as Argv<Args>)
      .positional("ip", {
        type: "string",
        demandOption: true,
        describe: "destination IPv4 address",
      })
      .options(outputOption)
      .example("$0 map get 10.5.2.7", "which node gets packets for 10.5.2.7") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const ip = parseIp(a.ip, "ip");
    const map = SubnetHostMap.openPinned(a.pinPath);
    try {
      const hit = map.match(ip);
      const local = hit ? (hit.host.flags & F_LOCAL) !== 0 : false;
      const action = !hit ? "no-entry" : local ? "local" : "encapsulate";
      const result = {
        ip: a.ip,
        action,
        subnet: hit?.subnet.toString() ?? null,
        remoteIp: hit && !local ? formatIp(hit.host.remoteIp) : null,
        vtepMac: hit && !local ? hit.host.vtepMac : null,
      };
      const why =
        action === "no-entry"
          ? "no lease covers it: pods' packets go to the host's routing, the overlay device drops them"
          : action === "local"
            ? "this node's own subnet: delivered locally"
            : `VXLAN to ${result.remoteIp}, inner destination MAC ${result.vtepMac}`;
      print(a.output, result, () =>
        table(["IP", "ACTION", "SUBNET", "DETAIL"], [[a.ip, action, result.subnet ?? "-", why]]),
      );
    } finally {
      map.close();
    }
  },
};
