// The shipped Grafana dashboard and alert rules, without a Prometheus: the
// dashboard's structure, every metric name its queries and the alerts use
// (each must be one overlayd exports), and promtool's unit tests of the
// alert rules (deploy/prometheus/overlayd-alerts.test.yml).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Histogram, Registry } from "prom-client";
import { AgentMetrics } from "../../metrics/metrics";
import { M } from "../../metrics/names";
import {
  ALERTS_TEST_FILE,
  dashboardProblems,
  dashboardQueries,
  loadAlerts,
  loadDashboard,
  metricNames,
  substitute,
} from "../lib/promql";
import { requireEnv } from "../lib/require";
import { shStatus } from "../lib/sh";

/** Metrics the dashboard may show before this tree exports them. */
const PENDING = new Set(["overlay_monitor_events_suppressed_total"]);
/** Series Prometheus makes itself for every target. */
const SCRAPE_SERIES = ["up"];

/** Every series name an agent's /metrics can carry (histograms expanded). */
function exported(): Set<string> {
  const reg = new Registry();
  new AgentMetrics(reg, { version: "v", commit: "c", abi: "a", libbpf: "l" });
  const names = new Set<string>();
  for (const m of reg.getMetricsAsArray()) {
    const name = (m as unknown as { name: string }).name;
    names.add(name);
    if (m instanceof Histogram) {
      for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
    }
  }
  return names;
}

const VARS = {
  datasource: "prom",
  job: ".*",
  instance: ".*",
  __rate_interval: "1m",
  __range: "1h",
};

describe("unit: Grafana dashboard and alert rules", function () {
  const dash = loadDashboard();

  it("extracts metric names from PromQL, not functions, labels or keywords", function () {
    assert.deepEqual(
      metricNames(
        'sum by (instance, le) (rate(a_total{job=~"x|y",le!="1"}[5m] offset 1m)) > 0.5 and on(instance) (time() - b_seconds) > 600',
      ),
      ["a_total", "b_seconds"],
    );
    assert.deepEqual(metricNames("histogram_quantile(0.99, sum(rate(h_bucket[$i])))"), [
      "h_bucket",
    ]);
    assert.deepEqual(metricNames("topk(10, x) or vector(0)"), ["x"]);
    assert.deepEqual(metricNames('overlay_ready{instance="a:1"} == 0'), ["overlay_ready"]);
  });

  it("is a schemaVersion 39 dashboard whose every panel uses ${datasource}, with unique ids and a grid position", function () {
    assert.deepEqual(dashboardProblems(dash), []);
    assert.equal(dash.schemaVersion, 39);
    // The checker itself catches what it claims to.
    const broken = JSON.parse(JSON.stringify(dash)) as typeof dash;
    const [a, b] = (broken.panels ?? []).filter((p) => p.type !== "row");
    b!.id = a!.id;
    a!.datasource = { type: "prometheus", uid: "P1809F7CD0C75ACF3" };
    delete b!.gridPos;
    const problems = dashboardProblems(broken).join("\n");
    assert.match(problems, /id also used by/);
    assert.match(problems, /datasource is not \$\{datasource\}/);
    assert.match(problems, /gridPos needs/);
  });

  it("queries only metrics overlayd exports (metrics/names.ts, prom-client defaults)", function () {
    const known = exported();
    const fromNames = new Set<string>(Object.values(M));
    for (const n of fromNames) {
      assert.ok(
        [n, `${n}_bucket`].some((x) => known.has(x)),
        `${n} (names.ts) not registered`,
      );
    }
    const used = new Set<string>();
    const bad: string[] = [];
    const check = (where: string, expr: string) => {
      for (const n of metricNames(expr)) {
        used.add(n.replace(/_(bucket|sum|count)$/, ""));
        if (known.has(n) || SCRAPE_SERIES.includes(n)) continue;
        if (PENDING.has(n) && !fromNames.has(n)) continue;
        bad.push(`${where}: ${n}`);
      }
    };
    for (const q of dashboardQueries(dash)) check(q.where, substitute(q.expr, VARS));
    for (const r of loadAlerts()) check(`alert ${r.alert}`, r.expr);
    assert.deepEqual(bad, [], "metric names that overlayd does not export");
    // Every overlayd metric has a place on the dashboard.
    const missing = [...fromNames].filter((n) => !used.has(n));
    assert.deepEqual(missing, [], "names.ts metrics no panel shows");
  });

  it("passes promtool's unit tests of every alert (fires and stays silent)", function () {
    requireEnv(this, { tools: ["promtool"] });
    const r = shStatus(["promtool", "test", "rules", ALERTS_TEST_FILE]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS/);
    // Each alert is tested by name.
    const spec = readFileSync(ALERTS_TEST_FILE, "utf8");
    const tested = new Set([...spec.matchAll(/alertname:\s*(\w+)/g)].map((m) => m[1]));
    for (const a of loadAlerts()) assert.ok(tested.has(a.alert), `${a.alert} has no promtool test`);
  });
});
