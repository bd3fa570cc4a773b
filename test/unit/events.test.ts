// Monitor event decoding (agent/bpf/events.ts): ring records as the programs
// write them, IPv4 and IPv6 frames, outer and inner tuples.
import assert from "node:assert/strict";
import { ENUMS, STRUCTS } from "../../agent/bpf/abi.generated";
import { decodeEvent, tuples } from "../../agent/bpf/events";
import { parseIp } from "../../agent/net/ip";
import { filterIp } from "../../cli/commands/monitor";
import { eth, ETH_P_IPV6, ipv6, udp6, vxlan6Frame, vxlanFrame } from "../lib/packets";

const F = STRUCTS.ovl_event.fields;

function record(o: {
  dir: number;
  reason: number;
  type: number;
  peer?: string;
  data: Buffer;
}): Buffer {
  const b = Buffer.alloc(STRUCTS.ovl_event.size);
  b.writeBigUInt64LE(123n, F.ts_ns.offset);
  b.writeUInt8(o.type, F.type.offset);
  b.writeUInt8(o.dir, F.dir.offset);
  b.writeUInt8(o.reason, F.reason.offset);
  b.writeUInt8(ENUMS.ovl_hook.OVL_HOOK_DECAP_TC, F.hook.offset);
  b.writeUInt32LE(7, F.ifindex.offset);
  b.writeUInt32LE(o.data.length, F.len.offset);
  b.writeUInt32BE(o.peer ? parseIp(o.peer) : 0, F.peer.offset);
  const snap = o.data.subarray(0, F.data.size);
  b.writeUInt32LE(snap.length, F.snap_len.offset);
  snap.copy(b, F.data.offset);
  return b;
}

describe("unit: monitor events", function () {
  it("decodes an IPv4 VXLAN drop: reason, peer, outer and inner tuples", function () {
    const f = vxlanFrame({
      outerSrc: "172.31.0.2",
      outerDst: "172.31.0.1",
      innerSrc: "10.5.2.7",
      innerDst: "10.5.1.2",
      vni: 9,
    });
    const e = decodeEvent(
      record({
        dir: 1,
        reason: ENUMS.ovl_drop_reason.OVL_DROP_WRONG_VNI,
        type: ENUMS.ovl_event_type.OVL_EV_DROP,
        peer: "172.31.0.2",
        data: f,
      }),
      8472,
    );
    assert.equal(e.type, "drop");
    assert.equal(e.reason, "wrong_vni");
    assert.equal(e.direction, "rx");
    assert.equal(e.peer, "172.31.0.2");
    assert.deepEqual(e.outer, {
      src: "172.31.0.2",
      dst: "172.31.0.1",
      proto: 17,
      sport: 40000,
      dport: 8472,
    });
    assert.deepEqual(e.inner, { src: "10.5.2.7", dst: "10.5.1.2", proto: 1 });
  });

  it("decodes an IPv6 VXLAN frame and names the peer from the outer header (the peer field is IPv4 only)", function () {
    const f = vxlan6Frame({
      outerSrc: "fd00:1::2",
      outerDst: "fd00:1::1",
      innerSrc: "fc00:0:0:2::7",
      innerDst: "fc00:0:0:1::2",
    });
    const e = decodeEvent(
      record({
        dir: 1,
        reason: ENUMS.ovl_drop_reason.OVL_DROP_UDP_ZERO_CSUM,
        type: ENUMS.ovl_event_type.OVL_EV_DROP,
        data: f,
      }),
      8472,
    );
    assert.equal(e.reason, "udp_zero_csum");
    assert.equal(e.peer, "fd00:1::2");
    assert.deepEqual(e.outer, {
      src: "fd00:1::2",
      dst: "fd00:1::1",
      proto: 17,
      sport: 40000,
      dport: 8472,
    });
    assert.deepEqual(e.inner, { src: "fc00:0:0:2::7", dst: "fc00:0:0:1::2", proto: 58 });
  });

  it("an encapsulation trace of an IPv6 pod packet has only the inner tuple; its peer is the outer destination when there is one", function () {
    const u = udp6("fc00:0:0:1::2", "fc00:0:0:2::7", 5000, 53, Buffer.alloc(8));
    const f = eth(
      "0e:00:00:00:02:02",
      "0e:00:00:00:01:01",
      ETH_P_IPV6,
      ipv6({ src: "fc00:0:0:1::2", dst: "fc00:0:0:2::7", next: 17 }, u),
    );
    const e = decodeEvent(
      record({
        dir: 0,
        reason: ENUMS.ovl_trace_action.OVL_TR_ENCAP,
        type: ENUMS.ovl_event_type.OVL_EV_TRACE,
        data: f,
      }),
    );
    assert.equal(e.type, "trace");
    assert.equal(e.reason, "encap");
    assert.equal(e.outer, null);
    assert.equal(e.peer, null);
    assert.deepEqual(e.inner, {
      src: "fc00:0:0:1::2",
      dst: "fc00:0:0:2::7",
      proto: 17,
      sport: 5000,
      dport: 53,
    });
    const out = vxlan6Frame({
      outerSrc: "fd00:1::1",
      outerDst: "fd00:1::2",
      innerSrc: "fc00:0:0:1::2",
      innerDst: "fc00:0:0:2::7",
    });
    assert.equal(
      decodeEvent(
        record({ dir: 0, reason: 1, type: ENUMS.ovl_event_type.OVL_EV_TRACE, data: out }),
        8472,
      ).peer,
      "fd00:1::2",
    );
  });

  it("a frame that is no IP has no tuples", function () {
    assert.deepEqual(tuples(Buffer.alloc(60)), {});
    assert.deepEqual(tuples(Buffer.alloc(10)), {});
  });

  it("filters take IPv4 and IPv6 (canonical, as events print them) and refuse anything else", function () {
    assert.equal(filterIp("pod", "10.5.1.2"), "10.5.1.2");
    assert.equal(filterIp("pod", "FC00:0000:0:1::0002"), "fc00:0:0:1::2");
    assert.equal(filterIp("pod", undefined), undefined);
    assert.throws(
      () => filterIp("pod", "10.5.1"),
      /--pod: "10.5.1" is not an IPv4 or IPv6 address/,
    );
    assert.throws(
      () => filterIp("peer", "fc00::1::2"),
      /--peer: "fc00::1::2" is not an IPv4 or IPv6 address/,
    );
  });
});
