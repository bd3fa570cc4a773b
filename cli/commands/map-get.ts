// overlayctl map get <ip>: the longest-prefix match, i.e. what the data path
// does with a packet for that destination.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { SubnetHostMap, SubnetHostMap6 } from "../../agent/bpf/subnet-map";
import { F_LOCAL } from "../../agent/bpf/codec";
import { formatIp, parseIp } from "../../agent/net/ip";
import { formatIp6, isIp6, parseIp6 } from "../../agent/net/ip6";
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
        describe: "destination IPv4 or IPv6 address",
      })
      .options(outputOption)
      .example("$0 map get 10.5.2.7", "which node gets packets for 10.5.2.7")
      .example("$0 map get fc00:0:0:2::7", "the same over IPv6 (dual-stack)") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const hit = isIp6(a.ip)
      ? lookup(SubnetHostMap6.openPinned(a.pinPath), parseIp6(a.ip, "ip"), formatIp6)
      : lookup(SubnetHostMap.openPinned(a.pinPath), parseIp(a.ip, "ip"), formatIp);
    const local = hit ? (hit.host.flags & F_LOCAL) !== 0 : false;
    const action = !hit ? "no-entry" : local ? "local" : "encapsulate";
    const result = {
      ip: a.ip,
      action,
      subnet: hit?.subnet ?? null,
      remoteIp: hit && !local ? hit.host.remoteIp : null,
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
  },
};

interface Hit {
  subnet: string;
  host: { remoteIp: string; vtepMac: string; flags: number };
}

/** The longest-prefix match in one family's map (closed after). */
function lookup<A>(
  map: {
    match(
      ip: A,
    ):
      | { subnet: { toString(): string }; host: { remoteIp: A; vtepMac: string; flags: number } }
      | undefined;
    close(): void;
  },
  ip: A,
  fmt: (ip: A) => string,
): Hit | undefined {
  try {
    const h = map.match(ip);
    return (
      h && { subnet: h.subnet.toString(), host: { ...h.host, remoteIp: fmt(h.host.remoteIp) } }
    );
  } finally {
    map.close();
  }
}
