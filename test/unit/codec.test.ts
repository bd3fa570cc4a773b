import assert from "node:assert/strict";
import { endianness } from "node:os";
import {
  decodeEndpoint,
  decodeHostEntry,
  decodePeer,
  decodeSubnetKey,
  DROP_REASONS,
  dropIndex,
  encodeEndpoint,
  encodeHostEntry,
  encodeIp,
  encodeLookupKey,
  encodePeer,
  encodeSubnetKey,
  F_LOCAL,
  percpuStride,
  rodataImage,
  sumCounters,
  sumPeerCounters,
  sumPeerCountersInto,
} from "../../agent/bpf/codec";
import { ENUMS, MAPS, RODATA, STRUCTS } from "../../agent/bpf/abi.generated";
import { Cidr, parseIp } from "../../agent/net/ip";

describe("unit: ABI codec", function () {
  it("encodes the LPM key as {host-order prefixlen, network-order address}", function () {
    const k = encodeSubnetKey(Cidr.parse("10.5.1.0/24"));
    assert.equal(k.length, STRUCTS.ovl_subnet_key.size);
    const want = endianness() === "LE" ? [24, 0, 0, 0] : [0, 0, 0, 24];
    assert.deepEqual([...k], [...want, 10, 5, 1, 0]);
    assert.equal(decodeSubnetKey(k).toString(), "10.5.1.0/24");
  });

  it("makes /32 lookup keys for longest-prefix matches", function () {
    assert.equal(decodeSubnetKey(encodeLookupKey(parseIp("10.5.1.7"))).toString(), "10.5.1.7/32");
  });

  it("round-trips the host entry with the IP in network order", function () {
    const h = { remoteIp: parseIp("172.31.0.2"), vtepMac: "aa:bb:cc:dd:ee:01", flags: F_LOCAL };
    const b = encodeHostEntry(h);
    assert.equal(b.length, STRUCTS.ovl_subnet_val.size);
    assert.deepEqual([...b.subarray(0, 4)], [172, 31, 0, 2]);
    assert.deepEqual(decodeHostEntry(b), h);
  });

  it("round-trips peers, endpoints and IP keys", function () {
    assert.equal(decodePeer(encodePeer(Cidr.parse("10.5.9.0/24"))).toString(), "10.5.9.0/24");
    const e = { ifindex: 42, podMac: "02:00:00:00:00:01", hostMac: "02:00:00:00:00:02" };
    assert.deepEqual(decodeEndpoint(encodeEndpoint(e)), e);
    assert.deepEqual([...encodeIp(parseIp("1.2.3.4"))], [1, 2, 3, 4]);
  });

  it("sums per-CPU counters over every CPU with 8-byte strides", function () {
    assert.equal(percpuStride(12), 16);
    assert.equal(percpuStride(16), 16);
    const ncpu = 3;
    const b = Buffer.alloc(16 * ncpu);
    for (let i = 0; i < ncpu; i++) {
      b.writeBigUInt64LE(BigInt(i + 1), i * 16);
      b.writeBigUInt64LE(BigInt(100 * (i + 1)), i * 16 + 8);
    }
    if (endianness() === "LE") assert.deepEqual(sumCounters(b, ncpu), { packets: 6n, bytes: 600n });
    const p = Buffer.alloc(32 * 2);
    p.writeBigUInt64LE(1n, 0);
    p.writeBigUInt64LE(5n, 32 + 24);
    if (endianness() === "LE") {
      assert.deepEqual(sumPeerCounters(p, 2), {
        txPackets: 1n,
        txBytes: 0n,
        rxPackets: 0n,
        rxBytes: 5n,
      });
    }
  });

  it("sums per-CPU peer counters as Numbers exactly as the BigInt sum, at any offset", function () {
    const stride = percpuStride(STRUCTS.ovl_peer_counters.size);
    const f = STRUCTS.ovl_peer_counters.fields;
    const ncpu = 3;
    const values = [1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 40n + 12345n, 0n, 2n ** 51n + 7n];
    const le = endianness() === "LE";
    // one buffer of several entries, as a batch lookup returns them, and a
    // copy one byte off (not 4-byte aligned: the per-byte reads)
    const entries = 4;
    const whole = Buffer.alloc(1 + entries * stride * ncpu);
    const aligned = Buffer.alloc(entries * stride * ncpu);
    for (let e = 0; e < entries; e++) {
      for (let cpu = 0; cpu < ncpu; cpu++) {
        const o = (e * ncpu + cpu) * stride;
        for (const [k, name] of (
          ["tx_packets", "tx_bytes", "rx_packets", "rx_bytes"] as const
        ).entries()) {
          const v = values[(e + cpu + k) % values.length] as bigint;
          const at = o + f[name].offset;
          if (le) aligned.writeBigUInt64LE(v, at);
          else aligned.writeBigUInt64BE(v, at);
        }
      }
    }
    aligned.copy(whole, 1);
    const unaligned = whole.subarray(1);
    for (let e = 0; e < entries; e++) {
      const off = e * ncpu * stride;
      const want = sumPeerCounters(aligned, ncpu, off);
      for (const b of [aligned, unaligned]) {
        const out = new Float64Array(4);
        sumPeerCountersInto(b, ncpu, off, out);
        assert.deepEqual(
          [...out],
          [want.txPackets, want.txBytes, want.rxPackets, want.rxBytes].map(Number),
          `entry ${e}, ${b === aligned ? "aligned" : "unaligned"}`,
        );
      }
    }
  });

  it("names every drop reason and indexes drops by direction", function () {
    assert.equal(DROP_REASONS.get(ENUMS.ovl_drop_reason.OVL_DROP_WRONG_VNI), "wrong_vni");
    assert.equal(DROP_REASONS.size, ENUMS.ovl_drop_reason.OVL_DROP_MAX);
    assert.equal(dropIndex(1, 3), ENUMS.ovl_drop_reason.OVL_DROP_MAX + 3);
    assert.equal(
      MAPS.ovl_drops.maxEntries,
      ENUMS.ovl_dir.OVL_DIR_MAX * ENUMS.ovl_drop_reason.OVL_DROP_MAX,
    );
  });

  it("lays out .rodata from the generated offsets", function () {
    const img = rodataImage({
      vni: 0x010203,
      port: 8472,
      localIp: parseIp("172.31.0.1"),
      underlay: { ifindex: 2, mac: "02:00:00:00:00:01" },
      overlay: { ifindex: 5, mac: "0e:00:00:00:00:02" },
      kernelDecap: true,
    });
    assert.equal(img.length, RODATA.size);
    const v = RODATA.vars;
    assert.deepEqual(
      [...img.subarray(v.ovl_cfg_local_ip.offset, v.ovl_cfg_local_ip.offset + 4)],
      [172, 31, 0, 1],
    );
    assert.deepEqual(
      [...img.subarray(v.ovl_cfg_vtep_mac.offset, v.ovl_cfg_vtep_mac.offset + 6)],
      [14, 0, 0, 0, 0, 2],
    );
    if (endianness() === "LE") {
      assert.equal(img.readUInt32LE(v.ovl_cfg_vni.offset), 0x010203);
      assert.equal(img.readUInt16LE(v.ovl_cfg_port.offset), 8472);
      assert.equal(img.readUInt32LE(v.ovl_cfg_overlay_ifindex.offset), 5);
      assert.equal(
        img.readUInt32LE(v.ovl_cfg_flags.offset),
        ENUMS.ovl_cfg_flags.OVL_CFG_KERNEL_DECAP,
      );
    }
  });
});
