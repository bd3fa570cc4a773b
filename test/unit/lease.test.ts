import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../agent/control/config";
import {
  chooseFree,
  decodeLeaseAttrs,
  desiredEntries,
  encodeLeaseAttrs,
  leaseKey,
  listSplits,
  parseLeaseKey,
  planSync,
  subnetId,
  preferredSubnet,
  type Lease,
} from "../../agent/control/lease";
import { F_LOCAL } from "../../agent/bpf/codec";
import { Cidr, parseIp } from "../../agent/net/ip";

const cfg = parseNetworkConfig(JSON.stringify({ Network: "10.5.0.0/16" }), "cfg");
const P = "/coreos.com/network";

function lease(
  subnet: string,
  ip: string,
  opts: Partial<Lease> & { mac?: string; type?: string } = {},
): Lease {
  return {
    subnet: Cidr.parse(subnet),
    attrs: {
      publicIp: parseIp(ip),
      backendType: opts.type ?? "vxlan",
      vni: 1,
      vtepMac: opts.mac ?? "0e:00:00:00:00:01",
    },
    leaseId: opts.leaseId ?? "123",
    modRevision: "5",
  };
}

describe("unit: leases", function () {
  it("uses flannel's key layout", function () {
    assert.equal(leaseKey(P, Cidr.parse("10.5.1.0/24")), "/coreos.com/network/subnets/10.5.1.0-24");
    assert.equal(
      parseLeaseKey(P, "/coreos.com/network/subnets/10.5.1.0-24")?.toString(),
      "10.5.1.0/24",
    );
    assert.equal(parseLeaseKey(P, "/coreos.com/network/config"), undefined);
    assert.equal(parseLeaseKey(P, "/coreos.com/network/subnets/garbage"), undefined);
  });

  it("encodes flannel's lease JSON and decodes flannel's (any case)", function () {
    const text = encodeLeaseAttrs({
      publicIp: parseIp("172.31.0.2"),
      backendType: "vxlan",
      vni: 1,
      vtepMac: "aa:bb:cc:dd:ee:ff",
    });
    assert.equal(
      text,
      '{"PublicIP":"172.31.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
    );
    assert.equal(
      encodeLeaseAttrs({ publicIp: parseIp("172.31.0.3"), backendType: "host-gw" }),
      '{"PublicIP":"172.31.0.3","PublicIPv6":null,"BackendType":"host-gw"}',
      "host-gw: no BackendData, as flannel omits it",
    );
    const a = decodeLeaseAttrs(
      '{"publicip":"172.31.0.9","backendtype":"vxlan","backenddata":{"vtepmac":"AA:BB:CC:DD:EE:01"}}',
      "k",
    );
    assert.equal(a.publicIp, parseIp("172.31.0.9"));
    assert.equal(a.vtepMac, "aa:bb:cc:dd:ee:01");
    assert.throws(() => decodeLeaseAttrs("{", "/k"), /\/k: lease: is not valid JSON/);
    assert.throws(() => decodeLeaseAttrs('{"PublicIP":"x"}', "/k"), /PublicIP/);
    assert.throws(
      () => decodeLeaseAttrs('{"PublicIP":"1.2.3.4","BackendData":{"VtepMAC":"zz"}}', "/k"),
      /VtepMAC/,
    );
  });

  it("prefers a reservation, then our own lease, then the previous subnet", function () {
    const me = parseIp("172.31.0.7");
    const leases = [
      lease("10.5.9.0/24", "172.31.0.7"),
      lease("10.5.4.0/24", "172.31.0.7", { leaseId: "0" }),
    ];
    assert.equal(preferredSubnet(cfg, leases, me, undefined)?.subnet.toString(), "10.5.4.0/24");
    assert.equal(
      preferredSubnet(cfg, [leases[0]!], me, undefined)?.existing?.subnet.toString(),
      "10.5.9.0/24",
    );
    assert.equal(
      preferredSubnet(cfg, [], me, Cidr.parse("10.5.3.0/24"))?.subnet.toString(),
      "10.5.3.0/24",
    );
    // the previous subnet is not taken from someone else
    assert.equal(
      preferredSubnet(cfg, [lease("10.5.3.0/24", "172.31.0.8")], me, Cidr.parse("10.5.3.0/24")),
      undefined,
    );
    // nor used when outside the range
    assert.equal(preferredSubnet(cfg, [], me, Cidr.parse("10.5.0.0/24")), undefined);
  });

  it("chooses uniformly among free subnets and never a taken one", function () {
    const small = parseNetworkConfig(
      JSON.stringify({ Network: "10.5.0.0/16", SubnetMin: "10.5.1.0", SubnetMax: "10.5.4.0" }),
      "c",
    );
    const taken = [Cidr.parse("10.5.1.0/24"), Cidr.parse("10.5.3.0/24")];
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) seen.add(chooseFree(small, taken)!.toString());
    assert.deepEqual([...seen].sort(), ["10.5.2.0/24", "10.5.4.0/24"]);
    assert.equal(
      chooseFree(small, [...taken, Cidr.parse("10.5.2.0/24"), Cidr.parse("10.5.4.0/24")]),
      undefined,
    );
    assert.equal(chooseFree(small, [], () => 0)?.toString(), "10.5.1.0/24");
    assert.equal(chooseFree(small, [], () => 0.999)?.toString(), "10.5.4.0/24");
  });

  it("plans the smallest sync: add, change, remove; own subnet as LOCAL; foreign backends skipped", function () {
    const own = Cidr.parse("10.5.1.0/24");
    const logs: string[] = [];
    const desired = desiredEntries(
      [
        lease("10.5.1.0/24", "172.31.0.1"),
        lease("10.5.2.0/24", "172.31.0.2"),
        lease("10.5.3.0/24", "172.31.0.3", { mac: "0e:00:00:00:00:33" }),
        lease("10.5.4.0/24", "172.31.0.4", { type: "host-gw" }),
      ],
      own,
      { remoteIp: parseIp("172.31.0.1"), vtepMac: "0e:00:00:00:00:11", flags: 0 },
      (m) => logs.push(m),
    );
    assert.equal(desired.get(subnetId(own))?.host.flags, F_LOCAL);
    assert.equal(desired.has(subnetId(Cidr.parse("10.5.4.0/24"))), false);
    assert.match(
      logs.join(),
      /lease 10.5.4.0\/24 \(PublicIP 172.31.0.4\): BackendType "host-gw" but this network's Backend.Type is "vxlan"; not programmed \(one backend per network\)/,
    );
    const plan = planSync(desired, [
      {
        subnet: own,
        host: { remoteIp: parseIp("172.31.0.1"), vtepMac: "0e:00:00:00:00:11", flags: F_LOCAL },
      },
      {
        subnet: Cidr.parse("10.5.3.0/24"),
        host: { remoteIp: parseIp("172.31.0.3"), vtepMac: "0e:00:00:00:00:01", flags: 0 },
      },
      {
        subnet: Cidr.parse("10.5.9.0/24"),
        host: { remoteIp: parseIp("172.31.0.9"), vtepMac: "0e:00:00:00:00:09", flags: 0 },
      },
    ]);
    assert.deepEqual(plan.upserts.map((u) => u.subnet.toString()).sort(), [
      "10.5.2.0/24",
      "10.5.3.0/24",
    ]);
    assert.deepEqual(plan.deletes.map(String), ["10.5.9.0/24"]);
  });

  it("cuts a listing of a big range into ranges of about equal size, in key order", function () {
    const big = parseNetworkConfig(
      JSON.stringify({ Network: "10.0.0.0/8", SubnetMin: "10.0.0.0", SubnetMax: "10.255.255.0" }),
      "cfg",
    );
    const cuts = listSplits(big, 3, 5000);
    assert.equal(cuts.length, 2);
    assert.deepEqual([...cuts].sort(), cuts, "ascending in byte order");
    // Every subnet of the range, as its key, falls in one of the 3 ranges.
    const sizes = [0, 0, 0];
    for (let i = 0; i < 65536; i++) {
      const k = Cidr.of(0x0a000000 + i * 256, 24).toKey();
      const part = cuts.filter((c) => k >= c).length;
      sizes[part] = (sizes[part] as number) + 1;
    }
    for (const n of sizes) assert.ok(Math.abs(n - 65536 / 3) < 65536 * 0.02, `sizes ${sizes}`);
    // text order is not numeric order: the cuts are keys of the range
    for (const c of cuts) assert.ok(parseLeaseKey(P, `${P}/subnets/${c}`), c);
  });

  it("does not cut a listing that fits a few pages", function () {
    assert.deepEqual(listSplits(cfg, 3, 5000), []); // a /16 of /24s: 255 subnets
    const mid = parseNetworkConfig(JSON.stringify({ Network: "10.0.0.0/12" }), "cfg");
    assert.equal(listSplits(mid, 3, 5000).length, 0, "4,095 subnets");
    assert.equal(listSplits(mid, 3, 1000).length, 2);
    assert.equal(listSplits(mid, 1, 10).length, 0, "one stream: no cut");
  });
});
