// flannel's IPv6 config keys (pkg/subnet/config.go): defaults, rules and
// errors, and the pod MTU of a dual-stack network.
import assert from "node:assert/strict";
import {
  familyOverhead,
  IPV6_OUTER_EXTRA,
  overlayMtuOf,
  parseNetworkConfig,
  subnetCount6,
  subnetRange6,
} from "../../agent/control/config";
import { ConfigError } from "../../agent/errors";
import { formatIp6 } from "../../agent/net/ip6";

const KEY = "/coreos.com/network/config";
const parse = (o: unknown) => parseNetworkConfig(JSON.stringify(o), KEY);
const V4 = { Network: "10.5.0.0/16" };

describe("unit: network config, IPv6 keys (flannel's rules)", function () {
  it("is IPv4 only by default: EnableIPv4 true, EnableIPv6 false, no IPv6 half", function () {
    const c = parse(V4);
    assert.equal(c.enableIPv4, true);
    assert.equal(c.enableIPv6, false);
    assert.equal(c.ipv6, undefined);
    assert.equal(subnetCount6(c), 0n);
    assert.deepEqual([...subnetRange6(c)], []);
  });

  it("applies flannel's defaults to a /48: /64 subnets from the second to the last", function () {
    const c = parse({ ...V4, EnableIPv6: true, IPv6Network: "fc00:5::/48" });
    assert.equal(c.enableIPv6, true);
    const v = c.ipv6!;
    assert.equal(v.network.toString(), "fc00:5::/48");
    assert.equal(v.subnetLen, 64);
    assert.equal(formatIp6(v.subnetMin), "fc00:5:0:1::");
    assert.equal(formatIp6(v.subnetMax), "fc00:5:0:ffff::");
    assert.equal(subnetCount6(c), 65535n);
    // the v4 half is untouched
    assert.equal(c.subnetLen, 24);
  });

  it("defaults IPv6SubnetLen to 64 up to a /62, prefix+2 beyond, and accepts a /124", function () {
    const len = (net: string) =>
      parse({ ...V4, EnableIPv6: true, IPv6Network: net }).ipv6?.subnetLen;
    assert.equal(len("fc00::/32"), 64);
    assert.equal(len("fc00::/62"), 64);
    assert.equal(len("fc00::/63"), 65);
    assert.equal(len("fc00::/100"), 102);
    assert.equal(len("fc00::/124"), 126);
    const c = parse({ ...V4, EnableIPv6: true, IPv6Network: "fc00::/124" });
    assert.deepEqual([...subnetRange6(c)].map(String), [
      "fc00::4/126",
      "fc00::8/126",
      "fc00::c/126",
    ]);
  });

  it("takes IPv6SubnetLen, IPv6SubnetMin and IPv6SubnetMax as given, any case", function () {
    const c = parse({
      network: "10.5.0.0/16",
      enableipv6: true,
      ipv6network: "fc00:5::/48",
      ipv6subnetlen: 80,
      ipv6subnetmin: "fc00:5:0:1::",
      ipv6subnetmax: "fc00:5:0:1:3::",
    });
    assert.equal(c.ipv6?.subnetLen, 80);
    assert.equal(subnetCount6(c), 4n);
    assert.deepEqual([...subnetRange6(c)].map(String), [
      "fc00:5:0:1::/80",
      "fc00:5:0:1:1::/80",
      "fc00:5:0:1:2::/80",
      "fc00:5:0:1:3::/80",
    ]);
    assert.deepEqual(c.unknownKeys, []);
  });

  it("ignores the IPv6 keys while EnableIPv6 is off, but still rejects a malformed one", function () {
    const c = parse({ ...V4, IPv6Network: "fc00:5::/48", IPv6SubnetLen: 127 });
    assert.equal(c.ipv6, undefined, "flannel checks the IPv6 rules only with EnableIPv6");
    assert.throws(
      () => parse({ ...V4, IPv6Network: "fc00:5::/480" }),
      /config: IPv6Network: "fc00:5::\/480": prefix length must be 0..128/,
    );
  });

  it("gives pods room for the IPv6 outer header: MTU - 70 with IPv6, - 50 without, all of it for host-gw", function () {
    const vx = parse(V4).backend;
    assert.equal(IPV6_OUTER_EXTRA, 40 - 20);
    assert.equal(familyOverhead(vx, 50, false), 50);
    assert.equal(familyOverhead(vx, 50, true), 70);
    assert.equal(overlayMtuOf(vx, 1500, 50, KEY, true), 1430);
    assert.equal(overlayMtuOf(vx, 1500, 50, KEY), 1450);
    const hg = parse({ ...V4, Backend: { Type: "host-gw" } }).backend;
    assert.equal(overlayMtuOf(hg, 1500, 50, KEY, true), 1500);
    assert.throws(
      () => overlayMtuOf({ ...vx, mtu: 1340 }, 1500, 50, KEY, true),
      /Backend.MTU: 1340 leaves pods 1270 bytes after the 70-byte encapsulation; at least 1350 is needed/,
    );
  });

  const bad: [string, unknown, RegExp][] = [
    [
      "both families off",
      { ...V4, EnableIPv4: false },
      /EnableIPv4: EnableIPv4 and EnableIPv6 are both false: enable at least one family/,
    ],
    [
      "IPv6 only",
      { EnableIPv4: false, EnableIPv6: true, IPv6Network: "fc00::/48" },
      /EnableIPv4: IPv6-only networks are not supported: a lease key in etcd always carries an IPv4 subnet/,
    ],
    [
      "EnableIPv6 not a boolean",
      { ...V4, EnableIPv6: "yes" },
      /EnableIPv6: must be true or false, got "yes"/,
    ],
    [
      "EnableIPv4 not a boolean",
      { ...V4, EnableIPv4: 1 },
      /EnableIPv4: must be true or false, got 1/,
    ],
    [
      "IPv6Network missing",
      { ...V4, EnableIPv6: true },
      /IPv6Network: is required when EnableIPv6 is true \(e.g. "fc00:5::\/48"\)/,
    ],
    [
      "IPv6Network not a string",
      { ...V4, EnableIPv6: true, IPv6Network: 6 },
      /IPv6Network: must be a CIDR string, got 6/,
    ],
    [
      "IPv6Network an IPv4 network",
      { ...V4, EnableIPv6: true, IPv6Network: "10.6.0.0/16" },
      /IPv6Network: "10.6.0.0" is not an IPv6 address/,
    ],
    [
      "IPv6Network with host bits",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00:5::1/48" },
      /IPv6Network: "fc00:5::1\/48" has host bits set \(network is fc00:5::\/48\)/,
    ],
    [
      "IPv6Network too small",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00::/125" },
      /IPv6Network: fc00::\/125 is too small: the smallest useful IPv6 network is a \/124/,
    ],
    [
      "IPv6Network IPv4-mapped",
      { ...V4, EnableIPv6: true, IPv6Network: "::ffff:10.0.0.0/120" },
      /IPv6Network: ::ffff:10.0.0.0\/120 overlaps ::ffff:0:0\/96 \(IPv4-mapped addresses\)/,
    ],
    [
      "IPv6SubnetLen 127",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00::/48", IPv6SubnetLen: 127 },
      /IPv6SubnetLen: must be at most \/126 \(leave room for a gateway and a pod\), got 127/,
    ],
    [
      "IPv6SubnetLen above 128",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00::/48", IPv6SubnetLen: 129 },
      /IPv6SubnetLen: must be within 0..128, got 129/,
    ],
    [
      "fewer than 4 IPv6 subnets",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00::/48", IPv6SubnetLen: 49 },
      /IPv6SubnetLen: \/49 must leave room for at least 4 subnets in fc00::\/48 \(at least \/50\)/,
    ],
    [
      "IPv6SubnetMin outside",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00:5::/48", IPv6SubnetMin: "fc00:6::" },
      /IPv6SubnetMin: fc00:6:: is not inside IPv6Network fc00:5::\/48/,
    ],
    [
      "IPv6SubnetMax off boundary",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00:5::/48", IPv6SubnetMax: "fc00:5:0:9::1" },
      /IPv6SubnetMax: fc00:5:0:9::1 is not on a \/64 boundary/,
    ],
    [
      "IPv6SubnetMin above IPv6SubnetMax",
      {
        ...V4,
        EnableIPv6: true,
        IPv6Network: "fc00:5::/48",
        IPv6SubnetMin: "fc00:5:0:9::",
        IPv6SubnetMax: "fc00:5:0:3::",
      },
      /IPv6SubnetMin: fc00:5:0:9:: is above IPv6SubnetMax fc00:5:0:3::/,
    ],
    [
      "IPv6SubnetMin not an address",
      { ...V4, EnableIPv6: true, IPv6Network: "fc00:5::/48", IPv6SubnetMin: "fc00:5::zz" },
      /IPv6SubnetMin: "fc00:5::zz" is not an IPv6 address/,
    ],
  ];
  for (const [what, input, re] of bad) {
    it(`rejects ${what}, naming the key, field and rule`, function () {
      assert.throws(
        () => parse(input),
        (e: unknown) =>
          e instanceof ConfigError && e.message.startsWith(`${KEY}:`) && re.test(e.message),
      );
    });
  }
});
