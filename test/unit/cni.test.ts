import assert from "node:assert/strict";
import {
  CniError,
  parseNetConf,
  parseSubnetInfo,
  podEndpoint,
  renderDelegate,
} from "../../agent/cni/netconf";

const ENV =
  "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

describe("unit: CNI netconf", function () {
  it("renders flannel's bridge + host-local delegate from subnet.env", function () {
    const conf = parseNetConf(
      JSON.stringify({ cniVersion: "1.0.0", name: "net", type: "overlay" }),
    );
    assert.equal(conf.fastPath, true);
    assert.equal(conf.subnetFile, "/run/flannel/subnet.env");
    const d = renderDelegate(conf, parseSubnetInfo(ENV, "subnet.env"));
    assert.deepEqual(d, {
      cniVersion: "1.0.0",
      name: "net",
      type: "bridge",
      bridge: "cni0",
      isGateway: true,
      ipMasq: false, // overlayd masquerades (FLANNEL_IPMASQ=true), so the bridge does not
      mtu: 1450,
      hairpinMode: true,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: "10.5.7.0/24" }]],
        routes: [{ dst: "10.5.0.0/16", gw: "10.5.7.1" }],
      },
    });
  });

  it("lets the delegate block override fields", function () {
    const conf = parseNetConf(
      JSON.stringify({
        cniVersion: "0.4.0",
        name: "n",
        type: "overlay",
        delegate: { bridge: "br9", hairpinMode: false },
      }),
    );
    const d = renderDelegate(conf, parseSubnetInfo(ENV, "f"));
    assert.equal(d.bridge, "br9");
    assert.equal(d.hairpinMode, false);
    assert.equal(d.cniVersion, "0.4.0");
  });

  it("finds the pod address, MAC and host veth in the bridge result (both families, if dual-stack)", function () {
    const r = {
      interfaces: [
        { name: "cni0", mac: "aa:00:00:00:00:01" },
        { name: "veth1234", mac: "aa:00:00:00:00:02" },
        { name: "eth0", mac: "aa:00:00:00:00:03", sandbox: "/run/netns/p" },
      ],
      ips: [{ address: "10.5.7.2/24", interface: 2, gateway: "10.5.7.1" }],
    };
    // a dual-stack result, the IPv6 address first: each family's address is found
    const dual = {
      ...r,
      ips: [{ address: "fc00:5:0:7::2/64", interface: 2, gateway: "fc00:5:0:7::1" }, ...r.ips],
    };
    assert.deepEqual(podEndpoint(dual, "eth0"), {
      ...podEndpoint(r, "eth0"),
      podIp6: "fc00:5:0:7::2",
    });
    assert.deepEqual(podEndpoint(r, "eth0"), {
      podIp: "10.5.7.2",
      podMac: "aa:00:00:00:00:03",
      hostVeth: "veth1234",
    });
    assert.equal(podEndpoint({ interfaces: [], ips: [] }, "eth0"), undefined);
  });

  it("names what is wrong in the netconf and subnet.env", function () {
    assert.throws(
      () => parseNetConf("[]"),
      (e: unknown) => e instanceof CniError && e.code === 6,
    );
    assert.throws(
      () => parseNetConf('{"name":"n","type":"overlay","fastPath":"yes"}'),
      /"fastPath" must be true or false/,
    );
    assert.throws(
      () => parseSubnetInfo("FLANNEL_NETWORK=10.5.0.0/16\n", "/run/flannel/subnet.env"),
      /subnet\.env: FLANNEL_MTU missing \(is overlayd running\?\)/,
    );
    assert.throws(
      () => parseSubnetInfo(ENV.replace("1450", "x"), "f"),
      /FLANNEL_MTU x is not an MTU/,
    );
  });
});
