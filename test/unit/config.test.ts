import assert from "node:assert/strict";
import { parseNetworkConfig, subnetCount } from "../../agent/control/config";
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
    assert.deepEqual(c.backend, { type: "vxlan", vni: 1, port: 8472 });
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
    assert.deepEqual(c.backend, { type: "vxlan", vni: 7, port: 4789 });
  });

  it("treats VNI 0 and Port 0 as the defaults", function () {
    assert.deepEqual(
      parse({ Network: "10.5.0.0/16", Backend: { Type: "vxlan", VNI: 0, Port: 0 } }).backend,
      {
        type: "vxlan",
        vni: 1,
        port: 8472,
      },
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
      /Backend.Type: only "vxlan" is supported, got "udp"/,
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
      "IPv6",
      { Network: "10.5.0.0/16", EnableIPv6: true },
      /EnableIPv6: IPv6 overlays are not supported/,
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
