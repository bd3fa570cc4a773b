// overlayctl config get | set FILE
import { readFileSync } from "node:fs";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { parseNetworkConfig } from "../../agent/control/config";
import { configKey } from "../../agent/control/lease";
import { formatIp } from "../../agent/net/ip";
import { formatIp6 } from "../../agent/net/ip6";
import { type EtcdArgs } from "../../agent/flags";
import { withStore } from "../etcd";
import { CliError, outputOption, print, table, type Format } from "../output";

interface GetArgs extends EtcdArgs {
  output: Format;
}

export const configGet: CommandModule<object, GetArgs> = {
  command: "get",
  describe: "the network config as stored, and the values in effect",
  builder: (y) => (y as Argv<GetArgs>).options(outputOption) as Argv<GetArgs>,
  handler: async (a: ArgumentsCamelCase<GetArgs>) => {
    const key = configKey(a.etcdPrefix);
    const text = await withStore(a, (s) => s.getConfig());
    if (text === undefined) throw new CliError(`${key}: no network config stored`);
    const c = parseNetworkConfig(text, key);
    const effective = {
      Network: c.network.toString(),
      SubnetLen: c.subnetLen,
      SubnetMin: formatIp(c.subnetMin),
      SubnetMax: formatIp(c.subnetMax),
      Backend: { Type: c.backend.type, VNI: c.backend.vni, Port: c.backend.port },
      EnableIPv6: c.enableIPv6,
      ...(c.ipv6
        ? {
            IPv6Network: c.ipv6.network.toString(),
            IPv6SubnetLen: c.ipv6.subnetLen,
            IPv6SubnetMin: formatIp6(c.ipv6.subnetMin),
            IPv6SubnetMax: formatIp6(c.ipv6.subnetMax),
          }
        : {}),
    };
    print(a.output, { key, stored: JSON.parse(text), effective }, () =>
      table(
        ["FIELD", "VALUE"],
        [
          ["Network", effective.Network],
          ["SubnetLen", effective.SubnetLen],
          ["SubnetMin", effective.SubnetMin],
          ["SubnetMax", effective.SubnetMax],
          ["Backend.Type", effective.Backend.Type],
          ["Backend.VNI", effective.Backend.VNI],
          ["Backend.Port", effective.Backend.Port],
          ["EnableIPv6", String(effective.EnableIPv6)],
          ...(c.ipv6
            ? [
                ["IPv6Network", c.ipv6.network.toString()],
                ["IPv6SubnetLen", c.ipv6.subnetLen],
                ["IPv6SubnetMin", formatIp6(c.ipv6.subnetMin)],
                ["IPv6SubnetMax", formatIp6(c.ipv6.subnetMax)],
              ]
            : []),
        ],
      ),
    );
  },
};

interface SetArgs extends EtcdArgs {
  file: string;
  force: boolean;
}

export const configSet: CommandModule<object, SetArgs> = {
  command: "set <file>",
  describe: "validate a network config (the agent's rules) and store it",
  builder: (y) =>
    (y as Argv<SetArgs>)
      .positional("file", {
        type: "string",
        demandOption: true,
        describe: "JSON file ('-' for stdin)",
      })
      .option("force", {
        type: "boolean",
        default: false,
        describe: "allow changing Network while leases exist",
      })
      .example("$0 config set net-conf.json", "") as Argv<SetArgs>,
  handler: async (a: ArgumentsCamelCase<SetArgs>) => {
    const key = configKey(a.etcdPrefix);
    let text: string;
    try {
      text = readFileSync(a.file === "-" ? 0 : a.file, "utf8");
    } catch (e) {
      throw new CliError(`${a.file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    const next = parseNetworkConfig(text, a.file);
    await withStore(a, async (s) => {
      const curText = await s.getConfig();
      if (curText !== undefined && !a.force) {
        let cur;
        try {
          cur = parseNetworkConfig(curText, key);
        } catch {
          cur = undefined; // replacing a broken config is always allowed
        }
        const { leases } = await s.list();
        if (cur && !cur.network.equals(next.network) && leases.length > 0) {
          throw new CliError(
            `${key}: Network would change from ${cur.network} to ${next.network} while ${leases.length} leases exist; use --force`,
          );
        }
        const [was6, next6] = [cur?.ipv6?.network, next.ipv6?.network];
        if (was6 && next6 && !was6.equals(next6) && leases.some((l) => l.subnet6)) {
          throw new CliError(
            `${key}: IPv6Network would change from ${was6} to ${next6} while leases hold IPv6 subnets; use --force`,
          );
        }
      }
      await s.putConfig(text.trim());
    });
    process.stdout.write(`stored ${key}\n`);
  },
};
