// Running system commands (ip, sysctl, mount, iptables-restore). The one
// place that spawns them, so errors read the same everywhere.
import { spawnSync } from "node:child_process";
import { CommandError } from "../errors";

export function run(argv: string[], input?: string): string {
  const r = spawnSync(argv[0] as string, argv.slice(1), {
    encoding: "utf8",
    input,
    // Route and neighbour listings of large clusters exceed the 1 MiB default.
    maxBuffer: 256 << 20,
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  if (r.error) throw new CommandError(argv, null, r.error.message);
  if (r.status !== 0) throw new CommandError(argv, r.status, r.stderr);
  return r.stdout;
}

/** Like run(), but returns undefined instead of throwing. */
export function tryRun(argv: string[]): string | undefined {
  try {
    return run(argv);
  } catch {
    return undefined;
  }
}

/**
 * A read-only probe (iptables-*-save and the like): its exit status and
 * output, what it printed before failing included, or undefined when it
 * cannot be run at all (not installed).
 */
export function probe(
  argv: string[],
): { status: number | null; stdout: string; stderr: string } | undefined {
  const r = spawnSync(argv[0] as string, argv.slice(1), {
    encoding: "utf8",
    maxBuffer: 256 << 20,
    stdio: ["ignore", "pipe", "pipe"],
  });
  return r.error ? undefined : { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
