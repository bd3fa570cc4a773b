// The Grafana dashboard and the alert rules against real data: a real
// Prometheus scrapes two agents while pods exchange traffic, hostile VXLAN
// moves the drop counters and a hand-made route trips the overlap warning.
// Then every panel query (rows' nested panels and the variables included)
// must return series, and every alert expression must run and find data for
// each metric it names: no panel is empty because of a typo.
import assert from "node:assert/strict";
import { Cluster } from "../lib/cluster";
import { Prometheus } from "../lib/prometheus";
import {
  dashboardProblems,
  dashboardQueries,
  loadAlerts,
  loadDashboard,
  metricNames,
  substitute,
} from "../lib/promql";
import { requireEnv } from "../lib/require";
import { inNs, sh, sleep, waitFor } from "../lib/sh";
import { iperf, ping } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

/** Added by another change; until an agent exports it, its panel may be empty. */
const SUPPRESSED = "overlay_monitor_events_suppressed_total";

describe("e2e: Grafana dashboard and alert rules against a real Prometheus", function () {
  this.timeout(240000);
  const c = new Cluster();
  let hand = ""; // a /24 of the network nobody leases, routed by hand
  // Unique per run, like the namespaces: two runs never share a listener.
  const port = 19090 + (parseInt(c.topo.id, 16) % 1000);
  const prom = new Prometheus(c, `172.31.0.254:${port}`);
  let n1: NodeInfo;
  let n2: NodeInfo;
  let suppressedExported = false;

  const query = (expr: string) => prom.query(expr);

  /** VXLAN datagrams to n1's port from `from`'s namespace, with this VNI. */
  function sendVxlan(from: string, vni: number, count: number): void {
    const script = `
      const s = require("dgram").createSocket("udp4");
      const vx = Buffer.alloc(8 + 14 + 20); vx[0] = 8; vx.writeUInt32BE(${vni} << 8, 4);
      vx.writeUInt16BE(0x0800, 8 + 12); vx[22] = 0x45;
      let n = 0; const send = () => s.send(vx, 8472, "${n1.underlayIp}", () => (++n < ${count} ? send() : s.close()));
      send();`;
    sh(inNs(from, ["node", "-e", script]));
  }

  before(async function () {
    requireEnv(this, { root: true, tools: ["prometheus", "etcd", "ip", "ping", "iperf3"] });
    await c.start(2);
    [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    await prom.start();

    // Traffic both ways, ICMP and TCP.
    assert.ok(ping(c.pod(n1).ns, c.pod(n2).ip, { count: 20 }), "pod 1 -> pod 2");
    assert.ok(ping(c.pod(n2).ns, c.pod(n1).ip, { count: 20 }), "pod 2 -> pod 1");
    await iperf(c.pod(n2).ns, c.pod(n2).ip, c.pod(n1).ns, { seconds: 2 });
    // Hostile VXLAN: a wrong VNI from a lease holder, and a well-formed
    // packet from a host on the underlay that holds no lease.
    const outsider = c.topo.addNode(9);
    sendVxlan(n2.ns, 99, 20);
    sendVxlan(outsider.ns, 1, 20);
    // A route inside the cluster network that is not overlayd's.
    hand = c.freeSubnet();
    sh(
      inNs(n1.ns, [
        ...["ip", "route", "add", hand, "via", "172.31.0.254", "dev", "eth0"],
        ...["proto", "static"],
      ]),
    );
    const inst1 = `${n1.underlayIp}:9474`;
    await waitFor(
      "drops, traffic and the overlap in Prometheus",
      () =>
        query(`overlay_drops_total{reason="wrong_vni",instance="${inst1}"} >= 20`).length === 1 &&
        query(`overlay_drops_total{reason="unknown_source",instance="${inst1}"} >= 20`).length ===
          1 &&
        query(`overlay_route_overlap{prefix="${hand}",instance="${inst1}"}`).length === 1,
      30000,
    );
    await sleep(3000); // a few more scrapes, so every rate() window holds two samples
    suppressedExported = c.nodes.some((n) =>
      new RegExp(`^${SUPPRESSED}\\b`, "m").test(c.agent(n).http("/metrics", 9474).body),
    );
  });

  after(async function () {
    await prom.stop();
    await c.stop();
  });

  it("is a well-formed dashboard (datasource variable, unique ids, grid positions)", function () {
    assert.deepEqual(dashboardProblems(loadDashboard()), []);
  });

  // Grafana's defaults for a 1s scrape interval, and a window long enough
  // for the traffic made in before().
  const builtins = { __rate_interval: "20s", __interval: "1s", __range: "5m" };

  for (const scope of ["all", "one node"] as const) {
    it(`returns series for every panel and variable query (${scope})`, function () {
      const inst = scope === "all" ? ".*" : `${n1.underlayIp}:9474`;
      const vars = { ...builtins, job: scope === "all" ? ".*" : "overlayd", instance: inst };
      const empty: string[] = [];
      let ran = 0;
      for (const q of dashboardQueries(loadDashboard())) {
        const expr = substitute(q.expr, vars);
        const result = query(expr);
        ran++;
        if (result.length === 0) {
          if (metricNames(expr).includes(SUPPRESSED) && !suppressedExported) {
            process.stderr.write(
              `      notice: ${q.where} is empty: no agent exports ${SUPPRESSED} yet\n`,
            );
            continue;
          }
          empty.push(`${q.where}: ${expr}`);
        }
        // Variables list every node; panels must keep to the chosen one.
        if (scope === "one node" && !q.where.startsWith("variable")) {
          for (const s of result) {
            if (s.metric.instance !== undefined) {
              assert.equal(s.metric.instance, inst, `${q.where} ignores $instance`);
            }
          }
        }
      }
      assert.ok(ran >= 20, `ran only ${ran} queries`);
      assert.deepEqual(empty, [], "queries with no series");
    });
  }

  it("shows the traffic and the drops that were made, not just zeros", function () {
    const inst = `${n1.underlayIp}:9474`;
    const num = (expr: string) => Number(query(expr)[0]?.value[1] ?? NaN);
    const tx = num(`sum(increase(overlay_packets_total{instance="${inst}",direction="tx"}[5m]))`);
    assert.ok(tx >= 20, `tx packets ${tx}`);
    const peer = num(`sum(increase(overlay_peer_rx_packets_total{instance="${inst}"}[5m]))`);
    assert.ok(peer >= 20, `rx packets from the peer ${peer}`);
    const drops = num(
      `sum(increase(overlay_drops_total{instance="${inst}",reason="wrong_vni"}[5m]))`,
    );
    assert.ok(drops > 0, `wrong_vni drops ${drops}`);
    assert.equal(num(`overlay_map_entries{instance="${inst}"}`), 2);
  });

  it("runs every alert expression, and each metric an alert names has data", function () {
    const noData: string[] = [];
    for (const r of loadAlerts()) {
      const fired = query(r.expr); // throws unless Prometheus parsed and ran it
      for (const name of metricNames(r.expr)) {
        if (query(name).length === 0) noData.push(`${r.alert}: ${name}`);
      }
      // A healthy, freshly started cluster raises none but the drop alert
      // (hostile packets) could; none should fire on readiness.
      if (r.alert === "OverlaydNotReady") assert.deepEqual(fired, [], "a node is not ready");
    }
    assert.deepEqual(noData, [], "alert metrics with no data");
  });
});
