import assert from "node:assert/strict";
import { Cidr, formatIp, formatMac, maskOf, parseIp, parseMac } from "../../agent/net/ip";
import { ConfigError } from "../../agent/errors";

describe("unit: IPv4 and MAC arithmetic", function () {
  it("parses and formats addresses", function () {
    assert.equal(parseIp("10.5.1.0"), 0x0a050100);
    assert.equal(formatIp(0xac1f0002), "172.31.0.2");
    assert.equal(formatIp(parseIp("255.255.255.255")), "255.255.255.255");
  });

  for (const bad of ["10.5.1", "10.5.1.256", "a.b.c.d", "1.2.3.4.5", "", "01.2.3.4x"]) {
    it(`rejects "${bad}" naming the field`, function () {
      assert.throws(
        () => parseIp(bad, "PublicIP"),
        (e: unknown) => {
          return e instanceof ConfigError && e.message.startsWith("PublicIP:");
        },
      );
    });
  }

  it("computes masks for every prefix length, including 0 and 32", function () {
    assert.equal(maskOf(0), 0);
    assert.equal(maskOf(8), 0xff000000);
    assert.equal(maskOf(24), 0xffffff00);
    assert.equal(maskOf(32), 0xffffffff);
  });

  it("parses CIDRs strictly and names host bits", function () {
    const c = Cidr.parse("10.5.0.0/16");
    assert.equal(c.toString(), "10.5.0.0/16");
    assert.equal(c.size, 65536);
    assert.equal(formatIp(c.last), "10.5.255.255");
    assert.throws(() => Cidr.parse("10.5.1.1/16"), /host bits set \(network is 10.5.0.0\/16\)/);
    assert.equal(Cidr.parse("10.5.1.1/16", "x", false).toString(), "10.5.0.0/16");
    assert.throws(() => Cidr.parse("10.5.0.0/33"), /0\.\.32/);
    assert.throws(() => Cidr.parse("10.5.0.0"), /CIDR form/);
  });

  it("answers containment and coverage", function () {
    const net = Cidr.parse("10.5.0.0/16");
    assert.ok(net.contains(parseIp("10.5.255.1")));
    assert.ok(!net.contains(parseIp("10.6.0.1")));
    assert.ok(net.covers(Cidr.parse("10.5.3.0/24")));
    assert.ok(!Cidr.parse("10.5.3.0/24").covers(net));
    assert.ok(Cidr.parse("0.0.0.0/0").contains(parseIp("8.8.8.8")));
  });

  it("uses flannel's key form for leases", function () {
    assert.equal(Cidr.parse("10.5.1.0/24").toKey(), "10.5.1.0-24");
  });

  it("round-trips MAC addresses and rejects bad ones", function () {
    assert.equal(formatMac(parseMac("0E:6E:2a:71:c9:fa")), "0e:6e:2a:71:c9:fa");
    assert.throws(() => parseMac("0e:6e:2a:71:c9"), /not a MAC/);
  });
});
