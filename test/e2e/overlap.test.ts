// The route-overlap warning with a real agent: a route added by hand inside
// the cluster network is reported in the log, /readyz (a warning: the node
// stays ready), overlayctl status and /metrics, within moments and without
// polling; one that merely touches the network's edge is not; removing the
// overlap clears it.
import assert from "node:assert/strict";
import { OVERLAYCTL } from "../lib/agent-proc";
import { Cluster } from "../lib/cluster";
import { requireEnv } from "../lib/require";
import { httpInNs, inNs, sh, sleep, waitFor } from "../lib/sh";
import { type NodeInfo } from "../lib/topology";

describe("e2e: route-overlap warning", function () {
  this.timeout(120000);
  const c = new Cluster();
  let n1: NodeInfo;
  let hand = ""; // a /24 of the network nobody leases, routed by hand
  const esc = (s: string) => s.replace(/[./]/g, "\\$&");
  const metric = () =>
    httpInNs(n1.ns, "http://127.0.0.1:9474/metrics")
      .body.split("\n")
      .filter((l) => l.startsWith("overlay_route_overlap{"));

  before(async function () {
    requireEnv(this, { root: true, tools: ["ip", "etcd"] });
    await c.start(1);
    n1 = c.nodes[0] as NodeInfo;
    hand = c.freeSubnet();
  });
  after(async () => c.stop());

  it("reports nothing on a clean node", function () {
    const r = c.agent(n1).http("/readyz");
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).warnings, undefined);
    assert.deepEqual(metric(), []);
  });

  it("reports a route added by hand inside the network, by name, everywhere, and the node stays ready", async function () {
    sh(
      inNs(n1.ns, [
        "ip",
        "route",
        "add",
        hand,
        "via",
        "172.31.0.254",
        "dev",
        "eth0",
        "proto",
        "static",
      ]),
    );
    await waitFor("warning in /readyz", () =>
      (JSON.parse(c.agent(n1).http("/readyz").body).warnings ?? []).some((w: string) =>
        w.includes(`route ${hand} dev eth0 (static)`),
      ),
    );
    assert.equal(c.agent(n1).http("/readyz").status, 200, "a warning, not a failure");
    await waitFor("logged", () =>
      new RegExp(`overlaps the cluster network.*route=${esc(hand)} dev=eth0 origin=static`).test(
        c.agent(n1).logs,
      ),
    );
    assert.deepEqual(metric(), [
      `overlay_route_overlap{kind="route",prefix="${hand}",dev="eth0",origin="static"} 1`,
    ]);
    const status = sh(inNs(n1.ns, [OVERLAYCTL, "status", "--pin-path", n1.pinPath]));
    assert.match(
      status,
      new RegExp(
        `^warning: route ${esc(hand)} dev eth0 \\(static\\) overlaps the cluster network$`,
        "m",
      ),
    );
  });

  it("does not report a route that merely touches the network's edge", async function () {
    sh(inNs(n1.ns, ["ip", "route", "add", "10.6.0.0/16", "via", "172.31.0.254", "dev", "eth0"]));
    sh(inNs(n1.ns, ["ip", "route", "add", "10.4.255.0/24", "via", "172.31.0.254", "dev", "eth0"]));
    await sleep(1000);
    const w = JSON.parse(c.agent(n1).http("/readyz").body).warnings as string[];
    assert.equal(w.length, 1, w.join("; "));
  });

  it("clears the warning when the overlap is gone", async function () {
    sh(inNs(n1.ns, ["ip", "route", "del", hand]));
    await waitFor(
      "warning cleared",
      () => JSON.parse(c.agent(n1).http("/readyz").body).warnings === undefined,
    );
    assert.deepEqual(metric(), []);
    await waitFor("logged", () => /overlap with the cluster network gone/.test(c.agent(n1).logs));
  });
});
