// overlayctl lease list | reserve | release
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { isReservation, type LeaseAttrs } from "../../agent/control/lease";
import { Cidr, formatIp, parseIp, parseMac } from "../../agent/net/ip";
import { formatIp6 } from "../../agent/net/ip6";
import { previousSubnet } from "../../agent/control/subnet-env";
import { DEFAULTS, type EtcdArgs } from "../../agent/flags";
import { withStore } from "../etcd";
import { CliError, outputOption, print, table, type Format } from "../output";

interface ListArgs extends EtcdArgs {
  output: Format;
  subnetFile: string;
}

export const leaseList: CommandModule<object, ListArgs> = {
  command: "list",
  describe:
    "leases in etcd: subnet, public IP, VTEP MAC, TTL left or reserved, this node " +
    "(and the IPv6 subnet, PublicIPv6 and v6 VTEP MAC of dual-stack leases)",
  builder: (y) =>
    (y as Argv<ListArgs>)
      .options(outputOption)
      .option("subnet-file", {
        type: "string",
        default: DEFAULTS.subnetFile,
        describe: "marks this node's lease",
      })
      .example("$0 lease list", "all leases, this node marked with *") as Argv<ListArgs>,
  handler: async (a: ArgumentsCamelCase<ListArgs>) => {
    const mine = previousSubnet(a.subnetFile);
    const rows = await withStore(a, async (s) => {
      const { leases, bad } = await s.list();
      const out = [];
      for (const l of leases.sort((x, y) => x.subnet.addr - y.subnet.addr)) {
        const reserved = isReservation(l);
        const a = l.attrs;
        out.push({
          subnet: l.subnet.toString(),
          subnet6: l.subnet6?.toString() ?? null,
          publicIp: formatIp(a.publicIp),
          publicIpv6: a.publicIpv6 === undefined ? null : formatIp6(a.publicIpv6),
          vtepMac: a.vtepMac ?? null,
          vtepMac6: a.vtepMac6 ?? null,
          backendType: l.attrs.backendType,
          ttlSeconds: reserved ? null : await s.ttl(l.leaseId),
          reserved,
          thisNode: mine !== undefined && l.subnet.equals(mine),
        });
      }
      for (const b of bad) process.stderr.write(`warning: ${b.error}\n`);
      return out;
    });
    // The IPv6 columns only when some lease is dual-stack.
    const v6 = rows.some((r) => r.subnet6 !== null || r.publicIpv6 !== null);
    print(a.output, rows, () =>
      table(
        [
          "",
          "SUBNET",
          ...(v6 ? ["IPV6 SUBNET"] : []),
          "PUBLIC IP",
          ...(v6 ? ["PUBLIC IPV6"] : []),
          "VTEP MAC",
          ...(v6 ? ["V6 VTEP MAC"] : []),
          "BACKEND",
          "TTL",
        ],
        rows.map((r) => [
          r.thisNode ? "*" : "",
          r.subnet,
          ...(v6 ? [r.subnet6 ?? "-"] : []),
          r.publicIp,
          ...(v6 ? [r.publicIpv6 ?? "-"] : []),
          r.vtepMac ?? "-",
          ...(v6 ? [r.vtepMac6 ?? "-"] : []),
          r.backendType,
          r.reserved ? "reserved" : `${r.ttlSeconds}s`,
        ]),
      ),
    );
  },
};

interface ReserveArgs extends EtcdArgs {
  subnet: string;
  publicIp: string;
  vtepMac?: string;
  force: boolean;
}

export const leaseReserve: CommandModule<object, ReserveArgs> = {
  command: "reserve <subnet>",
  describe: "reserve a subnet for a node (a lease that never expires and no other node takes)",
  builder: (y) =>
    (y as Argv<ReserveArgs>)
      .positional("subnet", { type: "string", demandOption: true, describe: "e.g. 10.5.7.0/24" })
      .option("public-ip", { type: "string", demandOption: true, describe: "the node's PublicIP" })
      .option("vtep-mac", {
        type: "string",
        describe: "VTEP MAC, if known (the agent fills it in)",
      })
      .option("force", {
        type: "boolean",
        default: false,
        describe: "replace a lease held by another node",
      })
      .example("$0 lease reserve 10.5.7.0/24 --public-ip 172.31.0.7", "") as Argv<ReserveArgs>,
  handler: async (a: ArgumentsCamelCase<ReserveArgs>) => {
    const subnet = Cidr.parse(a.subnet, "subnet");
    const attrs: LeaseAttrs = {
      publicIp: parseIp(a.publicIp, "--public-ip"),
      backendType: "vxlan",
      vni: 1,
    };
    if (a.vtepMac) {
      parseMac(a.vtepMac, "--vtep-mac");
      attrs.vtepMac = a.vtepMac.toLowerCase();
    }
    await withStore(a, async (s) => {
      const cur = await s.get(subnet);
      if (cur && cur.attrs.publicIp !== attrs.publicIp && !a.force) {
        throw new CliError(
          `${subnet} is held by ${formatIp(cur.attrs.publicIp)}; use --force to take it`,
        );
      }
      if (cur?.attrs.vtepMac && !attrs.vtepMac) attrs.vtepMac = cur.attrs.vtepMac;
      // A dual-stack lease keeps its IPv6 half (the agent fills one in otherwise).
      if (cur?.subnet6 && cur.attrs.publicIp === attrs.publicIp) {
        const { publicIpv6, vni6, vtepMac6 } = cur.attrs;
        Object.assign(attrs, { publicIpv6, vni6, vtepMac6 });
      }
      await s.reserve(subnet, attrs, cur?.subnet6);
    });
    process.stdout.write(`reserved ${subnet} for ${a.publicIp}\n`);
  },
};

interface ReleaseArgs extends EtcdArgs {
  subnet: string;
}

export const leaseRelease: CommandModule<object, ReleaseArgs> = {
  command: "release <subnet>",
  describe: "delete a lease or reservation",
  builder: (y) =>
    (y as Argv<ReleaseArgs>).positional("subnet", {
      type: "string",
      demandOption: true,
    }) as Argv<ReleaseArgs>,
  handler: async (a: ArgumentsCamelCase<ReleaseArgs>) => {
    const subnet = Cidr.parse(a.subnet, "subnet");
    const removed = await withStore(a, (s) => s.remove(subnet));
    if (!removed) throw new CliError(`${subnet}: no such lease`);
    process.stdout.write(`released ${subnet}\n`);
  },
};
