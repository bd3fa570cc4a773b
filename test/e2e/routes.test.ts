// End to end, node plumbing only: agent/net/routes.ts programs host-gw peer
// routes in a network namespace this run creates (a veth pair, 172.30.0.1/16
// on eth0 so 5,000 peers each have their own gateway). Everything runs in
// that namespace through test/lib/routes-helper.ts; the kernel's table is
// read back with plain `ip -j route`, not with the module under test.
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROUTE_PROTO } from "../../agent/net/route-table";
import { requireEnv } from "../lib/require";
import { inNs, sh } from "../lib/sh";
import { Topology } from "../lib/topology";

interface Want {
  dst: string;
  via: string;
  dev: string;
}

interface SyncAnswer {
  ms: number;
  added: number;
  replaced: number;
  deleted: number;
  unchanged: number;
  foreign: { dst: string; gateway?: string; protocol: number | string; metric: number }[];
  failed: { op: string; dst: string; command: string; error: string }[];
}

const HELPER = join(__dirname, "..", "lib", "routes-helper.js");
const N = 5000;
const P = ROUTE_PROTO;

const ipOf = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
/** Peer i: subnet 10.200.0.0/24 + i, gateway 172.30.1.0 + i (on eth0's /16). */
const peer = (i: number): Want => ({
  dst: `${ipOf((0x0ac80000 + i * 256) >>> 0)}/24`,
  via: ipOf((0xac1e0100 + i) >>> 0),
  dev: "eth0",
});

describe("e2e: host-gw peer routes", function () {
  this.timeout(120000);
  const topo = new Topology();
  const ns = `${topo.prefix}-rt`;
  let foreignBefore: string[] = [];
  let desired: Want[] = [];

  const inside = (argv: string[], input?: string) => sh(inNs(ns, argv), { input });
  function sync(want: Want[]): SyncAnswer {
    const out = inside(["node", HELPER], JSON.stringify({ cmd: "sync", proto: P, desired: want }));
    return JSON.parse(out) as SyncAnswer;
  }
  /** Our routes as the kernel has them: dst -> "via GW dev DEV". */
  function kernelOurs(): Map<string, string> {
    const rs = JSON.parse(
      inside(["ip", "-4", "-j", "route", "show", "table", "main", "proto", String(P)]),
    ) as { dst: string; gateway?: string; dev?: string }[];
    return new Map(rs.map((r) => [r.dst, `via ${r.gateway} dev ${r.dev}`]));
  }
  const expected = (want: Want[]) => new Map(want.map((w) => [w.dst, `via ${w.via} dev ${w.dev}`]));
  /** Every route of another protocol, one JSON string each, sorted. */
  function foreign(): string[] {
    const rs = JSON.parse(inside(["ip", "-N", "-4", "-j", "-d", "route", "show", "table", "main"]));
    return (rs as { protocol: string }[])
      .filter((r) => r.protocol !== String(P))
      .map((r) => JSON.stringify(r))
      .sort();
  }
  function assertKernelIs(want: Want[]): void {
    const have = kernelOurs();
    const exp = expected(want);
    assert.equal(have.size, exp.size, "number of routes with our protocol");
    for (const [dst, how] of exp) assert.equal(have.get(dst), how, dst);
  }

  before(function () {
    requireEnv(this, { root: true, tools: ["ip", "node"] });
    topo.addNs(ns);
    inside(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
    inside(["ip", "addr", "add", "172.30.0.1/16", "dev", "eth0"]);
    inside(["ip", "link", "set", "eth0", "up"]);
    inside(["ip", "link", "set", "eth1", "up"]);
    // Routes that are not ours: a sync must leave every one of them as it is.
    inside(["ip", "route", "add", "10.250.1.0/24", "via", "172.30.0.250", "proto", "static"]);
    inside(["ip", "route", "add", "10.250.2.0/24", "via", "172.30.0.251"]);
    inside(["ip", "route", "add", "blackhole", "10.250.3.0/24"]);
    inside(["ip", "route", "add", "10.250.4.0/24", "via", "172.30.0.253", "proto", "200"]);
    // Same dst as peer 0, another metric: not the slot our replace writes.
    inside([
      "ip",
      "route",
      "add",
      peer(0).dst,
      "via",
      "172.30.0.252",
      "proto",
      "static",
      "metric",
      "100",
    ]);
    foreignBefore = foreign();
    desired = Array.from({ length: N }, (_, i) => peer(i));
  });

  after(function () {
    topo.destroy();
  });

  it("programs 5,000 routes in one sync", function () {
    const r = sync(desired);
    process.stdout.write(
      `      5,000 routes programmed by one syncRoutes in ${r.ms.toFixed(0)} ms\n`,
    );
    assert.deepEqual(r.failed, []);
    assert.deepEqual(
      [r.added, r.replaced, r.deleted, r.unchanged, r.foreign.length],
      [N, 0, 0, 0, 0],
    );
    assertKernelIs(desired);
  });

  it("touches nothing when nothing changed", function () {
    const r = sync(desired);
    assert.deepEqual([r.added, r.replaced, r.deleted, r.unchanged], [0, 0, 0, N]);
    assertKernelIs(desired);
  });

  it("replaces exactly the 10 changed gateways and deletes exactly the 10 gone", function () {
    const next = desired.map((w, i) =>
      i >= 100 && i < 110 ? { ...w, via: ipOf((0xac1e4000 + i) >>> 0) } : w,
    );
    desired = next.filter((_, i) => i < 200 || i >= 210);
    const r = sync(desired);
    assert.deepEqual(r.failed, []);
    assert.deepEqual([r.added, r.replaced, r.deleted, r.unchanged], [0, 10, 10, N - 20]);
    assertKernelIs(desired);
  });

  it("replaces a foreign static route at a peer's dst and reports it", function () {
    inside(["ip", "route", "add", "10.230.0.0/24", "via", "172.30.0.240", "proto", "static"]);
    desired = [...desired, { dst: "10.230.0.0/24", via: "172.30.9.9", dev: "eth0" }];
    const r = sync(desired);
    assert.deepEqual([r.added, r.replaced, r.deleted], [0, 1, 0]);
    assert.deepEqual(
      r.foreign.map((f) => [f.dst, f.gateway, f.protocol, f.metric]),
      [["10.230.0.0/24", "172.30.0.240", 4, 0]],
    );
    const left = JSON.parse(inside(["ip", "-N", "-j", "route", "show", "10.230.0.0/24"]));
    assert.deepEqual(
      left.map((x: { gateway: string; protocol: string }) => [x.gateway, x.protocol]),
      [["172.30.9.9", String(P)]],
    );
    assertKernelIs(desired);
  });

  it("leaves every route of other protocols as it was", function () {
    assert.deepEqual(foreign(), foreignBefore);
  });

  it("restores everything after `ip route flush proto N`", function () {
    inside(["ip", "route", "flush", "proto", String(P)]);
    assert.equal(kernelOurs().size, 0);
    const r = sync(desired);
    assert.deepEqual([r.added, r.replaced, r.deleted], [desired.length, 0, 0]);
    assertKernelIs(desired);
    assert.deepEqual(foreign(), foreignBefore);
  });

  it("applies the rest when a route cannot be programmed, and names each failure", function () {
    const more = Array.from({ length: 20 }, (_, i) => peer(N + i));
    const bad = [
      { dst: "10.231.0.0/24", via: "172.30.0.9", dev: "nosuch0" },
      { dst: "10.231.1.0/24", via: "10.99.0.1", dev: "eth0" }, // not on a connected network
    ];
    const r = sync([...desired, ...bad, ...more]);
    assert.deepEqual([r.added, r.replaced, r.deleted], [20, 0, 0]);
    assert.deepEqual(
      r.failed.map((f) => [f.op, f.dst, f.command]),
      [
        [
          "replace",
          "10.231.0.0/24",
          `route replace 10.231.0.0/24 via 172.30.0.9 dev nosuch0 proto ${P}`,
        ],
        [
          "replace",
          "10.231.1.0/24",
          `route replace 10.231.1.0/24 via 10.99.0.1 dev eth0 proto ${P}`,
        ],
      ],
    );
    assert.match(r.failed[0]!.error, /Cannot find device "nosuch0"/);
    assert.match(r.failed[1]!.error, /invalid gateway|unreachable/i);
    desired = [...desired, ...more];
    assertKernelIs(desired);
  });

  it("removes only ours when nothing is desired", function () {
    const r = sync([]);
    assert.deepEqual([r.added, r.replaced, r.deleted], [0, 0, desired.length]);
    assert.equal(kernelOurs().size, 0);
    assert.deepEqual(foreign(), foreignBefore);
  });

  it("answers direct/not direct as the kernel does, and shows where a policy rule makes them differ", function () {
    desired = [peer(0), peer(1)];
    sync(desired);
    // table 100 holds a direct route for 10.240.0.0/16; main says via a gateway
    inside(["ip", "route", "add", "10.240.0.0/16", "via", "172.30.0.254"]);
    inside(["ip", "route", "add", "10.240.0.0/16", "dev", "eth0", "table", "100"]);
    inside(["ip", "rule", "add", "to", "10.240.0.0/16", "lookup", "100", "priority", "100"]);
    const ips = ["172.30.5.5", "10.200.1.9", "10.99.0.1", "10.250.3.1", "10.240.0.7"];
    const out = JSON.parse(inside(["node", HELPER], JSON.stringify({ cmd: "lookup", ips })));
    assert.deepEqual(out.rulesBeforeMain, [100]);
    const row = (a: string) => out.answers.find((x: { ip: string }) => x.ip === a);
    // connected: direct both ways
    assert.deepEqual(row("172.30.5.5"), {
      ip: "172.30.5.5",
      table: "172.30.0.0/16",
      tableDirect: true,
      kernel: "direct",
      kernelDirect: true,
    });
    // a peer route: via its gateway
    assert.deepEqual(row("10.200.1.9"), {
      ip: "10.200.1.9",
      table: "10.200.1.0/24",
      tableDirect: false,
      kernel: peer(1).via,
      kernelDirect: false,
    });
    // no route (no default in this namespace) and a blackhole: no answer, not direct
    for (const a of ["10.99.0.1", "10.250.3.1"]) {
      assert.deepEqual(row(a), {
        ip: a,
        table: null,
        tableDirect: false,
        kernel: null,
        kernelDirect: false,
      });
    }
    // the policy rule: table main and the kernel disagree
    assert.deepEqual(row("10.240.0.7"), {
      ip: "10.240.0.7",
      table: "10.240.0.0/16",
      tableDirect: false,
      kernel: "direct",
      kernelDirect: true,
    });
    inside(["ip", "rule", "del", "priority", "100"]);
    inside(["ip", "route", "del", "10.240.0.0/16", "table", "100"]);
    inside(["ip", "route", "del", "10.240.0.0/16", "via", "172.30.0.254"]);
    sync([]);
  });
});
