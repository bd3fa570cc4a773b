// Dual-stack node files: subnet.env with flannel's FLANNEL_IPV6_* lines,
// and the CNI delegate that gives a pod an address of each family.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CniError, parseNetConf, parseSubnetInfo, renderDelegate } from "../../agent/cni/netconf";
import {
  parseSubnetEnv,
  previousSubnet,
  previousSubnet6,
  renderSubnetEnv,
  writeSubnetEnv,
} from "../../agent/control/subnet-env";
import { Cidr } from "../../agent/net/ip";
import { Cidr6 } from "../../agent/net/ip6";

const env = {
  network: Cidr.parse("10.5.0.0/16"),
  subnet: Cidr.parse("10.5.7.0/24"),
  ipv6: { network: Cidr6.parse("fc00:5::/48"), subnet: Cidr6.parse("fc00:5:0:7::/64") },
  mtu: 1430,
  ipMasq: true,
};
/** What flannel's WriteSubnetFile writes for a dual-stack node, line for line. */
/** The same node, IPv4 only. */
const V4_ENV = { network: env.network, subnet: env.subnet, mtu: env.mtu, ipMasq: env.ipMasq };
const DUAL_ENV =
  "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\n" +
  "FLANNEL_IPV6_NETWORK=fc00:5::/48\nFLANNEL_IPV6_SUBNET=fc00:5:0:7::1/64\n" +
  "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n";

describe("unit: dual-stack subnet.env and CNI delegate", function () {
  it("renders flannel's subnet.env: the IPv6 pair after the IPv4 one, first usable addresses", function () {
    assert.equal(renderSubnetEnv(env), DUAL_ENV);
    assert.doesNotMatch(renderSubnetEnv(V4_ENV), /IPV6/, "v4-only: as before");
  });

  it("reads both previous subnets back for the next start", function () {
    const dir = mkdtempSync(join(tmpdir(), "ovl-unit-"));
    try {
      const path = join(dir, "subnet.env");
      writeSubnetEnv(path, env);
      assert.equal(previousSubnet(path)?.toString(), "10.5.7.0/24");
      assert.equal(previousSubnet6(path)?.toString(), "fc00:5:0:7::/64");
      writeSubnetEnv(path, V4_ENV);
      assert.equal(previousSubnet6(path), undefined);
      assert.equal(previousSubnet6(join(dir, "missing")), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("renders host-local with two ranges and a route per family, as flannel's plugin does", function () {
    const conf = parseNetConf(
      JSON.stringify({ cniVersion: "1.0.0", name: "net", type: "overlay" }),
    );
    const info = parseSubnetInfo(DUAL_ENV, "subnet.env");
    assert.equal(info.ipv6?.network.toString(), "fc00:5::/48");
    assert.equal(info.ipv6?.subnet, "fc00:5:0:7::1/64");
    const d = renderDelegate(conf, info);
    assert.deepEqual(d.ipam, {
      type: "host-local",
      ranges: [[{ subnet: "10.5.7.0/24" }], [{ subnet: "fc00:5:0:7::/64" }]],
      routes: [
        { dst: "10.5.0.0/16", gw: "10.5.7.1" },
        { dst: "fc00:5::/48", gw: "fc00:5:0:7::1" },
      ],
    });
    assert.equal(d.mtu, 1430);
    assert.equal(d.type, "bridge");
    // v4-only subnet.env: one range, one route (unchanged)
    const v4 = renderDelegate(conf, parseSubnetInfo(parseEnvV4(), "subnet.env"));
    assert.deepEqual((v4.ipam as { ranges: unknown[] }).ranges, [[{ subnet: "10.5.7.0/24" }]]);
  });

  for (const [what, text, re] of [
    [
      "an IPv6 network without a subnet",
      DUAL_ENV.replace(/FLANNEL_IPV6_SUBNET=.*\n/, ""),
      /^f: FLANNEL_IPV6_NETWORK without FLANNEL_IPV6_SUBNET$/,
    ],
    [
      "an IPv6 subnet without a network",
      DUAL_ENV.replace(/FLANNEL_IPV6_NETWORK=.*\n/, ""),
      /^f: FLANNEL_IPV6_SUBNET without FLANNEL_IPV6_NETWORK$/,
    ],
    [
      "a malformed IPv6 subnet",
      DUAL_ENV.replace("fc00:5:0:7::1/64", "fc00:5:0:7::1"),
      /^f: FLANNEL_IPV6_SUBNET: "fc00:5:0:7::1" is not in CIDR form/,
    ],
    [
      "a malformed IPv6 network",
      DUAL_ENV.replace("fc00:5::/48", "fc00:5::/480"),
      /^f: FLANNEL_IPV6_NETWORK: "fc00:5::\/480": prefix length must be 0..128$/,
    ],
    [
      "a malformed IPv4 subnet",
      DUAL_ENV.replace("10.5.7.1/24", "10.5.7.1"),
      /^f: FLANNEL_SUBNET: "10.5.7.1" is not in CIDR form/,
    ],
  ] as const) {
    it(`names the file and line for ${what}`, function () {
      assert.throws(
        () => parseSubnetInfo(text, "f"),
        (e: unknown) => e instanceof CniError && e.code === 7 && re.test(e.message),
      );
    });
  }
});

function parseEnvV4(): string {
  return Object.entries(parseSubnetEnv(DUAL_ENV))
    .filter(([k]) => !k.startsWith("FLANNEL_IPV6_"))
    .map(([k, v]) => `${k}=${v}\n`)
    .join("");
}
