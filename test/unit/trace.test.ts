import assert from "node:assert/strict";
import { F_DIRECT, F_LOCAL } from "../../agent/bpf/codec";
import { Cidr, parseIp } from "../../agent/net/ip";
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
});
