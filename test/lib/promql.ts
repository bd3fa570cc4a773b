// The Grafana dashboard and the alert rules as data: every PromQL expression
// they hold, the metric names inside one, and the dashboard's structural
// rules. Pure (no I/O): the unit tier checks the shipped files with it, the
// e2e tier runs the same expressions against a real Prometheus.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";

const DEPLOY = join(__dirname, "..", "..", "..", "deploy");
export const DASHBOARD_FILE = join(DEPLOY, "grafana", "overlayd-dashboard.json");
export const ALERTS_FILE = join(DEPLOY, "prometheus", "overlayd-alerts.yml");
export const ALERTS_TEST_FILE = join(DEPLOY, "prometheus", "overlayd-alerts.test.yml");

export interface Target {
  expr: string;
  refId?: string;
  datasource?: { type?: string; uid?: string };
}

export interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  gridPos?: { h?: number; w?: number; x?: number; y?: number };
  targets?: Target[];
  panels?: Panel[];
}

export interface Dashboard {
  schemaVersion?: number;
  uid?: string;
  panels?: Panel[];
  templating?: {
    list?: {
      name: string;
      type: string;
      query?: string | { query?: string };
      datasource?: { uid?: string };
    }[];
  };
}

/** One query the dashboard (or a variable of it) sends. */
export interface DashboardQuery {
  where: string; // "panel 7 \"Drops per second\" A", "variable instance"
  expr: string;
}

export function loadDashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_FILE, "utf8")) as Dashboard;
}

export interface AlertRule {
  alert: string;
  expr: string;
}

export function loadAlerts(): AlertRule[] {
  const doc = parse(readFileSync(ALERTS_FILE, "utf8")) as {
    groups: { rules: { alert?: string; record?: string; expr: string }[] }[];
  };
  return doc.groups.flatMap((g) =>
    g.rules.map((r) => ({ alert: r.alert ?? r.record ?? "?", expr: String(r.expr) })),
  );
}

/** Every panel, rows' nested panels included, in file order. */
export function allPanels(d: Dashboard): Panel[] {
  const out: Panel[] = [];
  const walk = (ps: Panel[] | undefined) => {
    for (const p of ps ?? []) {
      out.push(p);
      walk(p.panels);
    }
  };
  walk(d.panels);
  return out;
}

/** label_values(metric{...}, label) -> the series selector it reads. */
function variableExpr(q: string): string {
  const m = /^\s*label_values\(\s*(.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$/s.exec(q);
  if (m) return m[1] as string;
  const qr = /^\s*query_result\((.*)\)\s*$/s.exec(q);
  return qr ? (qr[1] as string) : q;
}

/** Every expression of every panel target and every query variable. */
export function dashboardQueries(d: Dashboard): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  for (const p of allPanels(d)) {
    for (const t of p.targets ?? []) {
      out.push({ where: `panel ${p.id} "${p.title}" ${t.refId ?? "?"}`, expr: t.expr });
    }
  }
  for (const v of d.templating?.list ?? []) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : (v.query?.query ?? "");
    out.push({ where: `variable ${v.name}`, expr: variableExpr(q) });
  }
  return out;
}

/**
 * Replaces Grafana's variables ($name, ${name}, ${name:fmt}, [[name]]) by
 * the given values; an unknown variable is an error, not left in the query.
 */
export function substitute(expr: string, vars: Record<string, string>): string {
  return expr.replace(
    /\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]/g,
    (whole, a?: string, b?: string, c?: string) => {
      const name = (a ?? b ?? c) as string;
      const v = vars[name];
      if (v === undefined) throw new Error(`unknown dashboard variable ${whole} in ${expr}`);
      return v;
    },
  );
}

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "and",
  "or",
  "unless",
  "offset",
  "bool",
  "atan2",
  "inf",
  "nan",
]);

/**
 * The metric names a PromQL expression selects: identifiers that are not
 * functions, aggregations, keywords, label names or inside strings,
 * matchers or ranges. Good enough for the expressions we ship (no
 * `{__name__=...}` selectors).
 */
export function metricNames(expr: string): string[] {
  let s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    // Grouping clauses go entirely, so `sum by (x) (` reads as a call.
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  s = s.replace(/\b\d[\w.]*/g, " "); // numbers, durations (5m), 1e3
  const names = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const rest = s.slice((m.index as number) + word.length);
    if (/^\s*\(/.test(rest)) continue; // a function or aggregation
    if (KEYWORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names];
}

/** Problems with the dashboard's structure; empty when it is sound. */
export function dashboardProblems(d: Dashboard): string[] {
  const problems: string[] = [];
  const vars = new Map((d.templating?.list ?? []).map((v) => [v.name, v]));
  const ds = vars.get("datasource");
  if (!ds || ds.type !== "datasource" || ds.query !== "prometheus") {
    problems.push("no `datasource` variable of type datasource (prometheus)");
  }
  if (!vars.has("instance")) problems.push("no `instance` variable");
  if (typeof d.schemaVersion !== "number" || d.schemaVersion < 36) {
    problems.push(`schemaVersion ${d.schemaVersion}: want 36 or later`);
  }
  if (!d.uid) problems.push("no uid (links and provisioning need a stable one)");
  const usesVar = (x: { uid?: string } | undefined) => x?.uid === "${datasource}";
  for (const v of vars.values()) {
    if (v.type === "query" && !usesVar(v.datasource)) {
      problems.push(`variable ${v.name}: datasource is not \${datasource}`);
    }
  }
  const ids = new Map<number, string>();
  for (const p of allPanels(d)) {
    const name = `panel ${p.id} "${p.title}"`;
    if (typeof p.id !== "number") problems.push(`${name}: no numeric id`);
    else if (ids.has(p.id)) problems.push(`${name}: id also used by ${ids.get(p.id)}`);
    else ids.set(p.id, name);
    if (!p.title) problems.push(`${name}: no title`);
    const g = p.gridPos;
    if (!g || [g.h, g.w, g.x, g.y].some((n) => typeof n !== "number")) {
      problems.push(`${name}: gridPos needs h, w, x, y`);
    } else if ((g.x as number) < 0 || (g.x as number) + (g.w as number) > 24 || g.h! < 1) {
      problems.push(`${name}: gridPos ${JSON.stringify(g)} outside the 24-column grid`);
    }
    if (p.type === "row") continue;
    if (!usesVar(p.datasource)) problems.push(`${name}: datasource is not \${datasource}`);
    if (!p.targets?.length) problems.push(`${name}: no queries`);
    for (const t of p.targets ?? []) {
      if (!t.expr?.trim()) problems.push(`${name} ${t.refId}: empty expr`);
      if (t.datasource && !usesVar(t.datasource)) {
        problems.push(`${name} ${t.refId}: target datasource is not \${datasource}`);
      }
    }
    const refs = (p.targets ?? []).map((t) => t.refId);
    if (new Set(refs).size !== refs.length) problems.push(`${name}: duplicate refIds`);
  }
  return problems;
}
