import assert from "node:assert/strict";
import { overlayMtuOf, parseNetworkConfig, subnetCount } from "../../agent/control/config";
import { ConfigError } from "../../agent/errors";
import { formatIp } from "../../agent/net/ip";

const KEY = "/coreos.com/network/config";
const parse = (o: unknown) => parseNetworkConfig(JSON.stringify(o), KEY);

describe("unit: network config (flannel's rules)", function () {
  it("applies flannel's defaults to a /16", function () {
    const c = parse({ Network: "10.5.0.0/16" });
    assert.equal(c.subnetLen, 24);
    assert.equal(formatIp(c.subnetMin), "10.5.1.0", "second subnet");
    assert.equal(formatIp(c.subnetMax), "10.5.255.0", "last subnet");
    assert.deepEqual(c.backend, {
      type: "vxlan",
      vni: 1,
      port: 8472,
      gbp: false,
      directRouting: false,
      learning: false,
    });
    assert.equal(c.enableNFTables, false);
    assert.deepEqual(c.unknownKeys, []);
    assert.equal(subnetCount(c), 255);
  });

  it("defaults SubnetLen to prefix+2 for networks smaller than /22", function () {
    assert.equal(parse({ Network: "10.5.0.0/22" }).subnetLen, 24);
    assert.equal(parse({ Network: "10.5.0.0/23" }).subnetLen, 25);
    assert.equal(parse({ Network: "10.5.0.0/28" }).subnetLen, 30);
  });

  it("matches field names case-insensitively, as flannel does", function () {
    const c = parse({
      network: "10.6.0.0/16",
      subnetlen: 26,
      backend: { type: "VXLAN", vni: 7, port: 4789 },
    });
    assert.equal(c.network.toString(), "10.6.0.0/16");
    assert.equal(c.subnetLen, 26);
    assert.deepEqual(c.backend, {
      type: "vxlan",
      vni: 7,
      port: 4789,
      gbp: false,
      directRouting: false,
      learning: false,
    });
  });

  it("treats VNI 0 and Port 0 as the defaults", function () {
    assert.deepEqual(
      parse({ Network: "10.5.0.0/16", Backend: { Type: "vxlan", VNI: 0, Port: 0 } }).backend,
      { type: "vxlan", vni: 1, port: 8472, gbp: false, directRouting: false, learning: false },
    );
  });

  it("reads flannel's vxlan options: MTU, GBP, DirectRouting, Learning, MacPrefix", function () {
    const c = parse({
      Network: "10.5.0.0/16",
      EnableNFTables: true,
      Backend: {
        Type: "vxlan",
        MTU: 1400,
        GBP: true,
        DirectRouting: true,
        Learning: true,
        MacPrefix: "0e-2a",
      },
    });
    assert.deepEqual(c.backend, {
      type: "vxlan",
      vni: 1,
      port: 8472,
      mtu: 1400,
      gbp: true,
      directRouting: true,
      learning: true,
      macPrefix: "0E-2A",
    });
    assert.equal(c.enableNFTables, true);
  });

  it("reads the host-gw backend, which takes no options", function () {
    const c = parse({ Network: "10.5.0.0/16", Backend: { Type: "host-gw", VNI: 3 } });
    assert.equal(c.backend.type, "host-gw");
    assert.deepEqual(c.unknownKeys, ["Backend.VNI"], "host-gw ignores VNI, as flannel does");
  });

  it("collects unknown keys (ignored, as flannel ignores them) with their path", function () {
    const c = parse({
      Network: "10.5.0.0/16",
      Color: "blue",
      ipv6network: "fc00::/48",
      Backend: { Type: "vxlan", Colour: 1 },
    });
    assert.deepEqual(c.unknownKeys, ["Color", "Backend.Colour"]);
  });

  it("cuts the overlay MTU from Backend.MTU or the interface: MTU - 50 for vxlan, all of it for host-gw", function () {
    const vx = parse({ Network: "10.5.0.0/16", Backend: { MTU: 1400 } }).backend;
    assert.equal(overlayMtuOf(vx, 1500, 50), 1350);
    const dflt = parse({ Network: "10.5.0.0/16" }).backend;
    assert.equal(overlayMtuOf(dflt, 9001, 50), 8951);
    const hg = parse({ Network: "10.5.0.0/16", Backend: { Type: "host-gw" } }).backend;
    assert.equal(overlayMtuOf(hg, 1500, 50), 1500);
    assert.throws(
      () => overlayMtuOf({ ...vx, mtu: 1600 }, 1500, 50, KEY),
      (e: unknown) =>
        e instanceof ConfigError &&
        /Backend.MTU: 1600 is above the external interface's MTU 1500/.test(e.message),
    );
    assert.throws(
      () => overlayMtuOf({ ...vx, mtu: 1300 }, 1500, 50, KEY),
      (e: unknown) =>
        e instanceof ConfigError &&
        /Backend.MTU: 1300 leaves pods 1250 bytes.*at least 1330/.test(e.message),
    );
  });

  const bad: [string, unknown, RegExp][] = [
    ["missing config", undefined, /config: is missing/],
    ["not JSON", "{nope", /config: is not valid JSON/],
    ["not an object", [1], /config: must be a JSON object/],
    ["no Network", {}, /Network: is required/],
    ["Network not a string", { Network: 5 }, /Network: must be a CIDR string/],
    [
      "Network with host bits",
      { Network: "10.5.1.0/16" },
      /Network: "10.5.1.0\/16" has host bits set/,
    ],
    [
      "Network too small",
      { Network: "10.5.0.0/29" },
      /too small: the smallest useful network is a \/28/,
    ],
    [
      "SubnetLen 31",
      { Network: "10.5.0.0/16", SubnetLen: 31 },
      /SubnetLen: must be less than \/31/,
    ],
    [
      "fewer than 4 subnets",
      { Network: "10.5.0.0/16", SubnetLen: 17 },
      /SubnetLen: \/17 must leave room for at least 4 subnets/,
    ],
    [
      "SubnetLen not an integer",
      { Network: "10.5.0.0/16", SubnetLen: "24" },
      /SubnetLen: must be an integer/,
    ],
    [
      "SubnetMin outside",
      { Network: "10.5.0.0/16", SubnetMin: "10.6.0.0" },
      /SubnetMin: 10.6.0.0 is not inside Network 10.5.0.0\/16/,
    ],
    [
      "SubnetMax off boundary",
      { Network: "10.5.0.0/16", SubnetMax: "10.5.3.128" },
      /SubnetMax: 10.5.3.128 is not on a \/24 boundary/,
    ],
    [
      "SubnetMin > SubnetMax",
      { Network: "10.5.0.0/16", SubnetMin: "10.5.9.0", SubnetMax: "10.5.3.0" },
      /SubnetMin: 10.5.9.0 is above SubnetMax 10.5.3.0/,
    ],
    [
      "SubnetMin not an address",
      { Network: "10.5.0.0/16", SubnetMin: "ten" },
      /SubnetMin: "ten" is not an IPv4 address/,
    ],
    [
      "other backend",
      { Network: "10.5.0.0/16", Backend: { Type: "udp" } },
      /Backend.Type: flannel's "udp" backend is not implemented: only "vxlan" and "host-gw" are supported, got "udp"/,
    ],
    [
      "unknown backend",
      { Network: "10.5.0.0/16", Backend: { Type: "vxlan2" } },
      /Backend.Type: only "vxlan" and "host-gw" are supported, got "vxlan2"/,
    ],
    [
      "GBP not a boolean",
      { Network: "10.5.0.0/16", Backend: { GBP: "true" } },
      /Backend: GBP: must be true or false, got "true"/,
    ],
    [
      "DirectRouting not a boolean",
      { Network: "10.5.0.0/16", Backend: { DirectRouting: 1 } },
      /DirectRouting: must be true or false, got 1/,
    ],
    [
      "MTU not an integer",
      { Network: "10.5.0.0/16", Backend: { MTU: "1400" } },
      /Backend: MTU: must be an integer, got "1400"/,
    ],
    [
      "MacPrefix malformed",
      { Network: "10.5.0.0/16", Backend: { MacPrefix: "0E2A" } },
      /MacPrefix: must be two hex bytes like "0E-2A", got "0E2A"/,
    ],
    [
      "EnableNFTables not a boolean",
      { Network: "10.5.0.0/16", EnableNFTables: "yes" },
      /EnableNFTables: must be true or false, got "yes"/,
    ],
    [
      "VNI too big",
      { Network: "10.5.0.0/16", Backend: { VNI: 1 << 24 } },
      /Backend: VNI: must be within 0..16777215/,
    ],
    [
      "Port too big",
      { Network: "10.5.0.0/16", Backend: { Port: 70000 } },
      /Port: must be within 0..65535/,
    ],
    [
      "EnableIPv6 without IPv6Network",
      { Network: "10.5.0.0/16", EnableIPv6: true },
      /IPv6Network: is required when EnableIPv6 is true/,
    ],
  ];
  for (const [what, input, re] of bad) {
    it(`rejects ${what}, naming the key, field and rule`, function () {
      const text =
        input === undefined ? undefined : typeof input === "string" ? input : JSON.stringify(input);
      assert.throws(
        () => parseNetworkConfig(text, KEY),
        (e: unknown) =>
          e instanceof ConfigError && e.message.startsWith(`${KEY}:`) && re.test(e.message),
      );
    });
  }
});
