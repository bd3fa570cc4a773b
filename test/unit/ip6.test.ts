import assert from "node:assert/strict";
import {
  Cidr6,
  formatIp6,
  ip6FromBytes,
  ip6ToBytes,
  isIp6,
  maskOf6,
  parseIp6,
  subnets6,
} from "../../agent/net/ip6";
import { ConfigError } from "../../agent/errors";

describe("unit: IPv6 arithmetic", function () {
  it("parses every RFC 4291 text form to the same number", function () {
    const want = 0xfc000000000000010000000000000001n;
    for (const s of [
      "fc00:0:0:1::1",
      "fc00:0000:0000:0001:0000:0000:0000:0001",
      "FC00::1:0:0:0:1",
      "fc00:0:0:1:0:0:0:1",
      " fc00:0:0:1::0.0.0.1 ",
    ]) {
      assert.equal(parseIp6(s), want, s);
    }
    assert.equal(parseIp6("::"), 0n);
    assert.equal(parseIp6("::1"), 1n);
    assert.equal(parseIp6("1::"), 1n << 112n);
    assert.equal(parseIp6("::ffff:10.0.0.1"), 0xffff0a000001n);
    assert.equal(parseIp6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), (1n << 128n) - 1n);
  });

  for (const [bad, why] of [
    ["", /only hex digits/],
    ["fc00::1::2", /"::" appears more than once/],
    ["1:2:3:4:5:6:7", /7 groups, want 8/],
    ["1:2:3:4:5:6:7:8:9", /9 groups, want 8/],
    ["1:2:3:4::5:6:7:8", /too many groups/],
    ["12345::", /bad group "12345"/],
    ["fc00:::1", /empty group/],
    [":1::", /empty group/],
    ["fc00::g", /only hex digits/],
    ["fc00::1%eth0", /only hex digits/],
    ["::1.2.3.256", /bad IPv4 part/],
    ["1.2.3.4::", /bad group "1.2.3.4"/],
    ["10.0.0.1", /2 groups, want 8/],
  ] as const) {
    it(`rejects "${bad}" naming the field and why`, function () {
      assert.throws(
        () => parseIp6(bad, "PublicIPv6"),
        (e: unknown) =>
          e instanceof ConfigError &&
          e.message.startsWith(`PublicIPv6: "${bad}" is not an IPv6 address`) &&
          why.test(e.message),
      );
      assert.equal(isIp6(bad), false);
    });
  }

  it("formats canonically (RFC 5952): lower case, no leading zeros, longest zero run, first on a tie", function () {
    const cases: [string, string][] = [
      ["fc00:0000:0000:0001:0000:0000:0000:0000", "fc00:0:0:1::"],
      ["FC00:0:0:1::1", "fc00:0:0:1::1"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // tie: the first run
      ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longer run
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group: never "::"
      ["0:0:0:0:0:0:0:0", "::"],
      ["0:0:0:0:0:0:0:1", "::1"],
      ["1:0:0:0:0:0:0:0", "1::"],
      ["fe80:0:0:0:200:5eff:fe00:5301", "fe80::200:5eff:fe00:5301"],
      ["0:0:0:0:0:ffff:a00:1", "::ffff:10.0.0.1"], // IPv4-mapped: section 5
    ];
    for (const [input, want] of cases) assert.equal(formatIp6(parseIp6(input)), want, input);
    assert.throws(() => formatIp6(1n << 128n), RangeError);
  });

  it("round-trips through network-order bytes", function () {
    const a = parseIp6("2001:db8::8a2e:370:7334");
    const b = ip6ToBytes(a);
    assert.equal(b.toString("hex"), "20010db80000000000008a2e03707334");
    assert.equal(ip6FromBytes(b), a);
    assert.equal(ip6FromBytes(b.subarray(0)), a);
    assert.throws(() => ip6FromBytes(Buffer.alloc(4)), /16 bytes, got 4/);
  });

  it("computes masks for 0, 64 and 128", function () {
    assert.equal(maskOf6(0), 0n);
    assert.equal(maskOf6(64), ((1n << 64n) - 1n) << 64n);
    assert.equal(maskOf6(128), (1n << 128n) - 1n);
  });

  it("parses CIDRs strictly, names host bits, and does containment and overlap", function () {
    const n = Cidr6.parse("fc00:5::/48");
    assert.equal(n.toString(), "fc00:5::/48");
    assert.equal(n.size, 1n << 80n);
    assert.equal(formatIp6(n.last), "fc00:5:0:ffff:ffff:ffff:ffff:ffff");
    assert.throws(() => Cidr6.parse("fc00:5::1/48"), /host bits set \(network is fc00:5::\/48\)/);
    assert.equal(Cidr6.parse("fc00:5::1/48", "x", false).toString(), "fc00:5::/48");
    assert.throws(() => Cidr6.parse("fc00::/129"), /0\.\.128/);
    assert.throws(() => Cidr6.parse("fc00::"), /CIDR form/);
    const s = Cidr6.parse("fc00:5:0:7::/64");
    assert.ok(n.contains(parseIp6("fc00:5:0:7::9")));
    assert.ok(!n.contains(parseIp6("fc00:6::1")));
    assert.ok(n.covers(s) && !s.covers(n));
    assert.ok(n.overlaps(s) && s.overlaps(n));
    assert.ok(!s.overlaps(Cidr6.parse("fc00:5:0:8::/64")));
    assert.ok(s.equals(Cidr6.of(parseIp6("fc00:5:0:7::1"), 64)));
    assert.equal(s.toKey(), "fc00:5:0:7::-64");
  });

  it("iterates subnets in order and stops at the top of the space", function () {
    const got = [...subnets6(parseIp6("fc00::4"), parseIp6("fc00::c"), 126)].map(String);
    assert.deepEqual(got, ["fc00::4/126", "fc00::8/126", "fc00::c/126"]);
    assert.equal(Cidr6.parse("fc00:0:0:1::/64").next()?.toString(), "fc00:0:0:2::/64");
    assert.equal(Cidr6.parse("ffff:ffff:ffff:ffff::/64").next(), undefined);
    assert.equal([...subnets6(parseIp6("ffff:ffff:ffff:fffe::"), (1n << 128n) - 1n, 64)].length, 2);
  });
});
