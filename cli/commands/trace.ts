// overlayctl trace <src> <dst>: the path a packet would take through this
// node's data path, computed from the live maps and attachments (cli/trace.ts).
import { existsSync, readFileSync } from "node:fs";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { EndpointMap } from "../../agent/bpf/endpoint-map";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { parseSubnetEnv } from "../../agent/control/subnet-env";
import { DEFAULTS } from "../../agent/flags";
import { Cidr, parseIp, type Ip4 } from "../../agent/net/ip";
import { outputOption, print, table, UsageError, type Format } from "../output";
import { trace } from "../trace";
import { liveDatapath } from "./status";

interface Args {
  pinPath: string;
  subnetFile: string;
  overlayIface: string;
  output: Format;
  src: string;
  dst: string;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function validIpv4(s: string): boolean {
  const m = IPV4.exec(s);
  return m !== null && m.slice(1).every((o) => Number(o) <= 255);
}

export const traceCmd: CommandModule<object, Args> = {
  command: "trace <src> <dst>",
  describe: "the path an IPv4 packet from src to dst takes through this node's data path",
  builder: (y) =>
    (y as Argv<Args>)
      .positional("src", { type: "string", demandOption: true, describe: "source IPv4 address" })
      .positional("dst", {
        type: "string",
        demandOption: true,
        describe: "destination IPv4 address",
      })
      .option("subnet-file", {
        type: "string",
        default: DEFAULTS.subnetFile,
        describe: "subnet.env, for the cluster network (FLANNEL_NETWORK)",
      })
      .option("overlay-iface", { type: "string", default: "ovl0", describe: "the overlay device" })
      .options(outputOption)
      .example("$0 trace 10.5.1.2 10.5.2.7", "a pod here to a pod on another node") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    for (const k of ["src", "dst"] as const) {
      if (!validIpv4(String(a[k]))) throw new UsageError(`${k}: "${a[k]}" is not an IPv4 address`);
    }
    const src = parseIp(a.src, "src");
    const dst = parseIp(a.dst, "dst");
    const { names, attached, mechanism } = liveDatapath();
    const underlay = attached.find(
      (x) => x.program === "ovl_decap_tc" || x.program === "ovl_decap_xdp",
    )?.iface;
    const map = SubnetHostMap.openPinned(a.pinPath);
    const eps = EndpointMap.openPinned(a.pinPath);
    try {
      const listed = eps.list();
      const endpoint = (ip: Ip4) => {
        const e = listed.find((x) => x.podIp === ip)?.endpoint;
        return e ? { ...e, iface: names.get(e.ifindex) } : undefined;
      };
      const env = existsSync(a.subnetFile)
        ? parseSubnetEnv(readFileSync(a.subnetFile, "utf8"))
        : {};
      const result = trace({
        src,
        dst,
        srcEntry: map.match(src),
        dstEntry: map.match(dst),
        srcEndpoint: endpoint(src),
        dstEndpoint: endpoint(dst),
        network: env.FLANNEL_NETWORK ? Cidr.parse(env.FLANNEL_NETWORK) : undefined,
        mechanism,
        overlayDev: a.overlayIface,
        underlayDev: underlay,
      });
      print(a.output, result, () =>
        [
          table(
            ["SRC", "DST", "PATH", "ENTRY", "PEER", "VTEP MAC", "DROP"],
            [
              [
                result.src,
                result.dst,
                result.path,
                result.entry
                  ? `${result.entry.subnet}${result.entry.flags.length ? ` (${result.entry.flags.join(",")})` : ""}`
                  : "-",
                result.peer ?? "-",
                result.vtepMac ?? "-",
                result.dropReason ?? "-",
              ],
            ],
          ),
          ...result.steps.map((s, i) => `  ${i + 1}. ${s}`),
          "",
        ].join("\n"),
      );
    } finally {
      map.close();
      eps.close();
    }
  },
};
