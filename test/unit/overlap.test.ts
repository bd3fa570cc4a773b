import assert from "node:assert/strict";
import { Cidr, parseIp } from "../../agent/net/ip";
import { findOverlaps } from "../../agent/node/overlap";
import { parseRoutes } from "../../agent/net/routes";

const NET = Cidr.parse("10.5.0.0/16");
const own = { overlayDev: "ovl0", subnet: Cidr.parse("10.5.7.0/24") };
const route = (dst: string, extra: Record<string, unknown> = {}) => ({
  type: "unicast",
  dst,
  dev: "eth0",
  protocol: 4,
  scope: "global",
  flags: [],
  ...extra,
});

describe("unit: route overlaps with the cluster network (findOverlaps)", function () {
  it("reports a route inside the network that is not ours, with who installed it", function () {
    const routes = parseRoutes(
      JSON.stringify([route("10.5.77.0/24", { gateway: "172.31.0.254", protocol: 16 })]),
    );
    assert.deepEqual(findOverlaps(NET, routes, [], own), [
      { kind: "route", prefix: "10.5.77.0/24", dev: "eth0", origin: "dhcp" },
    ]);
  });

  it("ignores our own: the network route on ovl0, our lease's routes, our proto 157 routes", function () {
    const routes = parseRoutes(
      JSON.stringify([
        route("10.5.0.0/16", { dev: "ovl0", protocol: 4 }),
        route("10.5.7.0/24", { dev: "cni0", protocol: 2, scope: "link" }),
        route("10.5.9.0/24", { gateway: "172.31.0.9", protocol: 157 }),
      ]),
    );
    assert.deepEqual(findOverlaps(NET, routes, [], own), []);
  });

  it("ignores routes that only touch the edge or cover the network (default, 10/8)", function () {
    const routes = parseRoutes(
      JSON.stringify([
        route("10.6.0.0/16"),
        route("10.4.255.0/24"),
        route("default", { gateway: "172.31.0.254" }),
        route("10.0.0.0/8", { gateway: "172.31.0.254" }),
      ]),
    );
    assert.deepEqual(findOverlaps(NET, routes, [], own), []);
  });

  it("reports an address inside the network on another device, not ours", function () {
    const addrs = [
      { ifname: "eth1", ip: parseIp("10.5.99.1"), prefixlen: 24 },
      { ifname: "cni0", ip: parseIp("10.5.7.1"), prefixlen: 24 },
      { ifname: "ovl0", ip: parseIp("10.5.7.0"), prefixlen: 32 },
      { ifname: "eth0", ip: parseIp("172.31.0.1"), prefixlen: 24 },
    ];
    assert.deepEqual(findOverlaps(NET, [], addrs, own), [
      { kind: "address", prefix: "10.5.99.1/24", dev: "eth1", origin: "address" },
    ]);
  });
});
