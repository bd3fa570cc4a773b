import assert from "node:assert/strict";
import {
  FLUSH_WINDOW_MS,
  NeighKeeper,
  parseMonitorLine,
  PUSH_AT_MS,
  pushPlan,
  restoreBatch,
  restorePlan,
  type MonitorEvent,
} from "../../agent/node/neigh-keeper";

// Lines as `ip -o monitor link neigh` prints them (iproute2 6.x).
const UP =
  "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default \\    link/ether be:a3:0c:3d:53:ac brd ff:ff:ff:ff:ff:ff link-netns sw";
const ADMIN_DOWN =
  "2: eth0@if3: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN group default \\    link/ether be:a3:0c:3d:53:ac brd ff:ff:ff:ff:ff:ff link-netns sw";
const NO_CARRIER =
  "2: eth0@if3: <NO-CARRIER,BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state DOWN group default \\    link/ether be:a3:0c:3d:53:ac brd ff:ff:ff:ff:ff:ff link-netns sw";
const A = "172.31.0.2 dev eth0 lladdr 5A:2D:1F:65:A5:83 REACHABLE ";
const A_DELETED = "Deleted 172.31.0.2 dev eth0 lladdr 5a:2d:1f:65:a5:83 REACHABLE ";
const B6 = "fd31::3 dev eth0 lladdr 02:00:00:00:00:03 router STALE ";
const B6_DELETED = "Deleted fd31::3 dev eth0 lladdr 02:00:00:00:00:03 router STALE ";
const MCAST_DELETED = "Deleted ff02::1:ff00:2 dev eth0 lladdr 33:33:ff:00:00:02 NOARP ";

const ev = (line: string): MonitorEvent => {
  const e = parseMonitorLine(line);
  assert.ok(e, line);
  return e;
};

/** Feeds lines at 1 ms apart from `t`; returns what the last one gives back. */
function feed(
  k: NeighKeeper,
  lines: string[],
  t = 1000,
): { ip: string; mac: string }[] | undefined {
  let out: { ip: string; mac: string }[] | undefined;
  lines.forEach((l, i) => (out = k.apply(ev(l), t + i)));
  return out;
}

describe("unit: the underlay's neighbours across a link flap (agent/node/neigh-keeper.ts)", function () {
  it("parses link and neighbour lines of ip -o monitor, IPv4 and IPv6, deletions included", function () {
    assert.deepEqual(ev(UP), { kind: "link", dev: "eth0", usable: true });
    assert.deepEqual(ev(ADMIN_DOWN), { kind: "link", dev: "eth0", usable: false });
    assert.deepEqual(ev(NO_CARRIER), { kind: "link", dev: "eth0", usable: false });
    assert.deepEqual(ev(A), {
      kind: "neigh",
      dev: "eth0",
      ip: "172.31.0.2",
      mac: "5a:2d:1f:65:a5:83",
      states: ["REACHABLE"],
      deleted: false,
    });
    assert.deepEqual(ev(B6_DELETED), {
      kind: "neigh",
      dev: "eth0",
      ip: "fd31::3",
      mac: "02:00:00:00:00:03",
      states: ["STALE"],
      deleted: true,
    });
    assert.deepEqual(ev("172.31.0.9 dev eth0  FAILED"), {
      kind: "neigh",
      dev: "eth0",
      ip: "172.31.0.9",
      mac: undefined,
      states: ["FAILED"],
      deleted: false,
    });
    for (const other of ["", "10.5.0.0/16 via 172.31.0.254 dev eth0", "Deleted", "junk dev eth0"]) {
      assert.equal(parseMonitorLine(other), undefined, other);
    }
  });

  it("an admin down (link line first, then the flush) gives back what the flush took when the link is up", function () {
    const k = new NeighKeeper("eth0");
    feed(k, [A, B6]);
    assert.equal(feed(k, [ADMIN_DOWN, A_DELETED, MCAST_DELETED, B6_DELETED]), undefined);
    assert.equal(k.linkUsable, false);
    assert.deepEqual(feed(k, [UP], 2000), [
      { ip: "172.31.0.2", mac: "5a:2d:1f:65:a5:83" },
      { ip: "fd31::3", mac: "02:00:00:00:00:03" },
    ]);
    // Up again while up: nothing to do.
    assert.equal(feed(k, [UP], 3000), undefined);
  });

  it("a carrier loss (the flush first, then the link line) gives back the same", function () {
    const k = new NeighKeeper("eth0");
    k.seed([{ ip: "172.31.0.2", mac: "5a:2d:1f:65:a5:83", states: ["STALE"] }]);
    assert.deepEqual(feed(k, [A_DELETED, NO_CARRIER, UP]), [
      { ip: "172.31.0.2", mac: "5a:2d:1f:65:a5:83" },
    ]);
  });

  it("does not give back what the kernel removed while the link was up (GC, a host that failed, an admin delete)", function () {
    const k = new NeighKeeper("eth0");
    feed(k, [A, B6]);
    // A was collected long before the link went; B6 stopped answering.
    k.apply(ev(A_DELETED), 1000);
    k.apply(ev("fd31::3 dev eth0  FAILED"), 1001);
    k.apply(ev(ADMIN_DOWN), 1000 + FLUSH_WINDOW_MS + 1);
    assert.deepEqual(k.apply(ev(UP), 9000), [], "the link is back, with nothing to give back");
    assert.equal(k.size, 0);
  });

  it("learns a moved MAC, ignores other devices, permanent and multicast entries", function () {
    const k = new NeighKeeper("eth0");
    feed(k, [
      A,
      "172.31.0.2 dev eth0 lladdr 0a:00:00:00:00:99 STALE",
      "172.31.0.7 dev eth1 lladdr 0a:00:00:00:00:07 REACHABLE",
      "172.31.0.8 dev eth0 lladdr 0a:00:00:00:00:08 PERMANENT",
      "224.0.0.22 dev eth0 lladdr 01:00:5e:00:00:16 NOARP",
    ]);
    assert.deepEqual(feed(k, [ADMIN_DOWN, UP]), [{ ip: "172.31.0.2", mac: "0a:00:00:00:00:99" }]);
  });

  it("keeps at most max entries, the most recently learned", function () {
    const k = new NeighKeeper("eth0", 2);
    feed(k, [
      "172.31.0.1 dev eth0 lladdr 0a:00:00:00:00:01 REACHABLE",
      "172.31.0.2 dev eth0 lladdr 0a:00:00:00:00:02 REACHABLE",
      "172.31.0.3 dev eth0 lladdr 0a:00:00:00:00:03 REACHABLE",
      "172.31.0.1 dev eth0 lladdr 0a:00:00:00:00:01 STALE",
    ]);
    assert.deepEqual(
      feed(k, [ADMIN_DOWN, UP])?.map((e) => e.ip),
      ["172.31.0.3", "172.31.0.1"],
    );
  });

  it("writes back, in PROBE state, only the IPv4 entries the kernel has not learned again itself", function () {
    const kept = [
      { ip: "172.31.0.2", mac: "0a:00:00:00:00:02" },
      { ip: "172.31.0.3", mac: "0a:00:00:00:00:03" },
      { ip: "172.31.0.5", mac: "0a:00:00:00:00:05" },
      // IPv6: a probe would be solicited from our link-local address, so
      // the peer would not learn our global one; the pushes handle IPv6.
      { ip: "fd31::4", mac: "0a:00:00:00:00:04" },
    ];
    const plan = restorePlan(kept, [
      { ip: "172.31.0.2", mac: "0a:00:00:00:00:22", states: ["REACHABLE"] }, // newer than ours
      { ip: "172.31.0.3", states: ["INCOMPLETE"] }, // waiting for ARP: ours helps
    ]);
    assert.deepEqual(
      plan.map((e) => e.ip),
      ["172.31.0.3", "172.31.0.5"],
    );
    assert.equal(
      restoreBatch("eth0", plan),
      "neigh replace 172.31.0.3 lladdr 0a:00:00:00:00:03 dev eth0 nud probe\n" +
        "neigh replace 172.31.0.5 lladdr 0a:00:00:00:00:05 dev eth0 nud probe\n",
    );
  });

  it("pushes what is still unresolved: probes again what it wrote back, deletes what waits for ARP or ND", function () {
    const restored = new Set(["172.31.0.2", "172.31.0.3"]);
    const p = pushPlan(
      "eth0",
      [
        { ip: "172.31.0.2", mac: "0a:00:00:00:00:02", states: ["PROBE"] }, // ours, unanswered
        { ip: "172.31.0.3", mac: "0a:00:00:00:00:03", states: ["REACHABLE"] }, // ours, answered
        { ip: "172.31.0.4", mac: "0a:00:00:00:00:04", states: ["PROBE"] }, // the kernel's own
        { ip: "172.31.0.6", states: ["INCOMPLETE"] },
        { ip: "fd31::6", states: ["INCOMPLETE"] },
        { ip: "172.31.0.7", states: ["FAILED"] }, // the next packet asks at once anyway
      ],
      restored,
    );
    assert.equal(p.pending, 3);
    assert.equal(
      p.batch,
      // A state change restarts the timer: STALE then PROBE sends a probe now.
      "neigh replace 172.31.0.2 lladdr 0a:00:00:00:00:02 dev eth0 nud stale\n" +
        "neigh replace 172.31.0.2 lladdr 0a:00:00:00:00:02 dev eth0 nud probe\n" +
        "neigh del 172.31.0.6 dev eth0\n" +
        "neigh del fd31::6 dev eth0\n",
    );
    assert.deepEqual(pushPlan("eth0", [], restored), { batch: "", pending: 0 });
    // Every 50 ms for the first second, then every 200 ms, for 3 s.
    assert.deepEqual(PUSH_AT_MS.slice(0, 3), [50, 100, 150]);
    assert.equal(PUSH_AT_MS[19], 1000);
    assert.equal(PUSH_AT_MS.at(-1), 3000);
    assert.ok(PUSH_AT_MS.every((t, i) => i === 0 || t > (PUSH_AT_MS[i - 1] as number)));
  });
});
