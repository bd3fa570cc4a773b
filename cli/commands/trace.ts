// overlayctl trace <src> <dst>: the path a packet would take through this
// node's data path, computed from the live maps and attachments (cli/trace.ts).
import { existsSync, readFileSync } from "node:fs";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { EndpointMap, EndpointMap6 } from "../../agent/bpf/endpoint-map";
import { SubnetHostMap, SubnetHostMap6 } from "../../agent/bpf/subnet-map";
import { parseSubnetEnv } from "../../agent/control/subnet-env";
import { DEFAULTS } from "../../agent/flags";
import { Cidr, parseIp, type Ip4 } from "../../agent/net/ip";
import { Cidr6, isIp6, parseIp6, type Ip6 } from "../../agent/net/ip6";
import { outputOption, print, table, UsageError, type Format } from "../output";
import { trace, type TraceInput, type TraceResult } from "../trace";
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
  describe: "the path a packet from src to dst takes through this node's data path",
  builder: (y) =>
    (y as Argv<Args>)
      .positional("src", {
        type: "string",
        demandOption: true,
        describe: "source IPv4 or IPv6 address",
      })
      .positional("dst", {
        type: "string",
        demandOption: true,
        describe: "destination address, of the source's family",
      })
      .option("subnet-file", {
        type: "string",
        default: DEFAULTS.subnetFile,
        describe: "subnet.env, for the cluster network (FLANNEL_NETWORK)",
      })
      .option("overlay-iface", { type: "string", default: "ovl0", describe: "the overlay device" })
      .options(outputOption)
      .example("$0 trace 10.5.1.2 10.5.2.7", "a pod here to a pod on another node")
      .example("$0 trace fc00:5:0:1::2 fc00:5:0:2::7", "the same over IPv6") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const v6 = isIp6(String(a.src));
    for (const k of ["src", "dst"] as const) {
      const ok = v6 ? isIp6(String(a[k])) : validIpv4(String(a[k]));
      if (!ok) {
        throw new UsageError(
          `${k}: "${a[k]}" is not an ${v6 ? "IPv6" : "IPv4"} address` +
            (k === "dst" ? " (src and dst must be of one family)" : ""),
        );
      }
    }
    const { names, attached, mechanism } = liveDatapath();
    const underlay = attached.find(
      (x) => x.program === "ovl_decap_tc" || x.program === "ovl_decap_xdp",
    )?.iface;
    const env = existsSync(a.subnetFile) ? parseSubnetEnv(readFileSync(a.subnetFile, "utf8")) : {};
    const common = { mechanism, overlayDev: a.overlayIface, underlayDev: underlay };
    const result = v6
      ? lookUp(
          SubnetHostMap6.openPinned(a.pinPath),
          EndpointMap6.openPinned(a.pinPath),
          names,
          parseIp6(a.src, "src"),
          parseIp6(a.dst, "dst"),
          {
            ...common,
            network: env.FLANNEL_IPV6_NETWORK ? Cidr6.parse(env.FLANNEL_IPV6_NETWORK) : undefined,
          },
        )
      : lookUp(
          SubnetHostMap.openPinned(a.pinPath),
          EndpointMap.openPinned(a.pinPath),
          names,
          parseIp(a.src, "src"),
          parseIp(a.dst, "dst"),
          { ...common, network: env.FLANNEL_NETWORK ? Cidr.parse(env.FLANNEL_NETWORK) : undefined },
        );
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
  },
};

/** One family's lookups in the live maps (closed after), then trace(). */
function lookUp<A extends Ip4 | Ip6>(
  map: { match(ip: A): TraceInput<A>["dstEntry"]; close(): void },
  eps: {
    list(): { podIp: A; endpoint: { ifindex: number; podMac: string; hostMac: string } }[];
    close(): void;
  },
  names: Map<number, string>,
  src: A,
  dst: A,
  rest: Pick<TraceInput<A>, "network" | "mechanism" | "overlayDev" | "underlayDev">,
): TraceResult {
  try {
    const listed = eps.list();
    const endpoint = (ip: A) => {
      const e = listed.find((x) => x.podIp === ip)?.endpoint;
      return e ? { ...e, iface: names.get(e.ifindex) } : undefined;
    };
    return trace({
      ...rest,
      src,
      dst,
      srcEntry: map.match(src),
      dstEntry: map.match(dst),
      srcEndpoint: endpoint(src),
      dstEndpoint: endpoint(dst),
    });
  } finally {
    map.close();
    eps.close();
  }
}
