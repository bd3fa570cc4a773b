// Shared bits of the benchmark reports: statistics, Markdown, result files.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
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

/**
 * bench/results/<kind>-latest.{json,md} (and any extra files, e.g. an SVG):
 * one latest result per kind is kept in the repository, not every run's.
 */
export function writeResults(
  kind: string,
  json: unknown,
  md: string,
  extra: Record<string, string> = {},
): string {
  mkdirSync(RESULTS, { recursive: true });
  for (const f of readdirSync(RESULTS)) {
    if (f.startsWith(`${kind}-`) && /-\d{4}-\d\d-\d\dT[\d-]+Z\.json$/.test(f))
      rmSync(join(RESULTS, f));
  }
  const file = join(RESULTS, `${kind}-latest.json`);
  writeFileSync(file, JSON.stringify(json, null, 2) + "\n");
  writeFileSync(join(RESULTS, `${kind}-latest.md`), md + "\n");
  for (const [ext, body] of Object.entries(extra)) {
    writeFileSync(join(RESULTS, `${kind}-latest.${ext}`), body);
  }
  return file;
}

export interface BarGroup {
  label: string;
  bars: { label: string; value: number }[];
}

const PALETTE = ["#9e9e9e", "#e6a23c", "#2f7ed8", "#56b870", "#8e6bbf", "#d9534f"];

const esc = (x: string) => x.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/**
 * A horizontal grouped bar chart as a standalone SVG: one group per label,
 * one bar per series (same colour across groups), a dashed line at 1.0 (the
 * baseline's own ratio) and the value written at the end of each bar.
 */
export function barChart(o: { title: string; groups: BarGroup[] }): string {
  const series = [...new Set(o.groups.flatMap((g) => g.bars.map((b) => b.label)))];
  const finite = o.groups.flatMap((g) => g.bars.map((b) => b.value)).filter(Number.isFinite);
  const max = Math.max(1.2, ...finite) * 1.1;
  const left = 150;
  const width = 720;
  const plot = width - left - 60;
  const bar = 14;
  const gap = 16;
  const top = 48;
  const x = (v: number) => left + (Math.max(0, v) / max) * plot;
  const out: string[] = [];
  let y = top;
  for (const g of o.groups) {
    const h = g.bars.length * bar;
    out.push(
      `<text x="${left - 8}" y="${y + h / 2 + 4}" text-anchor="end" font-size="12">${esc(g.label)}</text>`,
    );
    g.bars.forEach((b, i) => {
      const colour = PALETTE[series.indexOf(b.label) % PALETTE.length];
      const w = Number.isFinite(b.value) ? x(b.value) - left : 0;
      const text = Number.isFinite(b.value) ? `${b.value.toFixed(2)}×` : "n/a";
      out.push(
        `<rect x="${left}" y="${y + i * bar}" width="${w.toFixed(1)}" height="${bar - 2}" fill="${colour}"><title>${esc(b.label)}: ${text}</title></rect>`,
        `<text x="${(left + w + 4).toFixed(1)}" y="${y + i * bar + bar - 4}" font-size="10">${text}</text>`,
      );
    });
    y += h + gap;
  }
  const height = y + 30;
  const legend = series.map(
    (s, i) =>
      `<rect x="${left + i * 140}" y="26" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/>` +
      `<text x="${left + i * 140 + 14}" y="35" font-size="11">${esc(s)}</text>`,
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="16" font-size="13" font-weight="bold">${esc(o.title)}</text>`,
    ...legend,
    `<line x1="${x(1)}" y1="${top - 6}" x2="${x(1)}" y2="${y - gap + 6}" stroke="#444" stroke-dasharray="4 3"/>`,
    `<text x="${x(1)}" y="${y - gap + 18}" font-size="10" text-anchor="middle">1.0 = host-gw</text>`,
    ...out,
    `</svg>`,
    "",
  ].join("\n");
}
