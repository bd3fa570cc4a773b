// Shared bits of the benchmark reports: statistics, Markdown, result files.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const RESULTS = join(__dirname, "..", "..", "bench", "results");

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

export function median(xs: number[]): number {
  return percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
}

export function markdownTable(headers: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(headers), line(headers.map(() => "---")), ...rows.map(line)].join("\n");
}

/** bench/results/<kind>-<timestamp>.json and bench/results/<kind>-latest.md */
export function writeResults(kind: string, json: unknown, md: string): string {
  mkdirSync(RESULTS, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const file = join(RESULTS, `${kind}-${stamp}.json`);
  writeFileSync(file, JSON.stringify(json, null, 2) + "\n");
  writeFileSync(join(RESULTS, `${kind}-latest.md`), md + "\n");
  return file;
}
