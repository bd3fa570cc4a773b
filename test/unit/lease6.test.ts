// Dual-stack leases as flannel stores them: the key
// "10.5.1.0-24&fc00:0:0:1::-64", the JSON with PublicIPv6 and
// BackendV6Data, and the choice of the v6 subnet beside the v4 one.
import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../agent/control/config";
import {
  chooseFree6,
  decodeLeaseAttrs,
  desiredEntries,
  encodeLeaseAttrs,
  hostEntryOf,
  inRange6,
  keyOf,
  leaseKey,
  parseLeaseKey,
  parseLeaseKeyParts,
  preferredSubnet,
  v6Conflict,
  type Lease,
} from "../../agent/control/lease";
import { Cidr, parseIp } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";

const P = "/coreos.com/network";
const dual = parseNetworkConfig(
  JSON.stringify({ Network: "10.5.0.0/16", EnableIPv6: true, IPv6Network: "fc00:5::/48" }),
  "cfg",
);
const v4only = parseNetworkConfig(JSON.stringify({ Network: "10.5.0.0/16" }), "cfg");
/** flannel's subnet key pattern (pkg/subnet/subnet.go), as flannel reads every key. */
const FLANNEL_KEY = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/;

/** What flannel v0.25+ writes for a dual-stack vxlan node (json.Marshal of its LeaseAttrs). */
const FLANNEL_DUAL =
  '{"PublicIP":"172.31.0.2","PublicIPv6":"fd00:31::2","BackendType":"vxlan",' +
  '"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:02"},' +
  '"BackendV6Data":{"VNI":1,"VtepMAC":"0e:00:00:00:01:02"}}';

function lease(subnet: string, ip: string, subnet6?: string, o: Partial<Lease> = {}): Lease {
  return {
    subnet: Cidr.parse(subnet),
    ...(subnet6 ? { subnet6: Cidr6.parse(subnet6) } : {}),
    attrs: { publicIp: parseIp(ip), backendType: "vxlan", vni: 1, vtepMac: "0e:00:00:00:00:01" },
    leaseId: o.leaseId ?? "123",
    modRevision: o.modRevision ?? "5",
  };
}

describe("unit: dual-stack leases", function () {
  it("makes flannel's dual-stack key, which flannel's pattern reads back", function () {
    const key = leaseKey(P, Cidr.parse("10.5.1.0/24"), Cidr6.parse("fc00:0:0:1::/64"));
    assert.equal(key, "/coreos.com/network/subnets/10.5.1.0-24&fc00:0:0:1::-64");
    const m = FLANNEL_KEY.exec(key);
    assert.deepEqual(m?.slice(1), ["10.5.1.0", "24", "fc00:0:0:1::", "64"]);
    // v4-only: the key is unchanged, and flannel's pattern has no v6 part
    const v4 = leaseKey(P, Cidr.parse("10.5.1.0/24"));
    assert.equal(v4, "/coreos.com/network/subnets/10.5.1.0-24");
    assert.equal(FLANNEL_KEY.exec(v4)?.[3], undefined);
    assert.equal(
      keyOf(P, lease("10.5.2.0/24", "172.31.0.2", "fc00:5:0:2::/64")),
      `${P}/subnets/10.5.2.0-24&fc00:5:0:2::-64`,
    );
  });

  it("parses both halves of a key, and the v4 half alone for parseLeaseKey", function () {
    const k = `${P}/subnets/10.5.1.0-24&fc00:0:0:1::-64`;
    const parts = parseLeaseKeyParts(P, k);
    assert.equal(parts?.subnet.toString(), "10.5.1.0/24");
    assert.equal(parts?.subnet6?.toString(), "fc00:0:0:1::/64");
    assert.equal(parseLeaseKey(P, k)?.toString(), "10.5.1.0/24");
    const v4 = parseLeaseKeyParts(P, `${P}/subnets/10.5.1.0-24`);
    assert.equal(v4?.subnet.toString(), "10.5.1.0/24");
    assert.equal(v4?.subnet6, undefined);
  });

  for (const bad of [
    "10.5.1.0-24&",
    "10.5.1.0-24&fc00::",
    "10.5.1.0-24&fc00::-64x",
    "10.5.1.0-24&fc00::1-64", // host bits
    "10.5.1.0-24&fc00::-129",
    "10.5.1.0-24&FC00::-64", // flannel's pattern is lower-case hex
    "10.5.1.0-24&fc00:0000::-64", // not the canonical text leaseKey() writes
    "10.5.1.0-24&10.6.0.0-16",
    "&fc00::-64",
    "10.5.1.0-24fc00::-64",
    "10.5.1.1-24&fc00::-64",
    "10.5.1.0-33&fc00::-64",
  ]) {
    it(`is not a lease key: "${bad}"`, function () {
      assert.equal(parseLeaseKeyParts(P, `${P}/subnets/${bad}`), undefined);
      assert.equal(parseLeaseKey(P, `${P}/subnets/${bad}`), undefined);
    });
  }

  it("decodes a flannel-written dual-stack lease", function () {
    const a = decodeLeaseAttrs(FLANNEL_DUAL, "k");
    assert.deepEqual(a, {
      publicIp: parseIp("172.31.0.2"),
      backendType: "vxlan",
      vni: 1,
      vtepMac: "0e:00:00:00:00:02",
      publicIpv6: parseIp6("fd00:31::2"),
      vni6: 1,
      vtepMac6: "0e:00:00:00:01:02",
    });
  });

  it("encodes byte for byte what flannel writes, with IPv6 and without", function () {
    assert.equal(encodeLeaseAttrs(decodeLeaseAttrs(FLANNEL_DUAL, "k")), FLANNEL_DUAL);
    const v4 =
      '{"PublicIP":"172.31.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:02"}}';
    assert.equal(
      encodeLeaseAttrs(decodeLeaseAttrs(v4, "k")),
      v4,
      "no BackendV6Data without IPv6 (omitempty)",
    );
    // host-gw: PublicIPv6, but no backend data of either family (flannel's host-gw writes none)
    assert.equal(
      encodeLeaseAttrs({
        publicIp: parseIp("172.31.0.3"),
        backendType: "host-gw",
        publicIpv6: parseIp6("fd00:31:0:0::3"),
      }),
      '{"PublicIP":"172.31.0.3","PublicIPv6":"fd00:31::3","BackendType":"host-gw"}',
    );
  });

  it("rejects a malformed PublicIPv6 or v6 VtepMAC, naming the key and field", function () {
    assert.throws(
      () => decodeLeaseAttrs('{"PublicIP":"1.2.3.4","PublicIPv6":"fd00::zz"}', "/k"),
      /^ConfigError: \/k: PublicIPv6: "fd00::zz" is not an IPv6 address/,
    );
    assert.throws(
      () => decodeLeaseAttrs('{"PublicIP":"1.2.3.4","PublicIPv6":7}', "/k"),
      /\/k: PublicIPv6: must be a string or null, got 7/,
    );
    assert.throws(
      () =>
        decodeLeaseAttrs(
          '{"PublicIP":"1.2.3.4","PublicIPv6":"fd00::1","BackendV6Data":{"VtepMAC":"zz"}}',
          "/k",
        ),
      /\/k: BackendV6Data.VtepMAC/,
    );
  });

  it("programs the v4 half of every lease, dual-stack or not (rollouts both ways)", function () {
    const leases = [
      lease("10.5.2.0/24", "172.31.0.2", "fc00:5:0:2::/64"),
      lease("10.5.3.0/24", "172.31.0.3"), // an older node, v4 only
    ];
    for (const l of leases) assert.equal(hostEntryOf(l)?.remoteIp, l.attrs.publicIp);
    assert.deepEqual(
      [...desiredEntries(leases, undefined, undefined).values()].map((e) => e.subnet.toString()),
      ["10.5.2.0/24", "10.5.3.0/24"],
    );
  });

  it("knows which IPv6 subnets are the config's", function () {
    assert.ok(inRange6(dual, Cidr6.parse("fc00:5:0:1::/64")));
    assert.ok(inRange6(dual, Cidr6.parse("fc00:5:0:ffff::/64")));
    assert.ok(
      !inRange6(dual, Cidr6.parse("fc00:5::/64")),
      "the first subnet is skipped, as flannel does",
    );
    assert.ok(!inRange6(dual, Cidr6.parse("fc00:5:0:1::/80")), "wrong length");
    assert.ok(!inRange6(dual, Cidr6.parse("fc00:6:0:1::/64")), "outside");
    assert.ok(!inRange6(v4only, Cidr6.parse("fc00:5:0:1::/64")), "no IPv6 in a v4-only network");
  });

  describe("the v6 subnet beside the v4 one", function () {
    const me = parseIp("172.31.0.7");

    it("keeps both halves of our own dual-stack lease", function () {
      const own = lease("10.5.9.0/24", "172.31.0.7", "fc00:5:0:9::/64");
      const p = preferredSubnet(dual, [own], me, undefined);
      assert.equal(p?.existing, own);
      assert.equal(p?.subnet.toString(), "10.5.9.0/24");
      assert.equal(p?.subnet6?.toString(), "fc00:5:0:9::/64");
    });

    it("keeps the v4 subnet of our v4-only lease in a network now dual-stack (a v6 one is chosen)", function () {
      const own = lease("10.5.9.0/24", "172.31.0.7");
      const p = preferredSubnet(dual, [own], me, undefined);
      assert.equal(p?.existing, own);
      assert.equal(p?.subnet6, undefined, "none yet: chooseFree6 picks one");
      // ... the previous subnet file's, when it is free
      const prev6 = Cidr6.parse("fc00:5:0:44::/64");
      assert.equal(preferredSubnet(dual, [own], me, undefined, prev6)?.subnet6, prev6);
      const taken = lease("10.5.4.0/24", "172.31.0.4", "fc00:5:0:44::/64");
      assert.equal(preferredSubnet(dual, [own, taken], me, undefined, prev6)?.subnet6, undefined);
    });

    it("drops the v6 half of our lease in a v4-only network, keeping the v4 subnet", function () {
      const own = lease("10.5.9.0/24", "172.31.0.7", "fc00:5:0:9::/64");
      const p = preferredSubnet(v4only, [own], me, undefined, Cidr6.parse("fc00:5:0:9::/64"));
      assert.equal(p?.subnet.toString(), "10.5.9.0/24");
      assert.equal(p?.subnet6, undefined);
    });

    it("replaces a v6 half that is out of range, or that an earlier lease holds too", function () {
      const out = lease("10.5.9.0/24", "172.31.0.7", "fc00:6:0:9::/64");
      assert.equal(preferredSubnet(dual, [out], me, undefined)?.subnet6, undefined);
      const own = lease("10.5.9.0/24", "172.31.0.7", "fc00:5:0:9::/64", { modRevision: "20" });
      const first = lease("10.5.3.0/24", "172.31.0.3", "fc00:5:0:9::/64", { modRevision: "10" });
      assert.equal(v6Conflict(own, [own, first]), first);
      assert.equal(v6Conflict(first, [own, first]), undefined, "the earlier lease keeps it");
      assert.equal(preferredSubnet(dual, [own, first], me, undefined)?.subnet6, undefined);
      assert.equal(v6Conflict(lease("10.5.9.0/24", "172.31.0.7"), [first]), undefined);
    });

    it("takes the previous subnet file's pair when nobody holds it", function () {
      const p = preferredSubnet(
        dual,
        [],
        me,
        Cidr.parse("10.5.3.0/24"),
        Cidr6.parse("fc00:5:0:3::/64"),
      );
      assert.equal(p?.subnet.toString(), "10.5.3.0/24");
      assert.equal(p?.subnet6?.toString(), "fc00:5:0:3::/64");
      assert.equal(p?.existing, undefined);
    });

    it("chooses a free v6 subnet uniformly in a small range, never a taken one", function () {
      const small = parseNetworkConfig(
        JSON.stringify({ Network: "10.5.0.0/16", EnableIPv6: true, IPv6Network: "fc00::/124" }),
        "c",
      );
      const taken = [Cidr6.parse("fc00::4/126"), Cidr6.parse("fc00::c/126")];
      const seen = new Set<string>();
      for (let i = 0; i < 50; i++) seen.add(chooseFree6(small, taken)!.toString());
      assert.deepEqual([...seen], ["fc00::8/126"]);
      assert.equal(chooseFree6(small, [...taken, Cidr6.parse("fc00::8/126")]), undefined);
      assert.equal(chooseFree6(small, [], () => 0)?.toString(), "fc00::4/126");
      assert.equal(chooseFree6(small, [], () => 0.999)?.toString(), "fc00::c/126");
      assert.equal(chooseFree6(v4only, []), undefined);
    });

    it("finds a free v6 subnet in a huge range (a /32 in /64s) without listing it", function () {
      const huge = parseNetworkConfig(
        JSON.stringify({ Network: "10.5.0.0/16", EnableIPv6: true, IPv6Network: "fc00::/32" }),
        "c",
      );
      const s = chooseFree6(huge, []);
      assert.ok(s && inRange6(huge, s));
      // a random source that always lands on a taken subnet: the scan moves past it
      const first = Cidr6.of(huge.ipv6!.subnetMin, 64);
      const next = chooseFree6(huge, [first], () => 0);
      assert.equal(next?.toString(), "fc00:0:0:2::/64");
    });
  });
});
