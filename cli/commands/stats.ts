// overlayctl stats: datapath counters per direction and drops by reason.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { StatsReader } from "../../agent/bpf/stats";
import { outputOption, print, table, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
  all: boolean;
}

export const stats: CommandModule<object, Args> = {
  command: "stats",
  describe: "packets and bytes per direction, drops by reason",
  builder: (y) =>
    (y as Argv<Args>)
      .options(outputOption)
      .option("all", {
        type: "boolean",
        default: false,
        describe: "list drop reasons that are still zero",
      })
      .example("$0 stats", "traffic and non-zero drops") as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const r = StatsReader.openPinned(a.pinPath);
    try {
      const s = r.read();
      const drops = s.drops.filter((d) => d.reason !== "unspec" && (a.all || d.packets > 0n));
      const traffic = [...s.traffic].map(([direction, c]) => ({ direction, ...c }));
      print(a.output, { traffic, drops }, () => {
        const t = table(
          ["DIRECTION", "PACKETS", "BYTES"],
          traffic.map((x) => [x.direction, x.packets, x.bytes]),
        );
        const d = drops.length
          ? table(
              ["DROP REASON", "DIRECTION", "PACKETS", "BYTES"],
              drops.map((x) => [x.reason, x.direction, x.packets, x.bytes]),
            )
          : "no drops\n";
        return `${t}\n${d}`;
      });
    } finally {
      r.close();
    }
  },
};
