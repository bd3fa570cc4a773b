// The route table as data: parsing what ip prints, longest-prefix lookup,
// flannel's DirectRouting, policy rules, and the sync plan. The JSON samples
// were captured from iproute2 6.1 in a network namespace set up as:
//
//   eth0 172.31.0.1/24 (veth)
//   default via 172.31.0.254
//   10.5.2.0/24 via 172.31.0.2 proto 157
//   10.5.3.0/24 via 172.31.0.3 proto 157 onlink mtu 1400
//   10.5.3.0/24 via 172.31.0.9 metric 100
//   10.5.0.0/16 dev eth0 scope link
//   10.5.4.7 via 172.31.0.4 proto static
//   blackhole 10.5.9.0/24, unreachable 10.5.8.0/24, prohibit 10.5.7.0/24, throw 10.5.6.0/24
//   10.5.5.0/24 nexthop via 172.31.0.2 weight 1 nexthop via 172.31.0.3 weight 2
//   10.5.10.0/24 tos 0x10 via 172.31.0.5
//   192.168.50.0/24 via 172.31.0.6 mtu lock 1300
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { ConfigError } from "../../agent/errors";
import { Cidr, parseIp } from "../../agent/net/ip";
import {
  deleteCommand,
  isDirect,
  isDirectRoute,
  NO_ROUTE_ERRORS,
  parseRouteGet,
  parseRoutes,
  parseRules,
  planRoutes,
  replaceCommand,
  routeCommands,
  routeGet,
  ROUTE_PROTO,
  rulesBeforeMain,
  type DesiredRoute,
  type RouteInfo,
} from "../../agent/net/route-table";

// ip -N -4 -j -d route show table main (what listRoutes runs)
const NUMERIC = `[{"type":"1","dst":"default","gateway":"172.31.0.254","dev":"eth0","protocol":"3","scope":"0","flags":[]},{"type":"1","dst":"10.5.0.0/16","dev":"eth0","protocol":"3","scope":"253","flags":[]},{"type":"1","dst":"10.5.2.0/24","gateway":"172.31.0.2","dev":"eth0","protocol":"157","scope":"0","flags":[]},{"type":"1","dst":"10.5.3.0/24","gateway":"172.31.0.3","dev":"eth0","protocol":"157","scope":"0","flags":["onlink"],"metrics":[{"mtu":1400}]},{"type":"1","dst":"10.5.3.0/24","gateway":"172.31.0.9","dev":"eth0","protocol":"3","scope":"0","metric":100,"flags":[]},{"type":"1","dst":"10.5.4.7","gateway":"172.31.0.4","dev":"eth0","protocol":"4","scope":"0","flags":[]},{"type":"1","dst":"10.5.5.0/24","protocol":"3","scope":"0","flags":[],"nexthops":[{"gateway":"172.31.0.2","dev":"eth0","weight":1,"flags":[]},{"gateway":"172.31.0.3","dev":"eth0","weight":2,"flags":[]}]},{"type":"9","dst":"10.5.6.0/24","protocol":"3","scope":"0","flags":[]},{"type":"8","dst":"10.5.7.0/24","protocol":"3","scope":"0","flags":[]},{"type":"7","dst":"10.5.8.0/24","protocol":"3","scope":"0","flags":[]},{"type":"6","dst":"10.5.9.0/24","protocol":"3","scope":"0","flags":[]},{"type":"1","dst":"10.5.10.0/24","tos":"0x10","gateway":"172.31.0.5","dev":"eth0","protocol":"3","scope":"0","flags":[]},{"type":"1","dst":"172.31.0.0/24","dev":"eth0","protocol":"2","scope":"253","prefsrc":"172.31.0.1","flags":[]},{"type":"1","dst":"192.168.50.0/24","gateway":"172.31.0.6","dev":"eth0","protocol":"3","scope":"0","flags":[],"metrics":[{"mtu":1300}]}]`;

// ip -4 -j -d route show table main (names instead of numbers)
const NAMED = `[{"type":"unicast","dst":"default","gateway":"172.31.0.254","dev":"eth0","protocol":"boot","scope":"global","flags":[]},{"type":"unicast","dst":"10.5.0.0/16","dev":"eth0","protocol":"boot","scope":"link","flags":[]},{"type":"unicast","dst":"10.5.2.0/24","gateway":"172.31.0.2","dev":"eth0","protocol":"157","scope":"global","flags":[]},{"type":"unicast","dst":"10.5.3.0/24","gateway":"172.31.0.3","dev":"eth0","protocol":"157","scope":"global","flags":["onlink"],"metrics":[{"mtu":1400}]},{"type":"unicast","dst":"10.5.3.0/24","gateway":"172.31.0.9","dev":"eth0","protocol":"boot","scope":"global","metric":100,"flags":[]},{"type":"unicast","dst":"10.5.4.7","gateway":"172.31.0.4","dev":"eth0","protocol":"static","scope":"global","flags":[]},{"type":"unicast","dst":"10.5.5.0/24","protocol":"boot","scope":"global","flags":[],"nexthops":[{"gateway":"172.31.0.2","dev":"eth0","weight":1,"flags":[]},{"gateway":"172.31.0.3","dev":"eth0","weight":2,"flags":[]}]},{"type":"throw","dst":"10.5.6.0/24","protocol":"boot","scope":"global","flags":[]},{"type":"prohibit","dst":"10.5.7.0/24","protocol":"boot","scope":"global","flags":[]},{"type":"unreachable","dst":"10.5.8.0/24","protocol":"boot","scope":"global","flags":[]},{"type":"blackhole","dst":"10.5.9.0/24","protocol":"boot","scope":"global","flags":[]},{"type":"unicast","dst":"10.5.10.0/24","tos":"0x10","gateway":"172.31.0.5","dev":"eth0","protocol":"boot","scope":"global","flags":[]},{"type":"unicast","dst":"172.31.0.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"172.31.0.1","flags":[]},{"type":"unicast","dst":"192.168.50.0/24","gateway":"172.31.0.6","dev":"eth0","protocol":"boot","scope":"global","flags":[],"metrics":[{"mtu":1300}]}]`;

// ip -N -4 -j -d route show table main proto 157 (ip leaves out "protocol")
const BY_PROTO = `[{"type":"1","dst":"10.5.2.0/24","gateway":"172.31.0.2","dev":"eth0","scope":"0","flags":[]},{"type":"1","dst":"10.5.3.0/24","gateway":"172.31.0.3","dev":"eth0","scope":"0","flags":["onlink"],"metrics":[{"mtu":1400}]}]`;

// ip -N -4 -j -d route show table main dev eth0 (ip leaves out "dev"), first three
const BY_DEV = `[{"type":"1","dst":"default","gateway":"172.31.0.254","protocol":"3","scope":"0","flags":[]},{"type":"1","dst":"10.5.0.0/16","protocol":"3","scope":"253","flags":[]},{"type":"1","dst":"10.5.2.0/24","gateway":"172.31.0.2","protocol":"157","scope":"0","flags":[]}]`;

// ip -N -4 -j -d route get ADDR, and the kernel's errors for the others
const KERNEL: Record<string, string> = {
  "10.5.2.9": `[{"type":"1","dst":"10.5.2.9","gateway":"172.31.0.2","dev":"eth0","table":"254","prefsrc":"172.31.0.1","flags":[],"uid":0,"cache":[]}]`,
  "172.31.0.2": `[{"type":"1","dst":"172.31.0.2","dev":"eth0","table":"254","prefsrc":"172.31.0.1","flags":[],"uid":0,"cache":[]}]`,
  "172.31.0.1": `[{"type":"2","dst":"172.31.0.1","dev":"lo","table":"254","prefsrc":"172.31.0.1","flags":[],"uid":0,"cache":["local"]}]`,
  "10.5.5.1": `[{"type":"1","dst":"10.5.5.1","gateway":"172.31.0.3","dev":"eth0","table":"254","prefsrc":"172.31.0.1","flags":[],"uid":0,"cache":[]}]`,
};
const KERNEL_ERRORS: Record<string, string> = {
  "10.5.9.1": "RTNETLINK answers: Invalid argument", // blackhole
  "10.5.8.1": "RTNETLINK answers: No route to host", // unreachable
  "10.5.7.1": "RTNETLINK answers: Permission denied", // prohibit
  "10.5.6.1": "RTNETLINK answers: Network is unreachable", // throw (table default is empty)
};

// ip -N -4 -j rule show: the defaults; then with `to 10.77.0.0/16 lookup 100`
// and wg-quick's pair (suppress_prefixlength 0 on main, not fwmark -> 51820)
const RULES_DEFAULT = `[{"priority":0,"src":"all","table":"255"},{"priority":32766,"src":"all","table":"254"},{"priority":32767,"src":"all","table":"253"}]`;
const RULES_POLICY = `[{"priority":0,"src":"all","table":"255"},{"priority":100,"src":"all","dst":"10.77.0.0","dstlen":16,"table":"100"},{"priority":32764,"src":"all","table":"254","suppress_prefixlen":0},{"priority":32765,"not":null,"src":"all","fwmark":"0xca6c","table":"51820"},{"priority":32766,"src":"all","table":"254"},{"priority":32767,"src":"all","table":"253"}]`;
const RULES_POLICY_NAMED = `[{"priority":0,"src":"all","table":"local"},{"priority":100,"src":"all","dst":"10.77.0.0","dstlen":16,"table":"100"},{"priority":32764,"src":"all","table":"main","suppress_prefixlen":0},{"priority":32765,"not":null,"src":"all","fwmark":"0xca6c","table":"51820"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]`;

const ip = parseIp;
const net = (s: string) => Cidr.parse(s);
const table = parseRoutes(NUMERIC);
const find = (dst: string, metric = 0) =>
  table.find((r) => r.dst.toString() === dst && r.metric === metric) as RouteInfo;

describe("unit: route table", function () {
  describe("parsing ip -j route", function () {
    it("reads every route of the sample with its fields", function () {
      assert.equal(table.length, 14);
      assert.deepEqual(find("0.0.0.0/0"), {
        dst: net("0.0.0.0/0"),
        gateway: ip("172.31.0.254"),
        dev: "eth0",
        protocol: 3,
        scope: "global",
        type: "unicast",
        metric: 0,
        flags: [],
      });
      assert.deepEqual(find("10.5.3.0/24"), {
        dst: net("10.5.3.0/24"),
        gateway: ip("172.31.0.3"),
        dev: "eth0",
        protocol: ROUTE_PROTO,
        scope: "global",
        type: "unicast",
        metric: 0,
        flags: ["onlink"],
        mtu: 1400,
      });
      assert.equal(find("10.5.3.0/24", 100).gateway, ip("172.31.0.9"));
      assert.equal(find("10.5.4.7/32").protocol, 4, "a bare host address is a /32");
      assert.equal(find("10.5.0.0/16").scope, "link");
      assert.equal(find("10.5.0.0/16").gateway, undefined);
      assert.equal(find("172.31.0.0/24").prefsrc, ip("172.31.0.1"));
      assert.equal(find("172.31.0.0/24").protocol, 2);
      assert.equal(find("10.5.10.0/24").tos, 0x10);
      assert.equal(find("192.168.50.0/24").mtu, 1300, "a locked mtu reads the same");
      assert.deepEqual(
        ["10.5.6.0/24", "10.5.7.0/24", "10.5.8.0/24", "10.5.9.0/24"].map((d) => find(d).type),
        ["throw", "prohibit", "unreachable", "blackhole"],
      );
      assert.equal(find("10.5.9.0/24").dev, undefined);
      assert.deepEqual(find("10.5.5.0/24").nexthops, [
        { gateway: ip("172.31.0.2"), dev: "eth0", weight: 1, flags: [] },
        { gateway: ip("172.31.0.3"), dev: "eth0", weight: 2, flags: [] },
      ]);
      assert.equal(find("10.5.5.0/24").dev, undefined);
    });

    it("reads names (without -N) as the same numbers", function () {
      assert.deepEqual(parseRoutes(NAMED), table);
    });

    it("keeps a protocol name it does not know (a local rt_protos.d entry)", function () {
      const r = parseRoutes(`[{"dst":"10.9.0.0/24","dev":"x","protocol":"overlayd","flags":[]}]`);
      assert.equal(r[0]?.protocol, "overlayd");
      assert.equal(r[0]?.type, "unicast", "without -d ip omits unicast");
    });

    it("fills in what ip leaves out when it filtered on it", function () {
      const ours = parseRoutes(BY_PROTO, { proto: ROUTE_PROTO });
      assert.deepEqual(ours, [find("10.5.2.0/24"), find("10.5.3.0/24")]);
      const onEth0 = parseRoutes(BY_DEV, { dev: "eth0" });
      assert.deepEqual(onEth0, [find("0.0.0.0/0"), find("10.5.0.0/16"), find("10.5.2.0/24")]);
    });

    it("rejects what is not a route", function () {
      assert.throws(() => parseRoutes(`[{"dst":"10.5.0.0/40","flags":[]}]`), ConfigError);
      assert.throws(() => parseRoutes(`[{"dst":"nope","flags":[]}]`), /route dst/);
    });
  });

  describe("routeGet: longest prefix in table main", function () {
    const get = (a: string) => {
      const r = routeGet(table, ip(a));
      return r && `${r.dst.toString()} m${r.metric}`;
    };

    it("takes the longest matching prefix", function () {
      assert.equal(get("10.5.2.9"), "10.5.2.0/24 m0");
      assert.equal(get("10.5.4.7"), "10.5.4.7/32 m0");
      assert.equal(get("10.5.4.8"), "10.5.0.0/16 m0");
      assert.equal(get("172.31.0.77"), "172.31.0.0/24 m0");
      assert.equal(get("8.8.8.8"), "0.0.0.0/0 m0");
    });

    it("takes the lowest metric among equal prefixes", function () {
      assert.equal(get("10.5.3.1"), "10.5.3.0/24 m0");
      const reversed = [...table].reverse();
      assert.equal(routeGet(reversed, ip("10.5.3.1"))?.metric, 0);
    });

    it("skips routes with a TOS (a lookup without one does not match them)", function () {
      assert.equal(get("10.5.10.1"), "10.5.0.0/16 m0");
    });

    it("answers no route where blackhole, unreachable, prohibit or throw wins", function () {
      for (const a of ["10.5.9.1", "10.5.8.1", "10.5.7.1", "10.5.6.1"]) {
        assert.equal(get(a), undefined, a);
      }
    });

    it("answers no route without a match", function () {
      assert.equal(routeGet(parseRoutes(BY_PROTO), ip("8.8.8.8")), undefined);
      assert.equal(routeGet([], ip("8.8.8.8")), undefined);
    });
  });

  describe("isDirect: flannel's DirectRouting", function () {
    it("is direct for a connected network and a device route", function () {
      assert.equal(isDirect(table, ip("172.31.0.2")), true);
      assert.equal(isDirect(table, ip("10.5.4.8")), true);
    });

    it("is not direct via a gateway, the default route or several next hops", function () {
      assert.equal(isDirect(table, ip("10.5.2.9")), false);
      assert.equal(isDirect(table, ip("8.8.8.8")), false);
      assert.equal(isDirect(table, ip("10.5.5.1")), false);
    });

    it("is not direct without a route, or behind a blackhole", function () {
      assert.equal(isDirect([], ip("172.31.0.2")), false);
      assert.equal(isDirect(table, ip("10.5.9.1")), false);
      assert.equal(isDirect(table, ip("10.5.8.1")), false);
    });

    it("agrees with the kernel's answers captured for the same table", function () {
      for (const [a, json] of Object.entries(KERNEL)) {
        assert.equal(isDirectRoute(parseRouteGet(json)), isDirect(table, ip(a)), a);
      }
      for (const [a, err] of Object.entries(KERNEL_ERRORS)) {
        assert.match(err, NO_ROUTE_ERRORS);
        assert.equal(isDirect(table, ip(a)), false, a);
      }
    });

    it("reads the kernel's answer, our own address as local", function () {
      assert.deepEqual(parseRouteGet(KERNEL["172.31.0.1"] as string), {
        ip: ip("172.31.0.1"),
        type: "local",
        dev: "lo",
        prefsrc: ip("172.31.0.1"),
        table: 254,
        flags: [],
      });
      assert.equal(parseRouteGet(KERNEL["10.5.5.1"] as string)?.gateway, ip("172.31.0.3"));
    });
  });

  describe("policy rules: when table main is not the kernel's answer", function () {
    it("finds none with the default rules", function () {
      assert.deepEqual(rulesBeforeMain(parseRules(RULES_DEFAULT)), []);
    });

    it("names the rules consulted before main", function () {
      const before = rulesBeforeMain(parseRules(RULES_POLICY));
      assert.deepEqual(
        before.map((r) => [r.priority, r.table]),
        [
          [100, 100],
          [32764, 254],
          [32765, 51820],
        ],
      );
      assert.deepEqual(before[0]?.match, { dst: "10.77.0.0", dstlen: 16 });
      assert.deepEqual(parseRules(RULES_POLICY_NAMED), parseRules(RULES_POLICY));
    });
  });

  describe("planRoutes", function () {
    const P = ROUTE_PROTO;
    const ours = (dst: string, via: string, extra: Partial<RouteInfo> = {}): RouteInfo => ({
      dst: net(dst),
      gateway: ip(via),
      dev: "eth0",
      protocol: P,
      scope: "global",
      type: "unicast",
      metric: 0,
      flags: [],
      ...extra,
    });
    const want = (dst: string, via: string, extra: Partial<DesiredRoute> = {}): DesiredRoute => ({
      dst: net(dst),
      via: ip(via),
      dev: "eth0",
      ...extra,
    });
    const dsts = (rs: { dst: Cidr }[]) => rs.map((r) => r.dst.toString());

    it("leaves unchanged routes alone", function () {
      const current = [ours("10.5.1.0/24", "172.31.0.1"), ours("10.5.2.0/24", "172.31.0.2")];
      const plan = planRoutes(
        [want("10.5.2.0/24", "172.31.0.2"), want("10.5.1.0/24", "172.31.0.1")],
        current,
      );
      assert.deepEqual(plan, { replace: [], delete: [], foreign: [], unchanged: 2 });
      assert.deepEqual(routeCommands(plan, P), []);
    });

    it("leaves the sample's routes of ours alone when they are what is desired", function () {
      const plan = planRoutes(
        [
          want("10.5.2.0/24", "172.31.0.2"),
          want("10.5.3.0/24", "172.31.0.3", { onlink: true, mtu: 1400 }),
        ],
        table,
      );
      assert.deepEqual(plan, { replace: [], delete: [], foreign: [], unchanged: 2 });
    });

    it("adds new routes, with no route they overwrite", function () {
      const plan = planRoutes([want("10.5.7.0/24", "172.31.0.7")], []);
      assert.deepEqual(plan.replace, [want("10.5.7.0/24", "172.31.0.7")]);
      assert.deepEqual(routeCommands(plan, P), [
        "route replace 10.5.7.0/24 via 172.31.0.7 dev eth0 proto 157",
      ]);
    });

    it("replaces a changed gateway, device, onlink or mtu", function () {
      const current = [
        ours("10.5.1.0/24", "172.31.0.1"),
        ours("10.5.2.0/24", "172.31.0.2"),
        ours("10.5.3.0/24", "172.31.0.3"),
        ours("10.5.4.0/24", "172.31.0.4", { flags: ["onlink"], mtu: 1400 }),
        ours("10.5.5.0/24", "172.31.0.5"),
      ];
      const plan = planRoutes(
        [
          want("10.5.1.0/24", "172.31.0.11"),
          want("10.5.2.0/24", "172.31.0.2", { dev: "eth1" }),
          want("10.5.3.0/24", "172.31.0.3", { onlink: true }),
          want("10.5.4.0/24", "172.31.0.4", { onlink: true }),
          want("10.5.5.0/24", "172.31.0.5"),
        ],
        current,
      );
      assert.deepEqual(dsts(plan.replace), [
        "10.5.1.0/24",
        "10.5.2.0/24",
        "10.5.3.0/24",
        "10.5.4.0/24",
      ]);
      assert.deepEqual(
        plan.replace.map((r) => r.was),
        current.slice(0, 4),
      );
      assert.deepEqual(plan.delete, []);
      assert.deepEqual(plan.foreign, []);
      assert.equal(plan.unchanged, 1);
      assert.deepEqual(routeCommands(plan, P), [
        "route replace 10.5.1.0/24 via 172.31.0.11 dev eth0 proto 157",
        "route replace 10.5.2.0/24 via 172.31.0.2 dev eth1 proto 157",
        "route replace 10.5.3.0/24 via 172.31.0.3 dev eth0 proto 157 onlink",
        "route replace 10.5.4.0/24 via 172.31.0.4 dev eth0 proto 157 onlink",
      ]);
    });

    it("deletes ours that are not desired, naming our protocol in the command", function () {
      const gone = ours("10.5.9.0/24", "172.31.0.9");
      const plan = planRoutes(
        [want("10.5.1.0/24", "172.31.0.1")],
        [ours("10.5.1.0/24", "172.31.0.1"), gone],
      );
      assert.deepEqual(plan.delete, [gone]);
      assert.deepEqual(routeCommands(plan, P), [
        "route del 10.5.9.0/24 proto 157 via 172.31.0.9 dev eth0",
      ]);
      assert.deepEqual(
        planRoutes([], table).delete.map((r) => r.dst.toString()),
        ["10.5.2.0/24", "10.5.3.0/24"],
        "nothing desired: exactly ours go",
      );
    });

    it("never deletes routes of other protocols", function () {
      const plan = planRoutes([], table);
      assert.ok(plan.delete.every((r) => r.protocol === P));
      assert.equal(planRoutes([], table, 200).delete.length, 0, "no route of 200 in the sample");
    });

    it("replaces a foreign route at the same dst and metric, and lists it", function () {
      const fixed = find("10.5.4.7/32");
      const plan = planRoutes([want("10.5.4.7/32", "172.31.0.44")], table);
      assert.deepEqual(plan.foreign, [fixed]);
      assert.deepEqual(plan.replace, [{ ...want("10.5.4.7/32", "172.31.0.44"), was: fixed }]);
      assert.deepEqual(dsts(plan.delete), ["10.5.2.0/24", "10.5.3.0/24"]);
    });

    it("adds beside a foreign route of another metric, which it does not overwrite", function () {
      const current = [{ ...ours("10.5.1.0/24", "172.31.0.9"), protocol: 4, metric: 100 }];
      const plan = planRoutes([want("10.5.1.0/24", "172.31.0.1")], current);
      assert.deepEqual(plan.replace, [want("10.5.1.0/24", "172.31.0.1")]);
      assert.deepEqual(plan.foreign, []);
      assert.deepEqual(plan.delete, []);
    });

    it("moves ours from another metric or TOS to metric 0", function () {
      const m5 = ours("10.5.1.0/24", "172.31.0.1", { metric: 5 });
      const tos = ours("10.5.2.0/24", "172.31.0.2", { tos: 0x10 });
      const plan = planRoutes(
        [want("10.5.1.0/24", "172.31.0.1"), want("10.5.2.0/24", "172.31.0.2")],
        [m5, tos],
      );
      assert.deepEqual(dsts(plan.replace), ["10.5.1.0/24", "10.5.2.0/24"]);
      assert.deepEqual(plan.delete, [m5, tos]);
      assert.deepEqual(routeCommands(plan, P).slice(2), [
        "route del 10.5.1.0/24 proto 157 metric 5 via 172.31.0.1 dev eth0",
        "route del 10.5.2.0/24 proto 157 tos 0x10 via 172.31.0.2 dev eth0",
      ]);
    });

    it("replaces a route of ours that is a blackhole or multipath now", function () {
      const bh: RouteInfo = { ...ours("10.5.1.0/24", "0.0.0.0"), type: "blackhole" };
      delete bh.gateway;
      delete bh.dev;
      const plan = planRoutes([want("10.5.1.0/24", "172.31.0.1")], [bh]);
      assert.equal(plan.replace[0]?.was, bh);
      assert.equal(deleteCommand(bh, P), "route del 10.5.1.0/24 proto 157");
    });

    it("writes onlink and mtu into the replace command", function () {
      assert.equal(
        replaceCommand(
          want("10.5.1.0/24", "10.5.1.0", { dev: "ovl0", onlink: true, mtu: 1450 }),
          P,
        ),
        "route replace 10.5.1.0/24 via 10.5.1.0 dev ovl0 proto 157 onlink mtu 1450",
      );
    });

    it("takes a route desired twice once, and refuses two different ones for a dst", function () {
      const a = want("10.5.1.0/24", "172.31.0.1");
      assert.equal(planRoutes([a, { ...a }], []).replace.length, 1);
      assert.throws(
        () => planRoutes([a, want("10.5.1.0/24", "172.31.0.2")], []),
        /10\.5\.1\.0\/24 twice, via 172\.31\.0\.1 dev eth0 and via 172\.31\.0\.2 dev eth0/,
      );
    });

    it("refuses device names that could break a batch line, and bad MTUs", function () {
      for (const dev of ["eth0\nroute flush table main", "a b", "", "0123456789abcdef"]) {
        assert.throws(
          () => planRoutes([want("10.5.1.0/24", "172.31.0.1", { dev })], []),
          (e: unknown) => e instanceof ConfigError && /route 10\.5\.1\.0\/24: dev:/.test(e.message),
          JSON.stringify(dev),
        );
      }
      assert.throws(
        () => planRoutes([want("10.5.1.0/24", "172.31.0.1", { mtu: 20 })], []),
        /mtu: 20/,
      );
    });

    it("refuses the kernel's protocols (0-4): a sync would own everyone's routes", function () {
      for (const p of [0, 2, 3, 4, 256, 1.5]) {
        assert.throws(() => planRoutes([], table, p), /route protocol: .* must be 5\.\.255/);
      }
    });
  });

  it(`ROUTE_PROTO ${ROUTE_PROTO} is not a kernel RTPROT_* nor named in this machine's rt_protos`, function () {
    const kernel = [
      0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 99, 186, 187, 188, 189, 192,
    ];
    assert.ok(!kernel.includes(ROUTE_PROTO));
    for (const f of ["/etc/iproute2/rt_protos", "/usr/share/iproute2/rt_protos"]) {
      if (!existsSync(f)) continue;
      const taken = readFileSync(f, "utf8")
        .split("\n")
        .map((l) => l.replace(/#.*/, "").trim().split(/\s+/)[0])
        .filter((n): n is string => !!n)
        .map(Number);
      assert.ok(!taken.includes(ROUTE_PROTO), `${f} names ${ROUTE_PROTO}`);
    }
  });
});
