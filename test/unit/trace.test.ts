import assert from "node:assert/strict";
import { F_DIRECT, F_LOCAL } from "../../agent/bpf/codec";
import { Cidr, parseIp } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";
import { trace, type TraceInput } from "../../cli/trace";

const own = {
  subnet: Cidr.parse("10.5.1.0/24"),
  host: { remoteIp: parseIp("172.31.0.1"), vtepMac: "0e:00:00:00:00:01", flags: F_LOCAL },
};
const peer = {
  subnet: Cidr.parse("10.5.2.0/24"),
  host: { remoteIp: parseIp("172.31.0.2"), vtepMac: "0e:00:00:00:00:02", flags: 0 },
};
const near = {
  subnet: Cidr.parse("10.5.3.0/24"),
  host: { remoteIp: parseIp("172.31.0.3"), vtepMac: "00:00:00:00:00:00", flags: F_DIRECT },
};
const base: Omit<TraceInput, "src" | "dst"> = {
  network: Cidr.parse("10.5.0.0/16"),
  mechanism: { decap: "tc", gro: "vxlan-socket", podBridge: "cni0" },
  overlayDev: "ovl0",
  underlayDev: "eth0",
};
const ep = {
  ifindex: 7,
  podMac: "02:00:00:00:00:07",
  hostMac: "02:00:00:00:00:08",
  iface: "veth7",
};

describe("unit: overlayctl trace (cli/trace.ts)", function () {
  it("a pod to another node's pod: VXLAN to the lease holder from the pod's veth", function () {
    const r = trace({
      ...base,
      src: parseIp("10.5.1.2"),
      dst: parseIp("10.5.2.7"),
      srcEntry: own,
      dstEntry: peer,
      srcEndpoint: ep,
    });
    assert.equal(r.path, "encap");
    assert.equal(r.peer, "172.31.0.2");
    assert.equal(r.vtepMac, "0e:00:00:00:00:02");
    assert.match(r.steps[0]!, /ovl_encap_pod on veth7/);
  });

  it("the host to a remote pod goes through the overlay device", function () {
    const r = trace({
      ...base,
      src: parseIp("172.31.0.1"),
      dst: parseIp("10.5.2.7"),
      dstEntry: peer,
    });
    assert.match(r.steps[0]!, /ovl0: ovl_encap_dev/);
  });

  it("a direct peer gets the packet unencapsulated", function () {
    const r = trace({
      ...base,
      src: parseIp("10.5.1.2"),
      dst: parseIp("10.5.3.4"),
      srcEntry: own,
      dstEntry: near,
      srcEndpoint: ep,
    });
    assert.equal(r.path, "direct");
    assert.equal(r.vtepMac, null);
    assert.deepEqual(r.entry?.flags, ["direct"]);
  });

  it("into a registered pod: decapsulated in TC and redirected into its namespace", function () {
    const r = trace({
      ...base,
      src: parseIp("10.5.2.7"),
      dst: parseIp("10.5.1.2"),
      srcEntry: peer,
      dstEntry: own,
      dstEndpoint: ep,
    });
    assert.equal(r.path, "decap");
    assert.equal(r.peer, "172.31.0.2");
    assert.match(r.steps.join("; "), /bpf_redirect_peer into veth7/);
    const viaSocket = trace({
      ...base,
      src: parseIp("10.5.2.7"),
      dst: parseIp("10.5.1.9"),
      srcEntry: peer,
      dstEntry: own,
    });
    assert.match(viaSocket.steps.join("; "), /ovl0's VXLAN socket decapsulates.*ovl_decap_dev/);
  });

  it("drops: no lease for the destination, a source in the network that no lease covers", function () {
    const none = trace({
      ...base,
      src: parseIp("10.5.1.2"),
      dst: parseIp("10.5.9.9"),
      srcEntry: own,
    });
    assert.equal(none.dropReason, "no_peer");
    const spoof = trace({
      ...base,
      src: parseIp("10.5.9.9"),
      dst: parseIp("10.5.1.2"),
      dstEntry: own,
    });
    assert.equal(spoof.dropReason, "spoofed_source");
  });

  it("outside the network, and inside our own subnet: not the overlay's", function () {
    assert.equal(
      trace({ ...base, src: parseIp("10.5.1.2"), dst: parseIp("8.8.8.8"), srcEntry: own }).path,
      "outside",
    );
    assert.equal(
      trace({
        ...base,
        src: parseIp("10.5.1.2"),
        dst: parseIp("10.5.1.3"),
        srcEntry: own,
        dstEntry: own,
      }).path,
      "local",
    );
  });

  describe("over IPv6 (dual-stack)", function () {
    const own6 = {
      subnet: Cidr6.parse("fc00:5:0:1::/64"),
      host: { remoteIp: parseIp6("fd31::1"), vtepMac: "0e:00:00:00:00:01", flags: F_LOCAL },
    };
    const peer6 = {
      subnet: Cidr6.parse("fc00:5:0:2::/64"),
      host: { remoteIp: parseIp6("fd31::2"), vtepMac: "0e:00:00:00:00:02", flags: 0 },
    };
    const base6 = {
      mechanism: base.mechanism,
      overlayDev: "ovl0",
      underlayDev: "eth0",
      network: Cidr6.parse("fc00:5::/48"),
    };

    it("encap: a tunnel key to the peer's PublicIPv6, ovl0 adds the outer IPv6 header", function () {
      const r = trace({
        ...base6,
        src: parseIp6("fc00:5:0:1::2"),
        dst: parseIp6("fc00:5:0:2::7"),
        srcEntry: own6,
        dstEntry: peer6,
        srcEndpoint: ep,
      });
      assert.equal(r.path, "encap");
      assert.equal(r.peer, "fd31::2");
      assert.deepEqual(r.entry, {
        subnet: "fc00:5:0:2::/64",
        remoteIp: "fd31::2",
        vtepMac: "0e:00:00:00:00:02",
        flags: [],
      });
      assert.deepEqual(r.steps, [
        "ovl_encap_pod on veth7 (TC ingress)",
        "inner destination MAC 0e:00:00:00:00:02, tunnel key to fd31::2",
        "redirected to ovl0, whose VXLAN socket adds the outer IPv6 and UDP headers",
      ]);
    });

    it("decap under XDP: IPv6 is left to ovl0's socket and ovl_decap_dev", function () {
      const r = trace({
        ...base6,
        mechanism: { ...base6.mechanism, decap: "xdp" },
        src: parseIp6("fc00:5:0:2::7"),
        dst: parseIp6("fc00:5:0:1::2"),
        srcEntry: peer6,
        dstEntry: own6,
      });
      assert.equal(r.path, "decap");
      assert.deepEqual(r.steps, [
        "VXLAN from fd31::2, which holds fc00:5:0:2::/64",
        "ovl_decap_xdp on eth0: IPv6, passed",
        "ovl0's VXLAN socket decapsulates",
        "ovl_decap_dev on ovl0 (TC ingress): checks, routes it (FIB) or to the stack",
      ]);
    });

    it("no lease for the IPv6 destination: no_peer; outside the IPv6 network: the host's", function () {
      const src = parseIp6("fc00:5:0:1::2");
      const none = trace({ ...base6, src, dst: parseIp6("fc00:5:0:9::1"), srcEntry: own6 });
      assert.equal(none.dropReason, "no_peer");
      assert.equal(
        trace({ ...base6, src, dst: parseIp6("2001:db8::1"), srcEntry: own6 }).path,
        "outside",
      );
    });
  });
});
