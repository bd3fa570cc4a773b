// Metrics as an operator sees them: a real Prometheus (Debian's) scraping two
// agents over the underlay. Counters move while pods talk; a malformed VXLAN
// packet shows up under its drop reason; promtool finds nothing to lint.
import assert from "node:assert/strict";
import { join } from "node:path";
import { Cluster } from "../lib/cluster";
import { Prometheus } from "../lib/prometheus";
import { requireEnv } from "../lib/require";
import { inNs, sh, waitFor } from "../lib/sh";
import { ping } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

const PROM = "172.31.0.254:9090";

describe("e2e: metrics scraped by a real Prometheus", function () {
  this.timeout(180000);
  const c = new Cluster();
  const prom = new Prometheus(c, PROM);
  let n1: NodeInfo;
  let n2: NodeInfo;

  const query = (expr: string) => prom.query(expr);

  function value(expr: string): number | undefined {
    const v = query(expr)[0]?.value[1];
    return v === undefined ? undefined : Number(v);
  }

  before(async function () {
    requireEnv(this, { root: true, tools: ["prometheus", "promtool", "etcd", "ip", "ping"] });
    await c.start(2);
    [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    await prom.start();
  });

  after(async function () {
    await prom.stop();
    await c.stop();
  });

  it("passes promtool's metric lint", function () {
    const body = c.agent(n1).http("/metrics", 9474).body;
    assert.match(body, /^overlay_packets_total\{direction="tx"\}/m);
    const out = sh(["sh", "-c", "promtool check metrics; echo rc=$?"], { input: body });
    assert.match(out, /rc=0\s*$/, out);
  });

  it("ships alert rules and a scrape config that promtool accepts", function () {
    const dir = join(__dirname, "..", "..", "..", "deploy", "prometheus");
    assert.match(
      sh(["promtool", "check", "rules", join(dir, "overlayd-alerts.yml")]),
      /SUCCESS: 6 rules found/,
    );
    assert.match(sh(["promtool", "check", "config", join(dir, "scrape.yml")]), /SUCCESS/);
  });

  it("sees the datapath and per-peer counters move while pods exchange traffic", async function () {
    const inst = `${n1.underlayIp}:9474`;
    const before = value(`overlay_packets_total{direction="tx",instance="${inst}"}`) ?? 0;
    const peerBefore =
      value(`overlay_peer_tx_packets_total{peer="${n2.underlayIp}",instance="${inst}"}`) ?? 0;
    assert.ok(ping(c.pod(n1).ns, c.pod(n2).ip, { count: 20 }));
    await waitFor(
      "tx counter up by 20 in Prometheus",
      () => (value(`overlay_packets_total{direction="tx",instance="${inst}"}`) ?? 0) >= before + 20,
      20000,
    );
    const peerAfter =
      value(`overlay_peer_tx_packets_total{peer="${n2.underlayIp}",instance="${inst}"}`) ?? 0;
    assert.ok(peerAfter >= peerBefore + 20, `peer counter ${peerBefore} -> ${peerAfter}`);
    assert.equal(value(`overlay_ready{instance="${inst}"}`), 1);
    assert.equal(value(`overlay_map_entries{instance="${inst}"}`), 2);
    assert.equal(
      value(
        `overlay_datapath_info{decap="tc",gro="vxlan-socket",pod_bridge="auto",instance="${inst}"}`,
      ),
      1,
      "the mechanism the node runs",
    );
  });

  it("counts a malformed VXLAN packet under its drop reason", async function () {
    const inst = `${n1.underlayIp}:9474`;
    const expr = `overlay_drops_total{reason="wrong_vni",direction="rx",instance="${inst}"}`;
    const before = value(expr) ?? 0;
    // Five VXLAN packets from node 2 (a lease holder) with VNI 99.
    const script = `
      const s = require("dgram").createSocket("udp4");
      const vx = Buffer.alloc(8 + 14 + 20); vx[0] = 8; vx.writeUInt32BE(99 << 8, 4);
      vx.writeUInt16BE(0x0800, 8 + 12); vx[22] = 0x45;
      let n = 0; const send = () => s.send(vx, 8472, "${n1.underlayIp}", () => (++n < 5 ? send() : s.close()));
      send();`;
    sh(inNs(n2.ns, ["node", "-e", script]));
    await waitFor("wrong_vni drops in Prometheus", () => value(expr) === before + 5, 20000);
    assert.equal(value(`sum(overlay_drops_total{reason="unknown_source",instance="${inst}"})`), 0);
  });
});
