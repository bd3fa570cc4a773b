// overlayctl version: the same build facts as `overlayd --version`.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { buildInfo, versionLine } from "../../agent/version";
import { outputOption, print, type Format } from "../output";

interface Args {
  output: Format;
}

export const version: CommandModule<object, Args> = {
  command: "version",
  describe: "version, git commit and BPF ABI hash of this build",
  builder: (y) => (y as Argv<Args>).options(outputOption) as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    print(a.output, buildInfo(), () => versionLine("overlayctl") + "\n");
  },
};
