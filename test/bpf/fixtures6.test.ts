// BPF_PROG_RUN fixtures for IPv6 (dual-stack, issue 14): flannel-v6.1's wire
// format in and out, the same checks as IPv4 and the three IPv6 drop reasons.
// The programs are loaded with a PublicIPv6 in .rodata; a second load without
// one shows that IPv6 is left alone when the network has none.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { F_DIRECT, F_LOCAL, encodeEndpoint, sumPeerCounters } from "../../agent/bpf/codec";
import { encodeHostEntry6, encodeIp6, encodePeer6, encodeSubnet6Key } from "../../agent/bpf/codec6";
import { Datapath, type DatapathConfig } from "../../agent/bpf/datapath";
import { libbpf } from "../../agent/bpf/libbpf";
import { BpfMap, possibleCpus } from "../../agent/bpf/map";
import { StatsReader } from "../../agent/bpf/stats";
import { parseIp } from "../../agent/net/ip";
import { Cidr6, ip6ToBytes, parseIp6 } from "../../agent/net/ip6";
import {
  eth,
  ETH_P_IP,
  ETH_P_IPV6,
  gsoCtx,
  icmp6Echo,
  ipv6,
  mac,
  vxlan6Frame,
} from "../lib/packets";
import { requireEnv } from "../lib/require";
import { sh } from "../lib/sh";

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const XDP_PASS = 2;

const LOCAL6 = "fd00:1::1";
const PEER6 = "fd00:1::2";
const LOCAL_SUBNET6 = "fc00:0:0:1::/64";
const PEER_SUBNET6 = "fc00:0:0:2::/64";
const DIRECT_SUBNET6 = "fc00:0:0:3::/64";
const DIRECT6 = "fd00:1::3";
const VTEP_MAC = "0e:00:00:00:01:01";
const PEER_VTEP = "0e:00:00:00:02:02";
const POD6 = "fc00:0:0:1::2";
const POD = { ifindex: 1, podMac: "02:00:00:00:01:02", hostMac: "02:00:00:00:01:01" };

describe("bpf: BPF_PROG_RUN fixtures, IPv6", function () {
  let dir = "";
  let dp: Datapath;
  let maps: Record<string, BpfMap> = {};
  let stats: StatsReader;

  function load(c: Partial<DatapathConfig>): Datapath {
    const d = new Datapath({
      pinPath: join(dir, "pins"),
      objDir: join(__dirname, "../../../build/bpf"),
      vni: 1,
      port: 8472,
      localIp: parseIp("172.31.0.1"),
      // loopback: MTU checks pass, redirects only record their target
      underlay: { name: "lo", ifindex: 1, mac: "02:00:00:00:0f:01" },
      overlay: { name: "lo", ifindex: 1, mac: VTEP_MAC },
      decap: "tc",
      kernelDecap: true,
      localIp6: ip6ToBytes(parseIp6(LOCAL6)),
      ...c,
    });
    d.load();
    return d;
  }

  before(function () {
    requireEnv(this, { root: true, tools: ["mount"] });
    dir = mkdtempSync("/run/overlayd-bpftest6-");
    sh(["mount", "-t", "bpf", "bpf", dir]);
    dp = load({});
    for (const n of ["ovl_subnets6", "ovl_peers6", "ovl_peer_stats6", "ovl_endpoints6"]) {
      maps[n] = BpfMap.openPinned(join(dir, "pins"), n as never);
    }
    const host = (subnet: string, remote: string, vtepMac: string, flags: number) => {
      maps.ovl_subnets6!.update(
        encodeSubnet6Key(Cidr6.parse(subnet)),
        encodeHostEntry6({ remoteIp: parseIp6(remote), vtepMac, flags }),
      );
      if (flags & F_LOCAL) return;
      // No counters: as with the agent, a peer's first packet makes them.
      maps.ovl_peers6!.update(encodeIp6(parseIp6(remote)), encodePeer6(Cidr6.parse(subnet)));
    };
    host(LOCAL_SUBNET6, LOCAL6, VTEP_MAC, F_LOCAL);
    host(PEER_SUBNET6, PEER6, PEER_VTEP, 0);
    host(DIRECT_SUBNET6, DIRECT6, "0e:00:00:00:03:03", F_DIRECT);
    stats = StatsReader.openPinned(join(dir, "pins"));
  });

  after(function () {
    for (const m of Object.values(maps)) m.close();
    maps = {};
    stats?.close();
    dp?.close();
    if (dir) {
      sh(["umount", dir], { allowFail: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const run = (
    d: Datapath,
    prog: Parameters<Datapath["programFd"]>[0],
    frame: Buffer,
    ctx: Buffer | null = null,
  ) => libbpf.testRun(d.programFd(prog), frame, ctx, prog);

  function drops(dirName: "tx" | "rx", reason: string): bigint {
    const d = stats.read().drops.find((x) => x.direction === dirName && x.reason === reason);
    assert.ok(d, `no drop reason ${dirName}/${reason}`);
    return d.packets;
  }

  /** Runs a frame that must be dropped, and checks that `reason` counted it. */
  function dropped(prog: "ovl_decap_tc" | "ovl_encap_dev", frame: Buffer, reason: string): void {
    const dirName = prog === "ovl_decap_tc" ? "rx" : "tx";
    const before = drops(dirName, reason);
    assert.equal(run(dp, prog, frame).retval, TC_ACT_SHOT, `${reason}: dropped`);
    assert.equal(drops(dirName, reason), before + 1n, `${reason}: counted`);
  }

  function podFrame6(dst: string, hop = 64): Buffer {
    return eth(
      POD.hostMac,
      POD.podMac,
      ETH_P_IPV6,
      ipv6({ src: POD6, dst, next: 58, hop }, icmp6Echo(POD6, dst, 1, 1)),
    );
  }

  describe("encap", function () {
    it("hands a pod's packet for a peer's IPv6 subnet to the overlay device with flannel-v6.1's inner MACs", function () {
      const f = podFrame6("fc00:0:0:2::7");
      const tx = stats.read().traffic.get("tx")!.packets;
      const r = run(dp, "ovl_encap_pod", f);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.equal(r.data.length, f.length, "the kernel's device adds the outer headers");
      assert.deepEqual(
        r.data.subarray(0, 6),
        mac(PEER_VTEP),
        "inner destination = the peer's VtepMAC",
      );
      assert.deepEqual(r.data.subarray(6, 12), mac(VTEP_MAC), "inner source = our VTEP MAC");
      assert.equal(r.data[14 + 7], 63, "hop limit decremented (forwarding is bypassed)");
      assert.deepEqual(r.data.subarray(22), f.subarray(22), "the rest untouched");
      assert.equal(stats.read().traffic.get("tx")!.packets, tx + 1n, "counted as sent");
    });

    it("makes the peer's counters (ovl_peer_stats6) with its first packet, then adds to them", function () {
      const key = encodeIp6(parseIp6(PEER6));
      maps.ovl_peer_stats6!.delete(key);
      const counted = () => {
        const v = maps.ovl_peer_stats6!.lookup(key);
        return v && sumPeerCounters(v, possibleCpus());
      };
      const f = podFrame6("fc00:0:0:2::7");
      assert.equal(run(dp, "ovl_encap_pod", f).retval, TC_ACT_REDIRECT);
      assert.equal(counted()?.txPackets, 1n, "one packet, in an entry the program made");
      assert.equal(
        counted()?.txBytes,
        BigInt(f.length + 70),
        "with the outer IPv6 headers it will get",
      );
      run(dp, "ovl_encap_pod", f);
      assert.equal(counted()?.txPackets, 2n);
    });

    it("gso6-ext-mtu: a GSO packet's segment counts its extension headers and the TCP header behind them", function () {
      // Found by the differential fuzzer: the MTU check took a GSO segment
      // as fixed header + (TCP header only if it came right after it) +
      // gso_size, so segments behind extension headers were waved through.
      // lo's MTU is 65,536: 40 + ext + 20 + gso_size + 70 must fit.
      const tcp = Buffer.alloc(20 + 64);
      tcp[12] = 0x50; // doff 5
      const hbh = Buffer.from([60, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, PadN; next: dest options
      const dst = Buffer.from([6, 1, 1, 12, ...Buffer.alloc(12)]); // 16 bytes; next: TCP
      const ip = ipv6({ src: POD6, dst: "fc00:0:0:2::7", next: 0 }, Buffer.concat([hbh, dst, tcp]));
      const f = eth(POD.hostMac, POD.podMac, ETH_P_IPV6, ip);
      const fits = 65536 - 70 - 40 - 24 - 20; // the largest gso_size that fits
      assert.equal(run(dp, "ovl_encap_pod", f, gsoCtx(fits, 2)).retval, TC_ACT_REDIRECT);
      assert.equal(
        run(dp, "ovl_encap_pod", f, gsoCtx(fits + 1, 2)).retval,
        TC_ACT_OK,
        "one byte over: to the stack, which answers packet-too-big",
      );
      const before = drops("tx", "mtu");
      assert.equal(run(dp, "ovl_encap_dev", f, gsoCtx(fits + 1, 2)).retval, TC_ACT_SHOT);
      assert.equal(drops("tx", "mtu"), before + 1n, "counted as mtu on the device");
    });

    it("leaves an expiring pod packet to the stack, which answers time exceeded", function () {
      assert.equal(run(dp, "ovl_encap_pod", podFrame6("fc00:0:0:2::7", 1)).retval, TC_ACT_OK);
    });

    it("leaves link-local and multicast (neighbour discovery, MLD) alone, from pods and on the device", function () {
      for (const dst of ["fe80::1", "ff02::1:ff00:7", "ff02::16"]) {
        assert.equal(run(dp, "ovl_encap_pod", podFrame6(dst)).retval, TC_ACT_OK, dst);
        assert.equal(run(dp, "ovl_encap_dev", podFrame6(dst)).retval, TC_ACT_OK, dst);
      }
    });

    it("leaves a pod's packet outside the cluster or for this node to the stack; drops it on the device, counted", function () {
      assert.equal(run(dp, "ovl_encap_pod", podFrame6("2001:db8::1")).retval, TC_ACT_OK);
      assert.equal(run(dp, "ovl_encap_pod", podFrame6("fc00:0:0:1::9")).retval, TC_ACT_OK);
      dropped("ovl_encap_dev", podFrame6("2001:db8::1"), "no_peer");
    });

    it("keys a packet the stack routed into the overlay device and lets it go on there", function () {
      const r = run(dp, "ovl_encap_dev", podFrame6("fc00:0:0:2::7"));
      assert.equal(r.retval, TC_ACT_OK, "already on the device that encapsulates");
      assert.deepEqual(r.data.subarray(0, 6), mac(PEER_VTEP));
      assert.equal(r.data[14 + 7], 64, "the stack did the hop limit");
    });

    it("sends to a DirectRouting/host-gw IPv6 host unencapsulated (bpf_redirect_neigh)", function () {
      const f = podFrame6("fc00:0:0:3::7");
      const direct = stats.read().traffic.get("direct")!.packets;
      const r = run(dp, "ovl_encap_pod", f);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.equal(r.data.length, f.length);
      assert.equal(r.data[14 + 7], 63);
      assert.equal(stats.read().traffic.get("direct")!.packets, direct + 1n);
    });

    it("without the kernel's VXLAN device there is no IPv6 tunnel: pods go to the stack, the device counts encap_failed", function () {
      const plain = load({ kernelDecap: false });
      try {
        assert.equal(run(plain, "ovl_encap_pod", podFrame6("fc00:0:0:2::7")).retval, TC_ACT_OK);
        const before = drops("tx", "encap_failed");
        assert.equal(run(plain, "ovl_encap_dev", podFrame6("fc00:0:0:2::7")).retval, TC_ACT_SHOT);
        assert.equal(drops("tx", "encap_failed"), before + 1n);
      } finally {
        plain.close();
        dp.close();
        dp = load({});
      }
    });
  });

  describe("decap (ovl_decap_tc)", function () {
    const good = { outerSrc: PEER6, outerDst: LOCAL6, innerSrc: "fc00:0:0:2::7", innerDst: POD6 };

    it("leaves a checked packet for an unregistered pod to the kernel's VXLAN socket, untouched", function () {
      const f = vxlan6Frame(good);
      const r = run(dp, "ovl_decap_tc", f);
      assert.equal(r.retval, TC_ACT_OK);
      assert.deepEqual(r.data, f);
    });

    it("strips the 70 outer bytes and hands a registered pod its packet", function () {
      maps.ovl_endpoints6!.update(encodeIp6(parseIp6(POD6)), encodeEndpoint(POD));
      try {
        const f = vxlan6Frame(good);
        const rx = stats.read().traffic.get("rx")!.packets;
        const r = run(dp, "ovl_decap_tc", f);
        assert.equal(r.retval, TC_ACT_REDIRECT);
        assert.equal(r.data.length, f.length - 70);
        assert.deepEqual(r.data.subarray(0, 6), mac(POD.podMac));
        assert.deepEqual(r.data.subarray(6, 12), mac(POD.hostMac));
        assert.equal(r.data.readUInt16BE(12), ETH_P_IPV6);
        const sent = f.subarray(14 + 70);
        assert.equal(r.data[14 + 7], (sent[7] as number) - 1, "hop limit decremented");
        assert.deepEqual(
          r.data.subarray(14 + 8),
          sent.subarray(8),
          "addresses and payload untouched",
        );
        assert.equal(stats.read().traffic.get("rx")!.packets, rx + 1n);
      } finally {
        maps.ovl_endpoints6!.delete(encodeIp6(parseIp6(POD6)));
      }
    });

    it("passes IPv6 that is not our VXLAN: other protocols, other ports, other addresses", function () {
      const tcp = eth(
        "02:aa:aa:aa:aa:01",
        "02:bb:bb:bb:bb:02",
        ETH_P_IPV6,
        ipv6({ src: PEER6, dst: LOCAL6, next: 6 }, Buffer.alloc(20)),
      );
      assert.equal(run(dp, "ovl_decap_tc", tcp).retval, TC_ACT_OK);
      assert.equal(run(dp, "ovl_decap_tc", vxlan6Frame({ ...good, port: 4789 })).retval, TC_ACT_OK);
      assert.equal(
        run(dp, "ovl_decap_tc", vxlan6Frame({ ...good, outerDst: "fd00:1::9" })).retval,
        TC_ACT_OK,
      );
    });

    it("drops and counts each wrong packet by its reason", function () {
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, vni: 2 }), "wrong_vni");
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, outerSrc: "fd00:1::99" }), "unknown_source");
      dropped(
        "ovl_decap_tc",
        vxlan6Frame({ ...good, innerSrc: "fc00:0:0:5::7" }),
        "spoofed_source",
      );
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, innerDst: "fc00:0:0:2::9" }), "not_local");
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, zeroChecksum: true }), "udp_zero_csum");
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, vxlanFlags: 0x0c }), "bad_vxlan_flags");
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, udpLen: 100 }), "bad_udp_len");
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, payloadLen: 0 }), "bad_ip6_hdr");
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, payloadLen: 4000 }), "truncated");
      const v4inner = eth(
        "02:00:00:00:00:01",
        "02:00:00:00:00:02",
        ETH_P_IP,
        Buffer.alloc(60, 0x45),
      );
      dropped("ovl_decap_tc", vxlan6Frame({ ...good, inner: v4inner }), "inner_not_ipv6");
      const notIp = Buffer.from(vxlan6Frame(good));
      notIp[14 + 70 + 0] = 0x45; // inner "IPv6" header with version 4
      dropped("ovl_decap_tc", notIp, "inner_bad_ip");
      dropped("ovl_decap_tc", vxlan6Frame(good).subarray(0, 110), "truncated");
    });

    it("XDP leaves IPv6 to the stack (the socket decapsulates, ovl_decap_dev checks)", function () {
      assert.equal(run(dp, "ovl_decap_xdp", vxlan6Frame(good)).retval, XDP_PASS);
      assert.equal(run(dp, "ovl_decap_xdp", vxlan6Frame({ ...good, vni: 2 })).retval, XDP_PASS);
    });

    it("ovl_decap_dev refuses a frame that carries no tunnel metadata at all", function () {
      const inner = vxlan6Frame(good).subarray(14 + 56); // the inner frame alone
      const before = stats
        .read()
        .drops.find((d) => d.direction === "rx" && d.reason === "unknown_source")!.packets;
      assert.equal(run(dp, "ovl_decap_dev", inner).retval, TC_ACT_SHOT);
      assert.equal(drops("rx", "unknown_source"), before + 1n);
    });
  });

  describe("a network without IPv6", function () {
    it("leaves every IPv6 frame alone, as before dual-stack", function () {
      const v4only = load({ localIp6: undefined });
      try {
        const good = {
          outerSrc: PEER6,
          outerDst: LOCAL6,
          innerSrc: "fc00:0:0:2::7",
          innerDst: POD6,
        };
        assert.equal(
          run(v4only, "ovl_decap_tc", vxlan6Frame({ ...good, vni: 2 })).retval,
          TC_ACT_OK,
        );
        assert.equal(run(v4only, "ovl_encap_pod", podFrame6("fc00:0:0:2::7")).retval, TC_ACT_OK);
        assert.equal(run(v4only, "ovl_encap_dev", podFrame6("fc00:0:0:2::7")).retval, TC_ACT_OK);
      } finally {
        v4only.close();
        dp.close();
        dp = load({});
      }
    });
  });
});
