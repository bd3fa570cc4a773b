import assert from "node:assert/strict";
import { F_DIRECT, F_LOCAL, type HostEntry } from "../../agent/bpf/codec";
import { type SubnetMapLike } from "../../agent/bpf/subnet-map";
import { DirectRoutes } from "../../agent/backend/direct-routes";
import { createBackend } from "../../agent/backend";
import { parseNetworkConfig } from "../../agent/control/config";
import { type Lease } from "../../agent/control/lease";
import { createLogger } from "../../agent/log";
import { Cidr, formatIp, parseIp } from "../../agent/net/ip";
import { Cidr6 } from "../../agent/net/ip6";
import { parseIp6 } from "../../agent/net/ip6";
import { parseRoutes, parseRoutes6 } from "../../agent/net/routes";

// The routing table of a node on 172.31.0.0/24 whose default route is a
// router at 172.31.0.254 (as `ip -N -4 -j -d route show table main` prints it).
const TABLE = JSON.stringify([
  {
    type: "unicast",
    dst: "default",
    gateway: "172.31.0.254",
    dev: "eth0",
    protocol: 4,
    scope: "global",
    flags: [],
  },
  {
    type: "unicast",
    dst: "172.31.0.0/24",
    dev: "eth0",
    protocol: 2,
    scope: "link",
    prefsrc: "172.31.0.1",
    flags: [],
  },
  { type: "unicast", dst: "10.5.0.0/16", dev: "ovl0", protocol: 4, scope: "link", flags: [] },
]);
// Its IPv6 table: fd31::/64 on eth0, the default route via a router.
const TABLE6 = JSON.stringify([
  { type: "unicast", dst: "default", gateway: "fd31::fe", dev: "eth0", metric: 1024, flags: [] },
  { type: "unicast", dst: "fd31::/64", dev: "eth0", metric: 256, flags: [] },
  { type: "unicast", dst: "fe80::/64", dev: "eth0", metric: 256, flags: [] },
]);
const quiet = createLogger("error", () => {});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const deps = {
  log: quiet,
  readRoutes: () => parseRoutes(TABLE),
  addresses: () => [{ ifname: "eth0", ip: parseIp("172.31.0.1") }],
  readRoutes6: () => parseRoutes6(TABLE6),
  addresses6: () => [{ ifname: "eth0", ip: parseIp6("fd31::1") }],
};
const node = { iface: "eth0", publicIp: parseIp("172.31.0.1") };

function lease(subnet: string, publicIp: string, type = "vxlan"): Lease {
  return {
    subnet: Cidr.parse(subnet),
    attrs: {
      publicIp: parseIp(publicIp),
      backendType: type,
      ...(type === "vxlan" ? { vni: 1, vtepMac: "0e:00:00:00:00:02" } : {}),
    },
    leaseId: "1",
    modRevision: "1",
  };
}

function backend(conf: Record<string, unknown>) {
  const cfg = parseNetworkConfig(JSON.stringify({ Network: "10.5.0.0/16", Backend: conf }), "k");
  const b = createBackend(cfg.backend, deps);
  b.check(node);
  return b;
}

/** A dual-stack lease: fc00:5:0:K::/64 on PublicIPv6 `v6`. */
function lease6(k: number, v6: string, type = "vxlan"): Lease {
  const l = lease(`10.5.${k}.0/24`, `172.31.0.${k}`, type);
  return {
    ...l,
    subnet6: Cidr6.parse(`fc00:5:0:${k}::/64`),
    attrs: {
      ...l.attrs,
      publicIpv6: parseIp6(v6),
      ...(type === "vxlan" ? { vni6: 1, vtepMac6: "0e:00:00:00:00:06" } : {}),
    },
  };
}

describe("unit: backends, the IPv6 half", function () {
  const dual = (conf: Record<string, unknown>) => {
    const cfg = parseNetworkConfig(JSON.stringify({ Network: "10.5.0.0/16", Backend: conf }), "k");
    const b = createBackend(cfg.backend, deps);
    b.check({ ...node, publicIpv6: parseIp6("fd31::1") });
    return b;
  };
  const logs: string[] = [];
  const log = (m: string) => logs.push(m);

  it("vxlan: IPv6 peers encapsulated; with DirectRouting, those on our IPv6 network direct", function () {
    assert.equal(dual({ Type: "vxlan" }).entryOf6?.(lease6(2, "fd31::2"), log)?.flags, 0);
    const d = dual({ Type: "vxlan", DirectRouting: true });
    assert.deepEqual(d.entryOf6?.(lease6(2, "fd31::2"), log), {
      remoteIp: parseIp6("fd31::2"),
      vtepMac: "0e:00:00:00:00:06",
      flags: F_DIRECT,
    });
    assert.equal(d.entryOf6?.(lease6(3, "fd99::3"), log)?.flags, 0, "behind the router: VXLAN");
  });

  it("host-gw: IPv6 subnets via the PublicIPv6 when on our network, else not programmed (said)", function () {
    const b = dual({ Type: "host-gw" });
    assert.deepEqual(b.entryOf6?.(lease6(2, "fd31::2", "host-gw"), log), {
      remoteIp: parseIp6("fd31::2"),
      vtepMac: "00:00:00:00:00:00",
      flags: F_DIRECT,
    });
    logs.length = 0;
    assert.equal(b.entryOf6?.(lease6(3, "fd99::3", "host-gw"), log), undefined);
    assert.match(logs[0] ?? "", /PublicIPv6 fd99::3 is not on a directly connected IPv6 network/);
    assert.deepEqual(
      b.leaseAttrs(parseIp("172.31.0.1"), "", { publicIp: parseIp6("fd31::1"), vtepMac: "" }),
      {
        publicIp: parseIp("172.31.0.1"),
        backendType: "host-gw",
        publicIpv6: parseIp6("fd31::1"),
      },
    );
  });

  it("asks for a re-list when an IPv6 peer leaves our network (the 10 s re-check)", function () {
    let table6 = TABLE6;
    const r = new DirectRoutes(
      "eth0",
      quiet,
      () => parseRoutes(TABLE),
      () => ({ added: 0, replaced: 0, deleted: 0, unchanged: 0, foreign: [], failed: [] }),
      () => parseRoutes6(table6),
    );
    assert.equal(r.direct6(parseIp6("fd31::2")), true);
    const why: string[] = [];
    r.start({ upsert() {}, delete: () => true, list: () => [] }, (w) => why.push(w));
    r.recheck();
    assert.deepEqual(why, [], "nothing moved");
    table6 = JSON.stringify(
      JSON.parse(TABLE6).filter((x: { dst: string }) => x.dst !== "fd31::/64"),
    );
    r.recheck();
    r.stop();
    assert.deepEqual(why, [
      "1 peer(s) changed reachability (fd31::2 is no longer on a directly connected network)",
    ]);
  });

  it("host-gw: refuses a PublicIPv6 that is not the interface's own", function () {
    const cfg = parseNetworkConfig(
      JSON.stringify({ Network: "10.5.0.0/16", Backend: { Type: "host-gw" } }),
      "k",
    );
    const b = createBackend(cfg.backend, deps);
    assert.throws(
      () => b.check({ ...node, publicIpv6: parseIp6("fd32::1") }),
      /host-gw backend: PublicIPv6 fd32::1 is not an address of eth0 \(fd31::1\)/,
    );
  });
});

describe("unit: backends (agent/backend)", function () {
  it("vxlan: every peer is encapsulated; its lease carries VNI and VtepMAC", function () {
    const b = backend({ Type: "vxlan", VNI: 4 });
    const e = b.entryOf(lease("10.5.2.0/24", "172.31.0.2"), () => {});
    assert.deepEqual(e, {
      remoteIp: parseIp("172.31.0.2"),
      vtepMac: "0e:00:00:00:00:02",
      flags: 0,
    });
    assert.deepEqual(b.leaseAttrs(parseIp("172.31.0.1"), "0e:00:00:00:00:01"), {
      publicIp: parseIp("172.31.0.1"),
      backendType: "vxlan",
      vni: 4,
      vtepMac: "0e:00:00:00:00:01",
    });
    assert.equal(b.decapsulates, true);
    assert.equal(b.overhead, 50);
    assert.deepEqual(b.device(), { port: 8472, gbp: false });
  });

  it("vxlan DirectRouting: direct to a peer on a connected network, VXLAN behind the router", function () {
    const b = backend({ Type: "vxlan", DirectRouting: true });
    const near = b.entryOf(lease("10.5.2.0/24", "172.31.0.2"), () => {});
    const far = b.entryOf(lease("10.5.3.0/24", "192.168.7.3"), () => {});
    assert.equal(near?.flags, F_DIRECT);
    assert.equal(far?.flags, 0);
  });

  it("vxlan DirectRouting: a peer with no route at all stays VXLAN, no error", function () {
    const cfg = parseNetworkConfig(
      JSON.stringify({ Network: "10.5.0.0/16", Backend: { DirectRouting: true } }),
      "k",
    );
    const noDefault = JSON.stringify([
      { type: "unicast", dst: "172.31.0.0/24", dev: "eth0", protocol: 2, scope: "link", flags: [] },
    ]);
    const b = createBackend(cfg.backend, { ...deps, readRoutes: () => parseRoutes(noDefault) });
    b.check(node);
    assert.equal(b.entryOf(lease("10.5.9.0/24", "198.51.100.9"), () => {})?.flags, 0);
  });

  it("host-gw: direct entries, no VTEP, no decapsulation, a lease without BackendData", function () {
    const b = backend({ Type: "host-gw" });
    const e = b.entryOf(lease("10.5.2.0/24", "172.31.0.2", "host-gw"), () => {});
    assert.deepEqual(e, {
      remoteIp: parseIp("172.31.0.2"),
      vtepMac: "00:00:00:00:00:00",
      flags: F_DIRECT,
    });
    assert.deepEqual(b.leaseAttrs(parseIp("172.31.0.1"), "x"), {
      publicIp: parseIp("172.31.0.1"),
      backendType: "host-gw",
    });
    assert.equal(b.decapsulates, false);
    assert.equal(b.overhead, 0);
    assert.deepEqual(b.device(), {});
  });

  it("host-gw: refuses a peer behind a router and a lease of another backend, saying why", function () {
    const b = backend({ Type: "host-gw" });
    const logs: string[] = [];
    assert.equal(
      b.entryOf(lease("10.5.3.0/24", "192.168.7.3", "host-gw"), (m) => logs.push(m)),
      undefined,
    );
    assert.match(logs[0]!, /192.168.7.3 is not on a directly connected network of eth0/);
    assert.equal(
      b.entryOf(lease("10.5.4.0/24", "172.31.0.4", "vxlan"), (m) => logs.push(m)),
      undefined,
    );
    assert.match(logs[1]!, /BackendType "vxlan" but this network's Backend.Type is "host-gw"/);
  });

  it("host-gw: refuses a node whose PublicIP is not its interface's (NAT), before anything is made", function () {
    const cfg = parseNetworkConfig(
      JSON.stringify({ Network: "10.5.0.0/16", Backend: { Type: "host-gw" } }),
      "k",
    );
    const b = createBackend(cfg.backend, deps);
    assert.throws(
      () => b.check({ iface: "eth0", publicIp: parseIp("203.0.113.9") }),
      /PublicIP 203.0.113.9 is not an address of eth0 \(172.31.0.1\); behind NAT/,
    );
  });
});

describe("unit: direct routes follow the reconciler's plans", function () {
  it("lists the map once at start, then takes each change from the plan (no listing per change)", async function () {
    const entries = new Map<string, { subnet: Cidr; host: HostEntry }>();
    let lists = 0;
    const map: SubnetMapLike = {
      upsert: (subnet, host) => void entries.set(subnet.toString(), { subnet, host }),
      delete: (subnet) => entries.delete(subnet.toString()),
      list: () => {
        lists++;
        return [...entries.values()];
      },
    };
    const direct = (ip: string) => ({
      remoteIp: parseIp(ip),
      vtepMac: "0e:00:00:00:00:02",
      flags: F_DIRECT,
    });
    map.upsert(Cidr.parse("10.5.2.0/24"), direct("172.31.0.2"));
    map.upsert(Cidr.parse("10.5.3.0/24"), { ...direct("172.31.9.3"), flags: 0 }); // VXLAN: no route
    map.upsert(Cidr.parse("10.5.1.0/24"), { ...direct("172.31.0.1"), flags: F_LOCAL });
    const applied: string[][] = [];
    const routes = new DirectRoutes(
      "eth0",
      quiet,
      () => parseRoutes(TABLE),
      (desired) => {
        applied.push(desired.map((d) => `${d.dst} via ${formatIp(d.via)}`).sort());
        return { added: 0, replaced: 0, deleted: 0, unchanged: 0, failed: [], foreign: [] };
      },
    );
    routes.start(map, () => assert.fail("no re-list"));
    try {
      assert.deepEqual(applied, [["10.5.2.0/24 via 172.31.0.2"]]);
      // A churn of plans: a new direct peer, a removed one, one turned VXLAN.
      for (let i = 0; i < 100; i++) {
        routes.changed({
          upserts: [
            { subnet: Cidr.parse(`10.5.${10 + i}.0/24`), host: direct(`172.31.0.${10 + i}`) },
          ],
          deletes: i === 0 ? [Cidr.parse("10.5.2.0/24")] : [],
        });
      }
      routes.changed({
        upserts: [
          { subnet: Cidr.parse("10.5.10.0/24"), host: { ...direct("172.31.0.10"), flags: 0 } },
        ],
        deletes: [],
      });
      await sleep(250); // past the debounce
      assert.equal(lists, 1, "the map listed once, at start");
      assert.equal(applied.length, 2, "one route sync for the burst");
      const last = applied[1]!;
      assert.equal(last.length, 99);
      assert.ok(!last.includes("10.5.2.0/24 via 172.31.0.2"), "deleted subnet's route gone");
      assert.ok(
        !last.some((r) => r.startsWith("10.5.10.0/24")),
        "a peer turned VXLAN loses its route",
      );
      assert.ok(last.includes("10.5.109.0/24 via 172.31.0.109"));
      // A change without a plan (the map written from elsewhere): listed again.
      routes.changed();
      await sleep(250);
      assert.equal(lists, 2);
    } finally {
      routes.stop();
    }
  });
});
