// Output for overlayctl: aligned tables or stable JSON, and the one-line
// errors users see (no stack traces for expected failures).
import { BpfError, OverlayError } from "../agent/errors";

export type Format = "table" | "json";

export const outputOption = {
  output: {
    alias: "o",
    choices: ["table", "json"] as const,
    default: "table" as const,
    describe: "output format",
  },
};

/** Renders rows as left-aligned columns with a header line. */
export function table(headers: string[], rows: (string | number | bigint)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return (
    cells
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number)))
          .join("  ")
          .trimEnd(),
      )
      .join("\n") + "\n"
  );
}

/** JSON with bigints as numbers (counters stay far below 2^53 in practice). */
export function json(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? Number(x) : x), 2) + "\n";
}

export function print(format: Format, jsonValue: unknown, tableText: () => string): void {
  process.stdout.write(format === "json" ? json(jsonValue) : tableText());
}

/** A usage error found by a handler: exit 2 with one line naming it. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** An operational failure: exit 1 with one line naming what failed. */
export class CliError extends OverlayError {}

export function describeError(e: unknown): string {
  if (e instanceof BpfError && (e.code === "EPERM" || e.code === "EACCES")) {
    return `${e.op} ${e.object}: ${e.code}: needs CAP_BPF (reading pinned maps; run as root or grant the capability)`;
  }
  if (e instanceof BpfError && e.code === "ENOENT" && e.op === "open pinned") {
    return `${e.object}: not found: is overlayd running on this node, and is --pin-path right?`;
  }
  if (e instanceof OverlayError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
